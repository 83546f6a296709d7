"""Input conversion and atomic file writes shared by the package."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
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


def to_numpy_f32(x: Any) -> np.ndarray:
    """C-contiguous float32 numpy array (what faiss wants) from a tensor or array."""
    if isinstance(x, Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


@contextlib.contextmanager
def atomic_path(filename: str | os.PathLike[str]) -> Iterator[str]:
    """Yield a temporary path beside ``filename``; rename it over ``filename`` on success."""
    target = Path(filename)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write(filename: str | os.PathLike[str], write: Callable[[str], Any]) -> None:
    """Call ``write(tmp_path)`` then atomically rename the temporary file to ``filename``."""
    with atomic_path(filename) as tmp:
        write(tmp)
