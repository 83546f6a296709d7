"""Labels compared and grouped: the building blocks of every "same label" lookup.

Re-exported by :mod:`pml.core.indices`. "Same set" is decided by object identity
(``ref_labels is None or ref_labels is labels``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "LabelGroups",
    "get_matches_and_diffs",
    "is_same_set",
    "label_groups",
    "pos_neg_masks",
    "same_label_cells",
    "sortable_labels",
]


#: unsigned dtypes that ``torch.searchsorted`` (and type promotion) do not support
_WIDE_UNSIGNED = (torch.uint16, torch.uint32, torch.uint64)


def _sortable(x: Tensor, keep_uint64_order: bool = True) -> Tensor:
    if x.dtype == torch.bool:
        return x.to(torch.uint8)
    if x.dtype == torch.uint64 and keep_uint64_order:  # flip the sign bit: the same order
        return x.view(torch.int64) ^ torch.iinfo(torch.int64).min
    if x.dtype in _WIDE_UNSIGNED:
        return x.to(torch.int64)
    return x


def sortable_labels(labels: Tensor, ref_labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``labels`` and ``ref_labels`` in one dtype that ``sort`` and ``searchsorted`` accept.

    Losses and miners only compare labels, so every dtype torch compares is accepted; code that
    groups labels by sorting them needs one common dtype that ``searchsorted`` supports. Equality
    and order are kept: the common dtype is ``torch.promote_types`` of the two (int64 300 never
    meets int8 44), with bool as uint8, uint16/uint32 as int64 and uint64 as int64 with its sign
    bit flipped (same order). With ``ref_labels`` None or ``labels`` itself, the one converted
    tensor is returned twice. Devices are left as they are.

    Example:
        >>> lab, ref = sortable_labels(torch.tensor([True, False]), torch.tensor([2, 1]))
        >>> lab.tolist(), ref.tolist(), lab.dtype
        ([1, 0], [2, 1], torch.int64)
    """
    if ref_labels is None or ref_labels is labels:
        lab = _sortable(labels)
        return lab, lab
    if labels.dtype == ref_labels.dtype:
        return _sortable(labels), _sortable(ref_labels)
    # two dtypes: convert by value (uint64 beyond int64's range is not comparable then)
    lab, ref = _sortable(labels, False), _sortable(ref_labels, False)
    common = torch.promote_types(lab.dtype, ref.dtype)
    return lab.to(common), ref.to(common)


class LabelGroups(NamedTuple):
    """Reference rows grouped by label, for each query label (see :func:`label_groups`).

    ``order[start[i] : start[i] + count[i]]`` are the reference rows with ``labels[i]``'s label,
    in ascending row order.
    """

    order: Tensor
    start: Tensor
    count: Tensor


def label_groups(labels: Tensor, ref_labels: Tensor | None = None) -> LabelGroups:
    """Group the reference rows by label: one stable sort of ``ref_labels``, two searchsorted.

    The building block of every "rows of the same label" lookup (positive pairs, same-label
    softmax cells, triplet layouts, weighted random triplets): O((N + M) log M), no ``(N, M)``
    mask. Labels may have any dtype torch compares (bool too), the two possibly different.

    Args:
        labels: query labels, shape ``(N,)``.
        ref_labels: reference labels, shape ``(M,)`` (None: ``labels``).

    Returns:
        ``LabelGroups(order (M,), start (N,), count (N,))``, int64.

    Example:
        >>> g = label_groups(torch.tensor([1, 0]), torch.tensor([0, 1, 1]))
        >>> g.order.tolist(), g.start.tolist(), g.count.tolist()
        ([0, 1, 2], [1, 0], [2, 1])
    """
    query, ref = sortable_labels(labels, ref_labels)
    ref = ref.to(query.device)
    sorted_ref, order = torch.sort(ref, stable=True)
    if not sorted_ref.is_floating_point():
        start = torch.searchsorted(sorted_ref, query, side="left")
        count = torch.searchsorted(sorted_ref, query, side="right") - start
        return LabelGroups(order, start, count)
    # fix: NaN labels (sorted last, equal to nothing) broke the binary search for every label;
    # search up to the first NaN only, and give NaN queries no group
    nan = torch.isnan(sorted_ref)
    searchable = torch.where(nan, torch.inf, sorted_ref)
    start = torch.searchsorted(searchable, query, side="left")
    end = torch.minimum(torch.searchsorted(searchable, query, side="right"), (~nan).sum())
    count = torch.where(torch.isnan(query), 0, (end - start).clamp_min(0))
    return LabelGroups(order, start, count)


def same_label_cells(labels: Tensor, ref_labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Every ``(i, j)`` with ``labels[i] == ref_labels[j]`` (diagonal included), as two lists.

    Row-major order (rows ascending, then columns ascending), like ``torch.where`` of the
    equality mask, without building the ``(N, M)`` mask: O(N log N + number of cells).

    Example:
        >>> [t.tolist() for t in same_label_cells(torch.tensor([1, 0, 1]), torch.tensor([0, 1, 1]))]
        [[0, 0, 1, 2, 2], [1, 2, 0, 1, 2]]
    """
    order, start, count = label_groups(labels, ref_labels)
    total = int(count.sum())
    device = order.device
    rows = torch.repeat_interleave(
        torch.arange(len(count), device=device), count, output_size=total
    )
    offset = torch.repeat_interleave(
        start - (torch.cumsum(count, 0) - count), count, output_size=total
    )
    return rows, order[torch.arange(total, device=device) + offset]


def is_same_set(labels: Tensor | None, ref_labels: Tensor | None) -> bool:
    """``True`` when the reference set is the query set: ``ref_labels is None or is labels``."""
    return ref_labels is None or ref_labels is labels


def pos_neg_masks(labels: Tensor, ref_labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Boolean positive and negative masks, shape ``(N, M)``.

    ``pos[i, j] = labels[i] == ref_labels[j]`` with the diagonal cleared in the same-set case;
    ``neg = ~(labels[i] == ref_labels[j])``.

    Example:
        >>> pos, neg = pos_neg_masks(torch.tensor([0, 0, 1]))
        >>> pos.int().tolist(), neg.int().tolist()
        ([[0, 1, 0], [1, 0, 0], [0, 0, 0]], [[0, 0, 1], [0, 0, 1], [1, 1, 0]])

    Raises:
        ValueError: ``labels`` or ``ref_labels`` is not 1-D (e.g. ``(N, C)`` label sets,
            which only a loss that pairs label sets itself, such as MultiSupConLoss, reads).
    """
    for name, value in (("labels", labels), ("ref_labels", ref_labels)):
        if value is not None and value.dim() != 1:
            raise ValueError(
                f"{name} must be 1-D class labels of shape (N,) to build pairs from; got shape "
                f"{tuple(value.shape)} ((N, C) label sets need a loss that pairs them itself, "
                "such as MultiSupConLoss)"
            )
    same = is_same_set(labels, ref_labels)
    ref = labels if ref_labels is None else ref_labels.to(labels.device)
    eq = labels.unsqueeze(1) == ref.unsqueeze(0)
    neg = ~eq
    if same:
        eq.fill_diagonal_(False)
    return eq, neg


def get_matches_and_diffs(
    labels: Tensor, ref_labels: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The reference's uint8 ``matches`` / ``diffs`` matrices, shape ``(N, M)``."""
    pos, neg = pos_neg_masks(labels, ref_labels)
    return pos.to(torch.uint8), neg.to(torch.uint8)
