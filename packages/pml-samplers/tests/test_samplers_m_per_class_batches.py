"""MPerClassBatchSampler: the MPerClassSampler stream as batches, for DataLoader(batch_sampler=)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from pml.core.validation import InvalidArgumentError
from pml.samplers import MPerClassBatchSampler, MPerClassSampler

pytestmark = pytest.mark.filterwarnings("ignore:.*fewer than m")


def labels_of(num_classes=10, n=120, seed=0):
    labels = np.random.RandomState(seed).randint(0, num_classes, n)
    labels[:num_classes] = np.arange(num_classes)
    return labels


@pytest.mark.parametrize("seed", [None, 4])
def test_batches_are_the_item_stream_cut_into_batch_size(seed) -> None:
    labels = labels_of()
    batches = MPerClassBatchSampler(labels, 4, 16, num_batches=7, seed=seed)
    items = MPerClassSampler(labels, 4, 16, length_before_new_iter=7 * 16, seed=seed)
    np.random.seed(2)
    got = [list(batches) for _ in range(2)]
    np.random.seed(2)
    want = [[int(i) for i in items] for _ in range(2)]
    assert len(batches) == 7 and all(len(p) == 7 for p in got)
    assert all(len(b) == 16 and all(type(i) is int for i in b) for p in got for b in p)
    assert [[i for b in p for i in b] for p in got] == want


def test_dataloader_batch_sampler_gives_m_per_class_batches() -> None:
    labels = labels_of()
    data = TensorDataset(torch.arange(len(labels)), torch.as_tensor(labels))
    loader = DataLoader(data, batch_sampler=MPerClassBatchSampler(labels, 4, 16, 5, seed=0))
    seen = [y.tolist() for _, y in loader]
    assert len(seen) == len(loader) == 5
    assert all(set(Counter(y).values()) == {4} and len(Counter(y)) == 4 for y in seen)


def test_default_num_batches_is_the_item_samplers_default_length() -> None:
    batches = MPerClassBatchSampler(labels_of(), 4, 16)
    assert len(batches) == 100000 // 16 == batches.num_batches


def test_sharded_batches_and_epochs() -> None:
    labels = labels_of()
    full = MPerClassBatchSampler(labels, 4, 16, 8, seed=3)
    full.set_epoch(2)
    whole = list(full)
    for rank in range(2):
        shard = MPerClassBatchSampler(labels, 4, 16, 8, seed=3, num_replicas=2, rank=rank)
        shard.set_epoch(2)
        assert len(shard) == 4 and list(shard) == whole[rank::2]
    full.set_epoch(3)
    assert list(full) != whole


def test_state_resumes_in_the_middle_of_a_pass() -> None:
    labels = labels_of()
    np.random.seed(8)
    unbroken = MPerClassBatchSampler(labels, 4, 16, 6)
    want = [list(unbroken), list(unbroken)]
    np.random.seed(8)
    broken = MPerClassBatchSampler(labels, 4, 16, 6)
    assert list(broken) == want[0]
    it = iter(broken)
    head = [next(it), next(it)]
    state, rng = broken.state_dict(), np.random.get_state()
    assert state["position"] == 32
    fresh = MPerClassBatchSampler(labels, 4, 16, 6)
    fresh.load_state_dict(state)
    np.random.set_state(rng)
    assert head + list(fresh) == want[1]


def test_batch_sampler_argument_errors() -> None:
    labels = labels_of()
    with pytest.raises(ValueError, match="num_batches must be >= 1"):
        MPerClassBatchSampler(labels, 4, 16, num_batches=0)
    with pytest.raises(TypeError, match="num_batches"):
        MPerClassBatchSampler(labels, 4, 16, num_batches=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_batches cannot be given with coverage=True"):
        MPerClassBatchSampler(labels, 4, 16, num_batches=3, coverage=True)
    with pytest.raises(TypeError, match="coverage must be a bool"):
        MPerClassBatchSampler(labels, 4, 16, coverage=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="batch_size"):
        MPerClassBatchSampler(labels, 4, None)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="batch_size must be divisible by m"):
        MPerClassBatchSampler(labels, 4, 18)
    with pytest.raises(ValueError, match="rank"):
        MPerClassBatchSampler(labels, 4, 16, 4, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="num_batches = 2 batches to share"):
        MPerClassBatchSampler(labels, 4, 16, 2, num_replicas=3, rank=0)
