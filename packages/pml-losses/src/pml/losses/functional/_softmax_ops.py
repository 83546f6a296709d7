"""Building blocks of the softmax-style losses: per-anchor and segment log-sum-exp, targets.

Private to :mod:`pml.losses.functional` (tests import them from here). The masked log-sum-exp
is :func:`pml.core.functional.masked_logsumexp`, same-label cells
:func:`pml.core.indices.same_label_cells`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from pml.core.functional import masked_logsumexp
from pml.core.indices import same_label_cells

Negatives = Tensor | tuple[Tensor, Tensor]

#: up to this many (N x M) cells a dense mask is cheaper than gathering same-label cells
_DENSE_CELLS = 1 << 18


def softplus_exact(x: Tensor) -> Tensor:
    """``log(1 + exp(x))`` without torch's linear cut-off at 20 (exact for every ``x``)."""
    return torch.logaddexp(x, torch.zeros((), dtype=x.dtype, device=x.device))


def segment_logsumexp(values: Tensor, segment_ids: Tensor, num_segments: int) -> Tensor:
    """Log-sum-exp of ``values`` grouped by ``segment_ids`` (a scatter log-sum-exp).

    Args:
        values: shape ``(K,)``, floating point.
        segment_ids: int64, shape ``(K,)``, entries in ``[0, num_segments)``.
        num_segments: number of output entries.

    Returns:
        Shape ``(num_segments,)``, dtype of ``values``; ``-inf`` (with zero gradient) for
        segments without entries. NaN in a segment gives NaN there.

    Example:
        >>> segment_logsumexp(torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0, 0, 2]), 3)
        tensor([0.6931,   -inf, 1.0000])
    """
    seg = segment_ids.long()
    has = torch.bincount(seg, minlength=num_segments)[:num_segments] > 0
    with torch.no_grad():
        top = values.new_full((num_segments,), float("-inf"))
        top = top.scatter_reduce(0, seg, values.detach(), reduce="amax", include_self=True)
        top = torch.where(torch.isfinite(top), top, 0)
    total = values.new_zeros(num_segments).index_add(0, seg, torch.exp(values - top[seg]))
    safe = torch.where(has, total, 1)
    return torch.where(has, torch.log(safe) + top, float("-inf"))


def negative_logsumexp(z: Tensor, neg: Negatives) -> Tensor:
    """Per anchor row ``a``: log-sum-exp of ``z[a, n]`` over the anchor's negatives.

    Args:
        z: logits, shape ``(N, M)``.
        neg: a boolean mask ``(N, M)`` (each cell once) or a pair list ``(a2, n)`` (each
            entry once: duplicates count several times).

    Returns:
        Shape ``(N,)``; ``-inf`` (with a zero gradient) for anchors without negatives.
    """
    if isinstance(neg, Tensor):
        return masked_logsumexp(z, neg, empty=-math.inf)
    a2, n = neg
    return segment_logsumexp(z[a2, n], a2, z.shape[0])


Targets = Tensor | tuple[Tensor, Tensor]


def same_label_targets(
    labels: Tensor, ref_labels: Tensor, own_column: Literal["keep", "drop", "fallback"] = "keep"
) -> tuple[Targets, Tensor | None]:
    """The same-label cells of ``(N, M)`` as softmax targets, and the rows whose own column goes.

    ``own_column`` says what happens to the cell ``(i, i)`` (the query set is the reference
    set, ``N == M``): ``"keep"`` it, ``"drop"`` it, or drop it only in rows that have another
    same-label column (``"fallback"``: a row whose label is unique keeps its own column as its
    only target). A dropped own column leaves the softmax entirely: the caller sets its logit
    to ``-inf`` in the rows returned.

    Small inputs get a boolean ``(N, M)`` mask, large ones cell lists ``(rows, cols)`` (no
    ``(N, M)`` mask or ``nonzero``).

    Returns:
        ``(targets, excluded)``: ``excluded`` is a boolean ``(N,)`` (rows whose own column is
        dropped), None for ``"keep"``.
    """
    n = len(labels)
    if len(labels) * len(ref_labels) <= _DENSE_CELLS:
        same = labels.unsqueeze(1) == ref_labels.to(labels.device).unsqueeze(0)
        if own_column == "keep":
            return same, None
        if own_column == "drop":
            return same.fill_diagonal_(False), same.new_ones(n)
        excluded = same.sum(dim=1) > 1
        same.diagonal().logical_and_(~excluded)
        return same, excluded
    rows, cols = same_label_cells(labels, ref_labels)
    if own_column == "keep":
        return (rows, cols), None
    if own_column == "fallback":
        excluded = torch.bincount(rows, minlength=n) > 1
    else:
        excluded = torch.ones(n, dtype=torch.bool, device=rows.device)
    keep = (rows != cols) | ~excluded[rows]
    return (rows[keep], cols[keep]), excluded


