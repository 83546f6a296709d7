"""Contrastive family: ContrastiveLoss, SignalToNoiseRatioContrastiveLoss, IntraPairVarianceLoss.

Pair-list losses (every listed pair counts, duplicates included) with one sub-loss for the
positive pairs and one for the negative pairs. Each states its formula once, as two hinges
(``pml.losses.functional._pair``), which both routes of :func:`hinge_pair_loss` use.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from pml.core.indices import IndicesTuple
from pml.distances import BaseDistance, CosineSimilarity, SNRDistance, assert_distance_type
from pml.losses._generic_pair import GenericPairLoss
from pml.losses._pairs import (
    listed_negatives,
    masked_negatives,
    pair_entries,
    pair_inputs,
    poison_nonfinite,
    set_hyperparameters,
    too_few_pairs,
)
from pml.losses.functional._pair import contrastive_hinges, intra_pair_variance_hinges
from pml.losses.functional._pair_ops import Hinge, pair_hinge_losses
from pml.reducers import AvgNonZeroReducer, BaseReducer, LossDict


def hinge_pair_loss(
    loss: GenericPairLoss,
    hinges: tuple[Hinge, Hinge],
    embeddings: Tensor,
    labels: Tensor | None,
    indices_tuple: IndicesTuple | None,
    ref_emb: Tensor,
    ref_labels: Tensor | None,
) -> LossDict:
    """``compute_loss`` of a hinge pair loss: pairs -> matrix -> ``hinges`` -> two entries.

    Routes: the positive pairs are always listed (per-pair losses, "pos_pair"). The negative
    pairs are handed to the reducer as sums over a boolean mask when its ``sums_plan`` for
    ``neg_loss`` allows (a plain mean/sum/threshold reducer) and no hinge parameter is
    learnable, and they come from labels or from a tuple listing most cells once
    (CrossBatchMemory's all pairs); otherwise every negative pair is listed ("neg_pair").
    """
    pairs = pair_inputs(indices_tuple, labels, ref_labels, embeddings.device)
    if too_few_pairs(len(pairs.a1), pairs.num_neg, need_both=False):
        return loss.zero_losses()
    plan = None if hinges[1].is_learnable() else loss.reducer_sums_plan("neg_loss")
    if plan is None:
        pairs = listed_negatives(pairs)
    else:
        pairs = masked_negatives(pairs, len(embeddings), len(ref_emb))
    bounds = (None, None) if plan is None else (plan.low, plan.high)
    mat = loss.batch_matrix(embeddings, ref_emb)
    pos, neg = pair_hinge_losses(mat, pairs.a1, pairs.p, pairs.neg, hinges, *bounds)
    return poison_nonfinite(pair_entries(pos, neg, pairs), embeddings, ref_emb)


class ContrastiveLoss(GenericPairLoss):
    """Contrastive loss (Hadsell, Chopra & LeCun, CVPR 2006).

    Positive pairs farther than ``pos_margin`` and negative pairs closer than ``neg_margin``
    are penalised linearly; with a similarity the margins act the other way (sensible values
    are then ``pos_margin=1, neg_margin=0``). Math: :func:`pml.losses.functional.contrastive_loss`.

    Args:
        pos_margin: distance below which positive pairs give no loss.
        neg_margin: distance above which negative pairs give no loss.
        **kwargs: ``distance`` (default ``LpDistance()``), ``reducer`` (default
            ``AvgNonZeroReducer`` for each sub-loss, summed), ``collect_stats``,
            ``embedding_regularizer``, ``embedding_reg_weight``.

    Sub-losses: ``pos_loss`` ``(P,)`` ("pos_pair", indices ``(a1, p)``) and ``neg_loss``
    ``(Nn,)`` ("neg_pair", indices ``(a2, n)``); a side without pairs is the zero loss.

    Routes (see :func:`hinge_pair_loss`): negatives from labels (or CrossBatchMemory's long
    list) go to a mean/sum/threshold reducer as sums over the negative mask, never listed;
    other reducers, learnable margins and short miner lists get every per-pair loss.

    Example:
        >>> emb = torch.eye(4)[[0, 0, 1, 1]] + 0.1 * torch.eye(4)
        >>> ContrastiveLoss()(emb, torch.tensor([0, 0, 1, 1]))
        tensor(0.1202)
    """

    anchor_batching = "reference"  # pml.losses.anchor_batched_backward

    def __init__(self, pos_margin: float = 0, neg_margin: float = 1, **kwargs: Any) -> None:
        super().__init__(mat_based_loss=False, **kwargs)
        set_hyperparameters(self, pos_margin=pos_margin, neg_margin=neg_margin)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels) -> LossDict:  # type: ignore[no-untyped-def]
        hinges = contrastive_hinges(self.pos_margin, self.neg_margin, self.distance.is_inverted)
        return hinge_pair_loss(self, hinges, embeddings, labels, indices_tuple, ref_emb, ref_labels)

    def get_default_reducer(self) -> BaseReducer:
        return AvgNonZeroReducer()

    def _sub_loss_names(self) -> list[str]:
        return ["pos_loss", "neg_loss"]


class SignalToNoiseRatioContrastiveLoss(ContrastiveLoss):
    """Contrastive loss on the signal-to-noise-ratio distance (Yuan et al., CVPR 2019).

    Same arguments, formula and sub-losses as :class:`ContrastiveLoss`; the distance is
    ``SNRDistance()`` and must stay one.

    Raises:
        InvalidArgumentError: (a ValueError and an AssertionError) the distance is not an
            ``SNRDistance``.

    Example:
        >>> emb = torch.eye(4)[[0, 0, 1, 1]] + 0.1 * torch.eye(4)
        >>> SignalToNoiseRatioContrastiveLoss()(emb, torch.tensor([0, 0, 1, 1]))
        tensor(0.0194)
    """

    def __init__(self, pos_margin: float = 0, neg_margin: float = 1, **kwargs: Any) -> None:
        super().__init__(pos_margin=pos_margin, neg_margin=neg_margin, **kwargs)
        assert_distance_type(self, SNRDistance)

    def get_default_distance(self) -> BaseDistance:
        return SNRDistance()


class IntraPairVarianceLoss(GenericPairLoss):
    """Intra-pair variance loss (Yu & Tao, "Deep Metric Learning with Tuplet Margin Loss", 2019).

    Pushes each positive (negative) pair's value towards the mean positive (negative) value
    within a relative slack. Math: :func:`pml.losses.functional.intra_pair_variance_loss`.

    Args:
        pos_eps: relative slack around the mean positive value.
        neg_eps: relative slack around the mean negative value.
        **kwargs: ``distance`` (default ``CosineSimilarity()``), ``reducer`` (default
            ``MeanReducer`` for each sub-loss, summed), ``collect_stats``,
            ``embedding_regularizer``, ``embedding_reg_weight``.

    Sub-losses and routes as in :class:`ContrastiveLoss`; the negatives' mean (the centre
    of their hinge) is taken over the mask or the list.

    Example:
        >>> emb = torch.tensor([[1.0, 0.0], [0.9, 0.3], [0.8, 0.7], [0.0, 1.0]])
        >>> IntraPairVarianceLoss()(emb, torch.tensor([0, 0, 0, 1]))
        tensor(0.0406)
    """

    anchor_batching_obstacle = "its hinge centres are means over every pair of the batch"

    def __init__(self, pos_eps: float = 0.01, neg_eps: float = 0.01, **kwargs: Any) -> None:
        super().__init__(mat_based_loss=False, **kwargs)
        set_hyperparameters(self, pos_eps=pos_eps, neg_eps=neg_eps)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels) -> LossDict:  # type: ignore[no-untyped-def]
        inverted = self.distance.is_inverted
        hinges = intra_pair_variance_hinges(self.pos_eps, self.neg_eps, inverted)
        return hinge_pair_loss(self, hinges, embeddings, labels, indices_tuple, ref_emb, ref_labels)

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()

    def _sub_loss_names(self) -> list[str]:
        return ["pos_loss", "neg_loss"]
