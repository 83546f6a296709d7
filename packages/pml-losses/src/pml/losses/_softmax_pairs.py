"""Softmax losses of positive pairs against their anchor's negatives: NTXent, TupletMargin, SupCon.

Math: :mod:`pml.losses.functional` (``ntxent_loss``, ``tuplet_margin_loss``, ``supcon_loss``).
Each ``compute_loss`` reads: pair inputs (:func:`pml.losses._pairs.pair_inputs`) -> the
too-few-pairs rule -> the distance's matrix in at least float32 -> one functional call -> the
non-finite guard -> the loss dict.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from pml.core.indices import IndicesTuple
from pml.core.validation import InvalidArgumentError
from pml.distances import BaseDistance, CosineSimilarity, assert_distance_type
from pml.losses._arguments import check_real
from pml.losses._base import loss_entry
from pml.losses._generic_pair import GenericPairLoss
from pml.losses._pairs import PairInputs, nan_if_nonfinite, pair_inputs, too_few_pairs
from pml.losses.functional._softmax_ops import Negatives
from pml.losses.functional._softmax_pairs import ntxent_loss, supcon_loss, tuplet_margin_loss
from pml.reducers import AvgNonZeroReducer, BaseReducer, LossDict

#: ``f(mat, a1, p, negatives) -> (P,) or (P, 1)`` losses of the listed positive pairs
PairLosses = Callable[[Tensor, Tensor, Tensor, Negatives], Tensor]


def positive_pair_loss(
    loss: GenericPairLoss,
    pair_losses: PairLosses,
    embeddings: Tensor,
    labels: Tensor | None,
    indices_tuple: IndicesTuple | None,
    ref_emb: Tensor,
    ref_labels: Tensor | None,
) -> LossDict:
    """``compute_loss`` of a loss with one value per positive pair over its anchor's negatives.

    Pair inputs -> the too-few-pairs rule -> the distance's matrix in at least float32 ->
    ``pair_losses`` -> the non-finite guard -> a "pos_pair" entry.
    """
    pairs = pair_inputs(indices_tuple, labels, ref_labels, embeddings.device)
    if too_few_pairs(len(pairs.a1), pairs.num_neg):
        return loss.zero_losses()
    mat = loss.batch_acc_matrix(embeddings, ref_emb)
    losses = pair_losses(mat, pairs.a1, pairs.p, pairs.neg).to(embeddings.dtype)
    losses = nan_if_nonfinite(losses, embeddings, ref_emb)
    return {"loss": loss_entry(losses, (pairs.a1, pairs.p), "pos_pair")}


def listed_positive_pair_loss(
    loss: GenericPairLoss, pair_losses: PairLosses, mat: Tensor, pairs: IndicesTuple
) -> LossDict:
    """The same from ``mat`` and a pair list ``(a1, p, a2, n)`` (the GenericPairLoss hook)."""
    a1, p, a2, n = pairs
    if too_few_pairs(len(a1), len(a2)):
        return loss.zero_losses()
    return {"loss": loss_entry(pair_losses(mat, a1, p, (a2, n)), (a1, p), "pos_pair")}


class NTXentLoss(GenericPairLoss):
    """NT-Xent / InfoNCE loss (Chen et al., ICML 2020; Oord et al., 2018).

    For every positive pair ``(a, p)``: ``-log(exp(z_ap) / (exp(z_ap) + Σ_n exp(z_an)))``,
    ``z = similarity / temperature``, ``n`` over the negatives of anchor ``a``. Math:
    :func:`pml.losses.functional.ntxent_loss`.

    Routes: pairs from labels read the negatives through the label mask (one masked
    log-sum-exp per anchor); a miner's tuple through its negative list (a segment log-sum-exp,
    duplicates count). The batch against itself is the distance's ``self_matrix``.

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

    anchor_batching = "reference"  # pml.losses.anchor_batched_backward

    def __init__(self, temperature: float = 0.07, **kwargs: Any) -> None:
        super().__init__(mat_based_loss=False, **kwargs)
        # fix: the reference gives NaN for 0 and a negated objective below 0
        check_real("temperature", temperature, min=0, min_open=True)
        self.temperature = temperature
        self.add_to_recordable_attributes(list_of_names=["temperature"], is_stat=False)

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
        return positive_pair_loss(
            self, self._losses, embeddings, labels, indices_tuple, ref_emb, ref_labels
        )

    def pair_based_loss(self, mat: Tensor, pairs: IndicesTuple) -> LossDict:
        """The loss dict from ``mat`` and a pair list ``(a1, p, a2, n)``: GenericPairLoss hook."""
        return listed_positive_pair_loss(self, self._losses, mat, pairs)

    def _losses(self, mat: Tensor, a1: Tensor, p: Tensor, neg: Negatives) -> Tensor:
        is_inverted = self.distance.is_inverted
        return ntxent_loss(mat, a1, p, neg, self.temperature, is_inverted=is_inverted)


