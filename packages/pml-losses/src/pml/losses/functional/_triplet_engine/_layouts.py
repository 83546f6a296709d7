"""Layouts: which columns are the positives and the negatives of each anchor row.

All triplets of a layout are ``(a, p, n)`` for every positive ``p`` and negative ``n`` of
anchor row ``a``. A layout hands them out as :class:`Chunk` s of anchor rows whose work arrays
stay within :data:`CHUNK_ELEMENTS`, so nothing of size ``N x M x M`` is ever built.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from pml.core.dtypes import accumulation_dtype
from pml.core.indices import label_groups, sortable_labels

#: elements per chunk of the (rows x columns) work arrays
CHUNK_ELEMENTS = 1 << 20


@dataclass
class Chunk:
    """Anchor rows ``rows`` with their positive and negative columns.

    Positives are a padded ``(R, Wp)`` column list (invalid slots point at column 0).
    Negatives are a list too, or, when ``neg_cols`` is None, a mask over all ``M`` columns.
    """

    rows: slice | Tensor
    pos_cols: Tensor
    pos_valid: Tensor
    neg_cols: Tensor | None
    neg_valid: Tensor


def rows_tensor(rows: slice | Tensor, device: torch.device) -> Tensor:
    """The row indices of a chunk as a tensor."""
    if isinstance(rows, slice):
        return torch.arange(rows.start, rows.stop, device=device)
    return rows


def take(d: Tensor, rows: slice | Tensor, cols: Tensor | None) -> Tensor:
    """``d[rows]`` (all columns) or ``d[rows[:, None], cols]``."""
    if cols is None:
        return d[rows]
    return d[rows_tensor(rows, d.device).unsqueeze(1), cols]


def put(grad: Tensor, rows: slice | Tensor, cols: Tensor | None, g: Tensor) -> None:
    """Accumulate ``g`` into ``grad`` at the cells :func:`take` reads."""
    if cols is None:
        grad[rows] += g
        return
    r = rows_tensor(rows, grad.device).unsqueeze(1).expand_as(cols)
    grad.index_put_((r, cols), g, accumulate=True)


def _mask_to_lists(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Columns of the True entries of each row, left-aligned: ``(cols, valid)``, ``(R, W)``."""
    counts = mask.sum(dim=1)
    width = int(counts.max()) if mask.numel() else 0
    order = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)[:, :width]
    valid = torch.arange(width, device=mask.device).unsqueeze(0) < counts.unsqueeze(1)
    return torch.where(valid, order, 0), valid


def _segment_lists(
    rows: Tensor, start: Tensor, count: Tensor, members: Tensor, width: int
) -> tuple[Tensor, Tensor]:
    """Padded lists ``members[start[r] : start[r] + count[r]]`` for each row ``r``."""
    slot = torch.arange(width, device=rows.device).unsqueeze(0)
    valid = slot < count[rows].unsqueeze(1)
    if len(members) == 0:
        return torch.zeros_like(valid, dtype=torch.long), valid
    idx = (start[rows].unsqueeze(1) + slot).clamp(max=len(members) - 1)
    return torch.where(valid, members[idx], 0), valid


