"""MPerClassSampler.state_dict/load_state_dict: order, epoch, position; exact mid-pass resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pml.samplers import MPerClassSampler, set_numpy_random

pytestmark = pytest.mark.filterwarnings("ignore:.*fewer than m")


def labels_of(num_classes=10, n=120, seed=0):
    labels = np.random.RandomState(seed).randint(0, num_classes, n)
    labels[:num_classes] = np.arange(num_classes)
    return labels


def ints(values) -> list[int]:
    return [int(v) for v in values]


def to_tensors(state):
    """The state as a checkpoint gives it back (arrays as tensors), recursively."""
    if isinstance(state, dict):
        return {k: to_tensors(v) for k, v in state.items()}
    if isinstance(state, list):
        return [to_tensors(v) for v in state]
    if isinstance(state, np.ndarray):
        return torch.from_numpy(state)
    return state


CONFIGS = [
    {"m": 4, "batch_size": 16, "length_before_new_iter": 160},
    {"m": 3, "batch_size": None, "length_before_new_iter": 100},
    {"m": 4, "batch_size": 16, "coverage": True},
]


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("cut", [0, 1, 37, 89])
def test_resume_in_the_middle_of_a_pass_without_seed(config, cut) -> None:
    labels = labels_of()
    np.random.seed(3)
    unbroken = MPerClassSampler(labels, **config)
    passes = [ints(unbroken) for _ in range(3)]

    np.random.seed(3)
    broken = MPerClassSampler(labels, **config)
    first = ints(broken)
    it = iter(broken)
    head = [int(next(it)) for _ in range(cut)]
    state, rng = to_tensors(broken.state_dict()), np.random.get_state()
    assert state["position"] == cut

    np.random.seed(1234)  # whatever happened meanwhile
    fresh = MPerClassSampler(labels, **config)
    fresh.load_state_dict(state)
    np.random.set_state(rng)  # the caller restores the global RNG, like a checkpoint does
    rest = ints(fresh)
    assert first == passes[0]
    assert head + rest == passes[1]
    assert ints(fresh) == passes[2]


def test_resume_leaves_the_global_rng_where_the_caller_put_it() -> None:
    labels = labels_of()
    sampler = MPerClassSampler(labels, 4, 16, length_before_new_iter=160)
    np.random.seed(0)
    it = iter(sampler)
    next(it)
    state = sampler.state_dict()
    fresh = MPerClassSampler(labels, 4, 16, length_before_new_iter=160)
    fresh.load_state_dict(state)
    np.random.seed(77)
    want = np.random.get_state()[1].copy()
    ints(fresh)
    np.testing.assert_array_equal(np.random.get_state()[1], want)


def test_resume_with_a_random_state_handle() -> None:
    labels = labels_of()
    try:
        set_numpy_random(np.random.RandomState(5))
        unbroken = MPerClassSampler(labels, 4, 16, length_before_new_iter=64)
        want = ints(unbroken)
        set_numpy_random(np.random.RandomState(5))
        broken = MPerClassSampler(labels, 4, 16, length_before_new_iter=64)
        it = iter(broken)
        head = [int(next(it)) for _ in range(20)]
        fresh = MPerClassSampler(labels, 4, 16, length_before_new_iter=64)
        fresh.load_state_dict(broken.state_dict())
        assert head + ints(fresh) == want
    finally:
        set_numpy_random(np.random)


@pytest.mark.parametrize("num_replicas", [None, 2])
def test_resume_seeded_and_sharded(num_replicas) -> None:
    labels = labels_of()
    shard = {"num_replicas": num_replicas, "rank": 1} if num_replicas else {}
    unbroken = MPerClassSampler(labels, 4, 16, length_before_new_iter=160, seed=9, **shard)
    unbroken.set_epoch(4)
    want = ints(unbroken)

    broken = MPerClassSampler(labels, 4, 16, length_before_new_iter=160, seed=9, **shard)
    broken.set_epoch(4)
    it = iter(broken)
    head = [int(next(it)) for _ in range(21)]
    state = broken.state_dict()
    assert state["pass_start"] is None and state["epoch"] == 4 and state["position"] == 21

    fresh = MPerClassSampler(labels, 4, 16, length_before_new_iter=160, seed=9, **shard)
    fresh.load_state_dict(state)
    fresh.set_epoch(4)  # the usual loop calls set_epoch(epoch) again: the position stays
    assert head + ints(fresh) == want


def test_another_epoch_drops_the_saved_position() -> None:
    labels = labels_of()
    sampler = MPerClassSampler(labels, 4, 16, length_before_new_iter=160, seed=9)
    it = iter(sampler)
    next(it)
    state = sampler.state_dict()
    fresh = MPerClassSampler(labels, 4, 16, length_before_new_iter=160, seed=9)
    fresh.load_state_dict(state)
    assert fresh.state_dict()["position"] == 1
    fresh.set_epoch(1)
    assert fresh.state_dict()["position"] == 0
    epoch1 = MPerClassSampler(labels, 4, 16, length_before_new_iter=160, seed=9)
    epoch1.set_epoch(1)
    assert ints(fresh) == ints(epoch1)


def test_state_between_passes_has_no_position() -> None:
    labels = labels_of()
    np.random.seed(0)
    sampler = MPerClassSampler(labels, 4, 16, length_before_new_iter=64)
    before = sampler.state_dict()
    assert before["position"] == 0 and before["pass_start"] is None
    assert before["order"].tolist() == list(range(10)) and before["epoch"] == 0
    ints(sampler)  # a whole pass: the order was reshuffled in place
    after = sampler.state_dict()
    assert after["position"] == 0 and after["order"].tolist() == sampler.labels  # keys 0..9
    rng = np.random.get_state()
    want = ints(sampler)
    fresh = MPerClassSampler(labels, 4, 16, length_before_new_iter=64)
    fresh.load_state_dict(after)
    np.random.set_state(rng)
    assert ints(fresh) == want
    assert list(after) == [
        "num_classes", "m", "batch_size", "length", "seed", "coverage",
        "order", "epoch", "position", "pass_start",
    ]  # fmt: skip
    assert (after["m"], after["batch_size"], after["length"]) == (4, 16, 64)


def test_load_state_dict_rejects_bad_states() -> None:
    labels = labels_of()
    sampler = MPerClassSampler(labels, 4, 16, length_before_new_iter=64)
    it = iter(sampler)
    next(it)
    good = sampler.state_dict()
    with pytest.raises(TypeError, match="state must be a dict"):
        sampler.load_state_dict([1, 2])
    with pytest.raises(ValueError, match=r"missing \['epoch'\]"):
        sampler.load_state_dict({k: v for k, v in good.items() if k != "epoch"})
    with pytest.raises(ValueError, match=r"unknown \['extra'\]"):
        sampler.load_state_dict({**good, "extra": 1})
    other = MPerClassSampler(labels_of(num_classes=9), 4, 16, length_before_new_iter=64)
    with pytest.raises(ValueError, match="num_classes"):
        other.load_state_dict(good)
    seeded = MPerClassSampler(labels, 4, 16, length_before_new_iter=64, seed=1)
    with pytest.raises(ValueError, match="seed"):
        seeded.load_state_dict(good)
    covering = MPerClassSampler(labels, 4, 16, coverage=True)
    with pytest.raises(ValueError, match="its coverage is False, this sampler's is True"):
        covering.load_state_dict({**covering.state_dict(), "coverage": False})
    with pytest.raises(ValueError, match="its batch_size is 16, this sampler's is 8"):
        MPerClassSampler(labels, 4, 8, length_before_new_iter=64).load_state_dict(good)
    with pytest.raises(ValueError, match="its length is 64, this sampler's is 128"):
        MPerClassSampler(labels, 4, 16, length_before_new_iter=128).load_state_dict(good)
    with pytest.raises(ValueError, match="its m is 4"):
        MPerClassSampler(labels, 2, 16, length_before_new_iter=64).load_state_dict(good)
    with pytest.raises(ValueError, match=r"state\['order'\] must be a permutation"):
        sampler.load_state_dict({**good, "order": np.zeros(10, dtype=np.int64)})
    with pytest.raises(ValueError, match=r"state\['order'\] must be an integer array"):
        sampler.load_state_dict({**good, "order": np.arange(9)})
    with pytest.raises(ValueError, match=r"state\['position'\]"):
        sampler.load_state_dict({**good, "position": 65})
    with pytest.raises(TypeError, match=r"state\['epoch'\]"):
        sampler.load_state_dict({**good, "epoch": 1.5})
    with pytest.raises(ValueError, match=r"state\['pass_start'\]"):
        sampler.load_state_dict({**good, "pass_start": None})
    sampler.load_state_dict({**good, "position": 0, "pass_start": None})  # fine