class TupletMarginLoss(GenericPairLoss):
    """Tuplet margin loss (Yu & Tao, "Deep Metric Learning with Tuplet Margin Loss", ICCV 2019).

    For every positive pair ``(a, p)``:
    ``log(1 + Σ_n exp(scale·(cos θ_an - cos(θ_ap - margin))))``, ``n`` over the negatives of
    anchor ``a``. Math: :func:`pml.losses.functional.tuplet_margin_loss`.

    Routes: as :class:`NTXentLoss` (label mask or a miner's negative list).

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

    anchor_batching = "reference"  # pml.losses.anchor_batched_backward

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

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        indices_tuple: IndicesTuple | None,
        ref_emb: Tensor,
        ref_labels: Tensor | None,
    ) -> LossDict:
        return positive_pair_loss(
            self, self._losses, embeddings, labels, indices_tuple, ref_emb, ref_labels
        )

    def pair_based_loss(self, mat: Tensor, pairs: IndicesTuple) -> LossDict:
        """The loss dict from ``mat`` and a pair list ``(a1, p, a2, n)``: GenericPairLoss hook."""
        return listed_positive_pair_loss(self, self._losses, mat, pairs)

    def _losses(self, sim: Tensor, a1: Tensor, p: Tensor, neg: Negatives) -> Tensor:
        """``(P, 1)`` losses; the angle stats when collecting stats."""
        if self.collect_stats:
            self._set_angle_stats(sim, a1, p, neg)
        return tuplet_margin_loss(sim, a1, p, neg, self.margin, self.scale).unsqueeze(1)

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


def cell_masks(pairs: PairInputs, shape: torch.Size) -> tuple[Tensor, Tensor]:
    """Boolean ``(N, M)`` masks ``(pos, neg)`` of the pairs; duplicate pairs collapse into a cell.

    Raises:
        InvalidArgumentError: a miner's pair lists give a cell as both positive and negative
            (one device sync; pairs built from labels never overlap).
    """
    pos = torch.zeros(shape, dtype=torch.bool, device=pairs.a1.device)
    pos[pairs.a1, pairs.p] = True
    if isinstance(pairs.neg, Tensor):
        return pos, pairs.neg
    neg = torch.zeros_like(pos)
    neg[pairs.neg] = True
    if bool((pos & neg).any()):
        raise InvalidArgumentError(
            "indices_tuple: each pair should be either positive or negative, not both"
        )
    return pos, neg


class SupConLoss(GenericPairLoss):
    """Supervised contrastive loss (Khosla et al., NeurIPS 2020).

    Per query row: the mean over its positives of ``-log softmax`` of ``s / temperature`` taken
    over the row's positive and negative cells. Math: :func:`pml.losses.functional.supcon_loss`.

    Routes: pairs from labels give the masks directly; a miner's lists are scattered into
    masks (duplicates collapse; a cell both positive and negative is an error).

    Args:
        temperature: softmax temperature.
        **kwargs: ``distance`` (default ``CosineSimilarity()``; a distance is negated),
            ``reducer`` (default ``AvgNonZeroReducer``), ``collect_stats``,
            ``embedding_regularizer``, ``embedding_reg_weight``.

    Sub-loss ``loss``: ``(N,)``, indices ``arange(N)``, "element". Zero loss unless the batch
    has at least one positive and one negative pair.

    Example:
        >>> emb = torch.tensor([[1.0, 0.0], [0.9, 0.3], [0.0, 1.0], [0.2, 1.0]])
        >>> SupConLoss()(emb, torch.tensor([0, 0, 1, 1]))
        tensor(0.0057)
    """

    anchor_batching = "reference"  # pml.losses.anchor_batched_backward

    def __init__(self, temperature: float = 0.1, **kwargs: Any) -> None:
        super().__init__(mat_based_loss=True, **kwargs)
        # fix: the reference gives a constant 0 for temperature 0
        check_real("temperature", temperature, min=0, min_open=True)
        self.temperature = temperature
        self.add_to_recordable_attributes(name="temperature", is_stat=False)

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        indices_tuple: IndicesTuple | None,
        ref_emb: Tensor,
        ref_labels: Tensor | None,
    ) -> LossDict:
        pairs = pair_inputs(indices_tuple, labels, ref_labels, embeddings.device)
        # compat: zero unless there is a positive and a negative cell, and more than one pair
        if too_few_pairs(len(pairs.a1), pairs.num_neg):
            return self.zero_losses()
        mat = self.batch_acc_matrix(embeddings, ref_emb)
        pos_mask, neg_mask = cell_masks(pairs, mat.shape)
        is_inverted = self.distance.is_inverted
        losses = supcon_loss(mat, pos_mask, neg_mask, self.temperature, is_inverted=is_inverted)
        losses = nan_if_nonfinite(losses.to(embeddings.dtype), embeddings, ref_emb)
        rows = torch.arange(len(losses), device=losses.device)
        return {"loss": loss_entry(losses, rows, "element")}

    def get_default_reducer(self) -> BaseReducer:
        return AvgNonZeroReducer()

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()
