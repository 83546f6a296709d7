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
  of the sorted row found with ``searchsorted``, whose sum is read from a cumulative sum. The
  gradient of such a sum is an integer count per cell (how many selected triplets use the
  cell, with a sign): for positives the prefix length, for negatives a cumulative histogram
  of the positives' split points. These counts are kept for backward (or recomputed, above a
  memory budget); no autograd graph is built.
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
from pml.core.indices import sortable_labels

Select = Literal["lt", "le", "gt", "ge"]

#: elements per chunk of the (rows x columns) work arrays
CHUNK_ELEMENTS = 1 << 20
#: elements per (rows x positives x negatives) block of BlockSums
BLOCK_ELEMENTS = 1 << 21
#: ThresholdSums keeps its per-cell counts for backward up to this many (else recomputes)
STORE_ELEMENTS = 1 << 28
#: ThresholdSums compares directly (no sorting) while edges x positives per anchor <= this
COMPARE_MAX_POSITIVES = 32


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

    Positives come as lists (the anchor's label group among the references, found by sorting
    the reference labels once); negatives as a mask over all columns.

    Args:
        labels: ``(N,)``.
        ref_labels: ``(M,)``.
        same_set: remove the diagonal (self pairs), i.e. ``ref_labels is labels``.
    """

    def __init__(self, labels: Tensor, ref_labels: Tensor, same_set: bool) -> None:
        # one dtype that argsort/searchsorted accept (bool as uint8), equality kept
        self.labels, self.ref_labels = sortable_labels(labels, ref_labels)
        self.same_set = same_set
        self.num_rows, self.num_cols = len(labels), len(ref_labels)
        self.ref_order = torch.argsort(self.ref_labels, stable=True)
        ref_sorted = self.ref_labels[self.ref_order]
        self.group_start = torch.searchsorted(ref_sorted, self.labels, side="left")
        self.group_size = torch.searchsorted(ref_sorted, self.labels, side="right")
        self.group_size -= self.group_start
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
        return self.group_size - int(self.same_set), self.num_cols - self.group_size

    def chunks(self, neg_lists: bool = False, elements: int = CHUNK_ELEMENTS) -> Iterator[Chunk]:
        if self._width is None:
            self._width = int(self.group_size.max()) if self.num_rows else 0
        step = max(1, elements // max(self.num_cols, 1))
        for start in range(0, self.num_rows, step):
            stop = min(start + step, self.num_rows)
            rows = torch.arange(start, stop, device=self.labels.device)
            pos_cols, pos_valid = _segment_lists(
                rows, self.group_start, self.group_size, self.ref_order, self._width
            )
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
        return self.pos_count, self.neg_count

    def chunks(self, neg_lists: bool = True, elements: int = CHUNK_ELEMENTS) -> Iterator[Chunk]:
        del neg_lists  # negatives are always lists here
        active = torch.nonzero((self.pos_count > 0) & (self.neg_count > 0)).flatten()
        if len(active) == 0:
            return
        pos_w = self.pos_count[active].tolist()
        neg_w = self.neg_count[active].tolist()
        start = 0
        while start < len(active):
            stop, wp, wn = start, 0, 0
            while stop < len(active):
                new_wp, new_wn = max(wp, pos_w[stop]), max(wn, neg_w[stop])
                if stop > start and (stop - start + 1) * max(new_wp, new_wn) > elements:
                    break
                wp, wn = new_wp, new_wn
                stop += 1
            rows = active[start:stop]
            pos = _segment_lists(rows, self.pos_off, self.pos_count, self.p_sorted, wp)
            neg = _segment_lists(rows, self.neg_off, self.neg_count, self.n_sorted, wn)
            yield Chunk(rows, pos[0], pos[1], neg[0], neg[1])
            start = stop


Layout = DenseLayout | GroupedLayout


# ---------------------------------------------------------------------------------------------
# ThresholdSums


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


@dataclass
class _ChunkResult:
    sums: Tensor  # (K,) per edge [+ 1: all triplets, when asked]
    counts: Tensor  # (K + 1,) int64, the last entry: all triplets
    pos_counts: Tensor | None = None  # (K, R, Wp): selected triplets using each positive cell
    neg_counts: Tensor | None = None  # (K, R, Wn): ... each negative cell


_COMPARE = {"lt": torch.gt, "le": torch.ge, "gt": torch.lt, "ge": torch.le}  # n <op> q


def _by_comparison(
    pos: Tensor, pos_valid: Tensor, neg: Tensor, neg_valid: Tensor, e: Tensor, select: Select
) -> tuple[Tensor, Tensor, Tensor]:
    """``(c, s, k)`` for one edge by comparing every negative with every positive.

    ``c`` (R, Wp): selected negatives per positive; ``s`` (R, Wp): their sum; ``k`` (R, Wn):
    selected positives per negative. ``O(R Wp Wn)`` work in blocks, no sorting.
    """
    acc = pos.dtype
    big = pos_inf(acc)
    # padding that never compares true: invalid positives are NaN, invalid negatives sit on
    # the far side of every threshold
    q = torch.where(pos_valid, pos - e, float("nan"))
    pad = big if select in ("gt", "ge") else -big
    n_pad = torch.where(neg_valid, neg, pad)
    rows, wp = pos.shape
    wn = neg.shape[1]
    step = max(1, BLOCK_ELEMENTS // max(wp * wn, 1))
    cs, ss, ks = [], [], []
    for r0 in range(0, rows, step):
        r1 = min(r0 + step, rows)
        nb = n_pad[r0:r1].unsqueeze(1)
        sel = _COMPARE[select](nb, q[r0:r1].unsqueeze(2)).to(acc)  # (r, Wp, Wn)
        # elementwise, not a matrix product: TF32 / reduced-precision matmul settings must
        # not round the sums; padded negatives are finite and never selected (0 * pad = 0)
        ss.append((sel * nb).sum(dim=2))
        cs.append(sel.sum(dim=2).long())  # exact: integers below 2**24
        ks.append(sel.sum(dim=1).to(torch.int32))
    return torch.cat(cs), torch.cat(ss), torch.cat(ks)


def _by_sorting(
    pos: Tensor,
    pos_valid: Tensor,
    neg: Tensor,
    neg_valid: Tensor,
    edges: Tensor,
    select: Select,
    with_counts: bool,
) -> list[tuple[Tensor, Tensor, Tensor | None]]:
    """``[(c, s, k)]`` per edge from each row's sorted negatives (``O(Wn log Wn)`` per row).

    Invalid negatives sort last (+max), so prefix sums up to the valid count only read valid
    values; ``k`` comes from a cumulative histogram of the positives' split points, mapped
    back through the sort permutation (its entries at invalid negatives are meaningless).
    """
    acc = pos.dtype
    rows, width = neg.shape
    n_neg = neg_valid.sum(dim=1, keepdim=True)
    n_pos = pos_valid.sum(dim=1, keepdim=True)
    srt, perm = torch.sort(torch.where(neg_valid, neg, pos_inf(acc)), dim=1)
    prefix = torch.cumsum(srt, dim=1)

    def prefix_at(j: Tensor) -> Tensor:  # sum of the first j sorted values
        return torch.where(j > 0, prefix.gather(1, (j - 1).clamp(min=0)), 0)

    neg_total = prefix_at(n_neg)
    side, suffix = _neg_side(select)
    out = []
    for e in edges:
        j = torch.minimum(torch.searchsorted(srt, pos - e, side=side), n_neg)
        c, s = (n_neg - j, neg_total - prefix_at(j)) if suffix else (j, prefix_at(j))
        c = torch.where(pos_valid, c, 0)
        s = torch.where(pos_valid, s, 0)
        k = None
        if with_counts:
            # the negative at sorted position i is selected by positive p iff i >= j_p
            # (suffix) or i < j_p (prefix)
            hist = torch.zeros(rows, width + 1, dtype=torch.int32, device=neg.device)
            hist.scatter_add_(1, j, pos_valid.to(torch.int32))
            cum = torch.cumsum(hist[:, :width], dim=1, dtype=torch.int32)
            k_sorted = cum if suffix else n_pos.to(torch.int32) - cum
            k = torch.empty_like(k_sorted).scatter_(1, perm, k_sorted)
        out.append((c, s, k))
    return out


def _chunk_stats(
    pos: Tensor,
    pos_valid: Tensor,
    neg: Tensor,
    neg_valid: Tensor,
    edges: Tensor,
    select: Select,
    with_total: bool,
    with_counts: bool,
) -> _ChunkResult:
    acc = pos.dtype
    n_neg = neg_valid.sum(dim=1, keepdim=True)
    n_pos = pos_valid.sum(dim=1, keepdim=True)
    pos_z = torch.where(pos_valid, pos, 0)
    if len(edges) * pos.shape[1] <= COMPARE_MAX_POSITIVES:
        per_edge = [_by_comparison(pos, pos_valid, neg, neg_valid, e, select) for e in edges]
    else:
        per_edge = _by_sorting(pos, pos_valid, neg, neg_valid, edges, select, with_counts)
    sums = [(c.to(acc) * pos_z).sum() - s.sum() for c, s, _ in per_edge]
    counts = [c.sum() for c, _, _ in per_edge]
    if with_total:
        neg_sum = torch.where(neg_valid, neg, 0).sum(dim=1, keepdim=True)
        sums.append((n_neg.to(acc) * pos_z).sum() - (n_pos.to(acc) * neg_sum).sum())
    counts.append((n_pos * n_neg).sum())
    out = _ChunkResult(torch.stack(sums), torch.stack(counts))
    if with_counts:
        out.pos_counts = torch.stack([c for c, _, _ in per_edge])
        out.neg_counts = torch.stack([k for _, _, k in per_edge])  # type: ignore[misc]
    return out


def _count_dtype(max_count: int) -> torch.dtype:
    return torch.int16 if max_count < (1 << 15) else torch.int32


class ThresholdSums(torch.autograd.Function):
    """Per-threshold ``(sums, counts)`` of ``x`` over the triplets of a layout.

    For each edge ``e_k``: ``sum(x)`` and ``#x`` over triplets with ``x <select> e_k``; with
    ``with_total`` a last sum covers all triplets (``counts`` always ends with the number of
    triplets). ``sums`` is NaN when ``d`` has a non-finite entry. ``counts`` (int64) has no
    gradient.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, d: Tensor, layout: Layout, edges: Tensor, select: Select, with_total: bool
    ) -> tuple[Tensor, Tensor]:
        k = len(edges)
        sums = torch.zeros(k + int(with_total), dtype=d.dtype, device=d.device)
        counts = torch.zeros(k + 1, dtype=torch.long, device=d.device)
        store = ctx.needs_input_grad[0] and k * d.numel() <= STORE_ELEMENTS
        kept: list[tuple[Tensor, Tensor]] = []
        for ch in layout.chunks():
            pos, neg = take(d, ch.rows, ch.pos_cols), take(d, ch.rows, ch.neg_cols)
            res = _chunk_stats(
                pos, ch.pos_valid, neg, ch.neg_valid, edges, select, with_total, store
            )
            sums += res.sums
            counts += res.counts
            if store:
                cd = _count_dtype(max(pos.shape[1], neg.shape[1]))
                kept.append((res.pos_counts.to(cd), res.neg_counts.to(cd)))  # type: ignore[union-attr]
        sums = torch.where(torch.isfinite(d).all(), sums, torch.full_like(sums, float("nan")))
        ctx.save_for_backward(d, edges)
        ctx.layout, ctx.select, ctx.with_total = layout, select, with_total
        ctx.kept = kept if store else None
        ctx.mark_non_differentiable(counts)
        return sums, counts

    @staticmethod
    @once_differentiable
    def backward(ctx, g_sums: Tensor, g_counts: Tensor):  # type: ignore[override]
        d, edges = ctx.saved_tensors
        grad = torch.zeros_like(d)
        k = len(edges)
        g_edges = g_sums[:k].reshape(-1, 1, 1)
        for i, ch in enumerate(ctx.layout.chunks()):
            if ctx.kept is not None:
                pos_counts, neg_counts = ctx.kept[i]
            else:
                pos, neg = take(d, ch.rows, ch.pos_cols), take(d, ch.rows, ch.neg_cols)
                res = _chunk_stats(
                    pos, ch.pos_valid, neg, ch.neg_valid, edges, ctx.select, False, True
                )
                pos_counts, neg_counts = res.pos_counts, res.neg_counts
            if k == 1:
                g_pos = pos_counts[0].to(d.dtype) * g_edges[0]
                g_neg = neg_counts[0].to(d.dtype) * g_edges[0]
            else:
                g_pos = (g_edges * pos_counts.to(d.dtype)).sum(dim=0)
                g_neg = (g_edges * neg_counts.to(d.dtype)).sum(dim=0)
            if ctx.with_total:
                g_pos += g_sums[k] * ch.neg_valid.sum(dim=1, keepdim=True).to(d.dtype)
                g_neg += g_sums[k] * ch.pos_valid.sum(dim=1, keepdim=True).to(d.dtype)
            put(grad, ch.rows, ch.pos_cols, g_pos.masked_fill_(~ch.pos_valid, 0))
            put(grad, ch.rows, ch.neg_cols, g_neg.masked_fill_(~ch.neg_valid, 0).neg_())
        ctx.kept = None
        return grad, None, None, None, None


def threshold_sums(
    d: Tensor,
    layout: Layout,
    edges: Sequence[float] | Tensor,
    select: Select,
    *,
    with_total: bool = False,
) -> tuple[Tensor, Tensor]:
    """Functional entry point of :class:`ThresholdSums`."""
    e = torch.as_tensor(edges, dtype=d.dtype, device=d.device).reshape(-1)
    return ThresholdSums.apply(d, layout, e, select, with_total)  # type: ignore[no-any-return]


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
        for ch in layout.chunks(neg_lists=True):
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
