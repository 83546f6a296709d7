"""BlockSums: sum and count of a non-separable triplet loss, enumerated in bounded blocks.

The sum and count of ``f(x + margin)`` over the triplets of a layout, for an ``f`` that
:mod:`._threshold_sums` cannot split into per-positive and per-negative parts (softplus, or
the hinge with the "swap" distance ``min(d_an, d_pn)``): ``O(T)`` time, ``O(N M)`` memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from pml.losses.functional._triplet_engine._layouts import Chunk, Layout, rows_tensor

#: elements per (rows x positives x negatives) block
BLOCK_ELEMENTS = 1 << 21


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
            rows = rows_tensor(ch.rows, d.device)
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
