"""Input conversion and finiteness checks shared by the package (atomic writes: pml.core.io)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from pml.core.dtypes import accumulation_dtype


def as_tensor(x: Any, name: str) -> Tensor:
    """A tensor from a tensor or a numpy array (no copy when possible).

    Raises:
        TypeError: ``x`` is neither (lists are not accepted, like the reference).
    """
    if isinstance(x, Tensor):
        return x
    if isinstance(x, np.ndarray):
        if x.dtype.kind in "USO":
            raise TypeError(f"{name} must hold numbers; got a numpy array of dtype {x.dtype}")
        return torch.from_numpy(np.ascontiguousarray(x))
    raise TypeError(f"{name} must be a torch.Tensor or a numpy.ndarray; got {type(x).__name__}")


def as_embeddings(x: Any, name: str, device: torch.device | None = None) -> Tensor:
    """2-D floating embeddings (at least float32; float64 kept) on ``device``.

    Raises:
        TypeError: not a tensor/array.
        ValueError: not 2-D.
    """
    t = as_tensor(x, name)
    if t.ndim != 2:
        raise ValueError(f"{name} must have shape (num_embeddings, dim); got {tuple(t.shape)}")
    t = t.to(device=device) if device is not None else t
    return t.to(accumulation_dtype(t.dtype))


def as_labels(x: Any, name: str, num: int, device: torch.device | None = None) -> Tensor:
    """Labels ``(num,)`` or ``(num, D)`` on ``device``, dtype kept (no float32 cast).

    Raises:
        TypeError: not a tensor/array.
        ValueError: wrong length or a 0-dim value.
    """
    t = as_tensor(x, name)
    if t.ndim == 0 or t.shape[0] != num:
        raise ValueError(
            f"{name} must have length {num} to match the embeddings; got shape {tuple(t.shape)}"
        )
    if t.dtype == torch.bool:
        t = t.long()
    return t.to(device=device) if device is not None else t


def check_dim(x: Tensor, name: str, dim: int, like: str) -> None:
    """``ValueError`` unless ``x`` ``(n, d)`` has ``d == dim`` (the dim of ``like``)."""
    if x.shape[1] != dim:
        raise ValueError(f"{name} must have dim {dim} like {like}; got {x.shape[1]}")


def to_numpy_f32(x: Any) -> np.ndarray:
    """C-contiguous float32 numpy array (what faiss wants) from a tensor or array."""
    if isinstance(x, Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


def common_dtype(*tensors: Tensor) -> torch.dtype:
    """The floating dtype all of ``tensors`` are compared in (promoted, at least float32)."""
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return accumulation_dtype(dtype)
