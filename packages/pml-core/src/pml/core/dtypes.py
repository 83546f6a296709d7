"""dtype sentinels and dtype/device helpers.

Sentinels are finite (``finfo`` values), never ``inf``: several algorithms compare against them
(``x == pos_inf(x.dtype)``), and masking with a finite value keeps ``logsumexp`` NaN-free.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pml.core.validation import check_type

__all__ = [
    "accumulation_dtype",
    "neg_inf",
    "pos_inf",
    "small_val",
    "to_device",
    "to_dtype",
]


def neg_inf(dtype: torch.dtype) -> float:
    """Most negative finite value of ``dtype`` (``torch.finfo(dtype).min``).

    Example:
        >>> neg_inf(torch.float16)
        -65504.0
    """
    return torch.finfo(dtype).min


def pos_inf(dtype: torch.dtype) -> float:
    """Largest finite value of ``dtype`` (``torch.finfo(dtype).max``).

    Example:
        >>> pos_inf(torch.float16)
        65504.0
    """
    return torch.finfo(dtype).max


def small_val(dtype: torch.dtype) -> float:
    """Smallest positive normal value of ``dtype`` (``torch.finfo(dtype).tiny``).

    Example:
        >>> small_val(torch.float32)
        1.1754943508222875e-38
    """
    return torch.finfo(dtype).tiny


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype to reduce in: at least float32, float64 stays float64.

    Example:
        >>> accumulation_dtype(torch.bfloat16), accumulation_dtype(torch.float64)
        (torch.float32, torch.float64)
    """
    if not dtype.is_floating_point:
        return torch.float32
    return torch.promote_types(dtype, torch.float32)


def to_dtype(x: Tensor, tensor: Tensor | None = None, dtype: torch.dtype | None = None) -> Tensor:
    """Cast ``x`` to ``dtype`` (or to ``tensor.dtype``) unless autocast is active.

    Under autocast the cast is skipped, so that autocast keeps choosing the precision.
    """
    dt = dtype if dtype is not None else (tensor.dtype if tensor is not None else None)
    if dt is None or torch.is_autocast_enabled() or x.dtype == dt:
        return x
    return x.to(dt)


def to_device(
    x: Tensor,
    tensor: Tensor | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Move ``x`` to ``device`` (or ``tensor.device``), then cast with :func:`to_dtype`.

    Raises:
        TypeError: if ``x`` is not a tensor.
    """
    check_type("x", x, Tensor)
    dev = device if device is not None else (tensor.device if tensor is not None else None)
    if dev is not None and x.device != torch.device(dev):
        x = x.to(dev)
    if dtype is not None:
        x = to_dtype(x, dtype=dtype)
    return x
