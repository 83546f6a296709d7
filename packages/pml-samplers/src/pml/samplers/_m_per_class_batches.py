"""MPerClassBatchSampler: MPerClassSampler's batches as lists, for ``batch_sampler=``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import Sampler

from pml.core.validation import check_bool, check_int
from pml.samplers._arguments import check_count
from pml.samplers._m_per_class import DEFAULT_LENGTH, MPerClassSampler


class MPerClassBatchSampler(Sampler[list[int]]):
    """Batches of ``batch_size // m`` classes times ``m`` items, as lists of indices.

    Pass it as a DataLoader's ``batch_sampler`` (no ``batch_size``/``shuffle``/``sampler``
    there); the pml trainers take it as their ``sampler`` and recognise it as a batch
    sampler. Each pass yields ``num_batches`` batches: the stream of
    :class:`MPerClassSampler` ``(labels, m, batch_size, num_batches * batch_size)``, cut
    into batches, so without ``seed`` it draws exactly what the reference's
    ``MPerClassSampler`` with a ``DataLoader(batch_size=batch_size)`` draws under the same
    numpy seed. With ``coverage=True`` a pass is one epoch over the dataset (every item of
    every class once, no class in two consecutive batches unless it has runs in half of
    them or more; see :class:`MPerClassSampler`), and its number of batches follows from
    the class sizes.

    :meth:`set_epoch`, :meth:`state_dict` and :meth:`load_state_dict` are those of the
    item sampler, :attr:`sampler`.

    Args:
        labels: one label per dataset item (list, numpy array or tensor).
        m: items per class and batch.
        batch_size: items per batch, a multiple of ``m``.
        num_batches: batches per pass (default ``100000 // batch_size``, the item
            sampler's default length); not with ``coverage=True``.
        coverage: one pass = every item once.
        num_replicas, rank, seed: as for :class:`MPerClassSampler` (each rank gets whole
            batches; ``len()`` is the per-rank number of batches).

    Raises:
        TypeError: a count is not an int, ``coverage`` not a bool.
        ValueError: ``num_batches < 1`` or given with ``coverage=True``; the
            :class:`MPerClassSampler` errors (``batch_size`` not a multiple of ``m``, fewer
            than ``batch_size // m`` classes, ...).

    Example:
        >>> import numpy as np
        >>> labels = [0, 0, 1, 1, 2, 2, 3, 3]
        >>> batches = MPerClassBatchSampler(labels, m=2, batch_size=4, num_batches=3, seed=0)
        >>> len(batches), [sorted(labels[i] for i in b) for b in batches]
        (3, [[1, 1, 3, 3], [1, 1, 2, 2], [0, 0, 2, 2]])
        >>> epoch = MPerClassBatchSampler([0, 0, 0, 1, 1, 2, 2, 2], m=2, batch_size=4,
        ...                               coverage=True, seed=0)
        >>> len(epoch), sorted(i for b in epoch for i in b)  # every item, 0..7, at least once
        (3, [0, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 7])
    """

    def __init__(
        self,
        labels: Any,
        m: int,
        batch_size: int,
        num_batches: int | None = None,
        *,
        coverage: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int | None = None,
    ) -> None:
        batch_size = check_count("batch_size", batch_size)
        coverage = check_bool("coverage", coverage)
        if num_batches is not None:
            num_batches = check_int("num_batches", num_batches, min=1)
            if coverage:
                raise ValueError(
                    "num_batches cannot be given with coverage=True (a pass covers every "
                    f"item once; its number of batches follows from the class sizes); got "
                    f"{num_batches}"
                )
            if isinstance(num_replicas, int) and 0 < num_batches < num_replicas:
                # named here: the item sampler would name its length_before_new_iter
                raise ValueError(
                    f"num_replicas = {num_replicas} ranks would each get nothing: num_batches "
                    f"= {num_batches} batches to share; need at least num_replicas"
                )
        length = DEFAULT_LENGTH if num_batches is None or coverage else None
        self.sampler = MPerClassSampler(
            labels,
            m,
            batch_size,
            num_batches * batch_size if length is None else length,  # type: ignore[operator]
            num_replicas=num_replicas,
            rank=rank,
            seed=seed,
            coverage=coverage,
        )
        self.batch_size = batch_size
        self.num_batches = len(self.sampler) // batch_size

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.sampler._start_pass()
        while True:
            batch = batches.take(self.batch_size)
            if len(batch) < self.batch_size:
                return
            yield batch.tolist()

    def set_epoch(self, epoch: int) -> None:
        """:meth:`MPerClassSampler.set_epoch` of :attr:`sampler`."""
        self.sampler.set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        """:meth:`MPerClassSampler.state_dict` of :attr:`sampler` (positions in items)."""
        return self.sampler.state_dict()

    def load_state_dict(self, state: Any) -> None:
        """:meth:`MPerClassSampler.load_state_dict` of :attr:`sampler`."""
        self.sampler.load_state_dict(state)
