"""Label grouping and random helpers of pml.samplers.functional."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pml.samplers import functional as SF
from pml.samplers import get_labels_to_indices, safe_random_choice, set_numpy_random


def naive_labels_to_indices(labels):
    out = {}
    for i, label in enumerate(labels):
        out.setdefault(label, []).append(i)
    return out


@pytest.mark.parametrize(
    "labels",
    [
        [3, 1, 3, 2, 1, 1],
        np.array([5, 5, -1, 2]),
        np.array([0.5, 0.25, 0.5]),
        ["dog", "cat", "dog", "monkey"],
        [(0, 1), (1, 0), (0, 1)],
        [1, "a", 1, None],
        [True, False, True],
    ],
    ids=["ints", "array", "floats", "strings", "tuples", "mixed", "bools"],
)
def test_get_labels_to_indices_matches_naive(labels):
    got = get_labels_to_indices(labels)
    expected = naive_labels_to_indices(list(labels))
    assert list(got) == list(expected)
    assert {k: v.tolist() for k, v in got.items()} == expected
    assert all(v.dtype == np.int64 for v in got.values())


def test_get_labels_to_indices_tensor_and_errors():
    got = get_labels_to_indices(torch.tensor([2, 0, 2]))
    assert {k: v.tolist() for k, v in got.items()} == {2: [0, 2], 0: [1]}
    with pytest.raises(TypeError, match="labels"):
        get_labels_to_indices(3)
    with pytest.raises(ValueError, match="1-D"):
        get_labels_to_indices(np.zeros((2, 2)))
    assert get_labels_to_indices([]) == {}


def test_group_by_label_large():
    rs = np.random.RandomState(0)
    labels = rs.randint(0, 1000, 20000)
    keys, members, offsets = SF.group_by_label(labels)
    first_seen = list(dict.fromkeys(labels.tolist()))
    assert keys == first_seen
    for c in (0, 10, 999):
        assert (
            members[offsets[c] : offsets[c + 1]].tolist() == np.where(labels == keys[c])[0].tolist()
        )


@pytest.mark.parametrize("handle", ["module", "state"])
def test_fast_choice_draws_exactly_like_choice(handle):
    pops = [np.arange(n) + 100 for n in (1, 2, 3, 7, 50)]
    for size in (1, 2, 4, 9):
        rng_a = np.random if handle == "module" else np.random.RandomState(3)
        if handle == "module":
            np.random.seed(3)
        got = [SF._choice(rng_a, p, size) for p in pops]
        tail_a = rng_a.rand()
        rng_b = np.random if handle == "module" else np.random.RandomState(3)
        if handle == "module":
            np.random.seed(3)
        expected = [rng_b.choice(p, size=size, replace=len(p) < size) for p in pops]
        assert all(np.array_equal(x, y) for x, y in zip(got, expected))
        assert tail_a == rng_b.rand()


def test_safe_random_choice_and_handle():
    np.random.seed(0)
    assert len(set(safe_random_choice(np.arange(10), 10).tolist())) == 10
    assert len(safe_random_choice([1, 2], 5)) == 5
    set_numpy_random(np.random.RandomState(1))
    try:
        a = safe_random_choice(np.arange(100), 3)
        set_numpy_random(np.random.RandomState(1))
        assert np.array_equal(a, safe_random_choice(np.arange(100), 3))
        assert SF.get_numpy_random() is SF.NUMPY_RANDOM
    finally:
        set_numpy_random(np.random)
    with pytest.raises(TypeError, match="rng"):
        set_numpy_random(object())


@pytest.mark.parametrize(("population", "k"), [(10, 3), (10, 8), (5, 5), (1000, 40)])
def test_sample_distinct(population, k):
    out = SF.sample_distinct(np.random.default_rng(0), population, 3000, k)
    assert out.shape == (3000, k)
    assert all(len(set(r)) == k for r in out.tolist())
    assert out.min() >= 0 and out.max() < population
    counts = np.bincount(out.reshape(-1), minlength=population)
    assert counts.min() > 0.6 * counts.mean()  # roughly uniform
    with pytest.raises(ValueError, match="k"):
        SF.sample_distinct(np.random.default_rng(0), 3, 2, 4)


def test_draw_within_groups():
    sizes = np.array([1, 2, 3, 5, 100] * 400)
    out = SF.draw_within_groups(np.random.default_rng(0), sizes, 3)
    assert out.shape == (2000, 3)
    assert bool((out >= 0).all()) and bool((out < sizes[:, None]).all())
    big = out[sizes >= 3]
    assert all(len(set(r)) == 3 for r in big.tolist())  # without replacement when possible
    five = out[sizes == 5]
    counts = np.bincount(five.reshape(-1), minlength=5)
    assert counts.min() > 0.7 * counts.mean()
    firsts = np.bincount(five[:, 0], minlength=5)
    assert firsts.min() > 0.6 * firsts.mean()  # every position can come first


@pytest.mark.parametrize("labels", [[[0, 1], [1, 0]], [0, np.array([1, 2])], [torch.tensor([0])]])
def test_nested_label_lists_are_rejected_as_not_one_label_per_item(labels):
    # they used to fail with "TypeError: unhashable type: 'list'"
    with pytest.raises(ValueError, match="labels must be 1-D, one label per item"):
        SF.group_by_label(labels)


@pytest.mark.parametrize(
    "labels", [[0.0, float("nan"), 1.0], np.array([0.0, np.nan]), torch.tensor([1.0, torch.nan])]
)
def test_nan_labels_are_rejected(labels):
    # NaN is not equal to itself: each NaN item would be its own class (or all one class)
    with pytest.raises(ValueError, match="labels must not contain NaN"):
        SF.group_by_label(labels)


def test_float_and_tuple_labels_still_group():
    keys, members, _ = SF.group_by_label([(1, 2), (0, 1), (1, 2)])
    assert keys == [(1, 2), (0, 1)] and members.tolist() == [0, 2, 1]
    keys, _, _ = SF.group_by_label([1.5, 0.5, 1.5])
    assert keys == [1.5, 0.5]
