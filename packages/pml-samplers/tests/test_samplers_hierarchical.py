"""HierarchicalSampler: structure of the batches, lengths, errors, reference-exact calls, shards."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from pml.core.validation import InvalidArgumentError
from pml.samplers import HierarchicalSampler


def hier_labels(n=200, classes=16, supers=4, seed=0):
    rs = np.random.RandomState(seed)
    c = rs.randint(0, classes, n)
    c[:classes] = np.arange(classes)
    return np.stack([c, c % supers], axis=1)


def naive_batches(labels, batch_size, spc, bpst=4, scpb=2):
    """The spec's reshuffle, literally (lists and np.random calls)."""
    sub_len = batch_size // scpb
    supers = {}
    for i, (inner, outer) in enumerate(labels.tolist()):
        supers.setdefault(outer, {}).setdefault(inner, []).append(i)
    batches = []
    for combo in itertools.combinations(set(supers), scpb):
        for _ in range(bpst):
            batch = []
            for s in combo:
                sub = []
                classes = list(supers[s])
                np.random.shuffle(classes)
                for cl in classes:
                    if len(sub) >= sub_len:
                        break
                    items = supers[s][cl]
                    n = len(items) if spc == "all" else spc
                    if len(sub) + n > sub_len:
                        continue
                    sub.extend(np.random.choice(items, size=n, replace=len(items) < n).tolist())
                batch.extend(sub)
            np.random.shuffle(batch)
            batches.append(batch)
    np.random.shuffle(batches)
    return batches


@pytest.mark.parametrize(
    ("batch_size", "spc", "bpst", "scpb"), [(8, 2, 4, 2), (18, 3, 2, 3), (16, "all", 2, 2)]
)
def test_batches_follow_the_spec(batch_size, spc, bpst, scpb):
    labels = hier_labels()
    np.random.seed(3)
    sampler = HierarchicalSampler(labels, batch_size, spc, bpst, scpb)
    got_init = [[int(i) for i in b] for b in sampler.batches]
    got_iter = [[int(i) for i in b] for b in sampler]
    np.random.seed(3)
    assert got_init == naive_batches(labels, batch_size, spc, bpst, scpb)
    assert got_iter == naive_batches(labels, batch_size, spc, bpst, scpb)


@pytest.mark.parametrize("seed", [None, 5])
def test_batch_structure(seed):
    labels = hier_labels(classes=20, supers=5)
    sampler = HierarchicalSampler(labels, 12, 3, batches_per_super_tuple=3,
                                  super_classes_per_batch=2, seed=seed)  # fmt: skip
    assert len(sampler) == 10 * 3 == len(list(sampler))
    for batch in sampler:
        assert len(batch) <= 12 and all(isinstance(i, np.int64) for i in batch)
        rows = labels[np.array(batch, dtype=np.int64)]
        assert len(set(rows[:, 1].tolist())) <= 2
        for s in set(rows[:, 1].tolist()):
            sub = rows[rows[:, 1] == s]
            assert len(sub) <= 6
            assert all(c == 3 for c in np.bincount(sub[:, 0]).tolist() if c)


def test_short_batches_when_a_super_class_lacks_classes():
    labels = np.array([[0, 0], [0, 0], [1, 1], [1, 1], [2, 1], [2, 1]])
    sampler = HierarchicalSampler(labels, 8, 2)
    assert [len(b) for b in sampler] == [6, 6, 6, 6]  # super class 0 fills 2 of 4 slots


def test_length_and_too_few_super_classes():
    labels = hier_labels(supers=4)
    assert len(HierarchicalSampler(labels, 8, 2)) == 6 * 4
    assert len(HierarchicalSampler(labels, 9, 3, super_classes_per_batch=3)) == 4 * 4
    one_super = np.stack([np.arange(10), np.zeros(10, dtype=int)], axis=1)
    with pytest.raises(ValueError, match="super_classes_per_batch"):  # fix: 0 batches before
        HierarchicalSampler(one_super, 8, 2)


def test_errors():
    labels = hier_labels()
    with pytest.raises(InvalidArgumentError, match="super_classes_per_batch"):
        HierarchicalSampler(labels, 9, 3)
    with pytest.raises(InvalidArgumentError, match="samples_per_class"):
        HierarchicalSampler(labels, 8, 3)
    with pytest.raises(AssertionError):
        HierarchicalSampler(labels, 8, 0)
    with pytest.raises(ValueError, match="samples_per_class"):
        HierarchicalSampler(labels, 8, "some")
    with pytest.raises(ValueError, match="shape"):
        HierarchicalSampler(labels[:, 0], 8, 2)
    with pytest.raises(ValueError, match="outer_label"):
        HierarchicalSampler(labels, 8, 2, outer_label=2)


def test_tensor_and_nested_list_labels_and_dataloader():
    labels = hier_labels(n=40, classes=8)
    np.random.seed(0)
    a = [[int(i) for i in b] for b in HierarchicalSampler(torch.as_tensor(labels), 8, 2)]
    np.random.seed(0)
    b = [[int(i) for i in b] for b in HierarchicalSampler(labels.tolist(), 8, 2)]
    assert a == b
    data = TensorDataset(torch.arange(40))
    loader = DataLoader(data, batch_sampler=HierarchicalSampler(labels, 8, 2))
    assert sum(len(x) for (x,) in loader) == 8 * len(loader)


def test_seed_epochs_and_shards():
    labels = hier_labels()
    full = HierarchicalSampler(labels, 8, 2, seed=1)
    again = HierarchicalSampler(labels, 8, 2, seed=1)
    batches = [list(map(int, b)) for b in full]
    assert batches == [list(map(int, b)) for b in again]
    full.set_epoch(1)
    assert [list(map(int, b)) for b in full] != batches
    full.set_epoch(0)
    shards = [HierarchicalSampler(labels, 8, 2, num_replicas=3, rank=r, seed=1) for r in range(3)]
    assert [len(s) for s in shards] == [8, 8, 8]
    for r, s in enumerate(shards):
        assert [list(map(int, b)) for b in s] == batches[r::3][:8]
