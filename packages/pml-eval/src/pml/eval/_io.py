"""Input conversion, finiteness checks and atomic file writes shared by the package."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
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


# ---------------------------------------------------------------------------- atomic writes
def _create_temp(target: Path) -> Path:
    """A new empty file beside ``target``, created with mode 0o666 (the umask applies)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"could not create a temporary file beside {os.fspath(target)!r}")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; best effort, errors ignored)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(filename: str | os.PathLike[str], write: Callable[[str], Any]) -> None:
    """Write ``filename`` all at once: ``write(tmp_path)``, then rename over ``filename``.

    The temporary file is created in the same directory with mode ``0o666`` minus the umask
    (what ``open(filename, "w")`` would give, not ``mkstemp``'s 0600), synced to disk
    before the rename, and the directory is synced after it (POSIX, best effort). On any
    failure the temporary file is removed and an existing ``filename`` is left intact.

    Args:
        filename: the file to (re)place.
        write: ``fn(path)`` writing the whole content to ``path`` (e.g. ``torch.save``).
    """
    target = Path(os.fspath(filename))
    tmp = _create_temp(target)
    try:
        write(os.fspath(tmp))
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(target.parent)
