"""Sums over all triplets of a batch without enumerating them (private engine).

A *layout* says, for every anchor row ``a`` of an ``(N, M)`` matrix ``d`` of distance-like
values (smaller = closer), which columns are its positives and which its negatives: all
triplets are ``(a, p, n)`` for every positive ``p`` and negative ``n`` of the anchor, with
``x = d[a, p] - d[a, n]``. Two layouts exist:

* :class:`DenseLayout` (labels): positives/negatives from label equality, the diagonal removed
  in the same-set case. Nothing larger than ``(chunk, M)`` is ever built.
* :class:`GroupedLayout` (a pairs tuple ``(a1, p, a2, n)``): every positive-pair entry of an
  anchor meets every negative-pair entry of the same anchor (duplicates count), like the
  reference's pairs-to-triplets conversion, without its ``P x Nn`` matrix.

Two autograd functions consume a layout, both in ``O(N * M)`` memory:

* :class:`ThresholdSums` (sorting): for thresholds ``e_k``, the count and the sum of ``x`` over
  the triplets with ``x < e_k`` (or ``<=``, ``>``, ``>=``), in ``O(N M log M)`` time. Each
  anchor's negatives are sorted once; a positive's selected negatives are a prefix or suffix
  found with ``searchsorted``, whose sum is read from a cumulative sum. The gradient of such a
  sum is an integer count per cell (how many selected triplets use that cell, with sign), so
  backward recomputes the counts chunk by chunk instead of keeping a graph.
* :class:`BlockSums` (enumeration in bounded blocks): the sum and count of ``f(x + margin)``
  for a non-separable ``f`` (softplus, or the hinge with the "swap" distance), ``O(T)`` time.

Values must already be in the accumulation dtype. Both functions are first-order
differentiable (``once_differentiable``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from pml.core.dtypes import pos_inf

Select = Literal["lt", "le", "gt", "ge"]

#: elements per chunk of the (rows x columns) work arrays
CHUNK_ELEMENTS = 1 << 20
#: elements per (rows x positives x negatives) block of BlockSums
BLOCK_ELEMENTS = 1 << 21


@dataclass
class Chunk:
    """Anchor rows ``rows`` with their positive and negative columns.

    ``*_cols`` is None when the mask spans all ``M`` columns (dense), else a padded
    ``(R, W)`` column list whose invalid slots point at column 0.
    """

    rows: slice | Tensor
    pos_cols: Tensor | None
    pos_valid: Tensor
    neg_cols: Tensor | None
    neg_valid: Tensor


def _rows_tensor(rows: slice | Tensor, device: torch.device) -> Tensor:
    if isinstance(rows, slice):
        return torch.arange(rows.start, rows.stop, device=device)
    return rows


def take(d: Tensor, rows: slice | Tensor, cols: Tensor | None) -> Tensor:
    """``d[rows]`` (all columns) or ``d[rows[:, None], cols]``."""
    if cols is None:
        return d[rows]
    r = _rows_tensor(rows, d.device)
    return d[r.unsqueeze(1), cols]


def put(grad: Tensor, rows: slice | Tensor, cols: Tensor | None, g: Tensor) -> None:
    """Accumulate ``g`` into ``grad`` at the cells :func:`take` reads."""
    if cols is None:
        grad[rows] += g
        return
    r = _rows_tensor(rows, grad.device).unsqueeze(1).expand_as(cols)
    grad.index_put_((r, cols), g, accumulate=True)


def _mask_to_lists(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Columns of the True entries of each row, left-aligned: ``(cols, valid)``, ``(R, W)``."""
    counts = mask.sum(dim=1)
    width = int(counts.max()) if mask.numel() else 0
    order = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)[:, :width]
    valid = torch.arange(width, device=mask.device).unsqueeze(0) < counts.unsqueeze(1)
    return torch.where(valid, order, 0), valid


