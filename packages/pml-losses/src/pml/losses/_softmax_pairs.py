"""NTXentLoss and TupletMarginLoss: per-positive-pair softmax losses over an anchor's negatives.

Math: :func:`pml.losses.functional.ntxent_loss` and
:func:`pml.losses.functional.tuplet_margin_loss`. Both read the negatives of an anchor
through one log-sum-exp per anchor: O(N·M) memory instead of the reference's
(positive pairs x negative pairs) matrices.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from pml.core.indices import IndicesTuple
from pml.core.validation import labels_or_indices_tuple_required
from pml.distances import BaseDistance, CosineSimilarity, assert_distance_type
from pml.losses._arguments import check_real
from pml.losses._base import GenericPairLoss, loss_entry
from pml.losses._pairs import nan_if_nonfinite, pair_inputs, too_few_pairs
from pml.losses.functional._softmax_ops import Negatives
from pml.losses.functional._softmax_pairs import ntxent_loss, tuplet_margin_loss
from pml.reducers import LossDict


def positives_and_negatives(
    indices_tuple: IndicesTuple | None,
    labels: Tensor | None,
    ref_labels: Tensor | None,
    device: torch.device,
) -> tuple[Tensor, Tensor, Negatives, int]:
    """:func:`pml.losses._pairs.pair_inputs` as a tuple ``(a1, p, negatives, num_neg)``."""
    pairs = pair_inputs(indices_tuple, labels, ref_labels, device)
    return pairs.a1, pairs.p, pairs.neg, pairs.num_neg


no_valid_pairs = too_few_pairs


class PositivePairsMixin:
    """``compute_loss`` of a loss with one value per positive pair over its anchor's negatives.

    List it before ``GenericPairLoss`` in the bases; the class defines
    ``_loss_dict(mat, a1, p, negatives, dtype)``. Pairs from labels are read from the label
    masks (no negative-pair list); miner outputs go through the pair list.
    """

    def compute_loss(  # type: ignore[no-untyped-def]
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        indices_tuple: IndicesTuple | None,
        ref_emb: Tensor,
        ref_labels: Tensor | None,
    ) -> LossDict:
        labels_or_indices_tuple_required(labels, indices_tuple)
        a1, p, neg, num_neg = positives_and_negatives(
            indices_tuple, labels, ref_labels, embeddings.device
        )
        if no_valid_pairs(len(a1), num_neg):
            return self.zero_losses()
        mat = self.distance.acc_matrix(embeddings, ref_emb)
        loss_dict = self._loss_dict(mat, a1, p, neg, embeddings.dtype)
        entry = loss_dict["loss"]
        entry["losses"] = nan_if_nonfinite(entry["losses"], embeddings, ref_emb)
        return loss_dict

    def pair_based_loss(self, mat: Tensor, pairs: IndicesTuple) -> LossDict:
        """The loss dict from ``mat`` and a pair list (the GenericPairLoss hook)."""
        a1, p, a2, n = pairs
        if no_valid_pairs(len(a1), len(a2)):
            return self.zero_losses()
        return self._loss_dict(mat, a1, p, (a2, n), mat.dtype)

    def _loss_dict(
        self, mat: Tensor, a1: Tensor, p: Tensor, neg: Negatives, dtype: torch.dtype
    ) -> LossDict:
        raise NotImplementedError


class NTXentLoss(PositivePairsMixin, GenericPairLoss):
    """NT-Xent / InfoNCE loss (Chen et al., ICML 2020; Oord et al., 2018).

    For every positive pair ``(a, p)``: ``-log(exp(z_ap) / (exp(z_ap) + Σ_n exp(z_an)))``,
    ``z = similarity / temperature``, ``n`` over the negatives of anchor ``a``. Math:
    :func:`pml.losses.functional.ntxent_loss`.

    Args:
        temperature: softmax temperature.
        **kwargs: ``distance`` (default :class:`CosineSimilarity`; a distance is negated),
            ``reducer`` (default ``MeanReducer``), ``collect_stats``,
            ``embedding_regularizer``, ``embedding_reg_weight``.

    Example:
        >>> emb = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
        >>> NTXentLoss(temperature=0.1)(emb, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
        tensor(8.4703)
    """

    def __init__(self, temperature: float = 0.07, **kwargs: Any) -> None:
        super().__init__(mat_based_loss=False, **kwargs)
        # fix: the reference gives NaN for 0 and a negated objective below 0
        check_real("temperature", temperature, min=0, min_open=True)
        self.temperature = temperature
        self.add_to_recordable_attributes(list_of_names=["temperature"], is_stat=False)

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()

    def _loss_dict(
        self, mat: Tensor, a1: Tensor, p: Tensor, neg: Negatives, dtype: torch.dtype
    ) -> LossDict:
        losses = ntxent_loss(
            mat, a1, p, neg, self.temperature, is_inverted=self.distance.is_inverted
        )
        return {"loss": loss_entry(losses.to(dtype), (a1, p), "pos_pair")}


class TupletMarginLoss(PositivePairsMixin, GenericPairLoss):
    """Tuplet margin loss (Yu & Tao, "Deep Metric Learning with Tuplet Margin Loss", ICCV 2019).

    For every positive pair ``(a, p)``:
    ``log(1 + Σ_n exp(scale·(cos θ_an - cos(θ_ap - margin))))``, ``n`` over the negatives of
    anchor ``a``. Math: :func:`pml.losses.functional.tuplet_margin_loss`.

    Args:
        margin: angular margin in degrees (stored in radians as ``margin``).
        scale: the scale ``s`` of the paper.
        **kwargs: ``distance`` (must be :class:`CosineSimilarity`, the default), ``reducer``
            (default ``MeanReducer``), ``collect_stats`` (stats ``avg_pos_angle`` and
            ``avg_neg_angle``, in degrees), ``embedding_regularizer``,
            ``embedding_reg_weight``.

    Raises:
        InvalidArgumentError: the distance is not a :class:`CosineSimilarity`.

    Example:
        >>> emb = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
        >>> TupletMarginLoss()(emb, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
        tensor(46.2947)
    """

    def __init__(self, margin: float = 5.73, scale: float = 64, **kwargs: Any) -> None:
        super().__init__(mat_based_loss=False, **kwargs)
        assert_distance_type(self, CosineSimilarity)
        check_real("margin", margin)
        check_real("scale", scale, min=0, min_open=True)  # fix: 0 gives a constant loss
        self.margin = math.radians(margin)
        self.scale = scale
        self.add_to_recordable_attributes(list_of_names=["margin", "scale"], is_stat=False)
        self.add_to_recordable_attributes(
            list_of_names=["avg_pos_angle", "avg_neg_angle"], is_stat=True
        )

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()

    def _loss_dict(
        self, mat: Tensor, a1: Tensor, p: Tensor, neg: Negatives, dtype: torch.dtype
    ) -> LossDict:
        losses = tuplet_margin_loss(mat, a1, p, neg, self.margin, self.scale)
        if self.collect_stats:
            self._set_angle_stats(mat, a1, p, neg)
        return {"loss": loss_entry(losses.to(dtype).unsqueeze(1), (a1, p), "pos_pair")}

    @torch.no_grad()
    def _set_angle_stats(self, mat: Tensor, a1: Tensor, p: Tensor, neg: Negatives) -> None:
        # fix: cosines are clamped to [-1, 1] (duplicates made acos NaN in the reference).
        def acos(s: Tensor) -> Tensor:
            return torch.acos(s.clamp(-1, 1))

        if isinstance(neg, Tensor):
            neg_angle = (acos(mat) * neg).sum() / neg.sum()
        else:
            neg_angle = acos(mat[neg[0], neg[1]]).mean()
        self.set_stats(
            avg_pos_angle=torch.rad2deg(acos(mat[a1, p]).mean()),
            avg_neg_angle=torch.rad2deg(neg_angle),
        )
