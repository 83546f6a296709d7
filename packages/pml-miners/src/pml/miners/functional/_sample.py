"""``tuples_per_anchor``: a uniformly random subset of at most ``k`` tuples per anchor.

Every routine here keeps, for each anchor, a uniformly random subset (without replacement)
of ``min(count, k)`` of the anchor's candidate tuples, where ``count`` is how many it has:
all of them when ``count <= k``. Kept tuples stay in the miner's order. Randomness comes from
torch's default generator of the tensors' device (``torch.manual_seed`` seeds it).

* listed tuples (:func:`cap_per_anchor`): a ``randperm`` of the list, grouped by anchor with a
  stable sort, keeps the first ``k`` of each group: an exact uniform draw, ``O(T log T)``;
* a boolean ``(N, M)`` mask (:func:`capped_where`): in the rows holding more than ``k``
  entries only, an i.i.d. random key per entry and the ``k`` smallest keys of the row's
  ``True`` entries, blocks of rows at a time;
* triplets found block by block (:class:`SampledTriplets`, the drop-in of
  ``TripletParts``): the same keys over each block's selection, merged into a running
  per-anchor top-``k`` after every block, so memory is ``O(block + N k)`` and neither the
  ``N x M x M`` candidates nor the full output are ever built.

The ``k`` smallest of i.i.d. uniform keys are a uniformly random ``k``-subset. Keys are
uniform 42-bit integers: a tie, which sorting may break either way, has probability
``2^-42`` per pair of candidates, far below any measurable bias.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pml.core.indices import IndicesTuple, TripletsTuple, is_same_set, label_groups
from pml.core.validation import check_int
from pml.miners.functional._triplet_blocks import (
    DEFAULT_MAX_ELEMENTS,
    TripletParts,
    Workspace,
    block_rows,
)

__all__ = [
    "SampledTriplets",
    "cap_per_anchor",
    "cap_tuples",
    "capped_where",
    "check_tuples_per_anchor",
    "triplet_collector",
]

#: random keys of candidates are integers in [0, _EMPTY); _EMPTY marks "no candidate"
_KEY_BITS = 42
_EMPTY = 1 << _KEY_BITS
#: a merge sorts (anchor, key) codes of 64 bits: at most 2^20 anchors per merge
_MAX_MERGE_ROWS = 1 << 20


def check_tuples_per_anchor(tuples_per_anchor: object) -> int | None:
    """``tuples_per_anchor`` as an int ``>= 1`` or None (TypeError / ValueError naming it)."""
    return check_int("tuples_per_anchor", tuples_per_anchor, min=1, allow_none=True)


def cap_per_anchor(anchors: Tensor, k: int | None) -> Tensor:
    """Positions (ascending) of a random subset of at most ``k`` entries per anchor value.

    Args:
        anchors: shape ``(T,)``, the anchor of each listed tuple (any order).
        k: the cap per anchor, or None for all.

    Returns:
        int64 positions into ``anchors``, ascending (the listed order is kept).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> cap_per_anchor(torch.tensor([0, 0, 0, 1, 2, 2]), 1).tolist()
        [2, 3, 5]
    """
    k = check_tuples_per_anchor(k)
    total = len(anchors)
    everything = torch.arange(total, device=anchors.device)
    if k is None or total <= k:
        return everything
    shuffled = torch.randperm(total, device=anchors.device)
    group = torch.sort(anchors[shuffled], stable=True)
    a_sorted, order = group.values, shuffled[group.indices]
    starts = torch.ones(total, dtype=torch.bool, device=anchors.device)
    starts[1:] = a_sorted[1:] != a_sorted[:-1]
    first = torch.cummax(torch.where(starts, everything, 0), 0).values
    return torch.sort(order[everything - first < k]).values


def cap_tuples(indices_tuple: IndicesTuple, k: int | None) -> IndicesTuple:
    """At most ``k`` tuples per anchor of a listed tuple (pairs: each side separately).

    Triplets ``(a, p, n)`` are capped per ``a``; pairs ``(a1, p, a2, n)`` per ``a1`` for the
    positive pairs, then per ``a2`` for the negative pairs. Order is kept; an entry listed
    twice counts twice (the cap is over the listed entries).
    """
    if k is None:
        return indices_tuple
    out = list(indices_tuple)
    for side in (0, 2) if len(out) == 4 else (0,):
        anchor = out[side]
        keep = cap_per_anchor(anchor, k)
        if len(keep) < len(anchor):
            size = 3 if len(out) == 3 else 2
            for j in range(side, side + size):
                out[j] = out[j][keep]
    return tuple(out)  # type: ignore[return-value]


def capped_where(
    mask: Tensor, k: int | None, *, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> tuple[Tensor, Tensor]:
    """``torch.where(mask)`` keeping at most ``k`` entries per row, a uniformly random choice.

    The entries are listed first; only when a row holds more than ``k`` do the rows over the
    cap draw keys (blocks of about ``max_elements``) and the capped mask is listed again. No
    draw at all when no row exceeds ``k``.

    Args:
        mask: boolean, shape ``(N, M)``.
        k: the cap per row, or None for all.
        max_elements: keys drawn per block of rows.

    Returns:
        ``(rows, cols)`` int64, row-major like ``torch.where``.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> rows, cols = capped_where(torch.tensor([[True, True, False], [False, True, False]]), 1)
        >>> rows.tolist(), cols.tolist()
        ([0, 1], [1, 1])
    """
    k = check_tuples_per_anchor(k)
    rows, cols = torch.where(mask)
    if k is None or len(rows) <= k:
        return rows, cols
    over = torch.where(torch.bincount(rows, minlength=mask.shape[0]) > k)[0]
    if len(over) == 0:
        return rows, cols
    del rows, cols
    out = mask.clone()
    width = mask.shape[1]
    step = block_rows(width, max_elements)
    keys = torch.empty(min(step, len(over)), width, dtype=torch.long, device=mask.device)
    for s in range(0, len(over), step):
        chunk = over[s : s + step]
        block = mask[chunk]
        kb = keys[: len(chunk)].random_(0, _EMPTY).masked_fill_(~block, _EMPTY)
        idx = torch.topk(kb, k, dim=1, largest=False, sorted=False).indices
        out[chunk] = torch.zeros_like(block).scatter_(1, idx, True)
    return torch.where(out)


class SampledTriplets:
    """Drop-in for ``TripletParts``: at most ``k`` triplets per anchor, uniformly at random.

    ``add(a1, p, keep)`` takes a block of positive pairs in row-major order and the
    ``(P_c, M)`` selection of their negatives. Each selected triplet gets an i.i.d. random
    key, and each anchor keeps the ``k`` smallest keys seen so far (one sort of ``(anchor,
    key)`` codes per block). A sparse selection is keyed entry by entry; a dense one (more
    than ``k`` per row on average) gets a key per cell and a per-row ``topk`` first, so a
    block sorts at most ``P_c k + k`` entries. Blocks come in row-major order, so only the
    first anchor of a block can hold triplets from an earlier block: its ``k`` slots join the
    sort. :meth:`assemble` returns the kept triplets in lexicographic ``(a, p, n)`` order.
    Memory: ``O(P_c M + N k)``.

    Args:
        num_anchors: ``N``, the number of query rows.
        cols: ``M``, the number of reference rows.
        k: the cap per anchor.
        rows: the largest block (rows of a key buffer).
        device: where the indices live.
    """

    def __init__(
        self, num_anchors: int, cols: int, k: int, rows: int, device: torch.device
    ) -> None:
        self.k, self.cols, self.device = k, cols, device
        self.keys = torch.full((num_anchors, k), _EMPTY, dtype=torch.long, device=device)
        self.codes = torch.zeros(num_anchors, k, dtype=torch.long, device=device)  # p M + n
        self.ws = Workspace(max(min(rows, _MAX_MERGE_ROWS), 1), cols, device)
        self.last = -1  # the last anchor of the previous block

    def add(self, a1: Tensor, p: Tensor, keep: Tensor) -> None:
        c, cols = keep.shape
        if c > _MAX_MERGE_ROWS:
            for s in range(0, c, _MAX_MERGE_ROWS):
                e = s + _MAX_MERGE_ROWS
                self.add(a1[s:e], p[s:e], keep[s:e])
            return
        kk = min(self.k, cols)
        count = int(torch.count_nonzero(keep))
        if count == 0:
            return
        if count <= c * kk:  # sparse: key the selected entries only
            rows, n = torch.where(keep)
            keys = torch.randint(0, _EMPTY, (count,), device=keep.device)
            anchors, codes = a1[rows], p[rows] * cols + n
        else:  # dense: a key per cell, then each row's kk smallest
            cells = self.ws.get("keys", c, torch.long).random_(0, _EMPTY)
            cells.masked_fill_(~keep, _EMPTY)
            keys, n = torch.topk(cells, kk, dim=1, largest=False, sorted=False)
            keys = keys.flatten()
            anchors = a1.repeat_interleave(kk)
            codes = (p.unsqueeze(1) * cols + n).flatten()
        self._merge(anchors, codes, keys)

    def _merge(self, anchors: Tensor, codes: Tensor, keys: Tensor) -> None:
        """Keep each anchor's ``k`` smallest keys (``anchors`` is non-decreasing)."""
        k = self.k
        first = int(anchors[0])
        if first == self.last:  # continued from the previous block: its slots compete
            anchors = torch.cat([anchors.new_full((k,), first), anchors])
            keys = torch.cat([self.keys[first], keys])
            codes = torch.cat([self.codes[first], codes])
        self.last = int(anchors[-1])
        _, local, counts = torch.unique_consecutive(
            anchors, return_inverse=True, return_counts=True
        )
        # one sort: by anchor, then by key (codes of 63 bits: < 2^20 anchors per block)
        order = torch.sort((local << (_KEY_BITS + 1)) | keys).indices
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(len(order), device=order.device)
        rank -= starts.repeat_interleave(counts, output_size=len(order))
        kept = rank < k
        sel, rank = order[kept], rank[kept]
        rows = anchors[sel]
        self.keys[rows, rank] = keys[sel]
        self.codes[rows, rank] = codes[sel]

    def assemble(self) -> TripletsTuple:
        valid = self.keys < _EMPTY
        codes = torch.where(valid, self.codes, torch.iinfo(torch.long).max)
        codes = torch.sort(codes, dim=1).values
        anchors = torch.arange(len(valid), device=self.device).unsqueeze(1).expand_as(valid)
        valid = codes != torch.iinfo(torch.long).max
        codes = codes[valid]
        return anchors[valid], codes // self.cols, codes % self.cols


def triplet_collector(
    labels: Tensor,
    ref_labels: Tensor | None,
    cols: int,
    k: int | None,
    rows: int,
    device: torch.device,
) -> TripletParts | SampledTriplets:
    """Where a block miner puts its selected triplets: all of them, or ``k`` per anchor.

    A cap no anchor can exceed (``k >= max |positives| * |negatives|``, counted from the
    labels in ``O((N + M) log M)``) keeps everything through the uncapped route, without a
    random draw.

    Args:
        labels: query labels, shape ``(N,)``.
        ref_labels: reference labels, shape ``(M,)``; None or ``labels`` for the same set.
        cols: ``M``.
        k: the cap per anchor, or None.
        rows: the largest block of positive pairs.
        device: where the blocks and the output live.
    """
    k = check_tuples_per_anchor(k)
    if k is not None and len(labels) and cols:
        same = label_groups(labels, ref_labels).count
        num_pos = (same - int(is_same_set(labels, ref_labels))).clamp_min(0)
        if k < int((num_pos * (cols - same)).max()):
            return SampledTriplets(len(labels), cols, k, rows, device)
    return TripletParts(device)
