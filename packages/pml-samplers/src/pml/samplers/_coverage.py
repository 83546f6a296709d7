"""Coverage epochs of MPerClassSampler: every item of every class once, in m-item runs.

A class of ``n`` items is cut into ``ceil(n / m)`` runs of ``m`` items (its items in a
random order; a short last run is completed with other items of the class, drawn with
replacement only when ``n < m``). The runs are then laid out ``k = batch_size // m`` per
batch by a greedy schedule: each batch takes the ``k`` classes with the most runs left
among those not in the previous batch (ties broken at random), then, when fewer than ``k``
such classes are left, classes of the previous batch with runs left, then extra runs of
other classes (padding, drawn at random, preferring classes not in the previous batch).
No class appears twice in a batch; a class appears in two consecutive batches only when
the classes left cannot fill a batch otherwise. The number of batches depends only on the
class sizes (classes with the same counts are interchangeable), so the length of a pass is
known before it is drawn.

Only ``rng.random`` is used, so a legacy handle (``numpy.random``, a ``RandomState``) and a
``Generator`` both work.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pml.samplers import functional as SF

__all__ = ["coverage_num_batches", "coverage_stream"]


def _schedule(runs: np.ndarray, k: int, rng: Any) -> tuple[np.ndarray, np.ndarray]:
    """Classes ``(B, k)`` of each batch and whether each slot is padding ``(B, k)``."""
    num_classes = len(runs)
    remaining = runs.astype(np.int64).copy()
    prev = np.zeros(num_classes, dtype=bool)
    tier_width = float(remaining.max(initial=0) + 2)
    classes, padding = [], []
    while remaining.any():
        key = rng.random(num_classes)
        has_runs = remaining > 0
        # tiers: runs left and not in the previous batch > runs left > padding not in the
        # previous batch > padding; within a tier: most runs left, then the random key
        tier = np.where(has_runs, 2 + ~prev, ~prev).astype(np.float64)
        score = tier * tier_width + remaining + key
        chosen = np.argpartition(-score, k - 1)[:k] if k < num_classes else np.arange(k)
        pad = ~has_runs[chosen]
        remaining[chosen[~pad]] -= 1
        prev[:] = False
        prev[chosen] = True
        classes.append(chosen)
        padding.append(pad)
    if not classes:
        return np.empty((0, k), dtype=np.int64), np.empty((0, k), dtype=bool)
    return np.stack(classes).astype(np.int64), np.stack(padding)


def coverage_num_batches(sizes: np.ndarray, m: int, k: int) -> int:
    """Batches of one coverage pass over classes of ``sizes`` items (``k`` classes each)."""
    runs = -(-np.asarray(sizes, dtype=np.int64) // m)
    return len(_schedule(runs, k, np.random.default_rng(0))[0])


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
    runs = -(-sizes // m)
    classes, padding = _schedule(runs, k, rng)
    # every class's items in a random order (a shuffle within each class)
    class_of_pos = np.repeat(np.arange(num_classes), sizes)
    shuffled = members[np.lexsort((rng.random(len(members)), class_of_pos))]
    # shuffle the k runs inside each batch (the schedule's order follows the scores)
    inside = np.argsort(rng.random(classes.shape), axis=1)
    classes = np.take_along_axis(classes, inside, axis=1).reshape(-1)
    padding = np.take_along_axis(padding, inside, axis=1).reshape(-1)
    # j-th run of its class, counted over the non-padding slots in stream order
    real = np.flatnonzero(~padding)
    by_class = real[np.argsort(classes[real], kind="stable")]
    start_of = np.concatenate([[0], np.cumsum(runs)])[:-1]
    run_index = np.empty(len(classes), dtype=np.int64)
    run_index[by_class] = np.arange(len(by_class)) - np.repeat(start_of, runs)
    size = sizes[classes][:, None]
    pos = run_index[:, None] * m + np.arange(m)[None, :]
    # past the end of a class: its first items again (distinct from the last run's when
    # size >= m), or random items when the class has fewer than m items
    wrapped = pos - size
    small = np.minimum((rng.random(pos.shape) * size).astype(np.int64), size - 1)
    pos = np.where(pos < size, pos, np.where(size >= m, wrapped, small))
    extra = SF.draw_within_groups(rng, sizes[classes], m)
    pos = np.where(padding[:, None], extra, pos)
    return shuffled[offsets[classes][:, None] + pos].reshape(-1)
