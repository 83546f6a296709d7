"""Index tuples: pairs and triplets built from labels, and conversions between them.

Formats (see the reference's conventions):

* pairs: a 4-tuple ``(a1, p, a2, n)``; ``(a1[i], p[i])`` is a positive pair and
  ``(a2[j], n[j])`` a negative pair;
* triplets: a 3-tuple ``(a, p, n)`` of equal lengths.

Anchors index the query ``embeddings``; ``p`` and ``n`` index the reference set (the query
itself when no reference is given). All outputs are int64 tensors on the labels' device.

"Same set" is decided by object identity: the diagonal (self pairs) is removed only when
``ref_labels is None`` or ``ref_labels is labels``. An equal copy keeps ``(i, i)`` pairs.

Nothing here materialises an ``N x M x M`` tensor: all triplets are enumerated per anchor
(memory proportional to the number of triplets), pairs-to-triplets conversion groups by
anchor instead of comparing every positive pair with every negative pair, and
:func:`iter_all_triplets_indices` yields all triplets in bounded chunks.

Where things live: label grouping and masks in ``_label_groups``, the tuple types and the
exhaustive builders in ``_all_tuples``, random triplets in ``_random_triplets``; the
conversions and tuple helpers below.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from pml.core._all_tuples import (
    IndicesTuple,
    PairsTuple,
    TripletsTuple,
    get_all_pairs_indices,
    get_all_triplets_indices,
    iter_all_triplets_indices,
    pairs_to_triplets,
)
from pml.core._label_groups import (
    LabelGroups,
    get_matches_and_diffs,
    is_same_set,
    label_groups,
    pos_neg_masks,
    same_label_cells,
    sortable_labels,
)
from pml.core._random_triplets import get_random_triplet_indices

__all__ = [
    "IndicesTuple",
    "LabelGroups",
    "PairsTuple",
    "TripletsTuple",
    "concatenate_indices_tuples",
    "convert_to_pairs",
    "convert_to_pos_pairs_with_unique_labels",
    "convert_to_triplets",
    "convert_to_weights",
    "get_all_pairs_indices",
    "get_all_triplets_indices",
    "get_anchors",
    "get_matches_and_diffs",
    "get_random_triplet_indices",
    "is_same_set",
    "iter_all_triplets_indices",
    "label_groups",
    "matched_size_indices",
    "neg_pairs_from_tuple",
    "pairs_to_triplets",
    "pos_neg_masks",
    "pos_pairs_from_tuple",
    "remove_self_comparisons",
    "repeat_to_match_size",
    "same_label_cells",
    "shift_indices_tuple",
    "sortable_labels",
]


def convert_to_pairs(
    indices_tuple: IndicesTuple | None, labels: Tensor | None, ref_labels: Tensor | None = None
) -> PairsTuple:
    """Pairs from a miner output: None -> all pairs; triplets -> ``(a, p, a, n)``.

    Duplicates are kept (a pair in several triplets appears several times).
    """
    if indices_tuple is None:
        if labels is None:
            raise ValueError("labels must be given when indices_tuple is None")
        return get_all_pairs_indices(labels, ref_labels)
    if len(indices_tuple) == 4:
        return indices_tuple  # type: ignore[return-value]
    if len(indices_tuple) == 3:
        a, p, n = indices_tuple
        return a, p, a, n
    raise TypeError(f"indices_tuple must have 3 or 4 entries; got {len(indices_tuple)}")


def convert_to_triplets(
    indices_tuple: IndicesTuple | None,
    labels: Tensor | None,
    ref_labels: Tensor | None = None,
    t_per_anchor: int | Literal["all"] | None = 100,
) -> TripletsTuple:
    """Triplets from a miner output.

    None -> all triplets (``t_per_anchor == "all"``) or random ones (an integer); pairs ->
    :func:`pairs_to_triplets`; triplets are returned unchanged.
    """
    if indices_tuple is None:
        if labels is None:
            raise ValueError("labels must be given when indices_tuple is None")
        if t_per_anchor == "all":
            return get_all_triplets_indices(labels, ref_labels)
        return get_random_triplet_indices(labels, ref_labels, t_per_anchor=t_per_anchor)  # type: ignore[arg-type]
    if len(indices_tuple) == 3:
        return indices_tuple  # type: ignore[return-value]
    if len(indices_tuple) == 4:
        return pairs_to_triplets(indices_tuple)  # type: ignore[arg-type]
    raise TypeError(f"indices_tuple must have 3 or 4 entries; got {len(indices_tuple)}")


def convert_to_weights(
    indices_tuple: IndicesTuple | None,
    labels: Tensor,
    dtype: torch.dtype,
    using_ref: bool = False,
) -> Tensor:
    """Per-sample weights ``count / max(count)`` from a miner output, shape ``(N,)``.

    None (or an all-empty tuple) gives all ones. Otherwise every index of the tuple is
    counted (only anchors with ``using_ref``); samples never mentioned get weight 0.

    Example:
        >>> t = (torch.tensor([0, 1, 2, 3]), torch.tensor([4, 4, 4, 4]), torch.tensor([5, 5, 6, 6]))
        >>> convert_to_weights(t, torch.zeros(7), torch.float64).tolist()
        [0.25, 0.25, 0.25, 0.25, 1.0, 0.5, 0.5]
    """
    n = len(labels)
    if indices_tuple is None or all(len(t) == 0 for t in indices_tuple):
        return torch.ones(n, dtype=dtype, device=labels.device)
    if using_ref:
        idx = get_anchors(indices_tuple)
    else:
        idx = torch.cat([t.to(labels.device).long() for t in indices_tuple])
    counts = torch.bincount(idx.to(labels.device), minlength=n)[:n].to(dtype)
    return counts / counts.max()


def convert_to_pos_pairs_with_unique_labels(
    indices_tuple: IndicesTuple | None, labels: Tensor
) -> tuple[Tensor, Tensor]:
    """One positive pair per distinct anchor label: the first one in pair order.

    Output is ordered by ascending label value (what NPairsLoss uses). From labels alone
    (``indices_tuple`` None) the first pair of a label is its two smallest indices: one sort
    and a run-length count, without listing every pair.
    """
    if indices_tuple is None:
        keys = sortable_labels(labels)[0]
        order = torch.argsort(keys, stable=True)
        _, counts = torch.unique_consecutive(keys[order], return_counts=True)
        starts = (torch.cumsum(counts, 0) - counts)[counts >= 2]
        return order[starts], order[starts + 1]
    a, p, _, _ = convert_to_pairs(indices_tuple, labels)
    if len(a) == 0:
        return a, p
    anchor_labels = labels[a]
    _, inverse = torch.unique(anchor_labels, return_inverse=True)
    num = int(inverse.max()) + 1
    positions = torch.arange(len(a), device=a.device)
    first = torch.full((num,), len(a), dtype=torch.long, device=a.device)
    first = first.scatter_reduce(0, inverse, positions, reduce="amin")
    return a[first], p[first]


def pos_pairs_from_tuple(indices_tuple: IndicesTuple) -> tuple[Tensor, ...]:
    """The positive half ``(a1, p)`` (the first two entries)."""
    return tuple(indices_tuple[:2])


def neg_pairs_from_tuple(indices_tuple: IndicesTuple) -> tuple[Tensor, ...]:
    """The negative half ``(a2, n)`` (the last two entries)."""
    return tuple(indices_tuple[2:])


def get_anchors(indices_tuple: IndicesTuple) -> Tensor:
    """Anchors: ``a`` for triplets, ``cat(a1, a2)`` for pairs."""
    if len(indices_tuple) == 3:
        return indices_tuple[0]
    return torch.cat([indices_tuple[0], indices_tuple[2]])


def concatenate_indices_tuples(t1: IndicesTuple, t2: IndicesTuple) -> IndicesTuple:
    """Entry-wise concatenation; ``t2`` is moved to ``t1``'s device."""
    if len(t1) != len(t2):
        raise ValueError(
            "indices tuples must have the same length to be concatenated; "
            f"got {len(t1)} and {len(t2)}"
        )
    return tuple(torch.cat([x, y.to(x.device)]) for x, y in zip(t1, t2, strict=True))  # type: ignore[return-value]