def neg_log_target_mass(logits: Tensor, targets: Targets) -> tuple[Tensor, Tensor]:
    """``-log Σ_{j in targets_i} softmax(logits_i)_j`` per row, as ``LSE_all - LSE_targets``.

    Exact whatever the scale of the logits: a target mass far below the smallest float is
    never rounded to 0 (its log is what is computed). Large inputs go through cell lists with
    a fused backward.

    Args:
        logits: ``(N, M)``, floating point (``-inf`` entries leave the softmax).
        targets: a boolean ``(N, M)`` mask or cells ``(rows, cols)``
            (:func:`same_label_targets`).

    Returns:
        ``(losses, has_target)``, both ``(N,)``: losses are 0, with a zero gradient, on rows
        without a target.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
        >>> neg_log_target_mass(logits, torch.tensor([[True, False, True], [False] * 3]))
        (tensor([0.0943, 0.0000]), tensor([ True, False]))
    """
    if isinstance(targets, Tensor):
        has_target = targets.any(dim=1)
        losses = _NegLogMaskMass.apply(logits, targets)
    else:
        rows, cols = targets
        has_target = torch.bincount(rows, minlength=logits.shape[0]) > 0
        losses = _NegLogCellMass.apply(logits, rows, cols)
    return torch.where(has_target, losses, 0), has_target


class _NegLogMaskMass(torch.autograd.Function):
    """``-log Σ_{mask_i} softmax(logits_i)`` = ``LSE_all - LSE_mask``, dense; fused backward.

    Both sums are shifted by their own row maximum, so neither underflows; masked-out cells
    are exponentiated as ``exp(0)`` (not as ``exp(-inf)``, a slow path on CPUs). The gradient
    is ``softmax(logits) - softmax_mask(logits)`` from the two saved exponentials. Rows
    without a masked cell give ``inf`` and pass a zero gradient.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, logits: Tensor, mask: Tensor
    ) -> Tensor:
        top = logits.amax(dim=1, keepdim=True)
        top = torch.where(torch.isfinite(top), top, 0)
        e_all = torch.sub(logits, top).exp_()
        s_all = e_all.sum(dim=1)
        top_m = torch.where(mask, logits, float("-inf")).amax(dim=1, keepdim=True)
        top_m = torch.where(torch.isfinite(top_m), top_m, 0)
        e_mask = torch.where(mask, logits - top_m, 0).exp_().mul_(mask)
        s_mask = e_mask.sum(dim=1)
        ctx.save_for_backward(e_all, s_all, e_mask, s_mask)
        return (torch.log(s_all) + top.squeeze(1)) - (torch.log(s_mask) + top_m.squeeze(1))

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple:  # type: ignore[override]
        e_all, s_all, e_mask, s_mask = ctx.saved_tensors  # type: ignore[attr-defined]
        g = grad.to(e_all.dtype)
        g_mask = torch.where(s_mask > 0, g / s_mask, 0)
        out = e_all * (g / s_all).unsqueeze(1)  # saved tensors stay intact (retain_graph)
        return out.sub_(e_mask * g_mask.unsqueeze(1)), None


class _NegLogCellMass(torch.autograd.Function):
    """``-log Σ_{cells of row i} softmax(logits_i)`` = ``LSE_all - LSE_cells``; fused backward.

    The gradient is ``softmax(logits)`` minus the within-cells softmax at the (few) cells:
    one ``(N, M)`` pass, no zero-filled index gradient and no log-softmax replay.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        logits: Tensor,
        rows: Tensor,
        cols: Tensor,
    ) -> Tensor:
        num_rows = logits.shape[0]
        lse_all = torch.logsumexp(logits, dim=1)
        cell = logits[rows, cols]
        peak = torch.full((num_rows,), float("-inf"), dtype=logits.dtype, device=logits.device)
        peak = peak.scatter_reduce(0, rows, cell, "amax")
        peak = torch.where(torch.isfinite(peak), peak, 0)
        total = logits.new_zeros(num_rows).index_add_(0, rows, torch.exp(cell - peak[rows]))
        lse_cells = peak + torch.log(total)
        ctx.save_for_backward(logits, lse_all, rows, cols, cell, lse_cells)
        return lse_all - lse_cells

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple:  # type: ignore[override]
        logits, lse_all, rows, cols, cell, lse_cells = ctx.saved_tensors  # type: ignore[attr-defined]
        g = grad.to(logits.dtype)
        out = torch.sub(logits, lse_all.unsqueeze(1)).exp_().mul_(g.unsqueeze(1))
        out.index_put_((rows, cols), -g[rows] * torch.exp(cell - lse_cells[rows]), accumulate=True)
        return out, None, None
