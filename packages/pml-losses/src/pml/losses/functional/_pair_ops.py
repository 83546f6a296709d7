"""Building blocks of the pair losses: hinges per pair or summed over a mask, weighted LSE.

Private to :mod:`pml.losses.functional` (tests import them from here). A :class:`Hinge` is the
formula of one side of a hinge pair loss (contrastive, intra-pair variance); the same
``Hinge`` gives the per-pair losses of a pair list (:func:`hinge_losses`) and the sums a
reducer finishes from over the cells of a mask (:func:`masked_hinge_sums`), so a loss states
its formula once for both routes.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from pml.core.dtypes import accumulation_dtype, neg_inf
from pml.core.functional import masked_logsumexp
from pml.losses.functional._softmax_ops import Negatives
from pml.reducers.functional import threshold_mask


class Hinge(NamedTuple):
    """``relu(sign * (x - center)) ** power`` per value.

    ``center`` is ``offset``, or ``center_coef`` times the mean of the values (the listed
    values, or the cells of the mask) when ``center_coef`` is given; the mean is
    differentiated. ``offset``/``center_coef`` may be tensors (learnable).
    """

    sign: int
    offset: Tensor | float = 0.0
    power: int = 1
    center_coef: Tensor | float | None = None

    def is_learnable(self) -> bool:
        """A parameter is a tensor that requires grad (only the per-pair route gives its grad)."""
        return any(
            isinstance(v, Tensor) and v.requires_grad for v in (self.offset, self.center_coef)
        )


class HingeSums(NamedTuple):
    """Sufficient statistics of a hinge over a mask (0-dim tensors).

    ``total``: sum of the kept losses (accumulation dtype); ``count``: how many were kept;
    ``num``: how many cells the mask has.
    """

    total: Tensor
    count: Tensor
    num: Tensor


def hinge_losses(values: Tensor, hinge: Hinge, mean: Tensor | None = None) -> Tensor:
    """Per-value losses of ``hinge`` (see :class:`Hinge`), computed in >= float32.

    Args:
        values: pair values, shape ``(P,)`` (any shape).
        hinge: the formula.
        mean: the mean a ``center_coef`` hinge is centred on (default: ``values.mean()``).

    Returns:
        ``values``' shape and dtype.
    """
    x = values.to(accumulation_dtype(values.dtype))
    if hinge.center_coef is None:
        center: Tensor | float = hinge.offset
    else:
        center = hinge.center_coef * (x.mean() if mean is None else mean.to(x.dtype))
    # in-place relu on the fresh difference: one allocation, not two
    r = (x - center if hinge.sign > 0 else center - x).relu_()
    return (r if hinge.power == 1 else r.square()).to(values.dtype)


class _MaskedHingeSums(torch.autograd.Function):
    """Sum and count of ``relu(sign * (x - center)) ** power`` over kept cells; fused backward.

    Autograd would keep and replay about six ``(N, M)`` passes (sub, relu, pow, where and
    their backward); the gradient here is one to three vectorised passes. The active cells
    are read from the kept losses' sign instead of a data-dependent ``where`` (slow on CPU).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        x: Tensor,
        mask: Tensor,
        offset: float,
        sign: int,
        power: int,
        center_coef: float | None,
        low: float | None,
        high: float | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        xa = x.to(accumulation_dtype(x.dtype))
        num = torch.count_nonzero(mask)
        if center_coef is None:
            center: Tensor | float = offset
        else:
            center = center_coef * (torch.where(mask, xa, 0).sum() / num.clamp_min(1))
        r = (xa - center if sign > 0 else center - xa).relu_()
        loss = r if power == 1 else r.square()
        if high is None and (low is None or low <= 0):
            # losses are >= 0: a threshold at or below 0 only drops zeros, which add nothing
            kept = torch.where(mask, loss, 0)
            count = num if low is None or low < 0 else torch.count_nonzero(kept)
        else:
            keep = mask & threshold_mask(loss, low, high)
            kept = loss * keep
            count = torch.count_nonzero(keep)
        ctx.save_for_backward(kept, mask, num)
        ctx.sign, ctx.power, ctx.center_coef = sign, power, center_coef
        ctx.x_dtype = x.dtype
        ctx.mark_non_differentiable(count, num)
        return kept.sum(), count, num

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor, *_: Tensor) -> tuple:  # type: ignore[override]
        sign, power, coef = ctx.sign, ctx.power, ctx.center_coef  # type: ignore[attr-defined]
        kept, mask, num = ctx.saved_tensors  # type: ignore[attr-defined]
        scale = grad * sign
        if power == 1:
            # d relu / dx on kept cells: 1 where the kept loss is > 0, else 0
            grad_x = torch.sign(kept).mul_(scale)
        else:
            kept_r = kept.sqrt()  # relu(...) on kept cells, 0 elsewhere
            grad_x = kept_r * (2 * scale)
            if coef is not None:  # through the center: coef * mean over the mask
                shift = 2 * scale * coef * kept_r.sum() / num.clamp_min(1)
                grad_x = grad_x - torch.where(mask, shift, 0)
        return grad_x.to(ctx.x_dtype), None, None, None, None, None, None, None  # type: ignore[attr-defined]