def shift_indices_tuple(indices_tuple: IndicesTuple, batch_size: int) -> IndicesTuple:
    """Add ``batch_size`` to the reference-side entries ``p`` and ``n`` (two-stream setups)."""
    if len(indices_tuple) == 3:
        a, p, n = indices_tuple
        return a, p + batch_size if len(p) else p, n + batch_size if len(n) else n
    if len(indices_tuple) == 4:
        a1, p, a2, n = indices_tuple
        return a1, p + batch_size if len(p) else p, a2, n + batch_size if len(n) else n
    return indices_tuple


def repeat_to_match_size(x: Tensor, larger_size: int, smaller_size: int) -> Tensor:
    """Tile ``x`` (length ``smaller_size``) to length ``larger_size``."""
    return x.repeat(math.ceil(larger_size / smaller_size))[:larger_size]


def matched_size_indices(curr_p_idx: Tensor, curr_n_idx: Tensor) -> tuple[Tensor, Tensor]:
    """Tile the shorter of two index lists so that both have the same length."""
    np_, nn_ = len(curr_p_idx), len(curr_n_idx)
    if np_ > nn_:
        return curr_p_idx, repeat_to_match_size(curr_n_idx, np_, nn_)
    if nn_ > np_:
        return repeat_to_match_size(curr_p_idx, nn_, np_), curr_n_idx
    return curr_p_idx, curr_n_idx


def remove_self_comparisons(
    indices_tuple: IndicesTuple,
    curr_batch_idx: Tensor,
    ref_size: int,
    ref_is_subset: bool = False,
) -> IndicesTuple:
    """Drop pairs/triplets whose positive is the reference slot holding the anchor itself.

    The query batch sits in the reference set at slots ``curr_batch_idx`` (``curr_batch_idx[i]``
    holds query row ``i``). With ``ref_is_subset`` the roles of anchor and positive are swapped.
    Triplets are filtered on ``(a, p)``; for pairs only the positive half is filtered.

    Unlike the reference, a batch of one sample is handled too (the reference keeps that
    self pair; see docs/compatibility.md).
    """
    del ref_size  # slots are given explicitly; kept for signature compatibility
    curr = curr_batch_idx.to(indices_tuple[0].device).long()
    a, p = indices_tuple[0], indices_tuple[1]
    if len(a) == 0:
        return indices_tuple
    is_self = (a == curr[p]) if ref_is_subset else (p == curr[a])
    keep = ~is_self
    if len(indices_tuple) == 3:
        return a[keep], p[keep], indices_tuple[2][keep]
    return a[keep], p[keep], indices_tuple[2], indices_tuple[3]
