"""FixedSetOfTriplets and TuplesToWeightsSampler."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from pml.core.indices import get_all_pairs_indices
from pml.core.validation import InvalidArgumentError
from pml.samplers import FixedSetOfTriplets, TuplesToWeightsSampler

# ----------------------------------------------------------------------------- FixedSetOfTriplets


def naive_set(labels, num_triplets):
    l2i = {}
    for i, label in enumerate(labels):
        l2i.setdefault(label, []).append(i)
    keys = list(l2i)
    out = []
    for _ in range(num_triplets):
        a_label, n_label = np.random.choice(keys, size=2, replace=False)
        a_items = np.asarray(l2i[a_label])
        anchor, positive = np.random.choice(a_items, size=2, replace=len(a_items) < 2)
        negative = np.random.choice(np.asarray(l2i[n_label]), replace=False)
        out.append([int(anchor), int(positive), int(negative)])
    return out


def test_fixed_set_follows_the_spec():
    labels = [0, 0, 1, 1, 1, 2, 3, 3, 4]
    np.random.seed(2)
    sampler = FixedSetOfTriplets(labels, 30)
    np.random.seed(2)
    assert sampler.fixed_set_of_triplets.tolist() == naive_set(labels, 30)


@pytest.mark.parametrize("seed", [None, 4])
def test_triplets_are_valid_and_iteration_reorders_them(seed):
    labels = np.repeat(np.arange(6), 3)
    labels = np.append(labels, 6)  # a singleton class: anchor == positive
    sampler = FixedSetOfTriplets(labels, 200, seed=seed)
    t = sampler.fixed_set_of_triplets
    assert t.shape == (200, 3) and t.dtype == np.int64
    assert bool((labels[t[:, 0]] == labels[t[:, 1]]).all())
    assert bool((labels[t[:, 0]] != labels[t[:, 2]]).all())
    single = labels[t[:, 0]] == 6
    assert bool((t[single, 0] == t[single, 1]).all())
    assert bool((t[~single, 0] != t[~single, 1]).all())
    original = Counter(map(tuple, t.tolist()))
    sampler.set_epoch(1)
    stream = list(sampler)
    assert len(stream) == len(sampler) == 600 and all(type(i) is int for i in stream)
    assert Counter(map(tuple, np.array(stream).reshape(-1, 3).tolist())) == original


def test_fixed_set_errors():
    with pytest.raises(InvalidArgumentError, match="num_triplets"):
        FixedSetOfTriplets([0, 1], 0)
    with pytest.raises(AssertionError):
        FixedSetOfTriplets([0, 1], -2)
    with pytest.raises(ValueError, match="2 distinct labels"):
        FixedSetOfTriplets([5, 5, 5], 3)


def test_fixed_set_shards():
    labels = np.repeat(np.arange(5), 4)
    full = FixedSetOfTriplets(labels, 10, seed=3)
    shards = [FixedSetOfTriplets(labels, 10, num_replicas=3, rank=r, seed=3) for r in range(3)]
    rows = np.array(list(full)).reshape(-1, 3)
    assert [len(s) for s in shards] == [9, 9, 9]
    for r, s in enumerate(shards):
        assert np.array_equal(np.array(list(s)).reshape(-1, 3), rows[r::3][:3])


# ------------------------------------------------------------------------- TuplesToWeightsSampler


def dataset(n=30, classes=5):
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 4, generator=g), torch.arange(n) % classes)


KW = {"dataloader_num_workers": 0, "data_device": "cpu", "batch_size": 7}


def count_weights(tuples, n):
    counts = Counter(torch.cat(tuples).tolist())
    top = max(counts.values())
    return torch.tensor([counts.get(i, 0) / top for i in range(n)], dtype=torch.float32)


def test_weights_are_tuple_counts():
    data = dataset()
    calls = []

    def miner(emb, labels):
        calls.append((emb, labels))
        a1, p, a2, n = get_all_pairs_indices(labels)
        return a1[:10], p[:10], a2[:3], n[:3]

    sampler = TuplesToWeightsSampler(torch.nn.Identity(), miner, data, **KW)
    draws = list(sampler)
    emb, labels = calls[0]
    torch.testing.assert_close(emb, torch.nn.functional.normalize(data.tensors[0]))
    assert torch.equal(labels, data.tensors[1])
    torch.testing.assert_close(sampler.weights, count_weights(miner(emb, labels), 30))
    assert len(draws) == len(sampler) == 30
    assert set(draws) <= set(torch.where(sampler.weights > 0)[0].tolist())


def test_subset_and_no_tuples():
    data = dataset()
    sampler = TuplesToWeightsSampler(torch.nn.Identity(), lambda e, lab: (
        torch.empty(0, dtype=torch.long),) * 3, data, subset_size=12, **KW)  # fmt: skip
    draws = list(sampler)
    assert len(sampler) == len(draws) == 12
    assert int((sampler.weights > 0).sum()) == 12  # nothing mined: every subset item weighs 1
    assert set(draws) <= set(torch.where(sampler.weights > 0)[0].tolist())


def test_model_modes_are_restored():
    # fix: the reference leaves the model in eval mode
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Dropout(0.5))
    model.train()
    model[1].eval()  # a submodule deliberately frozen
    seen = []
    model.register_forward_hook(lambda module, args, out: seen.append(module.training))

    def miner(emb, labels):
        return get_all_pairs_indices(labels)

    list(TuplesToWeightsSampler(model, miner, dataset(), **KW))
    assert seen == [False] * 5  # 30 items in batches of 7
    assert model.training and model[0].training and not model[1].training


def test_options_and_errors():
    data = dataset()
    with pytest.raises(TypeError, match="unknown tester options"):
        TuplesToWeightsSampler(torch.nn.Identity(), None, data, batchsize=3)
    with pytest.raises(ValueError, match="pca"):
        TuplesToWeightsSampler(torch.nn.Identity(), None, data, pca=2)
    s = TuplesToWeightsSampler(torch.nn.Identity(), None, data, normalize_embeddings=False,
                               accuracy_calculator=object(), **KW)  # fmt: skip
    emb, labels = s.get_all_embeddings(data)
    assert torch.equal(emb, data.tensors[0]) and labels.shape == (30, 1)
    assert s.weights is None


def test_seeded_shards():
    data = dataset()

    def miner(emb, labels):
        return get_all_pairs_indices(labels)

    full = TuplesToWeightsSampler(torch.nn.Identity(), miner, data, seed=0, **KW)
    shards = [TuplesToWeightsSampler(torch.nn.Identity(), miner, data, num_replicas=2, rank=r,
                                     **KW) for r in range(2)]  # fmt: skip
    draws = list(full)
    assert draws == list(full)
    assert [len(s) for s in shards] == [15, 15]
    for r, s in enumerate(shards):
        assert list(s) == draws[r::2][:15]


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("batch_size", 2.7, TypeError),
        ("batch_size", 0, ValueError),
        ("dataloader_num_workers", 1.5, TypeError),
        ("dataloader_num_workers", -1, ValueError),
        ("subset_size", 2.5, TypeError),
        ("subset_size", -3, ValueError),
    ],
)
def test_tuples_to_weights_fractional_or_negative_counts_are_rejected_not_truncated(
    name, value, error
):
    # fix: int() silently turned a batch_size of 2.7 into 2
    kwargs = {**KW, name: value}
    subset_size = kwargs.pop("subset_size", None)
    with pytest.raises(error, match=name):
        TuplesToWeightsSampler(torch.nn.Identity(), None, dataset(), subset_size, **kwargs)
