"""MPerClassSampler(coverage=True): every item once per pass, m per class, no back-to-back class."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

import numpy as np
import pytest

from pml.samplers import MPerClassBatchSampler, MPerClassSampler

pytestmark = pytest.mark.filterwarnings("ignore:.*fewer than m")


def random_labels(num_classes=12, n=203, seed=0):
    labels = np.random.RandomState(seed).randint(0, num_classes, n)
    labels[:num_classes] = np.arange(num_classes)
    return labels


def check_pass(labels, stream, m, batch_size):
    """Batches of exactly m items per class; every item at least once; returns the batches."""
    labels = np.asarray(labels)
    stream = np.asarray([int(i) for i in stream])
    assert len(stream) % batch_size == 0
    batches = stream.reshape(-1, batch_size)
    for batch in batches:
        counts = Counter(labels[batch].tolist())
        assert set(counts.values()) == {m}, counts
        for c in counts:  # a class's m items are distinct when the class has m items
            items = batch[labels[batch] == c]
            assert len(set(items.tolist())) == min(m, int((labels == c).sum()))
    assert set(stream.tolist()) == set(range(len(labels)))
    return batches


def consecutive_repeats(labels, batches):
    labels = np.asarray(labels)
    sets = [set(labels[b].tolist()) for b in batches]
    return sum(bool(a & b) for a, b in pairwise(sets))


@pytest.mark.parametrize(("m", "batch_size"), [(4, 16), (2, 8), (3, 12), (1, 5), (5, 10)])
def test_every_item_of_every_class_once_per_pass(m, batch_size) -> None:
    labels = random_labels(num_classes=40, n=600)  # no class too large to skip a batch
    sampler = MPerClassSampler(labels, m, batch_size, seed=1, coverage=True)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        stream = list(sampler)
        assert len(stream) == len(sampler)
        batches = check_pass(labels, stream, m, batch_size)
        assert consecutive_repeats(labels, batches) == 0
        # items used twice: only to complete the last run of a class and the last batches
        sizes = np.bincount(labels)
        runs = -(-sizes // m)
        padding_runs = len(batches) * (batch_size // m) - runs.sum()
        assert len(stream) == runs.sum() * m + padding_runs * m
        assert padding_runs < batch_size // m


def test_exactly_once_when_classes_divide_evenly() -> None:
    labels = np.repeat(np.arange(8), 8)  # 8 classes x 8 items, m = 4: 2 runs each
    sampler = MPerClassSampler(labels, 4, 16, seed=0, coverage=True)
    stream = [int(i) for i in sampler]
    assert len(sampler) == 64 and sorted(stream) == list(range(64))
    assert consecutive_repeats(labels, np.reshape(stream, (-1, 16))) == 0


def test_dominant_class_repeats_only_where_unavoidable() -> None:
    # class 0: 10 runs of m; 5 classes of 1 run: 15 runs, 2 per batch: class 0 cannot skip
    labels = np.concatenate([np.zeros(40, dtype=int), np.repeat(np.arange(1, 6), 4)])
    sampler = MPerClassSampler(labels, 4, 8, seed=0, coverage=True)
    batches = check_pass(labels, list(sampler), 4, 8)
    assert len(batches) == len(sampler) // 8
    assert sum(0 in labels[b] for b in batches) == 10  # each of its runs once
    sets = [set(labels[b].tolist()) for b in batches]
    assert all(a & b <= {0} for a, b in pairwise(sets))  # only class 0 repeats


def test_only_classes_with_runs_in_half_the_batches_repeat() -> None:
    labels = random_labels()  # classes of 12 to 25 items, m = 1, 5 of 12 classes per batch
    sampler = MPerClassSampler(labels, 1, 5, seed=0, coverage=True)
    batches = check_pass(labels, list(sampler), 1, 5)
    runs = np.bincount(labels)
    assert len(batches) == max(-(-runs.sum() // 5), runs.max()) == 41
    big = set(np.flatnonzero(2 * runs >= len(batches)).tolist())
    assert big == {0, 3, 8}
    sets = [set(labels[b].tolist()) for b in batches]
    assert all(a & b <= big for a, b in pairwise(sets))
    # class 3: 25 runs in 41 batches, at least 24 - 16 = 8 back-to-back pairs; no more
    assert sum(3 in a and 3 in b for a, b in pairwise(sets)) == 8


def test_small_classes_fill_their_run_with_replacement() -> None:
    labels = [0, 0, 0, 0, 1, 1, 1, 1, 2]  # class 2 has one item
    sampler = MPerClassSampler(labels, 2, 4, seed=0, coverage=True)
    stream = [int(i) for i in sampler]
    batches = np.reshape(stream, (-1, 4))
    for b in batches:
        assert set(Counter(np.asarray(labels)[b].tolist()).values()) == {2}
    assert set(stream) == set(range(9))


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_length_is_known_before_the_pass(seed) -> None:
    labels = random_labels(num_classes=9, n=150, seed=seed)
    sampler = MPerClassSampler(labels, 3, 9, seed=seed, coverage=True)
    for epoch in range(4):
        sampler.set_epoch(epoch)
        assert len(list(sampler)) == len(sampler)


def test_without_seed_draws_from_numpy_global_rng() -> None:
    labels = random_labels()
    sampler = MPerClassSampler(labels, 4, 16, coverage=True)
    np.random.seed(3)
    a = [int(i) for i in sampler]
    np.random.seed(3)
    b = [int(i) for i in sampler]
    c = [int(i) for i in sampler]
    assert a == b and a != c
    check_pass(labels, a, 4, 16)


def test_ranks_split_the_batches_of_one_pass() -> None:
    labels = random_labels()
    full = [int(i) for i in MPerClassSampler(labels, 4, 16, seed=2, coverage=True)]
    shards = [
        MPerClassSampler(labels, 4, 16, seed=2, coverage=True, num_replicas=3, rank=r)
        for r in range(3)
    ]
    batches = np.reshape(full, (-1, 16))
    for r, shard in enumerate(shards):
        got = np.reshape([int(i) for i in shard], (-1, 16))
        assert len(shard) == 16 * (len(batches) // 3)
        np.testing.assert_array_equal(got, batches[r::3][: len(batches) // 3])


def test_batch_sampler_coverage_yields_the_same_pass() -> None:
    labels = random_labels()
    batches = MPerClassBatchSampler(labels, 4, 16, coverage=True, seed=7)
    items = MPerClassSampler(labels, 4, 16, coverage=True, seed=7)
    got = list(batches)
    assert len(got) == len(batches) == len(items) // 16
    assert [i for b in got for i in b] == [int(i) for i in items]


def test_coverage_argument_errors() -> None:
    labels = random_labels()
    with pytest.raises(ValueError, match="coverage=True needs batch_size"):
        MPerClassSampler(labels, 4, coverage=True)
    with pytest.raises(ValueError, match="length_before_new_iter cannot be given"):
        MPerClassSampler(labels, 4, 16, length_before_new_iter=64, coverage=True)
    with pytest.raises(TypeError, match="coverage must be a bool"):
        MPerClassSampler(labels, 4, 16, coverage="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size must be divisible by m"):
        MPerClassSampler(labels, 4, 18, coverage=True)
    with pytest.raises(ValueError, match="must be >= batch_size"):
        MPerClassSampler([0, 0, 1, 1], 2, 6, coverage=True)
    with pytest.raises(ValueError, match="coverage=True over 2 classes"):
        MPerClassSampler([0, 0, 1, 1], 2, 4, coverage=True, num_replicas=3, rank=0)


@pytest.mark.parametrize("seed", range(8))
def test_random_class_sizes_repeat_only_big_classes(seed) -> None:
    rs = np.random.RandomState(seed)
    num_classes = rs.randint(3, 30)
    sizes = rs.randint(1, 40, num_classes)
    labels = np.repeat(np.arange(num_classes), sizes)
    m = int(rs.randint(1, 5))
    k = int(rs.randint(1, min(num_classes, 8) + 1))
    sampler = MPerClassSampler(labels, m, m * k, seed=seed, coverage=True)
    batches = check_pass(labels, list(sampler), m, m * k)
    runs = -(-sizes // m)
    assert len(batches) == max(-(-runs.sum() // k), runs.max())
    # classes with runs in half of the batches or more may meet themselves; so may the
    # classes that fill the last batches when there are too few classes (< 3 k) to choose
    allowed = set(np.flatnonzero(2 * runs >= len(batches)).tolist())
    sets = [set(labels[b].tolist()) for b in batches]
    if num_classes < 3 * k:
        seen = np.bincount([c for batch in sets for c in batch], minlength=num_classes)
        allowed |= set(np.flatnonzero(seen > runs).tolist())
    assert all(a & b <= allowed for a, b in pairwise(sets))
