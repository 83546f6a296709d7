"""Batch miners: one positive and/or one negative per anchor (easy, semihard, hard)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from pml.core.dtypes import neg_inf, pos_inf
from pml.core.indices import PairsTuple, TripletsTuple, pos_neg_masks
from pml.core.validation import check_option
from pml.miners.functional._sample import capped_where, check_tuples_per_anchor

__all__ = ["batch_easy_hard_miner", "batch_hard_miner"]

Strategy = Literal["hard", "semihard", "easy", "all"]
STRATEGIES: tuple[str, ...] = ("hard", "semihard", "easy", "all")


def check_strategies(pos_strategy: str, neg_strategy: str) -> None:
    """Raise ``ValueError`` for an unknown or impossible strategy combination."""
    check_option("pos_strategy", pos_strategy, STRATEGIES)
    check_option("neg_strategy", neg_strategy, STRATEGIES)
    if pos_strategy == neg_strategy == "semihard":
        raise ValueError(
            "pos_strategy and neg_strategy cannot both be 'semihard': each is defined "
            "relative to the other side"
        )
    if {pos_strategy, neg_strategy} == {"semihard", "all"}:
        raise ValueError(
            "'semihard' cannot be combined with 'all' (pos_strategy="
            f"{pos_strategy!r}, neg_strategy={neg_strategy!r}): 'semihard' needs one chosen "
            "pair on the other side"
        )


def _restrict(mask: Tensor, mat: Tensor, allowed: tuple[float, float] | None) -> Tensor:
    if allowed is None:
        return mask
    lo, hi = allowed
    return mask & (mat >= lo) & (mat <= hi)


def _pick(mat: Tensor, cand: Tensor, largest: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Per row: (value, column, has-candidate) of the max (or min) over candidates.

    Ties go to the lowest column index.
    """
    if mat.shape[1] == 0:  # no reference rows: nothing to choose from
        cols = torch.zeros(mat.shape[0], dtype=torch.long, device=mat.device)
        return mat.new_zeros(mat.shape[0]), cols, cand.any(1)
    if largest:
        values, cols = torch.where(cand, mat, neg_inf(mat.dtype)).max(1)
    else:
        values, cols = torch.where(cand, mat, pos_inf(mat.dtype)).min(1)
    return values, cols, cand.any(1)


