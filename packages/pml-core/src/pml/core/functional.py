"""Small numeric building blocks shared by losses and miners."""

from __future__ import annotations

import torch
from torch import Tensor

from pml.core.dtypes import accumulation_dtype, neg_inf

__all__ = ["logsumexp", "zero_loss"]


def logsumexp(
    x: Tensor, keep_mask: Tensor | None = None, add_one: bool = True, dim: int = 1
) -> Tensor:
    """Masked log-sum-exp that keeps the reduced dimension.

    Entries where ``keep_mask`` is False are ignored (replaced by ``finfo.min``, never
    ``-inf``, so gradients stay finite); ``add_one`` adds a zero entry, giving
    ``log(1 + sum(exp(x)))``; slices with no kept entry give exactly 0. Computed in at least
    float32 and returned in ``x.dtype``.

    Args:
        x: values, shape ``(R, C)``.
        keep_mask: boolean (or 0/1) mask of the same shape, or None to keep everything.
        add_one: include an implicit zero entry.
        dim: dimension to reduce (1 -> output ``(R, 1)``, 0 -> ``(1, C)``).

    Returns:
        Tensor with the reduced dimension kept, dtype of ``x``.

    Example:
        >>> x = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.1, 0.2]])
        >>> m = torch.tensor([[True, False, True], [False, False, False]])
        >>> logsumexp(x, m).flatten()
        tensor([3.1698, 0.0000])
    """
    acc = accumulation_dtype(x.dtype)
    xa = x.to(acc)
    if keep_mask is not None:
        keep = keep_mask.bool()
        xa = xa.masked_fill(~keep, neg_inf(acc))
    if add_one:
        zeros = torch.zeros(
            [1 if d == dim else s for d, s in enumerate(xa.shape)], dtype=acc, device=xa.device
        )
        out = torch.logsumexp(torch.cat([xa, zeros], dim=dim), dim=dim, keepdim=True)
    else:
        out = torch.logsumexp(xa, dim=dim, keepdim=True)
    if keep_mask is not None:
        out = out.masked_fill(~keep.any(dim=dim, keepdim=True), 0)
    return out.to(x.dtype)


def zero_loss(embeddings: Tensor) -> Tensor:
    """A 0-dim zero of ``embeddings``' dtype and device that stays on its autograd graph.

    Backward gives exact zeros. Non-finite embeddings make it NaN, so a broken batch is
    never reported as a clean 0.

    Example:
        >>> e = torch.ones(2, 3, requires_grad=True)
        >>> z = zero_loss(e); z.backward(); (z.item(), e.grad.abs().sum().item())
        (0.0, 0.0)
    """
    return torch.sum(embeddings * 0)
