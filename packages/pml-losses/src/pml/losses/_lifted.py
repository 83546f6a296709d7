"""Lifted structure family: LiftedStructureLoss, GeneralizedLiftedStructureLoss.

Math: ``pml.losses.functional``. Neither builds a (positive pairs x negative pairs) matrix:
memory is ``O(N * M)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pml.core.dtypes import accumulation_dtype
from pml.core.indices import IndicesTuple, convert_to_pairs, pos_neg_masks
from pml.core.validation import labels_or_indices_tuple_required
from pml.losses._arguments import check_real
from pml.losses._base import loss_entry
from pml.losses._generic_pair import GenericPairLoss
from pml.losses._pair_inputs import LabelMasksMixin, has_too_few_pairs, label_positive_pairs
from pml.losses._pairs import poison_nonfinite
from pml.losses.functional._pair import generalized_lifted_structure_loss, lifted_structure_loss
from pml.reducers import LossDict


class GeneralizedLiftedStructureLoss(LabelMasksMixin, GenericPairLoss):
    """Generalized lifted structure loss (Hermans, Beyer & Leibe, "In Defense of the Triplet Loss").

    Per query row: ``relu(LSE_pos(d - pos_margin) + LSE_neg(neg_margin - d))`` (margins flip
    for similarities). Math: :func:`pml.losses.functional.generalized_lifted_structure_loss`.

    Args:
        neg_margin: wanted distance of negatives.
        pos_margin: wanted distance of positives.
        **kwargs: ``distance`` (default ``LpDistance()``), ``reducer`` (default
            ``MeanReducer``, over all rows), ``collect_stats``, ``embedding_regularizer``,
            ``embedding_reg_weight``.

    Sub-loss ``loss``: ``(N, 1)``, indices ``arange(N)``, "element".

    Example:
        >>> emb = torch.tensor([[1.0, 0.0], [0.9, 0.3], [0.0, 1.0], [0.2, 1.0]])
        >>> GeneralizedLiftedStructureLoss()(emb, torch.tensor([0, 0, 1, 1]))
        tensor(0.7436)
    """

    def __init__(self, neg_margin: float = 1, pos_margin: float = 0, **kwargs: Any) -> None:
        super().__init__(mat_based_loss=True, **kwargs)
        check_real("neg_margin", neg_margin)
        check_real("pos_margin", pos_margin)
        self.neg_margin = neg_margin
        self.pos_margin = pos_margin
        self.add_to_recordable_attributes(list_of_names=["pos_margin", "neg_margin"], is_stat=False)

    def _compute_loss(self, mat: Tensor, pos_mask: Tensor, neg_mask: Tensor) -> LossDict:  # type: ignore[override]
        losses = generalized_lifted_structure_loss(
            mat,
            pos_mask,
            neg_mask,
            self.neg_margin,
            self.pos_margin,
            is_inverted=self.distance.is_inverted,
        )
        rows = torch.arange(mat.shape[0], device=mat.device)
        return {"loss": loss_entry(losses, rows, "element")}


class LiftedStructureLoss(GenericPairLoss):
    """Lifted structure loss (Oh Song, Xiang, Jegelka & Savarese, CVPR 2016).

    Per positive pair ``(a, p)``: ``relu(LSE_J(neg_margin - d_neg) + d_ap - pos_margin)^2 / 2``
    over the negative pairs ``J`` of ``a`` and of ``p`` (margins flip for similarities).
    Math: :func:`pml.losses.functional.lifted_structure_loss`, without the reference's
    (positive pairs x negative pairs) matrix.

    With a separate reference set (``ref_emb``) the negatives of ``p`` are the negative pairs
    in reference column ``p``; the reference used query row number ``p`` instead (see
    docs/compatibility.md).

    Args:
        neg_margin: wanted distance of negatives.
        pos_margin: wanted distance of positives.
        **kwargs: ``distance`` (default ``LpDistance()``), ``reducer`` (default
            ``MeanReducer``), ``collect_stats``, ``embedding_regularizer``,
            ``embedding_reg_weight``.

    Sub-loss ``loss``: ``(P, 1)``, indices ``(a1, p)``, "pos_pair" (every listed positive pair,
    duplicates included). No positive or no negative pair gives the zero loss.

    Example:
        >>> emb = torch.tensor([[1.0, 0.0], [0.9, 0.3], [0.0, 1.0], [0.2, 1.0]])
        >>> LiftedStructureLoss()(emb, torch.tensor([0, 0, 1, 1]))
        tensor(1.0420)
    """

    def __init__(self, neg_margin: float = 1, pos_margin: float = 0, **kwargs: Any) -> None:
        super().__init__(mat_based_loss=False, **kwargs)
        check_real("neg_margin", neg_margin)
        check_real("pos_margin", pos_margin)
        self.neg_margin = neg_margin
        self.pos_margin = pos_margin
        self.add_to_recordable_attributes(list_of_names=["pos_margin", "neg_margin"], is_stat=False)

    def compute_loss(  # type: ignore[override]
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        indices_tuple: IndicesTuple | None,
        ref_emb: Tensor,
        ref_labels: Tensor | None,
    ) -> LossDict:
        labels_or_indices_tuple_required(labels, indices_tuple)
        if indices_tuple is None:
            pos, neg = pos_neg_masks(labels, ref_labels)  # type: ignore[arg-type]
            a1, p = label_positive_pairs(labels, ref_labels, pos)  # type: ignore[arg-type]
            # compat: zero when <= 1 pair of each kind, or no positive / no negative pair.
            if has_too_few_pairs(pos, neg) or len(a1) == 0 or not bool(neg.amax()):
                return self.zero_losses()
            mat = self.distance(embeddings, ref_emb)
            neg_weight = neg
        else:
            a1, p, a2, n = convert_to_pairs(indices_tuple, labels, ref_labels)
            if all(len(t) <= 1 for t in (a1, p, a2, n)) or len(a1) == 0 or len(a2) == 0:
                return self.zero_losses()
            mat = self.distance(embeddings, ref_emb)
            # how often each cell is listed as a negative pair (duplicates count)
            neg_weight = torch.zeros(
                mat.shape, dtype=accumulation_dtype(mat.dtype), device=mat.device
            )
            neg_weight.index_put_(
                (a2.long(), n.long()), torch.ones_like(a2, dtype=neg_weight.dtype), accumulate=True
            )
        losses = lifted_structure_loss(
            mat,
            a1,
            p,
            neg_weight,
            self.neg_margin,
            self.pos_margin,
            is_inverted=self.distance.is_inverted,
            same_set=ref_emb is embeddings,
        )
        loss_dict = {"loss": loss_entry(losses, (a1, p), "pos_pair")}
        return poison_nonfinite(loss_dict, embeddings, ref_emb)
