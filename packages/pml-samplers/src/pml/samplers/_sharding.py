"""DistributedSampler-style options shared by the samplers: seed, epoch, rank/world size."""

from __future__ import annotations

from typing import Any

import numpy as np

from pml.samplers import functional as SF


class Sharding:
    """Where a sampler's randomness comes from and which share of its stream it yields.

    * ``seed=None`` and no sharding: the global :data:`functional.NUMPY_RANDOM` handle (the
      reference's stream).
    * ``seed`` given (or ``num_replicas`` given, which defaults the seed to 0): a fresh
      ``np.random.default_rng([seed, epoch])`` per pass, so every rank builds the same
      global stream; :meth:`set_epoch` changes it between epochs.
    * ``num_replicas``/``rank``: the global stream is cut into blocks (a batch, a class run,
      a triplet); rank ``r`` yields blocks ``r, r + W, r + 2W, ...``, the same number on
      every rank.
    """

    def __init__(self, num_replicas: int | None, rank: int | None, seed: int | None) -> None:
        if num_replicas is None:
            if rank not in (None, 0):
                raise ValueError(f"rank must be None or 0 without num_replicas; got {rank}")
            num_replicas, rank = 1, 0
            self.sharded = False
        else:
            if isinstance(num_replicas, bool) or not isinstance(num_replicas, int | np.integer):
                raise TypeError(f"num_replicas must be an int; got {type(num_replicas).__name__}")
            if num_replicas < 1:
                raise ValueError(f"num_replicas must be >= 1; got {num_replicas}")
            if rank is None:
                raise ValueError("rank must be given with num_replicas (0 <= rank < num_replicas)")
            self.sharded = True
            seed = 0 if seed is None else seed
        if not 0 <= int(rank) < num_replicas:  # type: ignore[arg-type]
            raise ValueError(f"rank must be in [0, {num_replicas}); got {rank}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer)):
            raise TypeError(f"seed must be an int or None; got {type(seed).__name__}")
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)  # type: ignore[arg-type]
        self.seed = None if seed is None else int(seed)
        self.epoch = 0

    def rng(self) -> Any:
        """The generator of the current pass: the global handle, or a seeded Generator."""
        if self.seed is None:
            return SF.NUMPY_RANDOM
        return np.random.default_rng([self.seed, self.epoch])

    def num_blocks(self, total_blocks: int) -> int:
        """Blocks per rank (the tail that cannot be shared evenly is dropped)."""
        return total_blocks // self.num_replicas

    def take(self, stream: np.ndarray, block: int) -> np.ndarray:
        """This rank's blocks of ``stream`` (``block`` consecutive items each), in order."""
        if not self.sharded:
            return stream
        per_rank = self.num_blocks(len(stream) // block)
        blocks = stream[: per_rank * self.num_replicas * block].reshape(-1, block)
        return blocks[self.rank :: self.num_replicas].reshape(-1)


def check_int(name: str, value: Any, minimum: int) -> int:
    """``int(value)``, raising ``InvalidArgumentError`` below ``minimum``."""
    from pml.core.validation import InvalidArgumentError

    try:
        out = int(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an integer; got {type(value).__name__}") from None
    if out < minimum:
        raise InvalidArgumentError(f"{name} must be >= {minimum}; got {value}")
    return out