def masked_hinge_sums(
    x: Tensor,
    mask: Tensor,
    hinge: Hinge,
    low: float | None = None,
    high: float | None = None,
) -> HingeSums:
    """The sums a reducer needs for the hinge losses of every cell of ``mask``.

    Kept cells: in ``mask`` and, when given, ``> low`` / ``< high`` (a threshold reducer's
    bounds). The centre of a ``center_coef`` hinge is the mean of ``x`` over the mask. The
    gradient flows through ``total`` (fused backward); ``hinge`` parameters must not require
    grad (see :meth:`Hinge.is_learnable`).

    Args:
        x: values, shape ``(N, M)``.
        mask: boolean cells, shape ``(N, M)``.
        hinge: the formula.
        low: keep losses strictly above (None: no bound).
        high: keep losses strictly below (None: no bound).

    Returns:
        :class:`HingeSums` ``(total, count, num)``.

    Example:
        >>> x = torch.tensor([[0.2, 1.5], [0.9, 0.4]])
        >>> s = masked_hinge_sums(x, torch.ones(2, 2, dtype=torch.bool), Hinge(-1, 1.0), low=0)
        >>> [round(v.item(), 4) for v in s]
        [1.5, 3, 4]
    """
    coef = hinge.center_coef
    return HingeSums(
        *_MaskedHingeSums.apply(
            x,
            mask,
            float(hinge.offset),
            hinge.sign,
            hinge.power,
            None if coef is None else float(coef),
            low,
            high,
        )
    )


def weighted_logsumexp(z: Tensor, weight: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """``log(sum(weight * exp(z)))`` along ``dim``; ``finfo.min`` for slices without weight.

    ``weight`` is a bool mask or counts (each cell repeated that often). Returns the values
    (accumulation dtype) and a bool "slice has a positive weight" tensor.
    """
    keep = weight if weight.dtype == torch.bool else weight > 0
    if weight.dtype != torch.bool:
        z = z + torch.log(weight.to(z.dtype).clamp_min(1))  # counts >= 1 where kept
    lse = masked_logsumexp(z, keep, dim=dim, empty=neg_inf(z.dtype))
    return lse, keep.amax(dim=dim)


def pair_hinge_losses(
    mat: Tensor,
    a1: Tensor,
    p: Tensor,
    neg: Negatives,
    hinges: tuple[Hinge, Hinge],
    low: float | None = None,
    high: float | None = None,
) -> tuple[Tensor, Tensor | HingeSums]:
    """A hinge pair loss over listed positive pairs and listed or masked negative pairs.

    The positives' per-pair losses ``(P,)``; for a negative list ``(a2, n)`` their per-pair
    losses ``(Nn,)``, for a negative mask the :class:`HingeSums` of its cells (kept by
    ``low``/``high``), which a reducer finishes. ``hinges``: ``(positive, negative)``.
    """
    pos = hinge_losses(mat[a1, p], hinges[0])
    if isinstance(neg, Tensor):
        return pos, masked_hinge_sums(mat, neg, hinges[1], low, high)
    return pos, hinge_losses(mat[neg[0], neg[1]], hinges[1])
