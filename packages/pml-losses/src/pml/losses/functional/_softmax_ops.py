"""Building blocks of the softmax-style losses: masked and segment log-sum-exp, label cells.

Private to :mod:`pml.losses.functional` (tests import them from here).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pml.core.dtypes import neg_inf
from pml.core.indices import sortable_labels

Negatives = Tensor | tuple[Tensor, Tensor]

#: up to this many (N x M) cells a dense mask is cheaper than gathering same-label cells
_DENSE_CELLS = 1 << 18


def softplus_exact(x: Tensor) -> Tensor:
    """``log(1 + exp(x))`` without torch's linear cut-off at 20 (exact for every ``x``)."""
    return torch.logaddexp(x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_row_logsumexp(x: Tensor, mask: Tensor) -> Tensor:
    """Log-sum-exp of each row over the entries where ``mask`` is True.

    Rows with no kept entry give ``-inf`` (so ``softplus`` of them is exactly 0) and pass a
    zero gradient; kept entries get the usual softmax gradient.

    Args:
        x: values, shape ``(R, C)``, floating point.
        mask: boolean, shape ``(R, C)``.

    Returns:
        Shape ``(R,)``, dtype of ``x``.

    Example:
        >>> x = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
        >>> masked_row_logsumexp(x, torch.tensor([[True, False, True], [False] * 3]))
        tensor([2.1269,   -inf])
    """
    return torch.where(mask.any(dim=1), row_logsumexp_or_min(x, mask), float("-inf"))


def row_logsumexp_or_min(x: Tensor, mask: Tensor) -> Tensor:
    """:func:`masked_row_logsumexp` with ``≈ finfo.min`` (not -inf) for rows with no entry.

    ``finfo.min`` acts as ``-inf`` in the ``softplus``/``sigmoid`` that follow (0 and exact
    zero gradients) and saves a pass over the mask.
    """
    return torch.logsumexp(torch.where(mask, x, neg_inf(x.dtype)), dim=1)


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
        Shape ``(N,)``; ``-inf`` (or ``finfo.min`` for a mask) for anchors without negatives.
    """
    if isinstance(neg, Tensor):
        return row_logsumexp_or_min(z, neg.bool())
    a2, n = neg
    return segment_logsumexp(z[a2, n], a2, z.shape[0])


def same_label_cells(labels: Tensor, ref_labels: Tensor) -> tuple[Tensor, Tensor]:
    """Every ``(i, j)`` with ``labels[i] == ref_labels[j]`` (diagonal included), as two lists.

    Labels may have any dtype torch compares (bool too), the two possibly different.
    Sort-based: O(N log N + number of cells), no ``(N, M)`` mask or ``nonzero``. Row-major
    order (rows ascending, then columns ascending).

    Example:
        >>> [t.tolist() for t in same_label_cells(torch.tensor([1, 0, 1]), torch.tensor([0, 1, 1]))]
        [[0, 0, 1, 2, 2], [1, 2, 0, 1, 2]]
    """
    query, ref = sortable_labels(labels, ref_labels)  # one dtype that searchsorted accepts
    order = torch.argsort(ref, stable=True)
    sorted_ref = ref[order]
    lo = torch.searchsorted(sorted_ref, query, side="left")
    counts = torch.searchsorted(sorted_ref, query, side="right") - lo
    rows = torch.repeat_interleave(torch.arange(len(labels), device=labels.device), counts)
    offsets = torch.cumsum(counts, 0) - counts
    within = torch.arange(len(rows), device=labels.device) - offsets[rows]
    return rows, order[lo[rows] + within]


def same_label_mass(logits: Tensor, labels: Tensor, ref_labels: Tensor) -> Tensor:
    """``Σ_{j: labels_i = ref_labels_j} softmax(logits_i)_j`` per row, shape ``(N,)``.

    Small inputs: a dense masked sum (few, cheap ops). Large inputs: the log-softmax is
    gathered at the same-label cells only (no masked ``(N, M)`` product in either pass).
    """
    if logits.numel() <= _DENSE_CELLS:
        same = labels.unsqueeze(1) == ref_labels.unsqueeze(0)
        return torch.where(same, torch.softmax(logits, dim=1), 0).sum(dim=1)
    log_prob = torch.log_softmax(logits, dim=1)
    rows, cols = same_label_cells(labels, ref_labels)
    return logits.new_zeros(logits.shape[0]).index_add(0, rows, torch.exp(log_prob[rows, cols]))


class _NegLogCellMass(torch.autograd.Function):
    """``-log Σ_{cells of row i} softmax(logits_i)`` = ``LSE_all - LSE_cells``; fused backward.

    The gradient is ``softmax(logits)`` minus the within-cells softmax at the (few) cells:
    one ``(N, M)`` pass, no zero-filled index gradient and no log-softmax replay.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        values: Tensor,
        rows: Tensor,
        cols: Tensor,
        scale: float,
    ) -> Tensor:
        logits = values * scale
        num_rows = logits.shape[0]
        lse_all = torch.logsumexp(logits, dim=1)
        cell = logits[rows, cols]
        peak = torch.full((num_rows,), float("-inf"), dtype=logits.dtype, device=logits.device)
        peak = peak.scatter_reduce(0, rows, cell, "amax")
        peak = torch.where(torch.isfinite(peak), peak, 0)
        total = logits.new_zeros(num_rows).index_add_(0, rows, torch.exp(cell - peak[rows]))
        lse_cells = peak + torch.log(total)
        ctx.save_for_backward(logits, lse_all, rows, cols, cell, lse_cells)
        ctx.scale = scale
        return lse_all - lse_cells

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple:  # type: ignore[override]
        logits, lse_all, rows, cols, cell, lse_cells = ctx.saved_tensors  # type: ignore[attr-defined]
        g = grad.to(logits.dtype) * ctx.scale  # type: ignore[attr-defined]
        out = torch.sub(logits, lse_all.unsqueeze(1)).exp_().mul_(g.unsqueeze(1))
        out.index_put_((rows, cols), -g[rows] * torch.exp(cell - lse_cells[rows]), accumulate=True)
        return out, None, None, None


def neg_log_same_label_mass(
    values: Tensor, labels: Tensor, ref_labels: Tensor, scale: float = 1.0
) -> Tensor:
    """``-log Σ_{j: labels_i = ref_labels_j} softmax(scale·values_i)_j`` per row, ``(N,)``.

    Computed as ``LSE_all - LSE_same`` (never underflows; a row without a same-label cell gives
    ``inf``), with a fused backward for large inputs.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
        >>> neg_log_same_label_mass(logits, torch.tensor([0, 1]), torch.tensor([0, 1, 0]))
        tensor([0.0943, 0.2395])
    """
    if values.numel() <= _DENSE_CELLS:
        return -torch.log(same_label_mass(values * scale, labels, ref_labels))
    rows, cols = same_label_cells(labels, ref_labels)
    return _NegLogCellMass.apply(values, rows, cols, scale)
