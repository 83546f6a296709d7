"""DistributedSampler-style options shared by the samplers: seed, epoch, rank/world size."""

from __future__ import annotations

from typing import Any

import numpy as np

from pml.core.validation import check_int
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
        rank = check_int("rank", rank, min=0, allow_none=True)
        if num_replicas is None:
            if rank not in (None, 0):
                raise ValueError(f"rank must be None or 0 without num_replicas; got {rank}")
            num_replicas, rank = 1, 0
            self.sharded = False
        else:
            num_replicas = check_int("num_replicas", num_replicas, min=1)
            if rank is None:
                raise ValueError("rank must be given with num_replicas (0 <= rank < num_replicas)")
            self.sharded = True
            seed = 0 if seed is None else seed
        if not rank < num_replicas:  # type: ignore[operator]
            raise ValueError(f"rank must be in [0, {num_replicas}); got {rank}")
        self.num_replicas: int = num_replicas  # type: ignore[assignment]
        self.rank: int = rank  # type: ignore[assignment]
        self.seed = check_int("seed", seed, min=0, allow_none=True)
        self.epoch = 0

    def set_epoch(self, epoch: Any) -> None:
        """Select the stream of pass ``epoch`` (an int ``>= 0``)."""
        self.epoch = check_int("epoch", epoch, min=0)  # type: ignore[assignment]

    def require_blocks(self, total_blocks: int, what: str) -> None:
        """Raise ``ValueError`` when sharding would leave every rank without a block.

        ``what`` names the arguments that set ``total_blocks`` (for the message).
        """
        if self.sharded and total_blocks < self.num_replicas:
            raise ValueError(
                f"num_replicas = {self.num_replicas} ranks would each get nothing: {what} "
                f"give(s) {total_blocks} block(s) to share; need at least num_replicas"
            )

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
