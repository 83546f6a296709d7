"""Small numeric building blocks shared by losses and miners."""

from __future__ import annotations

import torch
from torch import Tensor

from pml.core.dtypes import accumulation_dtype

__all__ = ["logsumexp", "masked_logsumexp", "zero_loss"]


def masked_logsumexp(
    x: Tensor,
    keep: Tensor | None = None,
    dim: int = 1,
    *,
    add_one: bool = False,
    empty: float = 0.0,
    keepdim: bool = False,
) -> Tensor:
    """``log(sum(exp(x[keep])))`` along ``dim``; ``log(1 + sum(...))`` with ``add_one``.

    The one masked log-sum-exp of pml. Computed in at least float32 and returned in that
    dtype (callers cast). Masked entries are ``-inf`` rather than ``finfo.min``: ``exp`` of
    huge negative finite numbers takes a slow underflow path on CPU. Slices without a kept
    entry give ``empty`` (0 by default; ``float("-inf")`` or ``finfo.min`` for a softplus or
    sigmoid that follows) and pass a zero gradient; no NaN appears, not even in gradients.

    Args:
        x: values, shape ``(R, C)`` (any shape with ``dim``).
        keep: boolean mask of ``x``'s shape (0/1 accepted), or None to keep everything.
        dim: the dimension to reduce.
        add_one: include an implicit zero entry (an empty slice then gives 0, not ``empty``).
        empty: the value of slices without a kept entry.
        keepdim: keep the reduced dimension.

    Returns:
        ``x``'s shape without ``dim`` (or with size 1 there), dtype ``accumulation_dtype(x)``.

    Example:
        >>> x = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.1, 0.2]])
        >>> m = torch.tensor([[True, False, True], [False, False, False]])
        >>> masked_logsumexp(x, m)
        tensor([3.1269, 0.0000])
    """
    x = x.to(accumulation_dtype(x.dtype))
    if keep is None:
        keep = torch.ones_like(x, dtype=torch.bool)
    elif keep.dtype != torch.bool:
        keep = keep != 0
    has = keep.amax(dim=dim, keepdim=True)
    xm = torch.where(keep, x, float("-inf"))
    mx = xm.amax(dim=dim, keepdim=True).detach()
    # empty slices: shift by 0 (not -inf) and sum to 1, so that nothing is NaN, not even grads
    mx = mx.clamp_min(0) if add_one else torch.where(has, mx, 0)
    total = (xm - mx).exp_().sum(dim=dim, keepdim=True)  # in place: one allocation less
    total = total + torch.exp(-mx) if add_one else total + (~has).to(total.dtype)
    out = mx + torch.log(total)
    out = torch.where(has, out, 0.0 if add_one else empty)
    return out if keepdim else out.squeeze(dim)


def logsumexp(
    x: Tensor, keep_mask: Tensor | None = None, add_one: bool = True, dim: int = 1
) -> Tensor:
    """Masked log-sum-exp that keeps the reduced dimension.

    The reference's signature over :func:`masked_logsumexp`. Entries where ``keep_mask`` is
    False are ignored; ``add_one`` adds a zero entry, giving
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
    out = masked_logsumexp(x, keep_mask, dim, add_one=add_one, keepdim=True)
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
