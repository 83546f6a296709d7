"""Reductions as pure functions on tensors.

Sums run in at least float32 and results come back in the losses' dtype; float32/float64
inputs reduce with ``torch.mean``/``torch.sum`` on exactly the entries the reference reduces,
so the results are bitwise the reference's. Only :func:`mean_or_fallback` synchronises with
the device (it compacts the kept entries, like the reference); the others handle "nothing to
reduce" with ``torch.where`` against a fallback value instead of a Python ``if``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pml.core.dtypes import accumulation_dtype

__all__ = [
    "class_weighted_mean",
    "divide_or_fallback",
    "mean_or_fallback",
    "mean_per_anchor",
    "mean_per_row",
    "threshold_mask",
]


def threshold_mask(losses: Tensor, low: float | None = None, high: float | None = None) -> Tensor:
    """``(losses > low) & (losses < high)``; a missing bound is not applied. NaN never passes.

    Example:
        >>> threshold_mask(torch.tensor([3.0, 7.0, 1.0, 13.0]), low=2, high=10).tolist()
        [True, True, False, False]
    """
    if low is None and high is None:
        return torch.ones_like(losses, dtype=torch.bool)
    if high is None:
        return losses > low
    if low is None:
        return losses < high
    return (losses > low) & (losses < high)


def mean_or_fallback(losses: Tensor, mask: Tensor, fallback: Tensor) -> Tensor:
    """Mean of ``losses[mask]``, or ``fallback`` (0-dim) when the mask is empty.

    For float32/float64 this is bitwise ``torch.mean(losses[mask])`` (what the reference's
    threshold reducers compute); half inputs are averaged in float32. Masked-out entries (NaN
    included) get no gradient. Compacting the kept entries needs their number on the host: a
    device synchronisation on accelerators, as in the reference.

    Example:
        >>> losses, mask = torch.tensor([0.0, 2.0, 3.0]), torch.tensor([False, True, True])
        >>> mean_or_fallback(losses, mask, torch.tensor(0.0))
        tensor(2.5000)
    """
    kept = torch.masked_select(losses, mask)
    if kept.numel() == 0:
        return fallback.to(losses.dtype)
    return _mean(kept)


def _mean(x: Tensor) -> Tensor:
    """``torch.mean`` for float32/float64 (bitwise), else averaged in float32 and cast back."""
    acc = accumulation_dtype(x.dtype)
    if acc == x.dtype:
        return x.mean()
    return x.mean(dtype=acc).to(x.dtype)


def divide_or_fallback(losses: Tensor, divisor: Tensor | float, fallback: Tensor) -> Tensor:
    """``sum(losses) / divisor`` (summed in >= float32), or ``fallback`` when ``divisor == 0``.

    Example:
        >>> divide_or_fallback(torch.tensor([1.0, 2.0, 3.0]), 4, torch.tensor(0.0))
        tensor(1.5000)
    """
    acc = accumulation_dtype(losses.dtype)
    total = losses.sum(dtype=acc)
    if not isinstance(divisor, Tensor):
        if divisor == 0:
            return fallback.to(losses.dtype)
        return (total / divisor).to(losses.dtype)
    divisor = divisor.to(device=losses.device)
    safe = torch.where(divisor == 0, torch.ones_like(divisor), divisor)
    out = (total / safe).to(losses.dtype)
    return torch.where(divisor == 0, fallback.to(losses.dtype), out)


def class_weighted_mean(losses: Tensor, weights: Tensor, sample_labels: Tensor) -> Tensor:
    """``mean(losses * weights[sample_labels])``: the plain mean, not divided by the weights.

    Example:
        >>> losses, weights = torch.tensor([1.0, 2, 3, 4]), torch.tensor([1.0, 3])
        >>> class_weighted_mean(losses, weights, torch.tensor([0, 0, 1, 1]))
        tensor(6.)
    """
    acc = accumulation_dtype(losses.dtype)
    weighted = losses.to(acc) * weights.to(acc)[sample_labels.long()]
    return weighted.mean().to(losses.dtype)


def mean_per_anchor(losses: Tensor, anchors: Tensor, num_anchors: int) -> Tensor:
    """Average of the losses of each anchor, 0 for anchors without any, shape ``(B,)``.

    Every entry counts, duplicates included. Runs in ``O(len(losses) + B)`` memory.

    Example:
        >>> mean_per_anchor(torch.tensor([0.0, 2.0, 4.0]), torch.tensor([0, 0, 2]), 4)
        tensor([1., 0., 4., 0.])
    """
    acc = accumulation_dtype(losses.dtype)
    idx = anchors.long()
    zeros = torch.zeros(num_anchors, dtype=acc, device=losses.device)
    sums = zeros.index_add(0, idx, losses.to(acc))
    counts = zeros.index_add(0, idx, torch.ones_like(idx, dtype=acc))
    return (sums / counts.clamp(min=1)).to(losses.dtype)


def mean_per_row(x: Tensor, num_per_row: Tensor) -> Tensor:
    """The reference's default aggregation on a dense matrix: ``sum(x, 1) / num_per_row``.

    Rows with ``num_per_row == 0`` give 0.

    Example:
        >>> mean_per_row(torch.tensor([[0.0, 2.0], [0.0, 0.0]]), torch.tensor([2, 0]))
        tensor([1., 0.])
    """
    total = torch.sum(x, dim=1)
    safe = num_per_row.clamp(min=1).to(total.dtype)
    return torch.where(num_per_row > 0, total / safe, torch.zeros_like(total))
