"""Self-matrix routes through a symmetric Gram matrix, for :meth:`BaseDistance.self_matrix`.

The same values as the distance's own matrix up to rounding, with one matrix product fewer in
the backward pass.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class _SymmetricGram(torch.autograd.Function):
    """``x @ x.T`` whose backward is one product, ``(G + G.T) @ x``, instead of two."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.matmul(x, x.transpose(-1, -2))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        # a contiguous copy of the transpose, then a plain add: faster than a strided add
        return (grad + grad.transpose(-1, -2).contiguous()) @ x


def gram(x: Tensor) -> Tensor:
    """``x @ x.T`` (``(N, N)``) with a one-product backward."""
    return _SymmetricGram.apply(x)


def squared_euclidean_gram(x: Tensor) -> Tensor:
    """``||x_i - x_j||²`` as ``||x_i||² + ||x_j||² - 2 x_i·x_j``, clamped at 0 (``(N, N)``).

    ``torch.cdist``'s matrix-product route, squared, with the one-product Gram backward.
    """
    sq = (x * x).sum(dim=1)
    return (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * gram(x)).clamp_min(0)
