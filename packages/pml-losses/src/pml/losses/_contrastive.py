"""Contrastive family: ContrastiveLoss, SignalToNoiseRatioContrastiveLoss, IntraPairVarianceLoss.

Pair-list losses (every listed pair counts, duplicates included) with one sub-loss for the
positive pairs and one for the negative pairs. Math: ``pml.losses.functional``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from pml.core.indices import IndicesTuple
from pml.distances import BaseDistance, CosineSimilarity, SNRDistance, assert_distance_type
from pml.losses._arguments import check_real
from pml.losses._base import loss_entry
from pml.losses._generic_pair import GenericPairLoss
from pml.losses._pair_inputs import LabelMasksMixin, threshold_bounds
from pml.losses.functional._pair import (
    contrastive_loss,
    intra_pair_variance_loss,
    masked_hinge_mean,
)
from pml.reducers import AvgNonZeroReducer, BaseReducer, LossDict


def _pair_entries(
    pos_losses: Tensor | int, neg_losses: Tensor | int, indices_tuple: IndicesTuple
) -> LossDict:
    a1, p, a2, n = indices_tuple
    return {
        "pos_loss": loss_entry(pos_losses, (a1, p), "pos_pair"),
        "neg_loss": loss_entry(neg_losses, (a2, n), "neg_pair"),
    }


def _empty_like_other(pair: Tensor | list, other: Tensor | list) -> Tensor:
    """``pair`` as a tensor: an empty list becomes an empty tensor like ``other``."""
    if isinstance(pair, Tensor):
        return pair
    return other.new_empty(0)  # type: ignore[union-attr]


def _learnable(*values: Any) -> bool:
    return any(isinstance(v, Tensor) and v.requires_grad for v in values)


class ContrastiveLoss(LabelMasksMixin, GenericPairLoss):
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

    Example:
        >>> emb = torch.eye(4)[[0, 0, 1, 1]] + 0.1 * torch.eye(4)
        >>> ContrastiveLoss()(emb, torch.tensor([0, 0, 1, 1]))
        tensor(0.1202)
    """

    def __init__(self, pos_margin: float = 0, neg_margin: float = 1, **kwargs: Any) -> None:
        super().__init__(mat_based_loss=False, **kwargs)
        check_real("pos_margin", pos_margin)
        check_real("neg_margin", neg_margin)
        self.pos_margin = pos_margin
        self.neg_margin = neg_margin
        self.add_to_recordable_attributes(list_of_names=["pos_margin", "neg_margin"], is_stat=False)

    def _dense_pair_losses(
        self, pos_pair: Tensor, mat: Tensor, neg_mask: Tensor, neg_reducer: BaseReducer
    ) -> tuple[Tensor, Tensor] | None:
        """Positive-pair losses ``(P,)`` and the reduced negative part (every cell of the mask).

        None (per-pair path) when a margin is a tensor that requires grad.
        """
        if _learnable(self.pos_margin, self.neg_margin):
            return None
        inverted = self.distance.is_inverted
        pos_losses, _ = contrastive_loss(
            pos_pair, pos_pair[:0], self.pos_margin, self.neg_margin, is_inverted=inverted
        )
        low, high = threshold_bounds(neg_reducer)
        # negative losses relu(neg_margin - d) (distance) or relu(s - neg_margin) (similarity)
        neg_value = masked_hinge_mean(
            mat, neg_mask, offset=self.neg_margin, sign=1 if inverted else -1, low=low, high=high
        )
        return pos_losses, neg_value

    def _compute_loss(  # type: ignore[override]
        self, pos_pair: Tensor | list, neg_pair: Tensor | list, indices_tuple: IndicesTuple
    ) -> LossDict:
        pos_losses, neg_losses = contrastive_loss(
            _empty_like_other(pos_pair, neg_pair),
            _empty_like_other(neg_pair, pos_pair),
            self.pos_margin,
            self.neg_margin,
            is_inverted=self.distance.is_inverted,
        )
        return _pair_entries(
            pos_losses if len(pos_pair) > 0 else 0,
            neg_losses if len(neg_pair) > 0 else 0,
            indices_tuple,
        )

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


class IntraPairVarianceLoss(LabelMasksMixin, GenericPairLoss):
    """Intra-pair variance loss (Yu & Tao, "Deep Metric Learning with Tuplet Margin Loss", 2019).

    Pushes each positive (negative) pair's value towards the mean positive (negative) value
    within a relative slack. Math: :func:`pml.losses.functional.intra_pair_variance_loss`.

    Args:
        pos_eps: relative slack around the mean positive value.
        neg_eps: relative slack around the mean negative value.
        **kwargs: ``distance`` (default ``CosineSimilarity()``), ``reducer`` (default
            ``MeanReducer`` for each sub-loss, summed), ``collect_stats``,
            ``embedding_regularizer``, ``embedding_reg_weight``.

    Sub-losses: ``pos_loss`` ``(P,)`` and ``neg_loss`` ``(Nn,)`` as in :class:`ContrastiveLoss`.

    Example:
        >>> emb = torch.tensor([[1.0, 0.0], [0.9, 0.3], [0.8, 0.7], [0.0, 1.0]])
        >>> IntraPairVarianceLoss()(emb, torch.tensor([0, 0, 0, 1]))
        tensor(0.0406)
    """

    def __init__(self, pos_eps: float = 0.01, neg_eps: float = 0.01, **kwargs: Any) -> None:
        super().__init__(mat_based_loss=False, **kwargs)
        check_real("pos_eps", pos_eps)
        check_real("neg_eps", neg_eps)
        self.pos_eps = pos_eps
        self.neg_eps = neg_eps
        self.add_to_recordable_attributes(list_of_names=["pos_eps", "neg_eps"], is_stat=False)

    def _dense_pair_losses(
        self, pos_pair: Tensor, mat: Tensor, neg_mask: Tensor, neg_reducer: BaseReducer
    ) -> tuple[Tensor, Tensor] | None:
        """Positive-pair losses ``(P,)`` and the reduced negative part (every cell of the mask).

        None (per-pair path) when an epsilon is a tensor that requires grad.
        """
        if _learnable(self.pos_eps, self.neg_eps):
            return None
        inverted = self.distance.is_inverted
        pos_losses, _ = intra_pair_variance_loss(
            pos_pair, pos_pair[:0], self.pos_eps, self.neg_eps, is_inverted=inverted
        )
        low, high = threshold_bounds(neg_reducer)
        # similarity: relu(s - (1 + neg_eps) mu_n)^2; distance: relu((1 - neg_eps) mu_n - d)^2
        neg_value = masked_hinge_mean(
            mat,
            neg_mask,
            sign=1 if inverted else -1,
            power=2,
            center_coef=1 + self.neg_eps if inverted else 1 - self.neg_eps,
            low=low,
            high=high,
        )
        return pos_losses, neg_value

    def _compute_loss(  # type: ignore[override]
        self, pos_pair: Tensor | list, neg_pair: Tensor | list, indices_tuple: IndicesTuple
    ) -> LossDict:
        pos_losses, neg_losses = intra_pair_variance_loss(
            _empty_like_other(pos_pair, neg_pair),
            _empty_like_other(neg_pair, pos_pair),
            self.pos_eps,
            self.neg_eps,
            is_inverted=self.distance.is_inverted,
        )
        return _pair_entries(
            pos_losses if len(pos_pair) > 0 else 0,
            neg_losses if len(neg_pair) > 0 else 0,
            indices_tuple,
        )

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()

    def _sub_loss_names(self) -> list[str]:
        return ["pos_loss", "neg_loss"]
