"""The trainers' data side: batch samplers, the DataLoader, label processing.

* :func:`is_batch_sampler`: a ``torch.utils.data.BatchSampler``, or any ``Sampler`` subclass
  declared with batches as items (``Sampler[list[int]]``, like
  ``pml.samplers.HierarchicalSampler``), is passed to the DataLoader as ``batch_sampler``.
* :func:`build_dataloader`: the DataLoader always gets a :class:`ResumableBatches` batch
  sampler, which can skip the batches of a pass already trained on (exact resume in the
  middle of a pass) without loading their data.
* :func:`count_batches`: the batches of one pass (an epoch when ``iterations_per_epoch`` is
  not given).
* :func:`batch_parts` / :class:`LabelMapper` / :func:`process_label` /
  :func:`batch_to_device`: a batch split into ``(data, labels)``, its labels to a CPU tensor
  of the selected hierarchy level(s), optionally mapped to ``0..C-1``, its data to the
  trainer's device.
"""

from __future__ import annotations

import collections.abc
import typing
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler

from pml.core.validation import InvalidArgumentError

__all__ = [
    "LabelMapper",
    "ResumableBatches",
    "batch_parts",
    "batch_to_device",
    "build_dataloader",
    "count_batches",
    "is_batch_sampler",
    "process_label",
    "sampler_chain",
]

_BATCH_ORIGINS = (
    list,
    tuple,
    collections.abc.Sequence,
    collections.abc.Iterable,
    collections.abc.Collection,
)


def is_batch_sampler(sampler: Any) -> bool:
    """Whether ``sampler`` yields batches (lists of indices) rather than single indices.

    True for a ``BatchSampler`` instance and for a ``Sampler`` subclass whose declared item
    type is a list/tuple/sequence (``class S(Sampler[list[int]])``).

    Example:
        >>> is_batch_sampler(BatchSampler(range(4), 2, drop_last=True)), is_batch_sampler(None)
        (True, False)
    """
    if sampler is None:
        return False
    if isinstance(sampler, BatchSampler):
        return True
    for cls in type(sampler).__mro__:
        for base in getattr(cls, "__orig_bases__", ()):
            if typing.get_origin(base) is Sampler:
                args = typing.get_args(base)
                if not args:
                    return False
                item = typing.get_origin(args[0]) or args[0]
                return isinstance(item, type) and issubclass(item, _BATCH_ORIGINS)
    return False


class ResumableBatches(Sampler[list[int]]):
    """A batch sampler that yields ``batch_sampler``'s batches, first skipping ``skip``.

    ``skip`` applies to the next pass only (it is reset to 0 when a pass starts). The
    skipped batches are drawn (so random samplers advance exactly as in the interrupted
    run) but never loaded. Like a plain batch sampler, a pass draws nothing until its first
    batch is requested, or until :meth:`prime` is called on :attr:`last_iter`.

    Args:
        batch_sampler: the batch sampler to wrap.
    """

    def __init__(self, batch_sampler: Any) -> None:
        self.batch_sampler = batch_sampler
        self.sampler = getattr(batch_sampler, "sampler", batch_sampler)
        self.skip = 0
        self.last_iter: _SkippingIterator | None = None

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[list[int]]:
        skip, self.skip = self.skip, 0
        self.last_iter = _SkippingIterator(self.batch_sampler, skip)
        return self.last_iter


class _SkippingIterator:
    """The batches of one pass; the first ``skip`` are drawn and dropped at :meth:`prime`."""

    def __init__(self, source: Any, skip: int) -> None:
        self._source = source
        self._skip = skip
        self._batches: Iterator[Any] | None = None

    def prime(self) -> None:
        """Start the pass (the sampler draws) and drop the batches to skip."""
        if self._batches is None:
            self._batches = iter(self._source)
            for _ in range(self._skip):
                if next(self._batches, None) is None:
                    break

    def __iter__(self) -> _SkippingIterator:
        return self

    def __next__(self) -> Any:
        self.prime()
        return next(self._batches)  # type: ignore[arg-type]


