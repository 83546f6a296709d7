"""NCALoss and InstanceLoss: softmax over a row of the batch's similarity matrix.

Math: :func:`pml.losses.functional.nca_loss` and :func:`pml.losses.functional.instance_loss`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pml.core.indices import IndicesTuple, convert_to_weights
from pml.core.validation import indices_tuple_not_supported, labels_required, ref_not_supported
from pml.distances import BaseDistance, CosineSimilarity, LpDistance, assert_distance_type
from pml.losses._arguments import check_real
from pml.losses._base import BaseMetricLossFunction, loss_entry
from pml.losses._pairs import nan_if_nonfinite
from pml.losses.functional._nca_instance import instance_loss, nca_loss
from pml.reducers import LossDict


class NCALoss(BaseMetricLossFunction):
    """Neighbourhood components analysis loss (Goldberger et al., NeurIPS 2004).

    Row ``i``: ``-log`` of the softmax probability mass (logits ``-softmax_scale·d_ij``) that
    falls on the references with the same label; the query itself is excluded when the
    reference set is the batch. Rows with no such mass are dropped. A miner's tuple only
    gives per-row weights. Math: :func:`pml.losses.functional.nca_loss`.

    Routes: small batches read the same-label targets from a boolean ``(N, M)`` mask, large
    ones from cell lists (``functional._softmax_ops.same_label_targets``); the batch against
    itself is the distance's ``self_matrix``.

    fix: a batch where every row is dropped (e.g. all labels distinct) gives the zero loss;
    the reference returned NaN (the mean of nothing).

    Args:
        softmax_scale: multiplier of the logits.
        **kwargs: ``distance`` (default ``LpDistance(power=2)``, squared Euclidean between
            normalised embeddings; any distance or similarity), ``reducer`` (default
            ``MeanReducer``), ``collect_stats``, ``embedding_regularizer``,
            ``embedding_reg_weight``.

    Example:
        >>> emb = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
        >>> NCALoss()(emb, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
        tensor(2.5420)
    """

    accepts_mat = True  # forward(..., mat=): the batch matrix through batch_matrix

    def __init__(self, softmax_scale: float = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # fix: a negative scale silently flips the objective (0 is kept: spec'd compat case)
        check_real("softmax_scale", softmax_scale, min=0)
        self.softmax_scale = softmax_scale
        self.add_to_recordable_attributes(list_of_names=["softmax_scale"], is_stat=False)

    def get_default_distance(self) -> BaseDistance:
        return LpDistance(power=2)

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        indices_tuple: IndicesTuple | None,
        ref_emb: Tensor,
        ref_labels: Tensor | None,
    ) -> LossDict:
        if len(embeddings) <= 1:  # compat: the zero loss before labels are checked
            return self.zero_losses()
        labels = labels_required(labels)
        if ref_labels is None:
            raise ValueError("ref_labels must be given with ref_emb: NCALoss needs labels")
        same_set = ref_emb is embeddings
        mat = self.batch_acc_matrix(embeddings, ref_emb)
        weights = convert_to_weights(indices_tuple, labels, dtype=mat.dtype, using_ref=not same_set)
        losses, kept = nca_loss(
            mat,
            labels,
            ref_labels.to(labels.device),
            self.softmax_scale,
            is_inverted=self.distance.is_inverted,
            mask_diagonal=same_set,
            weights=weights,
        )
        rows = torch.nonzero(kept).squeeze(1)
        if len(rows) == 0:
            return self.zero_losses()
        losses = nan_if_nonfinite(losses[rows].to(embeddings.dtype), embeddings, ref_emb)
        return {"loss": loss_entry(losses, rows, "element")}


class InstanceLoss(BaseMetricLossFunction):
    """Instance loss over in-batch prototypes (after Zheng et al., TOMM 2020).

    Paper: "Dual-path Convolutional Image-Text Embeddings with Instance Loss".
    Row ``i`` of ``gamma·cos(embeddings, embeddings)`` is a softmax classifier whose targets
    are the other columns holding the same instance id (``labels``); its own column leaves
    the softmax. A row whose label is unique in the batch targets its own column (plain
    cross entropy with target ``i``). Math: :func:`pml.losses.functional.instance_loss`.

    Routes: as :class:`NCALoss` (targets as a mask or as cell lists, by batch size).

    fix: the reference used column ``rank(labels_i)`` as the only target (right only when
    labels are ``0..N-1`` in batch order; with class labels the target column holds an
    embedding of another class). Both agree for labels ``0..N-1`` in batch order
    (docs/compatibility.md). An empty batch gives the zero loss (the reference: NaN).

    Args:
        gamma: scale of the logits.
        **kwargs: ``distance`` (must be :class:`CosineSimilarity`, the default), ``reducer``
            (default ``MeanReducer``), ``collect_stats``, ``embedding_regularizer``,
            ``embedding_reg_weight``.

    Raises:
        InvalidArgumentError: another distance.

    Example:
        >>> emb = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
        >>> InstanceLoss(gamma=8)(emb, torch.arange(8))
        tensor(0.1901)
    """

    accepts_mat = True  # forward(..., mat=): the batch matrix through batch_matrix

    def __init__(self, gamma: float = 64, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        assert_distance_type(self, CosineSimilarity)
        check_real("gamma", gamma, min=0, min_open=True)  # fix: 0 gives a constant loss
        self.gamma = gamma
        self.add_to_recordable_attributes(list_of_names=["gamma"], is_stat=False)

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        indices_tuple: IndicesTuple | None,
        ref_emb: Tensor,
        ref_labels: Tensor | None,
    ) -> LossDict:
        labels = labels_required(labels)
        indices_tuple_not_supported(indices_tuple)
        ref_not_supported(embeddings, labels, ref_emb, ref_labels)
        if len(embeddings) == 0:  # fix: the reference's mean of nothing was NaN
            return self.zero_losses()
        sim = self.batch_acc_matrix(embeddings)
        # every row reads every embedding (log-softmax): NaN/inf propagate without a guard
        losses = instance_loss(sim, labels, self.gamma).to(embeddings.dtype)
        rows = torch.arange(len(embeddings), device=embeddings.device)
        return {"loss": loss_entry(losses, rows, "element")}
