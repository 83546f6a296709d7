"""Resumable passes: the iterator of one pass and the random-handle states it may need.

A pass is drawn whole when it starts (an array of indices); :class:`PassIterator` yields it
and counts what it yielded (its ``position``). A pass drawn from a global legacy handle
(``numpy.random``, a ``RandomState``) or a global ``Generator`` can only be drawn again from
the handle's state at the start of the pass: :func:`rng_state` / :func:`set_rng_state`
read and write it as plain data (lists, ints, floats, numpy arrays), which a checkpoint can
hold.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["PassIterator", "as_numpy", "rng_state", "set_rng_state"]


class PassIterator:
    """The indices of one pass, one at a time (:meth:`__next__`) or in chunks (:meth:`take`).

    Args:
        stream: the indices of the pass.
        position: how many of them were already yielded (they are skipped).
        pass_start: what redraws the pass (kept for ``state_dict``), or None.
    """

    def __init__(self, stream: np.ndarray, position: int, pass_start: Any) -> None:
        self.stream = stream
        self.position = min(position, len(stream))
        self.pass_start = pass_start

    def __iter__(self) -> PassIterator:
        return self

    def __next__(self) -> Any:
        if self.position >= len(self.stream):
            raise StopIteration
        out = self.stream[self.position]
        self.position += 1
        return out

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` indices (fewer at the end of the pass)."""
        out = self.stream[self.position : self.position + n]
        self.position += len(out)
        return out

    @property
    def done(self) -> bool:
        return self.position >= len(self.stream)


def as_numpy(value: Any) -> np.ndarray:
    """``value`` (an array, a list or a CPU tensor, as a checkpoint returns it) as numpy."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def rng_state(rng: Any) -> Any:
    """The state of a numpy random handle as plain data (legacy: a list; Generator: a dict)."""
    if isinstance(rng, np.random.Generator):
        return dict(rng.bit_generator.state)
    kind, keys, pos, has_gauss, cached = rng.get_state()
    return [str(kind), keys.astype(np.int64), int(pos), int(has_gauss), float(cached)]


def set_rng_state(rng: Any, state: Any) -> None:
    """Write a state :func:`rng_state` returned back into ``rng``."""
    if isinstance(rng, np.random.Generator):
        rng.bit_generator.state = state
        return
    kind, keys, pos, has_gauss, cached = state
    keys = as_numpy(keys).astype(np.uint32)
    rng.set_state((str(kind), keys, int(pos), int(has_gauss), float(cached)))