class DenseLayout:
    """All triplets from labels: positives ``labels[a] == ref_labels[j]``, negatives ``!=``.

    Args:
        labels: ``(N,)``.
        ref_labels: ``(M,)``.
        same_set: remove the diagonal (self pairs), i.e. ``ref_labels is labels``.
    """

    def __init__(self, labels: Tensor, ref_labels: Tensor, same_set: bool) -> None:
        self.labels, self.ref_labels, self.same_set = labels, ref_labels, same_set
        self.num_rows, self.num_cols = len(labels), len(ref_labels)

    def masks(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        """Boolean ``(pos, neg)`` masks of rows ``start:stop``."""
        pos = self.labels[start:stop].unsqueeze(1) == self.ref_labels.unsqueeze(0)
        neg = ~pos
        if self.same_set:
            r = torch.arange(stop - start, device=pos.device)
            pos[r, r + start] = False
        return pos, neg

    def counts(self) -> tuple[Tensor, Tensor]:
        """Positives and negatives per anchor row, ``(N,)`` each (int64)."""
        ref_sorted = torch.sort(self.ref_labels).values
        lo = torch.searchsorted(ref_sorted, self.labels, side="left")
        hi = torch.searchsorted(ref_sorted, self.labels, side="right")
        same = hi - lo
        return same - int(self.same_set), self.num_cols - same

    def chunks(self, lists: bool = False, elements: int = CHUNK_ELEMENTS) -> Iterator[Chunk]:
        step = max(1, elements // max(self.num_cols, 1))
        for start in range(0, self.num_rows, step):
            stop = min(start + step, self.num_rows)
            pos, neg = self.masks(start, stop)
            if not lists:
                yield Chunk(slice(start, stop), None, pos, None, neg)
                continue
            pos_cols, pos_valid = _mask_to_lists(pos)
            neg_cols, neg_valid = _mask_to_lists(neg)
            yield Chunk(slice(start, stop), pos_cols, pos_valid, neg_cols, neg_valid)


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
        o1 = torch.argsort(a1, stable=True)
        o2 = torch.argsort(a2, stable=True)
        self.p_sorted, self.n_sorted = p[o1], n[o2]
        self.pos_off = torch.cumsum(self.pos_count, 0) - self.pos_count
        self.neg_off = torch.cumsum(self.neg_count, 0) - self.neg_count

    def counts(self) -> tuple[Tensor, Tensor]:
        return self.pos_count, self.neg_count

    def _lists(self, rows: Tensor, count: Tensor, off: Tensor, sorted_cols: Tensor, width: int):
        slot = torch.arange(width, device=rows.device).unsqueeze(0)
        valid = slot < count[rows].unsqueeze(1)
        idx = (off[rows].unsqueeze(1) + slot).clamp(max=max(len(sorted_cols) - 1, 0))
        cols = torch.where(valid, sorted_cols[idx], 0) if len(sorted_cols) else idx * 0
        return cols, valid

    def chunks(self, lists: bool = True, elements: int = CHUNK_ELEMENTS) -> Iterator[Chunk]:
        del lists  # always lists
        active = torch.nonzero((self.pos_count > 0) & (self.neg_count > 0)).flatten()
        if len(active) == 0:
            return
        widths = torch.maximum(self.pos_count[active], self.neg_count[active]).tolist()
        pos_w = self.pos_count[active].tolist()
        neg_w = self.neg_count[active].tolist()
        start = 0
        while start < len(widths):
            stop, wp, wn = start, 0, 0
            while stop < len(widths):
                new_w = max(wp, wn, widths[stop])
                if stop > start and (stop - start + 1) * new_w > elements:
                    break
                wp, wn = max(wp, pos_w[stop]), max(wn, neg_w[stop])
                stop += 1
            rows = active[start:stop]
            pos_cols, pos_valid = self._lists(rows, self.pos_count, self.pos_off, self.p_sorted, wp)
            neg_cols, neg_valid = self._lists(rows, self.neg_count, self.neg_off, self.n_sorted, wn)
            yield Chunk(rows, pos_cols, pos_valid, neg_cols, neg_valid)
            start = stop


Layout = DenseLayout | GroupedLayout


# ---------------------------------------------------------------------------------------------
# ThresholdSums


def _sorted_with_prefix(vals: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Row-sorted valid values (invalid -> +max at the end), their count and prefix sums."""
    big = pos_inf(vals.dtype)
    count = valid.sum(dim=1)
    srt = torch.sort(torch.where(valid, vals, big), dim=1).values
    in_range = torch.arange(srt.shape[1], device=srt.device).unsqueeze(0) < count.unsqueeze(1)
    prefix = F.pad(torch.cumsum(torch.where(in_range, srt, 0), dim=1), (1, 0))
    return srt, count, prefix


def _neg_side(select: Select) -> tuple[str, bool]:
    """Searchsorted side on sorted negatives, and whether the selection is their suffix.

    ``x = p - n`` is compared with ``e`` via ``q = p - e`` (e.g. ``x < e <=> n > q``).
    """
    return {
        "lt": ("right", True),  # x < e  <=> n > q
        "le": ("left", True),  # x <= e <=> n >= q
        "gt": ("left", False),  # x > e  <=> n < q
        "ge": ("right", False),  # x >= e <=> n <= q
    }[select]


def _pos_side(select: Select) -> tuple[str, bool]:
    """Searchsorted side on sorted ``q`` for a negative ``n``, and whether it is the suffix."""
    return {
        "lt": ("left", False),  # q < n
        "le": ("right", False),  # q <= n
        "gt": ("right", True),  # q > n
        "ge": ("left", True),  # q >= n
    }[select]


def _chunk_forward(
    pos: Tensor, pos_valid: Tensor, neg: Tensor, neg_valid: Tensor, edges: Tensor, select: Select
) -> tuple[Tensor, Tensor, Tensor]:
    """``(sums (K+1,), counts (K+1,), finite)`` of one chunk; entry K is all triplets."""
    acc = pos.dtype
    srt, n_neg, prefix = _sorted_with_prefix(neg, neg_valid)
    n_pos = pos_valid.sum(dim=1)
    pos_z = torch.where(pos_valid, pos, 0)
    neg_total = prefix.gather(1, n_neg.unsqueeze(1))  # (R, 1)
    side, suffix = _neg_side(select)
    sums, counts = [], []
    for e in edges:
        q = pos - e
        j = torch.searchsorted(srt, q, side=side)
        j = torch.minimum(j, n_neg.unsqueeze(1))
        below = prefix.gather(1, j)
        if suffix:
            c, s = n_neg.unsqueeze(1) - j, neg_total - below
        else:
            c, s = j, below
        c = torch.where(pos_valid, c, 0)
        sums.append((c.to(acc) * pos_z).sum() - torch.where(pos_valid, s, 0).sum())
        counts.append(c.sum())
    sums.append((n_neg.to(acc) * pos_z.sum(dim=1)).sum() - (n_pos.to(acc) * neg_total[:, 0]).sum())
    counts.append((n_pos * n_neg).sum())
    finite = torch.isfinite(pos_z).all() & torch.isfinite(torch.where(neg_valid, neg, 0)).all()
    return torch.stack(sums), torch.stack(counts), finite


def _chunk_backward(
    pos: Tensor,
    pos_valid: Tensor,
    neg: Tensor,
    neg_valid: Tensor,
    edges: Tensor,
    select: Select,
    g: Tensor,
) -> tuple[Tensor, Tensor]:
    """Gradients of ``g . sums`` with respect to the chunk's positive and negative values."""
    acc = pos.dtype
    srt_neg = torch.sort(torch.where(neg_valid, neg, pos_inf(acc)), dim=1).values
    n_neg = neg_valid.sum(dim=1, keepdim=True)
    srt_pos = torch.sort(torch.where(pos_valid, pos, pos_inf(acc)), dim=1).values
    n_pos = pos_valid.sum(dim=1, keepdim=True)
    pos_in = torch.arange(srt_pos.shape[1], device=pos.device).unsqueeze(0) < n_pos
    nside, nsuffix = _neg_side(select)
    pside, psuffix = _pos_side(select)
    g_pos = n_neg.to(acc) * g[-1]
    g_neg = n_pos.to(acc) * g[-1]
    g_pos = g_pos.expand_as(pos).clone()
    g_neg = g_neg.expand_as(neg).clone()
    for k, e in enumerate(edges):
        q = pos - e
        j = torch.minimum(torch.searchsorted(srt_neg, q, side=nside), n_neg)
        c = n_neg - j if nsuffix else j
        g_pos += g[k] * c.to(acc)
        q_srt = torch.where(pos_in, srt_pos - e, pos_inf(acc))
        i = torch.minimum(torch.searchsorted(q_srt, neg, side=pside), n_pos)
        c = n_pos - i if psuffix else i
        g_neg += g[k] * c.to(acc)
    return torch.where(pos_valid, g_pos, 0), -torch.where(neg_valid, g_neg, 0)


class ThresholdSums(torch.autograd.Function):
    """Per-threshold ``(sums, counts)`` of ``x`` over the triplets of a layout.

    For each edge ``e_k``: ``sum(x)`` and ``#x`` over triplets with ``x <select> e_k``; the
    last entry covers all triplets. ``sums`` is NaN when a value used by any triplet is not
    finite. ``counts`` (int64) has no gradient.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, d: Tensor, layout: Layout, edges: Tensor, select: Select
    ) -> tuple[Tensor, Tensor]:
        k = len(edges)
        sums = torch.zeros(k + 1, dtype=d.dtype, device=d.device)
        counts = torch.zeros(k + 1, dtype=torch.long, device=d.device)
        finite = torch.ones((), dtype=torch.bool, device=d.device)
        for ch in layout.chunks(lists=False):
            pos, neg = take(d, ch.rows, ch.pos_cols), take(d, ch.rows, ch.neg_cols)
            s, c, f = _chunk_forward(pos, ch.pos_valid, neg, ch.neg_valid, edges, select)
            sums += s
            counts += c
            finite &= f
        sums = torch.where(finite, sums, torch.full_like(sums, float("nan")))
        ctx.save_for_backward(d, edges)
        ctx.layout, ctx.select = layout, select
        ctx.mark_non_differentiable(counts)
        return sums, counts

    @staticmethod
    @once_differentiable
    def backward(ctx, g_sums: Tensor, g_counts: Tensor):  # type: ignore[override]
        d, edges = ctx.saved_tensors
        grad = torch.zeros_like(d)
        for ch in ctx.layout.chunks(lists=False):
            pos, neg = take(d, ch.rows, ch.pos_cols), take(d, ch.rows, ch.neg_cols)
            gp, gn = _chunk_backward(
                pos, ch.pos_valid, neg, ch.neg_valid, edges, ctx.select, g_sums
            )
            put(grad, ch.rows, ch.pos_cols, gp)
            put(grad, ch.rows, ch.neg_cols, gn)
        return grad, None, None, None


def threshold_sums(
    d: Tensor, layout: Layout, edges: Sequence[float] | Tensor, select: Select
) -> tuple[Tensor, Tensor]:
    """Functional entry point of :class:`ThresholdSums`."""
    e = torch.as_tensor(edges, dtype=d.dtype, device=d.device).reshape(-1)
    return ThresholdSums.apply(d, layout, e, select)  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------
# BlockSums


def _softplus_grad(v: Tensor) -> Tensor:
    # torch's softplus (beta=1, threshold=20) is linear above the threshold
    return torch.where(v > 20, torch.ones_like(v), torch.sigmoid(v))


def _blocks(ch: Chunk, elements: int) -> Iterator[tuple[slice, slice]]:
    rows, wp = ch.pos_valid.shape
    wn = ch.neg_valid.shape[1]
    p_step = max(1, min(wp, elements // max(wn, 1)))
    r_step = max(1, elements // max(p_step * wn, 1))
    for r0 in range(0, rows, r_step):
        for p0 in range(0, wp, p_step):
            yield slice(r0, min(r0 + r_step, rows)), slice(p0, min(p0 + p_step, wp))


@dataclass
class _Block:
    v: Tensor  # (r, p, n) violations
    valid: Tensor
    an_wins: Tensor | None  # swap: weight of d[a, n] in min(d_an, d_pn) (ties split)


def _block_values(
    ap: Tensor, an: Tensor, pn: Tensor | None, valid: Tensor, margin: float
) -> _Block:
    an_b = an.unsqueeze(1)
    if pn is None:
        return _Block(ap.unsqueeze(2) - an_b + margin, valid, None)
    wins = torch.where(an_b < pn, 1.0, torch.where(an_b == pn, 0.5, 0.0)).to(ap.dtype)
    return _Block(ap.unsqueeze(2) - torch.minimum(an_b, pn) + margin, valid, wins)


class BlockSums(torch.autograd.Function):
    """``(sum, count, num_triplets)`` of ``f(x + margin)`` over the triplets of a layout.

    Only losses ``> low`` count (``low`` None: all); ``f`` = softplus (``smooth``) or relu.
    With ``d_pn`` (swap), ``d[a, n]`` is replaced by ``min(d[a, n], d_pn[p, n])``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        d: Tensor,
        d_pn: Tensor | None,
        layout: Layout,
        margin: float,
        smooth: bool,
        low: float | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        total = torch.zeros((), dtype=d.dtype, device=d.device)
        count = torch.zeros((), dtype=torch.long, device=d.device)
        num = torch.zeros((), dtype=torch.long, device=d.device)
        finite = torch.ones((), dtype=torch.bool, device=d.device)
        for blk, _ in BlockSums._iter(d, d_pn, layout, margin):
            loss = F.softplus(blk.v) if smooth else torch.relu(blk.v)
            sel = blk.valid if low is None else blk.valid & (loss > low)
            total += torch.where(sel, loss, 0).sum()
            count += sel.sum()
            num += blk.valid.sum()
            finite &= torch.isfinite(torch.where(blk.valid, blk.v, 0)).all()
        total = torch.where(finite, total, torch.full_like(total, float("nan")))
        ctx.save_for_backward(d, d_pn if d_pn is not None else d)
        ctx.has_pn = d_pn is not None
        ctx.layout, ctx.margin, ctx.smooth, ctx.low = layout, margin, smooth, low
        ctx.mark_non_differentiable(count, num)
        return total, count, num

    @staticmethod
    def _iter(d: Tensor, d_pn: Tensor | None, layout: Layout, margin: float):
        for ch in layout.chunks(lists=True):
            rows = _rows_tensor(ch.rows, d.device)
            for rs, ps in _blocks(ch, BLOCK_ELEMENTS):
                r, pc, nc = rows[rs], ch.pos_cols[rs, ps], ch.neg_cols[rs]  # type: ignore[index]
                ap = d[r.unsqueeze(1), pc]
                an = d[r.unsqueeze(1), nc]
                pn = None if d_pn is None else d_pn[pc.unsqueeze(2), nc.unsqueeze(1)]
                valid = ch.pos_valid[rs, ps].unsqueeze(2) & ch.neg_valid[rs].unsqueeze(1)
                yield _block_values(ap, an, pn, valid, margin), (r, pc, nc)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_total: Tensor, g_count: Tensor, g_num: Tensor):  # type: ignore[override]
        d, d_pn_saved = ctx.saved_tensors
        d_pn = d_pn_saved if ctx.has_pn else None
        grad = torch.zeros_like(d)
        grad_pn = torch.zeros_like(d_pn) if d_pn is not None else None
        for blk, (r, pc, nc) in BlockSums._iter(d, d_pn, ctx.layout, ctx.margin):
            if ctx.smooth:
                loss, dl = F.softplus(blk.v), _softplus_grad(blk.v)
            else:
                loss, dl = torch.relu(blk.v), (blk.v > 0).to(blk.v.dtype)
            sel = blk.valid if ctx.low is None else blk.valid & (loss > ctx.low)
            w = torch.where(sel, dl * g_total, 0)
            rr = r.unsqueeze(1)
            grad.index_put_((rr.expand_as(pc), pc), w.sum(dim=2), accumulate=True)
            w_an = w if blk.an_wins is None else w * blk.an_wins
            grad.index_put_((rr.expand_as(nc), nc), -w_an.sum(dim=1), accumulate=True)
            if grad_pn is not None and blk.an_wins is not None:
                w_pn = -(w - w_an)
                idx = (pc.unsqueeze(2).expand_as(w_pn), nc.unsqueeze(1).expand_as(w_pn))
                grad_pn.index_put_(idx, w_pn, accumulate=True)
        return grad, grad_pn, None, None, None, None


def block_sums(
    d: Tensor,
    layout: Layout,
    margin: float,
    *,
    smooth: bool,
    d_pn: Tensor | None = None,
    low: float | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Functional entry point of :class:`BlockSums`."""
    return BlockSums.apply(d, d_pn, layout, margin, smooth, low)  # type: ignore[no-any-return]
