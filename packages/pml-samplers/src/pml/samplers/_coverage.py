"""Coverage epochs of MPerClassSampler: every item of every class once, in m-item runs.

A class of ``n`` items is cut into ``r = ceil(n / m)`` runs of ``m`` items (its items in a
random order; a short last run is completed with other items of the class, drawn with
replacement only when ``n < m``). The ``R`` runs are laid out ``k = batch_size // m`` per
batch in ``B = max(ceil(R / k), r_max)`` batches (``r_max``: the most runs of one class):

* the runs are listed class by class, classes by decreasing number of runs (ties in a
  random order), and written column by column into the ``B x k`` grid of batch slots,
  visiting the batches in the order ``0, 2, 4, ..., 1, 3, 5, ...``. A class's runs fill
  consecutive places of that order, so they land in distinct batches (``r <= B``), and in
  no two consecutive batches when ``2 r < B``: with ``R > 2 k r_max`` no class's runs
  meet in consecutive batches;
* the ``B k - R`` slots left (fewer than ``k`` unless one class has more than ``R / k``
  runs) get extra runs of classes absent from the batch, and absent from the neighbouring
  batches too when there are enough classes (``3 k`` or more suffice);
* the runs of each batch are put in a random order.

The number of batches depends only on the class sizes, so the length of a pass is known
before it is drawn. Only ``rng.random`` is used, so a legacy handle (``numpy.random``, a
``RandomState``) and a ``Generator`` both work.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pml.samplers import functional as SF

__all__ = ["coverage_num_batches", "coverage_stream"]


def coverage_num_batches(sizes: np.ndarray, m: int, k: int) -> int:
    """Batches of one coverage pass over classes of ``sizes`` items (``k`` classes each)."""
    runs = -(-np.asarray(sizes, dtype=np.int64) // m)
    return int(max(-(-int(runs.sum()) // k), int(runs.max(initial=0))))


def _grid(runs: np.ndarray, k: int, rng: Any) -> tuple[np.ndarray, np.ndarray]:
    """Class of every slot ``(B, k)`` (-1: padding) and each slot's run index of its class."""
    num_batches = coverage_num_batches(runs, 1, k)
    by_runs = np.lexsort((rng.random(len(runs)), -runs))  # most runs first, ties at random
    seq = np.repeat(by_runs, runs[by_runs])
    first = np.concatenate([[0], np.cumsum(runs[by_runs])])[:-1]
    run_index = np.arange(len(seq)) - np.repeat(first, runs[by_runs])
    visit = np.concatenate([np.arange(0, num_batches, 2), np.arange(1, num_batches, 2)])
    pos = np.arange(len(seq))
    batch, slot = visit[pos % num_batches], pos // num_batches
    classes = np.full((num_batches, k), -1, dtype=np.int64)
    index = np.zeros((num_batches, k), dtype=np.int64)
    classes[batch, slot] = seq
    index[batch, slot] = run_index
    return classes, index


def _fill_padding(classes: np.ndarray, num_classes: int, rng: Any) -> np.ndarray:
    """Give every padding slot (-1) a class absent from its batch; True where padded."""
    padding = classes < 0
    for b in np.flatnonzero(padding.any(axis=1)).tolist():
        present = np.zeros(num_classes, dtype=bool)
        present[classes[b][classes[b] >= 0]] = True
        near = np.zeros(num_classes, dtype=bool)
        for other in (b - 1, b + 1):
            if 0 <= other < len(classes):
                near[classes[other][classes[other] >= 0]] = True
        score = rng.random(num_classes) + near + 2 * present
        need = int(padding[b].sum())
        classes[b, padding[b]] = np.argpartition(score, need - 1)[:need]
    return padding


def coverage_stream(
    rng: Any, members: np.ndarray, offsets: np.ndarray, m: int, k: int
) -> np.ndarray:
    """One coverage pass: ``B * k * m`` item positions, batch after batch.

    Args:
        rng: the pass's random handle (only ``random`` is called).
        members, offsets: the items grouped by class (see :func:`group_by_label`).
        m: items per class and batch.
        k: classes per batch (``<=`` the number of classes).
    """
    sizes = np.diff(offsets)
    num_classes = len(sizes)
    classes, run_index = _grid(-(-sizes // m), k, rng)
    padding = _fill_padding(classes, num_classes, rng)
    # every class's items in a random order (a shuffle within each class)
    class_of_pos = np.repeat(np.arange(num_classes), sizes)
    shuffled = members[np.lexsort((rng.random(len(members)), class_of_pos))]
    # the runs of each batch in a random order
    inside = np.argsort(rng.random(classes.shape), axis=1)
    classes = np.take_along_axis(classes, inside, axis=1).reshape(-1)
    padding = np.take_along_axis(padding, inside, axis=1).reshape(-1)
    run_index = np.take_along_axis(run_index, inside, axis=1).reshape(-1)
    size = sizes[classes][:, None]
    pos = run_index[:, None] * m + np.arange(m)[None, :]
    # past the end of a class: its first items again (distinct from the last run's when
    # size >= m), or random items when the class has fewer than m items
    small = np.minimum((rng.random(pos.shape) * size).astype(np.int64), size - 1)
    pos = np.where(pos < size, pos, np.where(size >= m, pos - size, small))
    extra = SF.draw_within_groups(rng, sizes[classes], m)
    pos = np.where(padding[:, None], extra, pos)
    return shuffled[offsets[classes][:, None] + pos].reshape(-1)
