"""Index bookkeeping and random draws shared by the samplers.

Random streams. Every numpy draw of the samplers goes through the module-global handle
:data:`NUMPY_RANDOM` (by default the ``numpy.random`` module, i.e. numpy's legacy global
RNG), read at the time of each draw. Seed it with ``np.random.seed(s)``, or replace it with
:func:`set_numpy_random` (``np.random.RandomState(s)``). With a legacy handle the samplers
make the *same sequence of calls* as pytorch-metric-learning, so they yield the same index
streams under the same seed. A sampler built with ``seed=...`` uses its own
``np.random.Generator`` instead (vectorised draws, identical on every rank; see the README).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "NUMPY_RANDOM",
    "draw_within_groups",
    "get_labels_to_indices",
    "get_numpy_random",
    "group_by_label",
    "safe_random_choice",
    "sample_distinct",
    "set_numpy_random",
    "to_numpy_labels",
]

#: The numpy RNG handle every sampler draws from (the legacy global RNG by default).
NUMPY_RANDOM: Any = np.random


def set_numpy_random(rng: Any) -> None:
    """Replace :data:`NUMPY_RANDOM` (``np.random``, a ``RandomState`` or a ``Generator``).

    Example:
        >>> set_numpy_random(np.random.RandomState(0))
        >>> int(safe_random_choice(np.arange(10), 1)[0])
        2
        >>> set_numpy_random(np.random)
    """
    global NUMPY_RANDOM
    for method in ("shuffle", "choice", "permutation"):
        if not callable(getattr(rng, method, None)):
            raise TypeError(
                f"rng must be numpy.random, a RandomState or a Generator (with {method}); "
                f"got {type(rng).__name__}"
            )
    NUMPY_RANDOM = rng


def get_numpy_random() -> Any:
    """The current :data:`NUMPY_RANDOM` handle."""
    return NUMPY_RANDOM


def _is_legacy(rng: Any) -> bool:
    """``True`` for ``numpy.random`` itself or a ``RandomState`` (reference-exact streams)."""
    return rng is np.random or isinstance(rng, np.random.RandomState)


def _choice(rng: Any, population: np.ndarray, size: int) -> np.ndarray:
    """``rng.choice(population, size, replace=len(population) < size)``, made cheaper.

    With a legacy handle this draws exactly what ``choice`` draws (a permutation of the
    population without replacement, ``randint`` with replacement), without ``choice``'s
    argument handling, which dominates for small classes.
    """
    n = len(population)
    if _is_legacy(rng):
        if n < size:
            return population[rng.randint(0, n, size)]
        return population[rng.permutation(n)[:size]]
    return rng.choice(population, size=size, replace=n < size)


def safe_random_choice(input_data: Sequence[Any] | np.ndarray, size: int) -> np.ndarray:
    """Draw ``size`` items, without replacement when possible, from :data:`NUMPY_RANDOM`.

    ``choice(input_data, size=size, replace=len(input_data) < size)``: a population smaller
    than ``size`` gives duplicates.

    Example:
        >>> np.random.seed(0)
        >>> safe_random_choice([7, 8], 3).tolist()
        [7, 8, 8]
    """
    return NUMPY_RANDOM.choice(input_data, size=size, replace=len(input_data) < size)


def to_numpy_labels(labels: Any, name: str = "labels") -> np.ndarray:
    """Labels as a numpy array (tensors are moved to the CPU first).

    Raises:
        TypeError: ``labels`` is a string, a scalar or None.
        ValueError: nested sequences (labels must be one per item).
    """
    if isinstance(labels, torch.Tensor):
        return labels.detach().cpu().numpy()
    if isinstance(labels, list | tuple):
        # fix: nested lists used to fail with "unhashable type: 'list'" (tuples are hashable
        # labels and stay valid)
        nested = next((x for x in labels if isinstance(x, list | np.ndarray | torch.Tensor)), None)
        if nested is not None:
            raise ValueError(
                f"{name} must be 1-D, one label per item; got nested sequences (e.g. "
                f"{nested!r:.40})"
            )
    if labels is None or isinstance(labels, str | bytes) or np.ndim(labels) == 0:
        raise TypeError(
            f"{name} must be a sequence, numpy array or tensor of per-item labels; "
            f"got {type(labels).__name__}"
        )
    if isinstance(labels, np.ndarray):
        return labels
    arr = np.empty(len(labels), dtype=object)
    arr[:] = list(labels)
    kinds = {type(x) for x in arr}
    if arr.size and all(issubclass(k, int | np.integer) and not issubclass(k, bool) for k in kinds):
        return arr.astype(np.int64)
    if arr.size and all(issubclass(k, str) for k in kinds):
        return arr.astype(str)
    if arr.size and all(issubclass(k, float | np.floating) for k in kinds):
        return arr.astype(np.float64)
    return arr


def group_by_label(labels: Any) -> tuple[list[Hashable], np.ndarray, np.ndarray]:
    """Positions grouped by label: ``(keys, members, offsets)``.

    ``keys`` are the distinct labels in order of first appearance; the positions of
    ``keys[c]`` are ``members[offsets[c]:offsets[c + 1]]`` (ascending, int64). Vectorised
    for numeric and string labels; other hashable labels go through a dict.

    Example:
        >>> keys, members, offsets = group_by_label([3, 1, 3, 2])
        >>> keys, members.tolist(), offsets.tolist()
        ([3, 1, 2], [0, 2, 1, 3], [0, 2, 3, 4])
    """
    arr = to_numpy_labels(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be 1-D; got shape {arr.shape}")
    if arr.dtype.kind in "fc" and np.isnan(arr).any():
        raise ValueError("labels must not contain NaN (NaN is not equal to itself)")
    if arr.dtype.kind not in "biufUS":
        groups: dict[Hashable, list[int]] = {}
        for i, label in enumerate(arr.tolist()):
            groups.setdefault(label, []).append(i)
        sizes = np.fromiter((len(v) for v in groups.values()), dtype=np.int64, count=len(groups))
        members = np.fromiter(
            (i for v in groups.values() for i in v), dtype=np.int64, count=len(arr)
        )
        return list(groups), members, np.concatenate([[0], np.cumsum(sizes)])
    uniq, first, inverse = np.unique(arr, return_index=True, return_inverse=True)
    rank = np.empty(len(uniq), dtype=np.int64)
    by_appearance = np.argsort(first, kind="stable")
    rank[by_appearance] = np.arange(len(uniq))
    class_of_item = rank[inverse.reshape(-1)]
    members = np.argsort(class_of_item, kind="stable").astype(np.int64)
    sizes = np.bincount(class_of_item, minlength=len(uniq))
    keys = uniq[by_appearance].tolist()
    return keys, members, np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def get_labels_to_indices(labels: Any) -> dict[Hashable, np.ndarray]:
    """Map each distinct label to the sorted positions holding it.

    Keys are in order of first appearance; values are int64 arrays. Labels may be a list,
    a numpy array or a tensor, of any hashable values.

    Example:
        >>> {k: v.tolist() for k, v in get_labels_to_indices([3, 1, 3, 2]).items()}
        {3: [0, 2], 1: [1], 2: [3]}
    """
    keys, members, offsets = group_by_label(labels)
    return {k: members[offsets[c] : offsets[c + 1]] for c, k in enumerate(keys)}


def sample_distinct(rng: np.random.Generator, population: int, rows: int, k: int) -> np.ndarray:
    """``rows`` independent ordered samples of ``k`` distinct values in ``[0, population)``.

    Vectorised over rows: column by column with rejection of repeats while ``k`` is small
    against ``population``, random keys otherwise.

    Returns:
        int64 array ``(rows, k)``.

    Example:
        >>> out = sample_distinct(np.random.default_rng(0), 10, 4, 3)
        >>> out.shape, all(len(set(r)) == 3 for r in out.tolist())
        ((4, 3), True)
    """
    if k > population:
        raise ValueError(f"k must be <= population = {population}; got {k}")
    if 2 * k > population:
        return np.argsort(rng.random((rows, population)), axis=1)[:, :k].astype(np.int64)
    out = np.empty((rows, k), dtype=np.int64)
    for j in range(k):
        col = rng.integers(0, population, rows)
        while True:
            dup = (out[:, :j] == col[:, None]).any(axis=1)
            if not dup.any():
                break
            col[dup] = rng.integers(0, population, int(dup.sum()))
        out[:, j] = col
    return out


def draw_within_groups(rng: np.random.Generator, sizes: np.ndarray, m: int) -> np.ndarray:
    """For each group size ``s``: ``m`` positions in ``[0, s)``, distinct when ``s >= m``.

    Like ``safe_random_choice`` (without replacement when possible, otherwise with), in a
    random order, vectorised over groups (a loop over the ``m`` draws only).

    Returns:
        int64 array ``(len(sizes), m)``.

    Example:
        >>> out = draw_within_groups(np.random.default_rng(0), np.array([5, 2]), 3)
        >>> len(set(out[0].tolist())), bool((out[1] < 2).all())
        (3, True)
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    u = rng.random((len(sizes), m))
    with_replacement = np.minimum((u * sizes[:, None]).astype(np.int64), sizes[:, None] - 1)
    # without replacement: the j-th draw picks among the s - j positions not taken yet
    picked = np.empty((len(sizes), m), dtype=np.int64)
    taken = np.empty((len(sizes), 0), dtype=np.int64)
    for j in range(m):
        r = np.minimum((u[:, j] * np.maximum(sizes - j, 1)).astype(np.int64), sizes - j - 1)
        for t in range(j):  # skip over taken positions, smallest first
            r = r + (taken[:, t] <= r)
        picked[:, j] = r
        taken = np.sort(np.concatenate([taken, r[:, None]], axis=1), axis=1)
    return np.where((sizes >= m)[:, None], picked, with_replacement)
