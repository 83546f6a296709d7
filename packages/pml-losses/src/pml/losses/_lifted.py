"""Lifted structure family: LiftedStructureLoss, GeneralizedLiftedStructureLoss.

Math: ``pml.losses.functional``. Neither builds a (positive pairs x negative pairs) matrix:
memory is ``O(N * M)``.
"""

from __future__ import annotations

from typing import Any

from pml.losses._base import loss_entry
from pml.losses._generic_pair import GenericPairLoss
from pml.losses._pairs import (
    negative_counts,
    pair_inputs,
    pair_masks,
    poison_nonfinite,
    row_entry,
    set_hyperparameters,
    too_few_pairs,
)
from pml.losses.functional._pair import generalized_lifted_structure_loss, lifted_structure_loss
from pml.reducers import LossDict


class GeneralizedLiftedStructureLoss(GenericPairLoss):
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

    anchor_batching = "reference"  # pml.losses.anchor_batched_backward

    def __init__(self, neg_margin: float = 1, pos_margin: float = 0, **kwargs: Any) -> None:
        super().__init__(mat_based_loss=True, **kwargs)
        set_hyperparameters(self, neg_margin=neg_margin, pos_margin=pos_margin)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels) -> LossDict:  # type: ignore[no-untyped-def]
        masks = pair_masks(indices_tuple, labels, ref_labels, embeddings, ref_emb)
        if masks is None:
            return self.zero_losses()
        mat = self.batch_matrix(embeddings, ref_emb)
        losses = generalized_lifted_structure_loss(
            mat, *masks, self.neg_margin, self.pos_margin, is_inverted=self.distance.is_inverted
        )
        return poison_nonfinite(row_entry(losses), embeddings, ref_emb)


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

    anchor_batching_obstacle = "a positive pair reads the negatives of its positive (its column)"

    def __init__(self, neg_margin: float = 1, pos_margin: float = 0, **kwargs: Any) -> None:
        super().__init__(mat_based_loss=False, **kwargs)
        set_hyperparameters(self, neg_margin=neg_margin, pos_margin=pos_margin)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels) -> LossDict:  # type: ignore[no-untyped-def]
        pairs = pair_inputs(indices_tuple, labels, ref_labels, embeddings.device)
        # compat: zero when <= 1 pair of each kind, or no positive / no negative pair.
        if too_few_pairs(len(pairs.a1), pairs.num_neg):
            return self.zero_losses()
        mat = self.batch_matrix(embeddings, ref_emb)
        losses = lifted_structure_loss(
            mat,
            pairs.a1,
            pairs.p,
            negative_counts(pairs.neg, mat),
            self.neg_margin,
            self.pos_margin,
            is_inverted=self.distance.is_inverted,
            same_set=ref_emb is embeddings,
        )
        loss_dict = {"loss": loss_entry(losses, (pairs.a1, pairs.p), "pos_pair")}
        return poison_nonfinite(loss_dict, embeddings, ref_emb)
