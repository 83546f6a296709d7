"""``tuples_per_anchor``: a uniformly random subset of at most ``k`` tuples per anchor.

Every routine here keeps, for each anchor, a uniformly random subset (without replacement)
of ``min(count, k)`` of the anchor's candidate tuples, where ``count`` is how many it has:
all of them when ``count <= k``. Kept tuples stay in the miner's order. Randomness comes from
torch's default generator of the tensors' device (``torch.manual_seed`` seeds it).

* listed tuples (:func:`cap_per_anchor`): a ``randperm`` of the list, grouped by anchor with a
  stable sort, keeps the first ``k`` of each group: an exact uniform draw, ``O(T log T)``;
* a boolean ``(N, M)`` mask (:func:`cap_mask_rows`): in the rows holding more than ``k``
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

from pml.core.indices import IndicesTuple, TripletsTuple
from pml.core.validation import check_int
from pml.miners.functional._triplet_blocks import (
    DEFAULT_MAX_ELEMENTS,
    TripletParts,
    Workspace,
    block_rows,
)

__all__ = [
    "SampledTriplets",
    "cap_mask_rows",
    "cap_per_anchor",
    "cap_tuples",
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


def cap_mask_rows(
    mask: Tensor, k: int | None, *, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> Tensor:
    """``mask`` with at most ``k`` ``True`` entries per row, a uniformly random choice.

    Rows with at most ``k`` entries are unchanged. Memory: one block of about
    ``max_elements`` keys plus the output mask.

    Args:
        mask: boolean, shape ``(N, M)``.
        k: the cap per row, or None for all.
        max_elements: keys drawn per block of rows.

    Returns:
        Boolean mask, shape ``(N, M)``, a subset of ``mask``.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> cap_mask_rows(torch.tensor([[True, True, False], [False, True, False]]), 1).int()
        tensor([[0, 1, 0],
                [0, 1, 0]], dtype=torch.int32)
    """
    k = check_tuples_per_anchor(k)
    cols = mask.shape[1]
    if k is None or k >= cols or mask.numel() == 0:
        return mask
    over = torch.where(mask.sum(1) > k)[0]  # only these rows need a draw
    if len(over) == 0:
        return mask
    out = mask.clone()
    step = block_rows(cols, max_elements)
    keys = torch.empty(min(step, len(over)), cols, dtype=torch.long, device=mask.device)
    for s in range(0, len(over), step):
        rows = over[s : s + step]
        block = mask[rows]
        kb = keys[: len(rows)].random_(0, _EMPTY).masked_fill_(~block, _EMPTY)
        idx = torch.topk(kb, k, dim=1, largest=False, sorted=False).indices
        out[rows] = torch.zeros_like(block).scatter_(1, idx, True)
    return out


class SampledTriplets:
    """Drop-in for ``TripletParts``: at most ``k`` triplets per anchor, uniformly at random.

    ``add(a1, p, keep)`` takes a block of positive pairs in row-major order and the
    ``(P_c, M)`` selection of their negatives. Each selected triplet gets an i.i.d. random
    key; the block's entries are merged with the anchors' running ``k`` smallest keys by one
    sort of ``(anchor, key)`` codes. A sparse selection is keyed entry by entry; a dense one
    (more than ``k`` per row on average) gets a key per cell and a per-row ``topk`` first,
    so a merge sorts at most ``P_c k`` new entries. :meth:`assemble` returns the kept
    triplets in lexicographic ``(a, p, n)`` order. Memory: ``O(P_c M + N k)``.

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
        self.p = torch.zeros(num_anchors, k, dtype=torch.long, device=device)
        self.n = torch.zeros(num_anchors, k, dtype=torch.long, device=device)
        self.ws = Workspace(max(min(rows, _MAX_MERGE_ROWS), 1), cols, device)

    def add(self, a1: Tensor, p: Tensor, keep: Tensor) -> None:
        c, cols = keep.shape
        if c > _MAX_MERGE_ROWS:
            for s in range(0, c, _MAX_MERGE_ROWS):
                e = s + _MAX_MERGE_ROWS
                self.add(a1[s:e], p[s:e], keep[s:e])
            return
        kk = min(self.k, cols)
        count = int(keep.sum())
        if count == 0:
            return
        if count <= c * kk:  # sparse: key the selected entries only
            rows, n = torch.where(keep)
            keys = torch.randint(0, _EMPTY, (count,), device=keep.device)
            anchors, pp = a1[rows], p[rows]
        else:  # dense: a key per cell, then each row's kk smallest
            cells = self.ws.get("keys", c, torch.long).random_(0, _EMPTY)
            keys, n = torch.topk(
                cells.masked_fill_(~keep, _EMPTY), kk, dim=1, largest=False, sorted=False
            )
            keys, n = keys.flatten(), n.flatten()
            anchors, pp = a1.repeat_interleave(kk), p.repeat_interleave(kk)
        self._merge(anchors, pp, n, keys)

    def _merge(self, anchors: Tensor, p: Tensor, n: Tensor, keys: Tensor) -> None:
        """Keep each anchor's ``k`` smallest keys among its slots and these entries.

        ``anchors`` is non-decreasing (blocks come in row-major order).
        """
        k = self.k
        touched, local = torch.unique_consecutive(anchors, return_inverse=True)
        slots = torch.arange(len(touched), device=anchors.device).repeat_interleave(k)
        all_local = torch.cat([slots, local])
        all_keys = torch.cat([self.keys[touched].flatten(), keys])
        # one sort: by anchor, then by key (codes fit in 63 bits: < 2^20 anchors)
        order = torch.sort((all_local << (_KEY_BITS + 1)) | all_keys).indices
        counts = torch.bincount(all_local, minlength=len(touched))
        starts = torch.cumsum(counts, 0) - counts  # each anchor has >= k entries (its slots)
        pick = order[(starts.unsqueeze(1) + torch.arange(k, device=anchors.device)).flatten()]
        self.keys[touched] = all_keys[pick].view(-1, k)
        self.p[touched] = torch.cat([self.p[touched].flatten(), p])[pick].view(-1, k)
        self.n[touched] = torch.cat([self.n[touched].flatten(), n])[pick].view(-1, k)

    def assemble(self) -> TripletsTuple:
        valid = self.keys < _EMPTY
        code = torch.where(valid, self.p * self.cols + self.n, torch.iinfo(torch.long).max)
        order = torch.sort(code, dim=1).indices
        valid = valid.gather(1, order)
        anchors = torch.arange(len(valid), device=self.device).unsqueeze(1).expand_as(valid)
        return anchors[valid], self.p.gather(1, order)[valid], self.n.gather(1, order)[valid]


def triplet_collector(
    pos: Tensor, neg: Tensor, k: int | None, rows: int
) -> TripletParts | SampledTriplets:
    """Where a block miner puts its selected triplets: all of them, or ``k`` per anchor.

    A cap no anchor can exceed (``k >= max |positives| * |negatives|``) keeps everything,
    through the uncapped route (no random draw).

    Args:
        pos: positive mask, shape ``(N, M)``.
        neg: negative mask, shape ``(N, M)``.
        k: the cap per anchor, or None.
        rows: the largest block of positive pairs.
    """
    k = check_tuples_per_anchor(k)
    if k is not None and pos.numel():
        most = int((pos.sum(1) * neg.sum(1)).max())
        if k < most:
            return SampledTriplets(pos.shape[0], pos.shape[1], k, rows, pos.device)
    return TripletParts(pos.device)
