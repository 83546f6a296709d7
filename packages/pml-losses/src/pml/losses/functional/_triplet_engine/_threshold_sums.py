"""ThresholdSums: per-threshold sums and counts of ``x = d_ap - d_an`` over all triplets.

For thresholds ``e_k``, the count and the sum of ``x`` over the triplets with ``x < e_k`` (or
``<=``, ``>``, ``>=``), in ``O(N M log M)`` time and ``O(N M)`` memory. Each anchor's
negatives are sorted once; a positive's selected negatives are a prefix or suffix of the
sorted row found with ``searchsorted``, whose sum is read from a cumulative sum. The gradient
of such a sum is an integer count per cell (how many selected triplets use the cell, with a
sign): for positives the prefix length, for negatives a cumulative histogram of the
positives' split points. These counts are kept for backward (or recomputed, above a memory
budget); no autograd graph is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from pml.core.dtypes import pos_inf
from pml.losses.functional._triplet_engine._layouts import Layout, put, take

Select = Literal["lt", "le", "gt", "ge"]

#: ThresholdSums keeps its per-cell counts for backward up to this many (else recomputes)
STORE_ELEMENTS = 1 << 28
#: ThresholdSums compares directly (no sorting) while edges x positives per anchor <= this
COMPARE_MAX_POSITIVES = 32
#: elements per (rows x positives x negatives) block of the direct comparison
COMPARE_BLOCK_ELEMENTS = 1 << 21


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
    step = max(1, COMPARE_BLOCK_ELEMENTS // max(wp * wn, 1))
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
    """Sums and counts of one chunk, for every edge, from its padded positive/negative values.

    ``x = pos - neg`` over the chunk's triplets: per edge, ``sum(x)`` over the selected
    triplets is ``sum_p c_p pos_p - sum_p s_p`` (``c_p``: negatives selected with positive
    ``p``, ``s_p``: their sum). ``c, s`` come from :func:`_by_comparison` while few positives
    make a direct ``(R, Wp, Wn)`` comparison cheap, else from :func:`_by_sorting`.

    Args:
        pos: ``d[a, p]``, shape ``(R, Wp)``; ``pos_valid`` marks the real entries.
        neg: ``d[a, n]``, shape ``(R, Wn)``; ``neg_valid`` marks the real entries.
        edges: thresholds ``(K,)``.
        select: which side of each edge is selected.
        with_total: append the sum of ``x`` over all triplets to ``sums``.
        with_counts: also return the per-cell counts backward needs.

    Returns:
        ``sums (K [+ 1],)``, ``counts (K + 1,)`` (the last: all triplets) and, with
        ``with_counts``, ``pos_counts (K, R, Wp)`` and ``neg_counts (K, R, Wn)``.
    """
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