class DenseLayout:
    """All triplets from labels: positives ``labels[a] == ref_labels[j]``, negatives ``!=``.

    Positives come as lists (the anchor's label group among the references, from
    :func:`pml.core.indices.label_groups`); negatives as a mask over all columns.

    Args:
        labels: ``(N,)``.
        ref_labels: ``(M,)``.
        same_set: remove the diagonal (self pairs), i.e. ``ref_labels is labels``.
    """

    def __init__(self, labels: Tensor, ref_labels: Tensor, same_set: bool) -> None:
        # one dtype that compares (bool as uint8), equality kept
        self.labels, self.ref_labels = sortable_labels(labels, ref_labels)
        self.same_set = same_set
        self.num_rows, self.num_cols = len(labels), len(ref_labels)
        self.groups = label_groups(self.labels, self.ref_labels)
        self._width: int | None = None

    def masks(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        """Boolean ``(pos, neg)`` masks of rows ``start:stop`` over all columns."""
        pos = self.labels[start:stop].unsqueeze(1) == self.ref_labels.unsqueeze(0)
        neg = ~pos
        if self.same_set:
            r = torch.arange(stop - start, device=pos.device)
            pos[r, r + start] = False
        return pos, neg

    def counts(self) -> tuple[Tensor, Tensor]:
        """Positives and negatives per anchor row, ``(N,)`` each (int64)."""
        return self.groups.count - int(self.same_set), self.num_cols - self.groups.count

    def chunks(self, neg_lists: bool = False, elements: int | None = None) -> Iterator[Chunk]:
        """Consecutive anchor rows, about ``elements / M`` at a time (all rows, in order).

        Positives are the rows' label groups padded to the largest group (the anchor itself
        marked invalid in the same-set case); negatives are the ``(R, M)`` mask ``!=``, or,
        with ``neg_lists``, that mask turned into padded column lists.

        Args:
            neg_lists: negatives as column lists (what enumeration needs) instead of a mask.
            elements: budget of one ``(rows x M)`` work array (default :data:`CHUNK_ELEMENTS`).
        """
        if self._width is None:
            self._width = int(self.groups.count.max()) if self.num_rows else 0
        budget = CHUNK_ELEMENTS if elements is None else elements
        step = max(1, budget // max(self.num_cols, 1))
        for start in range(0, self.num_rows, step):
            stop = min(start + step, self.num_rows)
            rows = torch.arange(start, stop, device=self.labels.device)
            order, group_start, count = self.groups
            pos_cols, pos_valid = _segment_lists(rows, group_start, count, order, self._width)
            if self.same_set:
                pos_valid &= pos_cols != rows.unsqueeze(1)
            neg = self.labels[start:stop].unsqueeze(1) != self.ref_labels.unsqueeze(0)
            if neg_lists:
                neg_cols, neg_valid = _mask_to_lists(neg)
                yield Chunk(rows, pos_cols, pos_valid, neg_cols, neg_valid)
            else:
                yield Chunk(slice(start, stop), pos_cols, pos_valid, None, neg)


class GroupedLayout:
    """Triplets from a pairs tuple: every positive entry with every negative entry of its anchor.

    Rows are anchors (indices into the query set ``0..N-1``); entries are ``(a1, p)`` and
    ``(a2, n)``, duplicates counted.

    Args:
        pairs: ``(a1, p, a2, n)`` int64 tensors.
        num_rows: ``N``.
    """

    def __init__(self, pairs: Sequence[Tensor], num_rows: int) -> None:
        a1, p, a2, n = (t.long() for t in pairs)
        self.num_rows = num_rows
        self.pos_count = torch.bincount(a1, minlength=num_rows)
        self.neg_count = torch.bincount(a2, minlength=num_rows)
        self.p_sorted = p[torch.argsort(a1, stable=True)]
        self.n_sorted = n[torch.argsort(a2, stable=True)]
        self.pos_off = torch.cumsum(self.pos_count, 0) - self.pos_count
        self.neg_off = torch.cumsum(self.neg_count, 0) - self.neg_count

    def counts(self) -> tuple[Tensor, Tensor]:
        """Positive and negative entries per anchor row, ``(N,)`` each (int64)."""
        return self.pos_count, self.neg_count

    def chunks(self, neg_lists: bool = True, elements: int | None = None) -> Iterator[Chunk]:
        """Anchors with both kinds of entries, packed into chunks of padded column lists.

        Args:
            neg_lists: ignored (negatives are always lists here).
            elements: budget of one ``(rows x width)`` list (default :data:`CHUNK_ELEMENTS`).
        """
        del neg_lists
        budget = CHUNK_ELEMENTS if elements is None else elements
        active = torch.nonzero((self.pos_count > 0) & (self.neg_count > 0)).flatten()
        if len(active) == 0:
            return
        pos_w = self.pos_count[active].tolist()
        neg_w = self.neg_count[active].tolist()
        start = 0
        while start < len(active):
            # Greedy packing: each chunk's lists are padded to its widest anchor, so a chunk of
            # k anchors costs k * max width. Add anchors in order while that padded size stays
            # within the budget; a single anchor always fits (one anchor per chunk at worst).
            stop, wp, wn = start, 0, 0
            while stop < len(active):
                new_wp, new_wn = max(wp, pos_w[stop]), max(wn, neg_w[stop])
                if stop > start and (stop - start + 1) * max(new_wp, new_wn) > budget:
                    break
                wp, wn = new_wp, new_wn
                stop += 1
            rows = active[start:stop]
            pos = _segment_lists(rows, self.pos_off, self.pos_count, self.p_sorted, wp)
            neg = _segment_lists(rows, self.neg_off, self.neg_count, self.n_sorted, wn)
            yield Chunk(rows, pos[0], pos[1], neg[0], neg[1])
            start = stop


Layout = DenseLayout | GroupedLayout


def layout_for(
    num_rows: int,
    labels: Tensor | None,
    ref_labels: Tensor | None,
    pairs: Sequence[Tensor] | None,
    same_set: bool | None,
) -> Layout:
    """The layout of the triplets of a pairs tuple, else of labels (ValueError without both).

    ``same_set`` None: the self-pair rule applies when ``ref_labels`` is None or ``labels``.
    """
    if pairs is not None:
        if len(pairs) != 4:
            raise ValueError(f"pairs must be a 4-tuple (a1, p, a2, n); got {len(pairs)} entries")
        return GroupedLayout(pairs, num_rows)
    return dense_layout(labels, ref_labels, same_set)


def dense_layout(
    labels: Tensor | None, ref_labels: Tensor | None, same_set: bool | None
) -> DenseLayout:
    """The :class:`DenseLayout` of labels (ValueError without labels); see :func:`layout_for`."""
    if labels is None:
        raise ValueError("labels must be given when pairs is None")
    same = (ref_labels is None or ref_labels is labels) if same_set is None else same_set
    return DenseLayout(labels, labels if ref_labels is None else ref_labels, same)


def distance_like(mat: Tensor, is_inverted: bool) -> Tensor:
    """``mat`` in the accumulation dtype, negated for similarities (smaller = closer)."""
    d = mat.to(accumulation_dtype(mat.dtype))
    return (-d if is_inverted else d).contiguous()
