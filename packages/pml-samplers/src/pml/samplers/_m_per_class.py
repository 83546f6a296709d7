"""MPerClassSampler: ``m`` samples of each chosen class, as contiguous runs."""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Iterator
from functools import cached_property
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from pml.core.validation import InvalidArgumentError, check_bool
from pml.samplers import functional as SF
from pml.samplers._arguments import check_count
from pml.samplers._coverage import coverage_num_batches, coverage_stream
from pml.samplers._m_per_class_state import check_state, config_of, pass_start_of, replay
from pml.samplers._resume import PassIterator
from pml.samplers._sharding import Sharding

#: ``length_before_new_iter``'s default (the only value accepted with ``coverage=True``)
DEFAULT_LENGTH = 100000


class MPerClassSampler(Sampler[int]):
    """At every iteration, ``m`` items of each class; with ``batch_size``, exact batches.

    Without ``batch_size``, each pass shuffles the classes and writes ``m`` items of every
    class (drawn without replacement when the class is large enough). With ``batch_size``,
    each block of ``batch_size`` items holds ``batch_size // m`` distinct classes times
    ``m`` items: use a DataLoader with the same ``batch_size`` (and ``drop_last=True``).

    The stream equals pytorch-metric-learning's under the same numpy seed (see
    :mod:`pml.samplers.functional`). Pass ``seed`` for a vectorised, rank-consistent stream,
    and ``num_replicas``/``rank`` to give each process its share (see the README).

    Beyond the reference 2.9: ``coverage=True`` (with ``batch_size``) makes each pass one
    epoch over the dataset: every item of every class is used once (a class whose size is
    not a multiple of ``m`` repeats some of its items to complete its last run of ``m``,
    and the last batches may hold extra runs), no class appears twice in a batch, and a
    class appears in two consecutive batches only if it has runs of ``m`` in half of the
    batches or more, or if fewer than ``3 k`` classes (``k = batch_size // m``) are there to
    fill the last batches (details in :mod:`pml.samplers._coverage`); ``len()`` is then
    set by the class sizes. :meth:`state_dict`/:meth:`load_state_dict` save and restore
    the class order, the epoch and the position in the current pass;
    :class:`MPerClassBatchSampler` yields the same stream as whole batches (for
    ``DataLoader(batch_sampler=...)``).

    Args:
        labels: one label per dataset item (list, numpy array or tensor).
        m: items per class and group.
        batch_size: if given, the batch size that must hold exactly ``m`` per class.
        length_before_new_iter: length of one pass of the iterator (rounded down to a
            multiple of ``m * num_classes`` or of ``batch_size``).
        num_replicas: number of processes sharing the stream (DDP world size).
        rank: this process's index in ``[0, num_replicas)``.
        seed: seed of a private generator (default: the global numpy RNG, or 0 with
            ``num_replicas``); combined with :meth:`set_epoch`.
        coverage: one pass = every item once, in batches (needs ``batch_size``; then
            ``length_before_new_iter`` is not used and must keep its default).

    Raises:
        TypeError: ``m``, ``batch_size`` or ``length_before_new_iter`` is not an int (a bool,
            ``2.7``; an integral float such as ``2.0`` is accepted for ``m``/``batch_size``,
            which the reference casts with ``int()``).
        InvalidArgumentError: (``ValueError`` and ``AssertionError``) when ``batch_size`` is
            larger than ``length_before_new_iter`` or than ``m * num_classes``, or not a
            multiple of ``m``; ``m``, ``batch_size`` or ``length_before_new_iter`` ``< 1``;
            no labels.
        ValueError: with ``num_replicas``, a stream of fewer blocks (batches, or runs of
            ``m`` without ``batch_size``) than ranks; ``coverage=True`` without
            ``batch_size`` or with another ``length_before_new_iter``.

    Example:
        >>> import numpy as np
        >>> np.random.seed(0)
        >>> sampler = MPerClassSampler([0, 0, 1, 1, 2, 2], m=2, batch_size=4,
        ...                            length_before_new_iter=8)
        >>> len(sampler), [int(i) for i in sampler]
        (8, [4, 5, 3, 2, 4, 5, 1, 0])
    """

    def __init__(
        self,
        labels: Any,
        m: int,
        batch_size: int | None = None,
        length_before_new_iter: int = DEFAULT_LENGTH,
        *,
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int | None = None,
        coverage: bool = False,
    ) -> None:
        # compat: the reference casts m and batch_size with int() (2.0 is accepted; 2.7 and
        # True are not: the reference would silently use 2 and 1)
        self.m_per_class = check_count("m", m, integral_float=True)
        self.batch_size = (
            None if batch_size is None
            else check_count("batch_size", batch_size, integral_float=True)
        )  # fmt: skip
        # fix: the reference accepts any length (a negative one fails in len())
        length_before_new_iter = check_count("length_before_new_iter", length_before_new_iter)
        self.coverage = check_bool("coverage", coverage)
        if coverage and self.batch_size is None:
            raise ValueError("coverage=True needs batch_size (a pass is a number of batches)")
        if coverage and length_before_new_iter != DEFAULT_LENGTH:
            raise ValueError(
                "length_before_new_iter cannot be given with coverage=True (a pass covers "
                f"every item once; its length follows from the class sizes); got "
                f"{length_before_new_iter}"
            )
        self._keys, self._members, self._offsets = SF.group_by_label(labels)
        if not self._keys:
            raise InvalidArgumentError("labels must not be empty")
        self._sizes = np.diff(self._offsets)
        small = int((self._sizes < self.m_per_class).sum())
        if small:
            warnings.warn(
                f"{small} of {len(self._keys)} classes have fewer than m = {self.m_per_class} "
                "items: they are sampled with replacement (duplicates within a batch)",
                UserWarning,
                stacklevel=2,
            )
        self._order = np.arange(len(self._keys))  # shuffled in place, pass after pass
        self.length_of_single_pass = self.m_per_class * len(self._keys)
        self.list_size = length_before_new_iter
        if self.batch_size is None:
            if self.length_of_single_pass < self.list_size:
                self.list_size -= self.list_size % self.length_of_single_pass
        elif not coverage:
            if self.list_size < self.batch_size:
                raise InvalidArgumentError(
                    f"length_before_new_iter must be >= batch_size = {self.batch_size}; "
                    f"got {length_before_new_iter}"
                )
            self._check_batch_size()
            self.list_size -= self.list_size % self.batch_size
        else:
            self._check_batch_size()
            k = self.batch_size // self.m_per_class
            num_batches = coverage_num_batches(self._sizes, self.m_per_class, k)
            self.list_size = num_batches * self.batch_size
        self._shard = Sharding(num_replicas, rank, seed)
        what = (
            f"coverage=True over {len(self._keys)} classes"
            if coverage
            else f"length_before_new_iter = {length_before_new_iter} rounded to {self.list_size} "
            "items"
        )
        # fix: a stream of fewer blocks than ranks would give every rank 0 items
        self._shard.require_blocks(
            self.list_size // self._block,
            f"{what} in blocks of {self._block} ({'batch_size' if self.batch_size else 'm'})",
        )
        self._live: PassIterator | None = None  # the iterator of the pass under way
        self._resume: dict[str, Any] | None = None  # a position to resume (load_state_dict)

    def _check_batch_size(self) -> None:
        bs = self.batch_size
        if self.length_of_single_pass < bs:  # type: ignore[operator]
            raise InvalidArgumentError(
                "m * (number of distinct labels) must be >= batch_size; got "
                f"m = {self.m_per_class}, {len(self._keys)} labels, batch_size = {bs}"
            )
        if bs % self.m_per_class != 0:  # type: ignore[operator]
            raise InvalidArgumentError(
                f"batch_size must be divisible by m = {self.m_per_class}; got {bs}"
            )

    @cached_property
    def labels_to_indices(self) -> dict[Hashable, np.ndarray]:
        """Each label's sorted item positions."""
        return {
            k: self._members[self._offsets[c] : self._offsets[c + 1]]
            for c, k in enumerate(self._keys)
        }

    @property
    def labels(self) -> list[Hashable]:
        """The distinct labels, in their current (shuffled) order."""
        return [self._keys[c] for c in self._order.tolist()]

    def __len__(self) -> int:
        if not self._shard.sharded:
            return self.list_size
        block = self._block
        return self._shard.num_blocks(self.list_size // block) * block

    @property
    def _block(self) -> int:
        return self.batch_size if self.batch_size is not None else self.m_per_class

    def set_epoch(self, epoch: int) -> None:
        """Select the stream of ``epoch`` (only with ``seed``/``num_replicas``).

        A position restored by :meth:`load_state_dict` belongs to the saved epoch's pass:
        selecting another epoch drops it (the next pass starts at its beginning).
        """
        self._shard.set_epoch(epoch)
        if self._resume is not None and self._resume["epoch"] != self._shard.epoch:
            self._resume = None

    def calculate_num_iters(self) -> int:
        """Passes per iterator: groups of classes needed to fill ``len(self)`` items."""
        divisor = self.length_of_single_pass if self.batch_size is None else self.batch_size
        return self.list_size // divisor if divisor < self.list_size else 1

    def __iter__(self) -> Iterator[int]:
        return self._start_pass().items

    def _start_pass(self) -> PassIterator:
        """Draw a pass (or redraw the one to resume) and make it the pass under way."""
        resume, self._resume = self._resume, None
        rng = self._shard.rng()
        if resume is None:
            start = pass_start_of(self, rng)
            stream, position = self._pass_stream(rng), 0
        else:
            start, position = resume["pass_start"], resume["position"]
            stream = replay(self, rng, start, self._pass_stream)
        self._live = PassIterator(stream, position, start)
        return self._live

    def _pass_stream(self, rng: Any) -> np.ndarray:
        """This rank's indices of the pass drawn from ``rng``."""
        if self.coverage:
            k = self.batch_size // self.m_per_class  # type: ignore[operator]
            stream = coverage_stream(rng, self._members, self._offsets, self.m_per_class, k)
        elif SF._is_legacy(rng):
            stream = self._reference_stream(rng)
        else:
            stream = self._vectorised_stream(rng)
        # fix: the reference writes a whole pass even when it is longer than len()
        return self._shard.take(stream[: self.list_size], self._block)

    def state_dict(self) -> dict[str, Any]:
        """Class order, epoch and position in the current pass, as plain data.

        ``position`` counts the indices of the pass under way already yielded (0 when no
        pass is under way); ``pass_start`` (a pass under way, for a sampler without
        ``seed``; else None) holds the class order and the global random handle's state at
        the start of the pass, so that the pass can be drawn again. :meth:`load_state_dict` on a
        sampler built with the same arguments continues where this one stopped: its next
        pass yields the rest of the interrupted one, then the stream goes on as it would
        have (give the global numpy RNG its saved state too when ``seed`` is None).
        """
        if self._resume is not None:
            position, start = self._resume["position"], self._resume["pass_start"]
        elif self._live is not None and not self._live.done:
            position, start = self._live.position, self._live.pass_start
        else:
            position, start = 0, None
        return {
            **config_of(self),
            "order": self._order.copy(),
            "epoch": self._shard.epoch,
            "position": position,
            "pass_start": start,
        }

    def load_state_dict(self, state: Any) -> None:
        """Restore what :meth:`state_dict` returned (numpy arrays or tensors accepted).

        Raises:
            TypeError: ``state`` is not a mapping, or an entry has the wrong type.
            ValueError: missing or unknown keys, or a state of another sampler (number of
                classes, ``m``, ``batch_size``, length, ``seed``, ``coverage``), an
                ``order`` that is not a permutation, a ``position`` outside the pass.
        """
        order, epoch, resume = check_state(self, state)
        self._order[...] = order
        self._shard.set_epoch(epoch)
        self._resume = resume
        self._live = None

    def _classes_per_iter(self) -> int:
        if self.batch_size is None:
            return len(self._keys)
        return self.batch_size // self.m_per_class

    def _reference_stream(self, rng: Any) -> np.ndarray:
        """The reference's calls: shuffle the classes, then one choice per chosen class."""
        m, k = self.m_per_class, self._classes_per_iter()
        num_iters = self.calculate_num_iters()
        out = np.empty(num_iters * k * m, dtype=np.int64)
        members, offsets = self._members, self._offsets
        i = 0
        for _ in range(num_iters):
            rng.shuffle(self._order)
            for c in self._order[:k].tolist():
                pop = members[offsets[c] : offsets[c + 1]]
                out[i : i + m] = SF._choice(rng, pop, m)
                i += m
        return out

    def _vectorised_stream(self, rng: np.random.Generator) -> np.ndarray:
        """Same structure from a ``Generator``: no Python loop over classes or items."""
        m, k = self.m_per_class, self._classes_per_iter()
        num_iters = self.calculate_num_iters()
        num_classes = len(self._keys)
        if self.batch_size is None:
            classes = np.argsort(rng.random((num_iters, num_classes)), axis=1)
        else:
            classes = SF.sample_distinct(rng, num_classes, num_iters, k)
        classes = classes.reshape(-1)
        local = SF.draw_within_groups(rng, self._sizes[classes], m)
        return self._members[self._offsets[classes][:, None] + local].reshape(-1)
