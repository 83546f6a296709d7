"""Resumable passes: the iterator of one pass and the random-handle states it may need.

A pass is drawn whole when it starts (an array of indices); :class:`PassIterator` yields it
and knows what it yielded (its ``position``). A pass drawn from a global legacy handle
(``numpy.random``, a ``RandomState``) or a global ``Generator`` can only be drawn again from
the handle's state at the start of the pass: :func:`rng_state` / :func:`set_rng_state`
read and write it as plain data (lists, ints, floats, numpy arrays), which a checkpoint can
hold.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

__all__ = ["PassIterator", "as_numpy", "rng_state", "set_rng_state"]


class PassIterator:
    """The indices of one pass: :attr:`items` yields them one at a time, :meth:`take` in chunks.

    :attr:`items` is numpy's own iterator over the pass (no Python call per index); the
    position is read from what it has left.

    Args:
        stream: the indices of the pass.
        position: how many of them were already yielded (they are skipped).
        pass_start: what redraws the pass (kept for ``state_dict``), or None.
    """

    def __init__(self, stream: np.ndarray, position: int, pass_start: Any) -> None:
        self.length = len(stream)
        self.items: Iterator[Any] = iter(stream[min(position, self.length) :])
        self.pass_start = pass_start

    @property
    def position(self) -> int:
        """How many indices of the pass were yielded (or skipped) so far."""
        return self.length - operator.length_hint(self.items)

    @property
    def done(self) -> bool:
        return operator.length_hint(self.items) == 0

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` indices (fewer at the end of the pass), from :attr:`items`."""
        return np.fromiter(itertools.islice(self.items, n), dtype=np.int64)


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
