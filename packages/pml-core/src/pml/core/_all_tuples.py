"""Index tuple types and the exhaustive builders: all pairs, all triplets, pairs to triplets.

Re-exported by :mod:`pml.core.indices`. Nothing here materialises an ``N x M x M`` tensor:
triplets are enumerated per anchor (memory proportional to the number of triplets).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeAlias

import torch
from torch import Tensor

from pml.core._label_groups import pos_neg_masks

__all__ = [
    "IndicesTuple",
    "PairsTuple",
    "TripletsTuple",
    "get_all_pairs_indices",
    "get_all_triplets_indices",
    "iter_all_triplets_indices",
    "pairs_to_triplets",
]

PairsTuple: TypeAlias = tuple[Tensor, Tensor, Tensor, Tensor]
TripletsTuple: TypeAlias = tuple[Tensor, Tensor, Tensor]
IndicesTuple: TypeAlias = PairsTuple | TripletsTuple


def empty_triplets(device: torch.device) -> TripletsTuple:
    """Three empty int64 tensors on ``device``."""
    e = torch.empty(0, dtype=torch.long, device=device)
    return e, e.clone(), e.clone()


def get_all_pairs_indices(labels: Tensor, ref_labels: Tensor | None = None) -> PairsTuple:
    """All positive and negative pairs in row-major order.

    Example:
        >>> [t.tolist() for t in get_all_pairs_indices(torch.tensor([0, 0, 1]))]
        [[0, 1], [1, 0], [0, 1, 2, 2], [2, 2, 0, 1]]
    """
    pos, neg = pos_neg_masks(labels, ref_labels)
    a1, p = torch.where(pos)
    a2, n = torch.where(neg)
    return a1, p, a2, n


def _group_offsets(counts: Tensor) -> Tensor:
    """Start offset of each group given group sizes (exclusive cumulative sum)."""
    return torch.cumsum(counts, 0) - counts


def _expand_by_anchor(
    a1: Tensor, p: Tensor, a2_sorted: Tensor, n_sorted: Tensor, num_anchors: int
) -> TripletsTuple:
    """Pair every positive pair with every negative pair of the same anchor.

    ``a2_sorted``/``n_sorted`` must be grouped by anchor (stable within an anchor). Output
    order: positive-pair order major, negative order (within the anchor) minor.
    """
    neg_counts = torch.bincount(a2_sorted, minlength=num_anchors)
    neg_start = _group_offsets(neg_counts)
    reps = neg_counts[a1]
    total = int(reps.sum())
    if total == 0:
        return empty_triplets(a1.device)
    a = torch.repeat_interleave(a1, reps, output_size=total)
    pp = torch.repeat_interleave(p, reps, output_size=total)
    first = torch.repeat_interleave(_group_offsets(reps), reps, output_size=total)
    k = torch.arange(total, device=a1.device) - first
    nn_ = n_sorted[neg_start[a] + k]
    return a, pp, nn_


def get_all_triplets_indices(labels: Tensor, ref_labels: Tensor | None = None) -> TripletsTuple:
    """All ``(a, p, n)`` with ``a, p`` positive and ``a, n`` negative, lexicographic order.

    Memory is proportional to the number of triplets (no ``N x M x M`` mask).

    Example:
        >>> [t.tolist() for t in get_all_triplets_indices(torch.tensor([0, 0, 1]))]
        [[0, 1], [1, 0], [2, 2]]
    """
    a1, p, a2, n = get_all_pairs_indices(labels, ref_labels)
    return _expand_by_anchor(a1, p, a2, n, len(labels))


def iter_all_triplets_indices(
    labels: Tensor, ref_labels: Tensor | None = None, *, max_triplets: int = 1 << 22
) -> Iterator[TripletsTuple]:
    """Yield all triplets, in the order of :func:`get_all_triplets_indices`, in chunks.

    Each chunk covers whole anchors and holds at most ``max_triplets`` triplets (an anchor
    with more triplets than that is yielded alone). Memory per chunk is bounded, so losses
    can work through ``N = 10^4`` batches whose full triplet list would not fit.

    Args:
        labels: query labels, shape ``(N,)``.
        ref_labels: reference labels, shape ``(M,)``; ``None`` (or ``labels`` itself) for the
            same set.
        max_triplets: upper bound of triplets per chunk.

    Yields:
        ``(a, p, n)`` int64 tensors.
    """
    if max_triplets < 1:
        raise ValueError(f"max_triplets must be >= 1; got {max_triplets}")
    pos, neg = pos_neg_masks(labels, ref_labels)
    per_anchor = (pos.sum(1) * neg.sum(1)).tolist()
    start = 0
    while start < len(per_anchor):
        stop, total = start, 0
        while stop < len(per_anchor) and (
            stop == start or total + per_anchor[stop] <= max_triplets
        ):
            total += per_anchor[stop]
            stop += 1
        if total > 0:
            a1, p = torch.where(pos[start:stop])
            a2, n = torch.where(neg[start:stop])
            a, pp, nn_ = _expand_by_anchor(a1, p, a2, n, stop - start)
            yield a + start, pp, nn_
        start = stop


def pairs_to_triplets(pairs: PairsTuple) -> TripletsTuple:
    """Every positive pair joined with every negative pair that shares its anchor.

    Order: positive-pair order major, negative-pair order minor (the reference's order),
    computed by grouping negative pairs by anchor (no ``P x Nn`` matrix).

    Example:
        >>> a1, p = torch.tensor([0, 2, 0]), torch.tensor([1, 3, 1])
        >>> a2, n = torch.tensor([0, 0, 2, 5]), torch.tensor([2, 3, 4, 0])
        >>> [t.tolist() for t in pairs_to_triplets((a1, p, a2, n))]
        [[0, 0, 2, 0, 0], [1, 1, 3, 1, 1], [2, 3, 4, 2, 3]]
    """
    a1, p, a2, n = (t.long() for t in pairs)
    if len(a1) == 0 or len(a2) == 0:
        return empty_triplets(a1.device)
    num_anchors = int(torch.maximum(a1.max(), a2.max())) + 1
    order = torch.argsort(a2, stable=True)
    return _expand_by_anchor(a1, p, a2[order], n[order], num_anchors)
