"""Batch miners: BatchEasyHardMiner and BatchHardMiner."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from pml.core.indices import IndicesTuple, PairsTuple, TripletsTuple
from pml.core.validation import check_real
from pml.miners import functional as MF
from pml.miners._base import BaseMiner
from pml.miners.functional._batch import check_strategies

Strategy = Literal["hard", "semihard", "easy", "all"]


class BatchEasyHardMiner(BaseMiner):
    """One positive and one negative per anchor, by strategy (Xuan et al., WACV 2020).

    Math: `functional.batch_easy_hard_miner`. Always returns pairs ``(a1, p, a2, n)``.

    Args:
        pos_strategy: ``"easy"`` (closest positive), ``"hard"`` (farthest), ``"semihard"``
            (farthest among those closer than the chosen negative) or ``"all"``.
        neg_strategy: ``"semihard"`` (closest among those farther than the chosen positive),
            ``"hard"`` (closest), ``"easy"`` (farthest) or ``"all"``.
        allowed_pos_range: ``(lo, hi)``: only positives with ``lo <= value <= hi``.
        allowed_neg_range: ``(lo, hi)``: only negatives with ``lo <= value <= hi``.
        **kwargs: ``distance``, ``collect_stats``, ``tuples_per_anchor``: at most that many
            pairs per anchor on an ``"all"`` side (a uniformly random subset of its pairs);
            a chosen side has one pair per anchor, which any cap keeps.

    Raises:
        ValueError: an unknown strategy, both ``"semihard"``, or ``"semihard"`` with ``"all"``.

    Example:
        >>> emb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.2, 0.8]])
        >>> a1, p, a2, n = BatchEasyHardMiner()(emb, torch.tensor([0, 0, 1, 1]))
        >>> a1.tolist(), p.tolist(), a2.tolist(), n.tolist()
        ([0, 1, 2, 3], [1, 0, 3, 2], [0, 1, 2, 3], [3, 3, 1, 1])
    """

    HARD = "hard"
    SEMIHARD = "semihard"
    EASY = "easy"
    ALL = "all"
    all_batch_mining_strategies: ClassVar[list[str]] = [HARD, SEMIHARD, EASY, ALL]
    handles_tuples_per_anchor = True
    accepts_mat = True  # mines from batch_matrix (forward(..., mat=))

    def __init__(
        self,
        pos_strategy: Strategy | str = EASY,
        neg_strategy: Strategy | str = SEMIHARD,
        allowed_pos_range: tuple[float, float] | None = None,
        allowed_neg_range: tuple[float, float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_strategies(pos_strategy, neg_strategy)
        for name, value in (
            ("allowed_pos_range", allowed_pos_range),
            ("allowed_neg_range", allowed_neg_range),
        ):
            if value is not None and len(value) != 2:
                raise ValueError(f"{name} must be None or a pair (low, high); got {value!r}")
            for bound in value or ():
                check_real(name, bound)  # fix: a non-number failed at the first forward
        self.pos_strategy = pos_strategy
        self.neg_strategy = neg_strategy
        self.allowed_pos_range = allowed_pos_range
        self.allowed_neg_range = allowed_neg_range
        self.add_to_recordable_attributes(
            list_of_names=[
                "easiest_triplet",
                "hardest_triplet",
                "easiest_pos_pair",
                "hardest_pos_pair",
                "easiest_neg_pair",
                "hardest_neg_pair",
            ],
            is_stat=True,
        )

    def mine(
        self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor, ref_labels: Tensor
    ) -> IndicesTuple:
        mat = self.batch_matrix(embeddings, ref_emb)
        pairs = MF.batch_easy_hard_miner(
            mat,
            labels,
            ref_labels,
            pos_strategy=self.pos_strategy,
            neg_strategy=self.neg_strategy,
            allowed_pos_range=self.allowed_pos_range,
            allowed_neg_range=self.allowed_neg_range,
            is_inverted=self.distance.is_inverted,
            tuples_per_anchor=self.tuples_per_anchor,
        )
        if self.collect_stats:
            self._set_pair_stats(mat, pairs)
        return pairs

    def _set_pair_stats(self, mat: Tensor, pairs: PairsTuple) -> None:
        a1, p, a2, n = pairs
        pos_values, neg_values = mat[a1, p], mat[a2, n]
        closest, farthest = (torch.max, torch.min) if self.distance.is_inverted else (
            torch.min, torch.max
        )  # fmt: skip
        stats = {}
        if self.ALL not in (self.pos_strategy, self.neg_strategy) and len(a1):
            gaps = pos_values - neg_values
            stats["easiest_triplet"] = closest(gaps)
            stats["hardest_triplet"] = farthest(gaps)
        if len(pos_values):
            stats["easiest_pos_pair"] = closest(pos_values)
            stats["hardest_pos_pair"] = farthest(pos_values)
        if len(neg_values):
            stats["easiest_neg_pair"] = farthest(neg_values)
            stats["hardest_neg_pair"] = closest(neg_values)
        self.set_stats(**stats)


class BatchHardMiner(BatchEasyHardMiner):
    """Batch-hard triplets (Hermans et al., 2017): farthest positive, closest negative.

    ``BatchEasyHardMiner(pos_strategy="hard", neg_strategy="hard")`` returning triplets
    ``(a, p, n)``: one per anchor that has a positive and a negative.

    Args:
        **kwargs: ``allowed_pos_range``, ``allowed_neg_range``, ``distance``,
            ``collect_stats`` (passing a strategy is a ``TypeError``), ``tuples_per_anchor``
            (None or an int ``>= 1``: accepted and changes nothing, there is at most one
            triplet per anchor).

    Example:
        >>> emb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.2, 0.8]])
        >>> a, p, n = BatchHardMiner()(emb, torch.tensor([0, 0, 1, 1]))
        >>> a.tolist(), p.tolist(), n.tolist()
        ([0, 1, 2, 3], [1, 0, 3, 2], [3, 3, 1, 1])
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(pos_strategy=self.HARD, neg_strategy=self.HARD, **kwargs)

    def mine(
        self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor, ref_labels: Tensor
    ) -> TripletsTuple:
        a, p, _, n = super().mine(embeddings, labels, ref_emb, ref_labels)
        return a, p, n