def batch_easy_hard_miner(
    mat: Tensor,
    labels: Tensor,
    ref_labels: Tensor | None = None,
    *,
    pos_strategy: Strategy | str = "easy",
    neg_strategy: Strategy | str = "semihard",
    allowed_pos_range: tuple[float, float] | None = None,
    allowed_neg_range: tuple[float, float] | None = None,
    is_inverted: bool = False,
    tuples_per_anchor: int | None = None,
) -> PairsTuple:
    """One positive and one negative per anchor, or all of one side (Xuan et al., WACV 2020).

    Positive ``"hard"``/``"semihard"`` = farthest, ``"easy"`` = closest; negative
    ``"hard"``/``"semihard"`` = closest, ``"easy"`` = farthest. A negative ``"semihard"``
    must be strictly farther than the chosen positive, a positive ``"semihard"`` strictly
    closer than the chosen negative. ``allowed_*_range = (lo, hi)`` restricts candidates to
    ``lo <= value <= hi`` (not applied to an ``"all"`` side).

    Args:
        mat: distance or similarity matrix, shape ``(N, M)``.
        labels: shape ``(N,)``.
        ref_labels: shape ``(M,)``; None or ``labels`` itself for the same set.
        pos_strategy: ``"hard"``, ``"semihard"``, ``"easy"`` or ``"all"``.
        neg_strategy: same choices.
        allowed_pos_range: inclusive value range of positive candidates.
        allowed_neg_range: inclusive value range of negative candidates.
        is_inverted: ``True`` when ``mat`` holds similarities.
        tuples_per_anchor: keep at most this many pairs per anchor on an ``"all"`` side, a
            uniformly random subset (torch's default generator of ``mat``'s device); a
            chosen side has one pair per anchor, which any cap ``>= 1`` keeps. None keeps
            all.

    Returns:
        ``(a1, p, a2, n)`` int64. Without ``"all"``: one pair per side for each anchor that
        has candidates on both sides (ascending anchors, ``a1 == a2``). An ``"all"`` side
        lists every pair of that side in row-major order.

    Raises:
        ValueError: unknown or incompatible strategies.

    Example:
        >>> d = torch.tensor([[0.0, 0.2, 0.9, 0.5], [0.2, 0.0, 0.4, 0.8],
        ...                   [0.9, 0.4, 0.0, 0.3], [0.5, 0.8, 0.3, 0.0]])
        >>> out = batch_easy_hard_miner(d, torch.tensor([0, 0, 1, 1]), pos_strategy="hard",
        ...                             neg_strategy="hard")
        >>> [t.tolist() for t in out]
        [[0, 1, 2, 3], [1, 0, 3, 2], [0, 1, 2, 3], [3, 2, 1, 0]]
    """
    check_strategies(pos_strategy, neg_strategy)
    tuples_per_anchor = check_tuples_per_anchor(tuples_per_anchor)
    pos, neg = pos_neg_masks(labels, ref_labels)
    pos, neg = pos.to(mat.device), neg.to(mat.device)
    # "farthest" is the max of a distance, the min of a similarity
    far = not is_inverted
    pos_cand = _restrict(pos, mat, allowed_pos_range)
    neg_cand = _restrict(neg, mat, allowed_neg_range)
    pos_far = pos_strategy in ("hard", "semihard")
    neg_far = neg_strategy == "easy"

    def pick_pos(cand: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return _pick(mat, cand, largest=far if pos_far else not far)

    def pick_neg(cand: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return _pick(mat, cand, largest=far if neg_far else not far)

    if neg_strategy == "semihard":
        pos_val, pos_col, pos_ok = pick_pos(pos_cand)
        pv = pos_val.unsqueeze(1)
        neg_val, neg_col, neg_ok = pick_neg(neg_cand & (mat < pv if is_inverted else mat > pv))
    elif pos_strategy == "semihard":
        neg_val, neg_col, neg_ok = pick_neg(neg_cand)
        nv = neg_val.unsqueeze(1)
        pos_val, pos_col, pos_ok = pick_pos(pos_cand & (mat > nv if is_inverted else mat < nv))
    else:
        if pos_strategy != "all":
            pos_val, pos_col, pos_ok = pick_pos(pos_cand)
        if neg_strategy != "all":
            neg_val, neg_col, neg_ok = pick_neg(neg_cand)

    if pos_strategy == "all" and neg_strategy == "all":
        a1, p = capped_where(pos, tuples_per_anchor)
        a2, n = capped_where(neg, tuples_per_anchor)
    elif pos_strategy == "all":
        a1, p = capped_where(pos, tuples_per_anchor)
        a2 = torch.where(neg_ok)[0]
        n = neg_col[a2]
    elif neg_strategy == "all":
        a1 = torch.where(pos_ok)[0]
        p = pos_col[a1]
        a2, n = capped_where(neg, tuples_per_anchor)
    else:
        a1 = torch.where(pos_ok & neg_ok)[0]
        p, a2, n = pos_col[a1], a1, neg_col[a1]
    return a1, p, a2, n


def batch_hard_miner(
    mat: Tensor,
    labels: Tensor,
    ref_labels: Tensor | None = None,
    *,
    allowed_pos_range: tuple[float, float] | None = None,
    allowed_neg_range: tuple[float, float] | None = None,
    is_inverted: bool = False,
    tuples_per_anchor: int | None = None,
) -> TripletsTuple:
    """Per anchor, the farthest positive and the closest negative (Hermans et al., 2017).

    ``tuples_per_anchor`` (None or an int ``>= 1``) is accepted for uniformity with the
    other miners and changes nothing: there is at most one triplet per anchor.

    Returns:
        ``(a, p, n)`` int64, one triplet per anchor having a positive and a negative.

    Example:
        >>> d = torch.tensor([[0.0, 0.2, 0.9], [0.2, 0.0, 0.4], [0.9, 0.4, 0.0]])
        >>> [t.tolist() for t in batch_hard_miner(d, torch.tensor([0, 0, 1]))]
        [[0, 1], [1, 0], [2, 2]]
    """
    a, p, _, n = batch_easy_hard_miner(
        mat,
        labels,
        ref_labels,
        pos_strategy="hard",
        neg_strategy="hard",
        allowed_pos_range=allowed_pos_range,
        allowed_neg_range=allowed_neg_range,
        is_inverted=is_inverted,
        tuples_per_anchor=tuples_per_anchor,
    )
    return a, p, n
