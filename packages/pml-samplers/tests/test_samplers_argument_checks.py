"""Constructor arguments of the samplers: counts, degenerate configurations, shards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pml.core.validation import InvalidArgumentError
from pml.samplers import FixedSetOfTriplets, HierarchicalSampler, MPerClassSampler

LABELS = [0, 0, 1, 1, 2, 2, 3, 3]
# 4 classes in 2 super classes
HIER = np.array([[0, 0], [0, 0], [1, 0], [1, 0], [2, 1], [2, 1], [3, 1], [3, 1]])


def _stream(sampler: object) -> list:
    np.random.seed(0)
    return [x.tolist() if hasattr(x, "tolist") else x for x in sampler]


# ------------------------------------------------------------------------ HierarchicalSampler


def test_hierarchical_more_super_classes_per_batch_than_super_classes_is_rejected() -> None:
    with pytest.raises(ValueError, match="super_classes_per_batch") as info:
        HierarchicalSampler(np.concatenate([HIER, HIER]), 6, 1, super_classes_per_batch=3)
    assert "2 super classes" in str(info.value)


def test_hierarchical_with_one_super_class_is_rejected() -> None:
    one_super = np.stack([np.arange(10), np.zeros(10, dtype=int)], axis=1)
    with pytest.raises(ValueError, match="super_classes_per_batch"):
        HierarchicalSampler(one_super, 8, 2)
    sampler = HierarchicalSampler(one_super, 8, 2, super_classes_per_batch=1)
    assert len(sampler) == 4 and [len(b) for b in sampler] == [8, 8, 8, 8]


def test_hierarchical_zero_batches_per_super_tuple_is_rejected() -> None:
    with pytest.raises(ValueError, match="batches_per_super_tuple"):
        HierarchicalSampler(HIER, 4, 2, batches_per_super_tuple=0)


def test_hierarchical_bool_samples_per_class_is_rejected() -> None:
    with pytest.raises(TypeError, match="samples_per_class"):
        HierarchicalSampler(HIER, 4, True)
    with pytest.raises(TypeError, match="samples_per_class"):
        HierarchicalSampler(HIER, 4, 2.0)  # the reference fails inside numpy on 2.0 too


def test_hierarchical_integral_float_batch_size_is_accepted_like_the_reference() -> None:
    np.random.seed(3)
    a = HierarchicalSampler(HIER, 4.0, 2)
    np.random.seed(3)
    b = HierarchicalSampler(HIER, 4, 2)
    assert a.batch_size == 4 and type(a.batch_size) is int
    assert _stream(a) == _stream(b)


def test_hierarchical_sharded_with_fewer_batches_than_ranks_is_rejected() -> None:
    # 1 combination of super classes x 2 batches < 3 ranks: every rank would get nothing
    with pytest.raises(ValueError, match="num_replicas"):
        HierarchicalSampler(HIER, 4, 2, batches_per_super_tuple=2, num_replicas=3, rank=0)
    assert len(HierarchicalSampler(HIER, 4, 2, 3, num_replicas=3, rank=2)) == 1


@pytest.mark.parametrize("name", ["inner_label", "outer_label"])
def test_hierarchical_float_label_column_is_rejected(name: str) -> None:
    with pytest.raises(TypeError, match=name):
        HierarchicalSampler(HIER, 4, 2, **{name: 1.0})


# --------------------------------------------------------------------------- MPerClassSampler


@pytest.mark.parametrize("length", [-5, 0])
def test_m_per_class_non_positive_length_before_new_iter_is_rejected(length: int) -> None:
    with pytest.raises(ValueError, match="length_before_new_iter"):
        MPerClassSampler(LABELS, 2, length_before_new_iter=length)


def test_m_per_class_bool_m_is_rejected() -> None:
    with pytest.raises(TypeError, match="m must be an int"):
        MPerClassSampler(LABELS, True)


def test_m_per_class_bool_batch_size_is_rejected() -> None:
    with pytest.raises(TypeError, match="batch_size"):
        MPerClassSampler(LABELS, 1, batch_size=True)


@pytest.mark.parametrize(
    "m", [2.0, np.float64(2.0), np.float32(2.0), np.int64(2)], ids=["float", "f64", "f32", "i64"]
)
def test_m_per_class_integral_float_m_is_accepted_like_the_reference(m: object) -> None:
    a = MPerClassSampler(LABELS, m, batch_size=4.0, length_before_new_iter=16)
    b = MPerClassSampler(LABELS, 2, batch_size=4, length_before_new_iter=16)
    assert type(a.m_per_class) is int and type(a.batch_size) is int
    assert len(a) == len(b) == 16
    assert _stream(a) == _stream(b)


def test_m_per_class_sharded_stream_of_one_batch_is_rejected() -> None:
    # one batch of 8 for 2 ranks: every rank would get 0 items
    with pytest.raises(ValueError, match="length_before_new_iter"):
        MPerClassSampler(LABELS, 2, batch_size=8, length_before_new_iter=8, num_replicas=2, rank=1)
    # without batch_size a block is a run of m items: 3 runs for 4 ranks
    with pytest.raises(ValueError, match="num_replicas"):
        MPerClassSampler(LABELS, 2, length_before_new_iter=6, num_replicas=4, rank=0)
    ok = MPerClassSampler(
        LABELS, 2, batch_size=8, length_before_new_iter=16, num_replicas=2, rank=1
    )
    assert len(ok) == len(list(ok)) == 8


# -------------------------------------------------------------------------- FixedSetOfTriplets


def test_fixed_set_with_only_singleton_classes_is_rejected() -> None:
    with pytest.raises(ValueError, match="labels"):
        FixedSetOfTriplets([0, 1, 2], 3)
    with pytest.raises(ValueError, match="labels"):
        FixedSetOfTriplets([0, 1, 2], 3, seed=0)
    # one class with two items is enough (singleton classes can still be negatives)
    t = FixedSetOfTriplets([0, 1, 2, 2], 20, seed=0).fixed_set_of_triplets
    assert t.shape == (20, 3)


def test_fixed_set_bool_num_triplets_is_rejected() -> None:
    with pytest.raises(TypeError, match="num_triplets"):
        FixedSetOfTriplets(LABELS, True)


def test_fixed_set_integral_float_num_triplets_is_accepted_like_the_reference() -> None:
    np.random.seed(1)
    a = FixedSetOfTriplets(LABELS, 3.0)
    np.random.seed(1)
    b = FixedSetOfTriplets(LABELS, 3)
    assert a.num_triplets == 3 and type(a.num_triplets) is int
    assert np.array_equal(a.fixed_set_of_triplets, b.fixed_set_of_triplets)


def test_fixed_set_sharded_with_fewer_triplets_than_ranks_is_rejected() -> None:
    with pytest.raises(ValueError, match="num_triplets"):
        FixedSetOfTriplets(LABELS, 2, num_replicas=3, rank=0)


# ------------------------------------------------------------------------------ every sampler

NON_INTEGRAL = [
    ("m", lambda v: MPerClassSampler(LABELS, v)),
    ("batch_size", lambda v: MPerClassSampler(LABELS, 2, batch_size=v)),
    ("length_before_new_iter", lambda v: MPerClassSampler(LABELS, 2, length_before_new_iter=v)),
    ("batch_size", lambda v: HierarchicalSampler(HIER, v, 1)),
    ("batches_per_super_tuple", lambda v: HierarchicalSampler(HIER, 4, 2, v)),
    ("super_classes_per_batch", lambda v: HierarchicalSampler(HIER, 4, 1, 4, v)),
    ("samples_per_class", lambda v: HierarchicalSampler(HIER, 4, v)),
    ("num_triplets", lambda v: FixedSetOfTriplets(LABELS, v)),
    ("num_replicas", lambda v: MPerClassSampler(LABELS, 2, num_replicas=v, rank=0)),
    ("rank", lambda v: FixedSetOfTriplets(LABELS, 4, num_replicas=2, rank=v)),
]


@pytest.mark.parametrize(("name", "build"), NON_INTEGRAL, ids=[n for n, _ in NON_INTEGRAL])
@pytest.mark.parametrize("value", [2.7, 1.5, float("nan"), "2"], ids=str)
def test_non_integral_counts_are_rejected_not_truncated(name, build, value) -> None:
    # a string other than "all" is a wrong option value for samples_per_class
    strings_are_values = name == "samples_per_class" and isinstance(value, str)
    with pytest.raises(ValueError if strings_are_values else TypeError, match=name):
        build(value)


@pytest.mark.parametrize(
    "build",
    [
        lambda: MPerClassSampler(LABELS, 0),
        lambda: MPerClassSampler(LABELS, 2, batch_size=0),
        lambda: FixedSetOfTriplets(LABELS, 0),
        lambda: HierarchicalSampler(HIER, 4, 0),
        lambda: HierarchicalSampler(HIER, 0, 2),
    ],
)
def test_non_positive_counts_raise_an_assertion_compatible_error(build) -> None:
    with pytest.raises(InvalidArgumentError):
        build()


def test_set_epoch_rejects_non_integral_and_negative_epochs() -> None:
    sampler = MPerClassSampler(LABELS, 2, seed=0)
    with pytest.raises(TypeError, match="epoch"):
        sampler.set_epoch(1.5)
    with pytest.raises(ValueError, match="epoch"):
        sampler.set_epoch(-1)
    sampler.set_epoch(torch.tensor(3))
    assert sampler._shard.epoch == 3