def build_dataloader(
    dataset: Dataset,
    batch_size: int | None,
    sampler: Any,
    collate_fn: Callable[[list[Any]], Any] | None,
    num_workers: int,
    generator: torch.Generator,
) -> DataLoader:
    """The trainer's DataLoader (batches as the reference builds them).

    A batch sampler (see :func:`is_batch_sampler`) gives the batches; otherwise batches of
    ``batch_size`` (the last incomplete one dropped) from ``sampler``, or from a
    ``RandomSampler`` drawing from ``generator`` when ``sampler`` is None. The DataLoader
    itself has no generator: like the reference's, each pass draws the workers' base seed
    from the global torch generator.
    """
    if is_batch_sampler(sampler):
        batches = sampler
    else:
        if batch_size is None:
            raise TypeError("batch_size must be an int unless sampler is a batch sampler")
        inner = sampler if sampler is not None else RandomSampler(dataset, generator=generator)
        batches = BatchSampler(inner, batch_size, drop_last=True)
    return DataLoader(
        dataset,
        batch_sampler=ResumableBatches(batches),
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=False,
    )


def count_batches(dataloader: DataLoader, dataset: Any, batch_size: int | None) -> int:
    """The number of batches of one pass of ``dataloader``.

    Raises:
        TypeError: the sampler has no ``len()``.
        ValueError: the dataloader yields no batch.
    """
    try:
        num = len(dataloader)
    except TypeError:
        raise TypeError(
            "sampler has no len(): pass iterations_per_epoch to say how long an epoch is"
        ) from None
    if num == 0:
        raise ValueError(
            f"the dataloader yields no batch (dataset of {len(dataset)} items, "
            f"batch_size = {batch_size}; incomplete batches are dropped)"
        )
    return num


def sampler_chain(sampler: Any) -> list[Any]:
    """``sampler``, its ``.sampler``, that one's ``.sampler``, ... (wrappers first)."""
    chain: list[Any] = []
    seen: set[int] = set()
    while sampler is not None and id(sampler) not in seen and not isinstance(sampler, range):
        chain.append(sampler)
        seen.add(id(sampler))
        inner = getattr(sampler, "batch_sampler", None)
        if inner is None or inner is sampler:
            inner = getattr(sampler, "sampler", None)
        sampler = inner if isinstance(inner, Sampler) else None
    return chain


def _to_numpy_labels(labels: Any) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        return labels.detach().cpu().numpy()
    if isinstance(labels, (list, tuple)):
        if labels and isinstance(labels[0], (torch.Tensor, np.ndarray)):
            # compat: spec §1 (a list of label columns, as default_collate makes of tuples)
            return np.stack([_to_numpy_labels(col) for col in labels], axis=1)
        return np.asarray(labels)
    return np.asarray(labels)


