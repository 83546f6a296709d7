"""HierarchicalSampler: batches mixing a few super classes (Brown et al., ECCV 2020)."""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterator
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Sampler

from pml.core.validation import InvalidArgumentError, check_int
from pml.samplers import functional as SF
from pml.samplers._arguments import check_count
from pml.samplers._sharding import Sharding


class HierarchicalSampler(Sampler[list[int]]):
    """Batches that mix a few super classes (a *batch* sampler: each item is a batch).

    Each batch draws ``super_classes_per_batch`` super classes; each fills
    ``batch_size // super_classes_per_batch`` slots with ``samples_per_class`` items of
    several of its classes.

    Pass it as ``DataLoader(dataset, batch_sampler=sampler)``. It subclasses ``Sampler``
    (like the reference), not ``BatchSampler``.

    Batches of an epoch: for every combination of super classes, ``batches_per_super_tuple``
    batches; then all batches are shuffled. A batch can be shorter than ``batch_size`` when a
    super class does not have enough classes. The batches equal pytorch-metric-learning's
    under the same numpy seed (they are drawn at construction and again at every
    ``iter()``). With ``num_replicas``/``rank``, rank ``r`` yields batches ``r, r + W, ...``.

    Args:
        labels: ``(N, levels)`` labels (numpy array, nested list or tensor).
        batch_size: items per batch (an upper bound).
        samples_per_class: items per chosen class, or ``"all"``.
        batches_per_super_tuple: batches per combination of super classes.
        super_classes_per_batch: super classes mixed in a batch.
        inner_label: column of the class label.
        outer_label: column of the super-class label.
        num_replicas: number of processes sharing the batches (DDP world size).
        rank: this process's index in ``[0, num_replicas)``.
        seed: seed of a private generator; combined with :meth:`set_epoch`.

    Raises:
        TypeError: a count or column that is not an int (a bool, ``2.5``; ``batch_size``
            also accepts an integral float such as ``4.0``, like the reference).
        InvalidArgumentError: ``batch_size`` not a multiple of ``super_classes_per_batch``,
            a count ``< 1`` (``samples_per_class``, ``batch_size``,
            ``batches_per_super_tuple``, ``super_classes_per_batch``), or a sub-batch not a
            multiple of ``samples_per_class``.
        ValueError: ``super_classes_per_batch`` larger than the number of super classes,
            a column outside ``labels``, or (with ``num_replicas``) fewer batches than ranks.

    Example:
        >>> np.random.seed(0)
        >>> labels = [[0, 0], [0, 0], [1, 0], [1, 0], [2, 1], [2, 1], [3, 1], [3, 1]]
        >>> sampler = HierarchicalSampler(labels, batch_size=4, samples_per_class=2)
        >>> len(sampler), [sorted(int(i) for i in b) for b in sampler]
        (4, [[2, 3, 4, 5], [2, 3, 4, 5], [2, 3, 4, 5], [0, 1, 4, 5]])
    """

    def __init__(
        self,
        labels: Any,
        batch_size: int,
        samples_per_class: int | Literal["all"],
        batches_per_super_tuple: int = 4,
        super_classes_per_batch: int = 2,
        inner_label: int = 0,
        outer_label: int = 1,
        *,
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int | None = None,
    ) -> None:
        if isinstance(labels, torch.Tensor):
            arr = labels.detach().cpu().numpy()
        else:
            arr = np.asarray(labels)
        if arr.ndim != 2:
            raise ValueError(f"labels must have shape (N, levels); got {arr.shape}")
        # compat: the reference accepts an integral float batch_size (4.0), not 4.5 or True
        self.batch_size = check_count("batch_size", batch_size, integral_float=True)
        # fix: the reference accepts 0 and then yields no batch at all
        self.batches_per_super_tuple = check_count(
            "batches_per_super_tuple", batches_per_super_tuple
        )
        self.super_classes_per_batch = check_count(
            "super_classes_per_batch", super_classes_per_batch
        )
        if self.batch_size % self.super_classes_per_batch != 0:
            raise InvalidArgumentError(
                f"batch_size must be a multiple of super_classes_per_batch = "
                f"{self.super_classes_per_batch}; got {self.batch_size}"
            )
        self.sub_batch_len = self.batch_size // self.super_classes_per_batch
        if samples_per_class != "all":
            if isinstance(samples_per_class, str):
                raise ValueError(
                    f"samples_per_class must be a positive int or 'all'; got {samples_per_class!r}"
                )
            samples_per_class = check_count("samples_per_class", samples_per_class)
            if self.sub_batch_len % samples_per_class != 0:
                raise InvalidArgumentError(
                    f"batch size is not a multiple of samples_per_class: batch_size // "
                    f"super_classes_per_batch = {self.sub_batch_len}, samples_per_class = "
                    f"{samples_per_class}"
                )
        self.samples_per_class = samples_per_class
        width = arr.shape[1]
        inner_label = check_int("inner_label", inner_label, min=-width, max=width - 1)
        outer_label = check_int("outer_label", outer_label, min=-width, max=width - 1)
        super_keys, super_members, super_offsets = SF.group_by_label(arr[:, outer_label])
        self.super_image_lists: dict[Hashable, dict[Hashable, list[int]]] = {}
        for s, key in enumerate(super_keys):
            items = super_members[super_offsets[s] : super_offsets[s + 1]]
            keys, members, offsets = SF.group_by_label(arr[items, inner_label])
            self.super_image_lists[key] = {
                k: items[members[offsets[c] : offsets[c + 1]]] for c, k in enumerate(keys)
            }
        if self.super_classes_per_batch > len(super_keys):
            # fix: the reference yields no batch at all (no combination of super classes)
            raise ValueError(
                f"super_classes_per_batch must be <= the number of super classes (distinct "
                f"values in column outer_label = {outer_label}): {len(super_keys)} super "
                f"classes; got {self.super_classes_per_batch}"
            )
        # compat: combination order follows Python set iteration, like the reference
        self.super_pairs = list(
            itertools.combinations(set(super_keys), self.super_classes_per_batch)
        )
        self._shard = Sharding(num_replicas, rank, seed)
        # fix: fewer batches than ranks would give every rank no batch
        self._shard.require_blocks(
            len(self.super_pairs) * self.batches_per_super_tuple,
            f"{len(self.super_pairs)} combination(s) of super classes x "
            f"batches_per_super_tuple = {self.batches_per_super_tuple}",
        )
        self._flat = np.empty(0, dtype=np.int64)
        self._starts = np.zeros(1, dtype=np.int64)
        self.reshuffle()

    def __len__(self) -> int:
        return self._shard.num_blocks(len(self.super_pairs) * self.batches_per_super_tuple)

    def set_epoch(self, epoch: int) -> None:
        """Select the batches of ``epoch`` (only with ``seed``/``num_replicas``)."""
        self._shard.set_epoch(epoch)

    @property
    def batches(self) -> list[list[np.int64]]:
        """The batches of the current epoch, in order (materialised on access)."""
        return [list(self._flat[s:e]) for s, e in zip(self._starts[:-1], self._starts[1:])]

    def reshuffle(self) -> None:
        """Draw the batches of an epoch (the reference's calls, in its order)."""
        rng = self._shard.rng()
        sub_len, spc = self.sub_batch_len, self.samples_per_class
        pieces: list[np.ndarray] = []
        lengths: list[int] = []
        for combination in self.super_pairs:
            class_lists = [list(self.super_image_lists[s].values()) for s in combination]
            for _ in range(self.batches_per_super_tuple):
                batch = []
                for classes in class_lists:
                    order = np.arange(len(classes))
                    rng.shuffle(order)
                    filled = 0
                    for c in order.tolist():
                        if filled >= sub_len:
                            break
                        items = classes[c]
                        n = len(items) if spc == "all" else spc
                        if filled + n > sub_len:
                            continue
                        batch.append(SF._choice(rng, items, n))
                        filled += n
                merged = np.concatenate(batch) if batch else np.empty(0, dtype=np.int64)
                rng.shuffle(merged)
                pieces.append(merged)
                lengths.append(len(merged))
        perm = np.arange(len(pieces))
        rng.shuffle(perm)
        self._flat = np.concatenate([pieces[i] for i in perm]) if pieces else self._flat[:0]
        self._starts = np.concatenate([[0], np.cumsum(np.asarray(lengths, dtype=np.int64)[perm])])

    def __iter__(self) -> Iterator[list[int]]:
        self.reshuffle()
        num = len(self._starts) - 1
        keep = range(self._shard.rank, self._shard.num_blocks(num) * self._shard.num_replicas,
                     self._shard.num_replicas)  # fmt: skip
        flat, starts = self._flat, self._starts
        for i in keep:
            yield list(flat[starts[i] : starts[i + 1]])
