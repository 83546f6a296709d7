"""FixedSetOfPairs: a fixed balanced set of pairs, whole batches, seeds, shards, errors."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from pml.samplers import FixedSetOfPairs


def labels_of(num_classes=6, n=60, seed=0):
    labels = np.random.RandomState(seed).randint(0, num_classes, n)
    labels[:num_classes] = np.arange(num_classes)
    return labels


def pairs_of(batch):
    return [tuple(batch[i : i + 2]) for i in range(0, len(batch), 2)]


def test_the_set_is_balanced_and_valid() -> None:
    labels = labels_of()
    sampler = FixedSetOfPairs(labels, num_pairs=40, batch_size=8, seed=0)
    pos, neg = sampler.positive_pairs, sampler.negative_pairs
    assert pos.shape == neg.shape == (20, 2) and pos.dtype == np.int64
    assert (labels[pos[:, 0]] == labels[pos[:, 1]]).all() and (pos[:, 0] != pos[:, 1]).all()
    assert (labels[neg[:, 0]] != labels[neg[:, 1]]).all()
    np.testing.assert_array_equal(sampler.fixed_set_of_pairs, np.concatenate([pos, neg]))


def test_every_batch_holds_as_many_positive_as_negative_pairs_of_the_set() -> None:
    labels = labels_of()
    sampler = FixedSetOfPairs(labels, num_pairs=44, batch_size=8, seed=1)
    assert len(sampler) == 22 // 2 == 11
    the_set = Counter(map(tuple, sampler.fixed_set_of_pairs.tolist()))
    before = sampler.fixed_set_of_pairs.copy()
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == 11 and all(len(b) == 8 for b in batches)
        used: Counter = Counter()
        for batch in batches:
            kinds = [labels[a] == labels[b] for a, b in pairs_of(batch)]
            assert sum(kinds) == 2 and len(kinds) == 4
            used.update(pairs_of(batch))
        assert not used - the_set  # each pair of the set at most once per pass
    np.testing.assert_array_equal(sampler.fixed_set_of_pairs, before)  # the set never changes


def test_orders_follow_seed_and_epoch() -> None:
    labels = labels_of()
    a = FixedSetOfPairs(labels, 40, 8, seed=3)
    b = FixedSetOfPairs(labels, 40, 8, seed=3)
    np.testing.assert_array_equal(a.fixed_set_of_pairs, b.fixed_set_of_pairs)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    c = FixedSetOfPairs(labels, 40, 8, seed=4)
    assert not np.array_equal(a.fixed_set_of_pairs, c.fixed_set_of_pairs)


def test_without_seed_the_global_numpy_rng_decides() -> None:
    labels = labels_of()
    np.random.seed(5)
    a = FixedSetOfPairs(labels, 40, 8)
    order_a = list(a)
    np.random.seed(5)
    b = FixedSetOfPairs(labels, 40, 8)
    np.testing.assert_array_equal(a.fixed_set_of_pairs, b.fixed_set_of_pairs)
    assert list(b) == order_a and list(b) != order_a


def test_positive_labels_are_uniform_over_labels_with_two_items() -> None:
    labels = np.concatenate([np.zeros(200, dtype=int), np.repeat([1, 2, 3], 2), [4]])
    sampler = FixedSetOfPairs(labels, 8000, 8, seed=0)
    counts = np.bincount(labels[sampler.positive_pairs[:, 0]], minlength=5)
    assert counts[4] == 0 and np.all(np.abs(counts[:4] / 4000 - 0.25) < 0.03)
    neg = np.bincount(labels[sampler.negative_pairs].reshape(-1), minlength=5) / 8000
    assert np.all(np.abs(neg - 0.2) < 0.03)


def test_ranks_get_whole_batches() -> None:
    labels = labels_of()
    whole = list(FixedSetOfPairs(labels, 40, 8, seed=2))
    for rank in range(3):
        shard = FixedSetOfPairs(labels, 40, 8, seed=2, num_replicas=3, rank=rank)
        assert len(shard) == 3 and list(shard) == whole[rank::3][:3]


def test_dataloader_and_pairs_tuple() -> None:
    labels = labels_of()
    data = TensorDataset(torch.arange(len(labels)), torch.as_tensor(labels))
    loader = DataLoader(data, batch_sampler=FixedSetOfPairs(labels, 24, 12, seed=0))
    assert len(loader) == 4
    for _, y in loader:
        a1, p, a2, n = FixedSetOfPairs.pairs_tuple(y)
        assert len(a1) == len(a2) == 3
        assert (y[a1] == y[p]).all() and (y[a2] != y[n]).all() and (p == a1 + 1).all()
        assert sorted((a1 // 2).tolist() + (a2 // 2).tolist()) == list(range(6))
    a1, p, a2, n = FixedSetOfPairs.pairs_tuple([0, 0, 1, 2])
    assert a1.tolist() == [0] and p.tolist() == [1] and a2.tolist() == [2] and n.tolist() == [3]


def test_fixed_set_of_pairs_argument_errors() -> None:
    labels = labels_of()
    with pytest.raises(ValueError, match="num_pairs must be even"):
        FixedSetOfPairs(labels, 41, 8)
    with pytest.raises(ValueError, match="batch_size must be a multiple of 4"):
        FixedSetOfPairs(labels, 40, 6)
    with pytest.raises(ValueError, match="num_pairs must be >= batch_size // 2 = 8"):
        FixedSetOfPairs(labels, 6, 16)
    with pytest.raises(TypeError, match="num_pairs"):
        FixedSetOfPairs(labels, True, 8)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="batch_size"):
        FixedSetOfPairs(labels, 40, 8.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_pairs must be >= 1"):
        FixedSetOfPairs(labels, 0, 8)
    with pytest.raises(ValueError, match="at least 2 distinct labels"):
        FixedSetOfPairs([1, 1, 1], 4, 4)
    with pytest.raises(ValueError, match="at least one label with 2 or more items"):
        FixedSetOfPairs([0, 1, 2], 4, 4)
    with pytest.raises(ValueError, match="num_replicas = 3 ranks would each get nothing"):
        FixedSetOfPairs(labels, 8, 8, num_replicas=3, rank=0)
    with pytest.raises(ValueError, match="labels must be 1-D of even length"):
        FixedSetOfPairs.pairs_tuple(torch.tensor([0, 1, 2]))
