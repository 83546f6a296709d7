"""Pair-weighting losses over the full (N, M) matrix: MultiSimilarityLoss, CircleLoss.

Matrix losses: duplicate pairs collapse into cells, one value per query row.
Math: ``pml.losses.functional``.
"""

from __future__ import annotations

from typing import Any

import torch

from pml.distances import BaseDistance, CosineSimilarity, assert_distance_type
from pml.losses._arguments import check_real
from pml.losses._generic_pair import GenericPairLoss
from pml.losses._pairs import pair_masks, poison_nonfinite, row_entry
from pml.losses.functional._pair import circle_loss, multi_similarity_loss
from pml.reducers import AvgNonZeroReducer, BaseReducer, LossDict


class MultiSimilarityLoss(GenericPairLoss):
    """Multi-similarity loss (Wang, Han, Huang, Dong & Scott, CVPR 2019).

    Per query row: ``(1/alpha) log(1 + sum_pos exp(-alpha (s - base)))
    + (1/beta) log(1 + sum_neg exp(beta (s - base)))`` (exponents flip for distances). Pair
    mining is the job of ``MultiSimilarityMiner``.
    Math: :func:`pml.losses.functional.multi_similarity_loss`.

    Args:
        alpha: positive scale.
        beta: negative scale.
        base: similarity offset.
        **kwargs: ``distance`` (default ``CosineSimilarity()``), ``reducer`` (default
            ``MeanReducer``, over all rows), ``collect_stats``, ``embedding_regularizer``,
            ``embedding_reg_weight``.

    Sub-loss ``loss``: ``(N, 1)``, indices ``arange(N)``, "element".

    Example:
        >>> emb = torch.tensor([[1.0, 0.0], [0.9, 0.3], [0.0, 1.0], [0.2, 1.0]])
        >>> MultiSimilarityLoss()(emb, torch.tensor([0, 0, 1, 1]))
        tensor(0.1725)
    """

    anchor_batching = "reference"  # pml.losses.anchor_batched_backward

    def __init__(self, alpha: float = 2, beta: float = 50, base: float = 0.5, **kwargs: Any):
        super().__init__(mat_based_loss=True, **kwargs)
        # fix: alpha = 0 or beta = 0 divides by zero at forward; a negative one flips the loss
        check_real("alpha", alpha, min=0, min_open=True)
        check_real("beta", beta, min=0, min_open=True)
        check_real("base", base)
        self.alpha = alpha
        self.beta = beta
        self.base = base
        self.add_to_recordable_attributes(list_of_names=["alpha", "beta", "base"], is_stat=False)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels) -> LossDict:  # type: ignore[no-untyped-def]
        masks = pair_masks(indices_tuple, labels, ref_labels, embeddings, ref_emb)
        if masks is None:
            return self.zero_losses()
        mat = self.batch_matrix(embeddings, ref_emb)
        losses = multi_similarity_loss(
            mat, *masks, self.alpha, self.beta, self.base, is_inverted=self.distance.is_inverted
        )
        return poison_nonfinite(row_entry(losses), embeddings, ref_emb)

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()


class CircleLoss(GenericPairLoss):
    """Circle loss (Sun, Cheng, Zhang, Zhang, Zheng, Wang & Wei, CVPR 2020).

    Self-paced weights ``alpha_p = relu(1 + m - s)``, ``alpha_n = relu(s + m)`` (no gradient)
    with optima ``1 - m`` / ``m``; per query row
    ``softplus(LSE_pos(-gamma alpha_p (s - (1 - m))) + LSE_neg(gamma alpha_n (s - m)))``, 0 for
    rows without a positive or without a negative. Math: :func:`pml.losses.functional.circle_loss`.

    Args:
        m: relaxation margin.
        gamma: scale.
        **kwargs: ``distance`` (``CosineSimilarity()``, the only one accepted), ``reducer``
            (default ``AvgNonZeroReducer``), ``collect_stats``, ``embedding_regularizer``,
            ``embedding_reg_weight``.

    Attributes ``op = 1 + m``, ``on = -m``, ``delta_p = 1 - m``, ``delta_n = m``.
    Sub-loss ``loss``: ``(N, 1)``, indices ``arange(N)``, "element".

    Raises:
        InvalidArgumentError: (a ValueError and an AssertionError) the distance is not a
            ``CosineSimilarity``.

    Example:
        >>> emb = torch.tensor([[1.0, 0.0], [0.9, 0.3], [0.0, 1.0], [0.2, 1.0]])
        >>> CircleLoss()(emb, torch.tensor([0, 0, 1, 1]))
        tensor(0.0015)
    """

    anchor_batching = "reference"  # pml.losses.anchor_batched_backward

    def __init__(self, m: float = 0.4, gamma: float = 80, **kwargs: Any) -> None:
        super().__init__(mat_based_loss=True, **kwargs)
        check_real("m", m)
        check_real("gamma", gamma, min=0, min_open=True)  # fix: 0 gives a constant loss
        self.m = m
        self.gamma = gamma
        self.soft_plus = torch.nn.Softplus(beta=1)
        self.op = 1 + self.m
        self.on = -self.m
        self.delta_p = 1 - self.m
        self.delta_n = self.m
        self.add_to_recordable_attributes(
            list_of_names=["m", "gamma", "op", "on", "delta_p", "delta_n"], is_stat=False
        )
        assert_distance_type(self, CosineSimilarity)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels) -> LossDict:  # type: ignore[no-untyped-def]
        masks = pair_masks(indices_tuple, labels, ref_labels, embeddings, ref_emb)
        if masks is None:
            return self.zero_losses()
        mat = self.batch_matrix(embeddings, ref_emb)
        losses = circle_loss(mat, *masks, self.m, self.gamma)
        return poison_nonfinite(row_entry(losses), embeddings, ref_emb)

    def get_default_reducer(self) -> BaseReducer:
        return AvgNonZeroReducer()

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()