class LabelMapper:
    """Maps labels to their rank among the distinct sorted dataset labels (per column).

    Args:
        set_min_label_to_zero: map (otherwise labels pass through).
        dataset_labels: every label of the dataset, ``(N,)`` or ``(N, levels)``; required
            when mapping. Strings and other sortable values are allowed.

    Raises:
        ValueError: ``set_min_label_to_zero`` without ``dataset_labels``.

    Example:
        >>> LabelMapper(True, [5, 3, 9, 3]).map(np.array([9, 3, 5]))
        array([2, 0, 1])
    """

    def __init__(self, set_min_label_to_zero: bool, dataset_labels: Any = None) -> None:
        self.set_min_label_to_zero = set_min_label_to_zero
        self.columns: list[np.ndarray] = []
        if not set_min_label_to_zero:
            return
        if dataset_labels is None:
            # fix: the reference accepts this and fails at the first batch
            raise ValueError(
                "dataset_labels must be given with set_min_label_to_zero=True (every label "
                "of the dataset, to map each label to its rank); got None"
            )
        arr = _to_numpy_labels(dataset_labels)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2 or len(arr) == 0:
            raise ValueError(
                f"dataset_labels must have shape (N,) or (N, levels) with N >= 1; got {arr.shape}"
            )
        self.columns = [np.unique(arr[:, j]) for j in range(arr.shape[1])]

    def map(self, labels: np.ndarray) -> np.ndarray:
        """``labels`` (``(B,)`` or ``(B, levels)``) mapped column by column."""
        if not self.set_min_label_to_zero:
            return labels
        if labels.ndim == 1:
            return self._map_column(labels, 0)
        out = np.empty(labels.shape, dtype=np.int64)
        for j in range(labels.shape[1]):
            out[:, j] = self._map_column(labels[:, j], j)
        return out

    def _map_column(self, column: np.ndarray, j: int) -> np.ndarray:
        if j >= len(self.columns):
            raise ValueError(
                f"labels have more columns ({j + 1}+) than dataset_labels ({len(self.columns)})"
            )
        uniques = self.columns[j]
        try:
            pos = np.searchsorted(uniques, column)
        except TypeError:
            raise TypeError(
                f"labels of type {column.dtype} cannot be compared with dataset_labels of type "
                f"{uniques.dtype}"
            ) from None
        pos_clipped = np.minimum(pos, len(uniques) - 1)
        unknown = uniques[pos_clipped] != column
        if unknown.any():
            raise ValueError(
                f"labels {column[unknown][:5].tolist()} are not among dataset_labels (column {j})"
            )
        return pos.astype(np.int64)


def process_label(
    labels: Any, hierarchy_level: int | Sequence[int] | str, label_mapper: LabelMapper
) -> torch.Tensor:
    """A batch's labels as a CPU tensor: mapped, then the selected level(s).

    Args:
        labels: a tensor, array or list of labels; a list/tuple of tensors is taken as
            label columns.
        hierarchy_level: column of 2-D labels (int), several columns (list), or ``"all"``.
        label_mapper: applied to every column first.

    Raises:
        InvalidArgumentError: a level > 0 with 1-D labels, or beyond the label columns.
        TypeError: labels that are not numbers after mapping (strings need
            ``set_min_label_to_zero=True`` and ``dataset_labels``).
    """
    arr = label_mapper.map(_to_numpy_labels(labels))
    if not (isinstance(hierarchy_level, str) and hierarchy_level == "all"):
        levels = [hierarchy_level] if isinstance(hierarchy_level, int) else list(hierarchy_level)
        top = max(levels)
        if top > 0 and (arr.ndim != 2 or arr.shape[1] <= top):
            raise InvalidArgumentError(
                f"label_hierarchy_level = {hierarchy_level} needs 2-D labels with more than "
                f"{top} columns; got labels of shape {arr.shape}"
            )
        if arr.ndim == 2:
            arr = arr[:, hierarchy_level]
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"labels must be numbers; got {arr.dtype} (map other labels with "
            "set_min_label_to_zero=True and dataset_labels)"
        )
    return torch.from_numpy(np.ascontiguousarray(arr))


def batch_parts(out: Any, n: int) -> tuple[Any, ...]:
    """What ``data_and_label_getter`` returned, checked to be ``n`` items.

    Raises:
        ValueError: not a list/tuple of ``n`` items (``(data, labels)`` for 2,
            ``(anchors, posnegs, labels)`` for 3).
    """
    if not isinstance(out, (list, tuple)) or len(out) != n:
        what = "(data, labels)" if n == 2 else "(anchors, posnegs, labels)"
        got = f"{len(out)} items" if isinstance(out, (list, tuple)) else type(out).__name__
        raise ValueError(f"data_and_label_getter must return {what}; got {got}")
    return tuple(out)


def batch_to_device(data: Any, device: torch.device, dtype: torch.dtype | None) -> torch.Tensor:
    """``data`` on ``device``, cast to ``dtype`` (None: kept).

    Raises:
        TypeError: ``data`` is not a tensor.
    """
    if not isinstance(data, torch.Tensor):
        raise TypeError(
            f"the data of a batch must be a tensor; got {type(data).__name__} (use "
            "collate_fn or data_and_label_getter to make one)"
        )
    return data.to(device=device, dtype=dtype)
