"""AngularLoss and NPairsLoss: softmax losses over (anchor, positive) pairs.

Math: :func:`pml.losses.functional.angular_loss` and :func:`pml.losses.functional.npairs_loss`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from pml.core.dtypes import accumulation_dtype
from pml.core.indices import IndicesTuple, convert_to_pos_pairs_with_unique_labels
from pml.core.validation import labels_required, ref_not_supported
from pml.distances import BaseDistance, DotProductSimilarity, LpDistance, assert_distance_type
from pml.losses._arguments import check_real
from pml.losses._base import BaseMetricLossFunction, loss_entry
from pml.losses._pairs import nan_if_nonfinite, pair_inputs
from pml.losses.functional._angular_npairs import angular_average_angle, angular_loss, npairs_loss
from pml.reducers import LossDict


class AngularLoss(BaseMetricLossFunction):
    """Angular loss (Wang et al., "Deep Metric Learning with Angular Loss", ICCV 2017).

    For every positive pair ``(a, p)``:
    ``log(1 + Σ_n exp(4t·(x_a + x_p)·x_n - 2(1 + t)·x_a·x_p))``, ``t = tan²(alpha)``, over
    every reference ``n`` whose label differs from the anchor's (a miner's negative pairs are
    not used, only required to be non-empty). Math: :func:`pml.losses.functional.angular_loss`.

    Routes: the positive pairs come from labels or a miner's tuple; the negatives are always
    every reference with another label.

    fix: the negatives ``x_n`` are L2-normalised like ``x_a`` and ``x_p`` (the paper); the
    reference used the raw reference embeddings there, so its value depended on their scale
    (docs/compatibility.md).

    Args:
        alpha: the angle bound in degrees (stored as a 0-dim float64 tensor of radians).
        **kwargs: ``distance`` (must be ``LpDistance(p=2, power=1, normalize_embeddings=True)``,
            the default; only its normalisation is used), ``reducer`` (default
            ``MeanReducer``), ``collect_stats`` (stat ``average_angle`` in degrees),
            ``embedding_regularizer``, ``embedding_reg_weight``.

    Raises:
        InvalidArgumentError: another distance.

    Example:
        >>> emb = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
        >>> AngularLoss()(emb, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
        tensor(2.8574)
    """

    def __init__(self, alpha: float = 40, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        assert_distance_type(self, LpDistance, p=2, power=1, normalize_embeddings=True)
        # fix: tan(alpha)^2 silently explodes at 90 degrees (and repeats past it)
        check_real("alpha", alpha, min=0, max=90, max_open=True)
        # compat: stored like the reference, a 0-dim float64 tensor in radians.
        self.alpha = torch.tensor(math.radians(alpha), dtype=torch.float64)
        self.add_to_recordable_attributes(list_of_names=["alpha"], is_stat=False)
        self.add_to_recordable_attributes(list_of_names=["average_angle"], is_stat=True)

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        indices_tuple: IndicesTuple | None,
        ref_emb: Tensor,
        ref_labels: Tensor | None,
    ) -> LossDict:
        labels = labels_required(labels)
        if ref_labels is None:
            raise ValueError("ref_labels must be given with ref_emb: AngularLoss needs labels")
        pairs = pair_inputs(indices_tuple, labels, ref_labels, embeddings.device)
        a1, p = pairs.a1, pairs.p
        if len(a1) == 0 or pairs.num_neg == 0:  # a miner's negatives only need to exist
            return self.zero_losses()
        # compat: the negatives of an anchor are every reference with another label
        neg_mask = pairs.neg if isinstance(pairs.neg, Tensor) else labels_differ(labels, ref_labels)
        x = self.distance.normalize(embeddings.to(accumulation_dtype(embeddings.dtype)))
        x_ref = x if ref_emb is embeddings else self.distance.normalize(ref_emb.to(x.dtype))
        losses = angular_loss(x, x_ref, a1, p, neg_mask, float(self.alpha))
        if self.collect_stats:
            self.set_stats(average_angle=angular_average_angle(x, x_ref, a1, p, neg_mask))
        losses = nan_if_nonfinite(losses.to(embeddings.dtype).unsqueeze(1), embeddings, ref_emb)
        return {"loss": loss_entry(losses, (a1, p), "pos_pair")}


def labels_differ(labels: Tensor, ref_labels: Tensor) -> Tensor:
    """Boolean ``(N, M)``: ``labels[i] != ref_labels[j]``."""
    return labels.unsqueeze(1) != ref_labels.to(labels.device).unsqueeze(0)


class NPairsLoss(BaseMetricLossFunction):
    """N-pair loss (Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss", 2016).

    One positive pair per label (the first one); row ``i`` of the anchors-vs-positives
    similarity matrix is classified with target ``i`` (cross entropy). Math:
    :func:`pml.losses.functional.npairs_loss`.

    Routes: :func:`pml.core.indices.convert_to_pos_pairs_with_unique_labels` (from labels: the
    first pair of each label by one sort; from a miner's tuple: its first pair per label).

    Args:
        **kwargs: ``distance`` (default :class:`DotProductSimilarity`, which normalises, i.e.
            cosine; a distance is negated), ``reducer`` (default ``MeanReducer``),
            ``collect_stats`` (stat ``num_pairs``), ``embedding_regularizer``,
            ``embedding_reg_weight``.

    Example:
        >>> emb = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
        >>> NPairsLoss()(emb, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
        tensor(1.3544)
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_to_recordable_attributes(name="num_pairs", is_stat=True)

    def get_default_distance(self) -> BaseDistance:
        return DotProductSimilarity()

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        indices_tuple: IndicesTuple | None,
        ref_emb: Tensor,
        ref_labels: Tensor | None,
    ) -> LossDict:
        labels = labels_required(labels)
        ref_not_supported(embeddings, labels, ref_emb, ref_labels)
        anchors, positives = convert_to_pos_pairs_with_unique_labels(indices_tuple, labels)
        anchors = anchors.to(device=embeddings.device, dtype=torch.long)
        positives = positives.to(device=embeddings.device, dtype=torch.long)
        # compat: the attribute is assigned on every call, stats on or off.
        self.num_pairs = len(anchors)
        if len(anchors) == 0:
            return self.zero_losses()
        sim = self.distance.acc_matrix(embeddings[anchors], embeddings[positives])
        if not self.distance.is_inverted:
            sim = -sim
        losses = nan_if_nonfinite(npairs_loss(sim).to(embeddings.dtype), embeddings)
        return {"loss": loss_entry(losses, anchors, "element")}
