"""BatchStream: the trainer's passes over its sampler, resumable in the middle of a pass.

The stream owns what decides the next batch besides the global random generators:

* the ``torch.Generator`` that shuffles the default sampler (seeded from
  ``torch.initial_seed()``, so constructing a trainer consumes no random numbers);
* the current pass's iterator and the number of batches taken from it;
* the number of passes started (given to samplers with ``set_epoch``);
* at the start of each pass, a snapshot of the generators and sampler states, so that a
  checkpoint taken in the middle of a pass can redo the pass's draws on resume and skip
  the batches already trained on without loading them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from pml.trainers._checkpoint import rng_state, set_rng_state
from pml.trainers._trainer_data import sampler_chain
from pml.trainers._trainer_state import restore_sampler_objects, snapshot_sampler_objects

__all__ = ["BatchStream"]


class BatchStream:
    """Batches of consecutive passes over a DataLoader built around ``sampler``.

    Args:
        sampler: the trainer's sampler (None for the default shuffling one).
    """

    def __init__(self, sampler: Any) -> None:
        self.sampler = sampler
        self.generator = torch.Generator()
        self.generator.manual_seed(torch.initial_seed())
        self.dataloader: Any = None
        self.passes = 0
        self._iterator: Iterator[Any] | None = None
        self._lookahead: tuple[Any] | None = None
        self._consumed = 0
        self._pass_start: dict[str, Any] | None = None
        self._pending_replay: tuple[int, dict[str, Any]] | None = None

    def set_dataloader(self, dataloader: Any, sampler: Any) -> None:
        """Use ``dataloader`` for the next passes (a pass under way continues on the old one).

        After :meth:`load_state_dict` of a state taken in the middle of a pass, that pass is
        redone here: its draws, in the interrupted run's order, and its batches already
        trained on skipped.
        """
        self.dataloader = dataloader
        self.sampler = sampler
        if self._pending_replay is not None:
            self._replay(*self._pending_replay)
            self._pending_replay = None

    def has_next(self) -> bool:
        """Fetch the next batch of the current pass ahead; False when the pass is over."""
        if self._lookahead is None:
            if self._iterator is None:
                self._start_pass()
            try:
                self._lookahead = (next(self._iterator),)  # type: ignore[arg-type]
            except StopIteration:
                self._iterator = None
                self._consumed = 0
                return False
            self._consumed += 1
        return True

    def next(self, *, start_new_pass: bool) -> Any:
        """The next batch; at the end of a pass, the first of a new pass if ``start_new_pass``.

        Raises:
            RuntimeError: the pass is over and ``start_new_pass`` is False.
            ValueError: a new pass yields no batch.
        """
        if self._lookahead is None and not self.has_next():
            if not start_new_pass:
                raise RuntimeError("get_batch() was called after the end of the pass")
            if not self.has_next():
                raise ValueError("the sampler yielded no batch in a whole pass")
        (batch,) = self._lookahead  # type: ignore[misc]
        self._lookahead = None
        return batch

    def _chain(self) -> list[Any]:
        return sampler_chain(self.sampler)

    def _snapshot(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "objects": snapshot_sampler_objects(self._chain()),
            "rng": rng_state(),
        }

    def _restore(self, snap: dict[str, Any]) -> None:
        set_rng_state(snap["rng"])
        self.generator.set_state(snap["generator"])
        restore_sampler_objects(self._chain(), snap["objects"])

    def _set_sampler_epoch(self, pass_index: int) -> None:
        for obj in self._chain():
            set_epoch = getattr(obj, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(pass_index)

    def _start_pass(self) -> None:
        self._set_sampler_epoch(self.passes)
        self._pass_start = self._snapshot()
        self._iterator = iter(self.dataloader)
        self.passes += 1
        self._consumed = 0

    def _replay(self, consumed: int, start: dict[str, Any]) -> None:
        now = self._snapshot()
        self._restore(start)
        self._set_sampler_epoch(self.passes - 1)
        batches = self.dataloader.batch_sampler
        batches.skip = consumed
        self._iterator = iter(self.dataloader)
        batches.last_iter.prime()  # the pass's draws, in the order of the interrupted run
        self._pass_start = start
        self._consumed = consumed
        self._restore(now)

    def state_dict(self) -> dict[str, Any]:
        """The position: passes started, batches trained on in the current one, states."""
        consumed = self._consumed if self._iterator is not None else 0
        if self._lookahead is not None:
            consumed -= 1  # fetched ahead, not trained on yet
        return {
            "generator": self.generator.get_state(),
            "passes": self.passes,
            "consumed": consumed,
            "objects": snapshot_sampler_objects(self._chain()),
            "pass_start": self._pass_start if consumed > 0 else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; a pass under way is redone at :meth:`set_dataloader`."""
        self.generator.set_state(state["generator"])
        restore_sampler_objects(self._chain(), state["objects"])
        self.passes = int(state["passes"])
        self._iterator, self._lookahead, self._consumed = None, None, 0
        consumed = int(state["consumed"])
        self._pending_replay = (consumed, state["pass_start"]) if consumed > 0 else None
