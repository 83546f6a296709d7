"""FastAP (Cakir et al., CVPR 2019): average precision from triangular distance histograms.

Each distance is scattered into its two neighbouring bins (``scatter_add``): ``O(N²)``
memory, no ``(bins, N, N)`` pulses. The rank-based list losses are in
:mod:`pml.losses.functional._ranking`.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from pml.core.dtypes import accumulation_dtype
from pml.losses.functional._ranking import _same_label_counts

__all__ = ["fast_ap_loss"]


class _TriangularHistograms(torch.autograd.Function):
    """Per row, triangular-pulse histograms of the distances: positives, negatives, self.

    Distance ``d`` sits at ``u = d / Δ`` between bins ``floor(u)`` and ``floor(u) + 1`` and
    adds ``1 - frac(u)`` and ``frac(u)`` to them (exactly ``relu(1 - |d - t_b| / Δ)`` on
    every bin ``b``). Row ``i`` has three histograms of ``num_bins + 4`` bins (``-1`` to
    ``num_bins + 2``, the ends only catch what falls outside): its positives (same label),
    its negatives and itself. Output ``(N, 3·(num_bins + 4))``; memory ``O(N²)`` (one int64
    bin index per cell, kept for the backward).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx, dist: Tensor, same: Tensor, num_bins: int, delta: float
    ) -> Tensor:
        n, width = dist.shape[0], num_bins + 4
        u = dist / delta
        # outside [-1, num_bins + 1] every pulse is 0 (gradient 0, like the reference's relu)
        inside = (u >= -1) & (u <= num_bins + 1)
        u.clamp_(-1, num_bins + 1)
        lower = u.floor()
        frac = u.sub_(lower)
        # histogram 0: positives, 1: negatives, 2: the row itself; a NaN goes to column 0
        lower.add_(1 + width).add_(same, alpha=-width)
        lower.diagonal().add_(2 * width)
        idx = lower.nan_to_num_(nan=0.0).long()
        del lower
        hist = dist.new_zeros((n, 3 * width)).scatter_add_(1, idx, 1 - frac)  # lower bin
        upper = dist.new_zeros((n, 3 * width)).scatter_add_(1, idx, frac)
        hist[:, 1:] += upper[:, :-1]  # frac at the next bin
        ctx.save_for_backward(idx, inside)
        ctx.delta = delta  # type: ignore[attr-defined]
        return hist

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        idx, inside = ctx.saved_tensors  # type: ignore[attr-defined]
        slope = torch.zeros_like(grad)  # d loss / d frac: grad[next bin] - grad[lower bin]
        torch.sub(grad[:, 1:], grad[:, :-1], out=slope[:, :-1])
        grad_dist = slope.gather(1, idx).mul_(inside).div_(ctx.delta)  # type: ignore[attr-defined]
        return grad_dist, None, None, None


def fast_ap_loss(
    dist: Tensor,
    labels: Tensor,
    num_bins: int = 10,
    hist_max: float = 4.0,
    weights: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """FastAP per query row (Cakir et al., CVPR 2019), from triangular-pulse histograms.

    Bins ``t_b = b·Δ``, ``Δ = hist_max / num_bins``, ``b = 0..num_bins``; a distance ``d``
    adds ``relu(1 - |d - t_b| / Δ)`` to bin ``b`` of the positive (same label, other row) or
    negative histogram of its row: at most two neighbouring bins, so the histograms come
    from two ``scatter_add`` calls (``O(N²)`` memory, not ``O(N²·bins)``). With
    ``H⁺ = cumsum h⁺`` and ``H = cumsum (h⁺ + h⁻)``, ``FastAP_i = Σ_b h⁺H⁺/H`` over the bins
    where ``h⁺H⁺ > 0`` and ``H > 0``; ``loss_i = (1 - FastAP_i / N⁺_i)·w_i``.

    Args:
        dist: distances of the batch to itself, shape ``(N, N)``, in ``[0, hist_max]``.
        labels: shape ``(N,)``.
        num_bins: number of bins (``num_bins + 1`` centres).
        hist_max: the largest distance (4 for squared distances of unit vectors).
        weights: per-row weights ``(N,)`` (miner weights), or None for ones.

    Returns:
        ``(losses, valid)``: losses ``(N,)`` in the compute dtype (at least float32; NaN on
        rows whose distances are not finite) and the boolean ``(N,)`` rows that count: rows
        with a positive, none at all when no bin of the batch counts.

    Example:
        >>> d = torch.tensor([[0.0, 1.0, 3.0], [1.0, 0.0, 2.0], [3.0, 2.0, 0.0]])
        >>> fast_ap_loss(d, torch.tensor([0, 0, 1]), num_bins=4)
        (tensor([0., 0., 1.]), tensor([ True,  True, False]))
    """
    acc = accumulation_dtype(dist.dtype)
    d = dist.to(acc)
    width = num_bins + 4  # bins -1 .. num_bins + 2 of one histogram: the ends are dropped
    same = labels.unsqueeze(1) == labels.unsqueeze(0)
    hist = _TriangularHistograms.apply(d, same, num_bins, hist_max / num_bins)
    h_pos = hist[:, 1 : num_bins + 2]
    h_neg = hist[:, width + 1 : width + num_bins + 2]
    cum_pos = torch.cumsum(h_pos, 1)
    cum_all = torch.cumsum(h_pos + h_neg, 1)
    num = h_pos * cum_pos
    counts = (num > 0) & (cum_all > 0)
    fast_ap = torch.where(counts, num / torch.where(counts, cum_all, 1), 0).sum(1)
    num_pos = _same_label_counts(labels) - 1
    losses = 1 - fast_ap / num_pos.clamp_min(1)
    if weights is not None:
        losses = losses * weights.to(acc)
    finite = torch.isfinite(hist.detach().sum(1))  # a NaN distance lands in its row
    losses = torch.where(finite, losses, torch.nan)
    valid = (num_pos > 0) & counts.any()
    return losses, valid
