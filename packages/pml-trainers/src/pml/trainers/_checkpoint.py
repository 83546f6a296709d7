"""Checkpoint files: written atomically, read without unpickling code.

A checkpoint is a nested mapping of tensors, numbers, strings, booleans, None and
lists/tuples/dicts of those (what ``torch.load(weights_only=True)`` accepts). It is written
with :func:`pml.core.io.atomic_write` (temp file + fsync + rename: a crash never leaves a
half-written file) and read with ``weights_only=True``: a file that carries a pickled class
(or any other code) is refused with :class:`CheckpointError`.

Random-number-generator states (torch CPU/CUDA, numpy, Python ``random``) are converted to
that plain form by :func:`rng_state` and restored by :func:`set_rng_state`.
"""

from __future__ import annotations

import os
import pickle
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pml.core.io import atomic_write

__all__ = [
    "CheckpointError",
    "load_checkpoint",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]


class CheckpointError(ValueError):
    """A checkpoint file is unsafe to load (it carries code) or is not a pml checkpoint."""


def save_checkpoint(path: str | os.PathLike[str], state: Mapping[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (parent folders are created).

    Args:
        path: the file to write (conventionally ``*.pth``).
        state: a mapping that ``torch.load(weights_only=True)`` can read back: tensors,
            numbers, strings, booleans, None, and lists/tuples/dicts of those.

    Raises:
        TypeError: ``state`` is not a mapping.
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping; got {type(state).__name__}")
    target = Path(os.fspath(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(state)
    atomic_write(target, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device | None = None
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Args:
        path: the checkpoint file.
        map_location: where tensors go (as in ``torch.load``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file holds pickled code (a class, a function) or is not a
            mapping; it is never executed.
    """
    target = Path(os.fspath(path))
    if not target.is_file():
        raise FileNotFoundError(f"checkpoint {os.fspath(target)!r} does not exist")
    try:
        state = torch.load(target, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refusing to load {os.fspath(target)!r}: it carries pickled objects other than "
            f"tensors and plain containers (weights_only load failed: {err})"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{os.fspath(target)!r} is not a checkpoint: expected a dict, got "
            f"{type(state).__name__}"
        )
    return state


def rng_state() -> dict[str, Any]:
    """The torch (CPU and every CUDA device), numpy and Python RNG states, as plain data."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": int(version),
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only where CUDA is present)."""
    torch.set_rng_state(state["torch"].cpu())
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    py_state = state["python"]
    random.setstate(
        (py_state["version"], tuple(int(v) for v in py_state["internal"]), py_state["gauss_next"])
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
