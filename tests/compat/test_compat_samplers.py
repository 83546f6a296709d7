"""pml.samplers vs the reference: same lengths, same errors, same index streams per seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

ref = pytest.importorskip("pytorch_metric_learning.samplers")
import pml.samplers as ours  # noqa: E402

pytestmark = [pytest.mark.compat, pytest.mark.filterwarnings("ignore:.*fewer than m")]


def _labels(kind: str) -> object:
    rs = np.random.RandomState(5)
    base = rs.randint(0, 7, 60)
    base[:7] = np.arange(7)  # every class present; class sizes vary (some smaller than m)
    base[base == 6] = 5
    base[10] = 6
    if kind == "list":
        return base.tolist()
    if kind == "tensor":
        return torch.as_tensor(base)
    if kind == "strings":
        return [f"c{x}" for x in base]
    return base


def _stream(sampler: object, seed: int, passes: int = 2) -> list[list]:
    np.random.seed(seed)
    return [[x.item() if hasattr(x, "item") else x for x in sampler] for _ in range(passes)]


@pytest.mark.parametrize("kind", ["array", "list", "tensor", "strings"])
@pytest.mark.parametrize(
    ("m", "batch_size", "length"),
    [(4, None, 1000), (2, None, 100), (3, 12, 100), (4, 8, 50), (1, 5, 23), (5, 10, 1000)],
)
def test_m_per_class_same_stream(kind: str, m: int, batch_size: int | None, length: int) -> None:
    labels = _labels(kind)
    a = ours.MPerClassSampler(labels, m, batch_size=batch_size, length_before_new_iter=length)
    b = ref.MPerClassSampler(labels, m, batch_size=batch_size, length_before_new_iter=length)
    assert len(a) == len(b)
    sa, sb = _stream(a, 3), _stream(b, 3)
    assert sa == sb
    assert all(isinstance(x, np.int64) for x in a)
    assert a.m_per_class == b.m_per_class and a.list_size == b.list_size
    assert a.length_of_single_pass == b.length_of_single_pass
    assert list(a.labels_to_indices) == list(b.labels_to_indices)


def test_m_per_class_over_long_pass_is_cut_to_len() -> None:
    # fix: with batch_size None and length < m * classes the reference yields a whole pass
    labels = [0, 0, 1, 1, 2, 2, 3, 3]
    a = ours.MPerClassSampler(labels, 4, length_before_new_iter=10)
    b = ref.MPerClassSampler(labels, 4, length_before_new_iter=10)
    assert len(a) == len(b) == 10
    sa, sb = _stream(a, 0, passes=1)[0], _stream(b, 0, passes=1)[0]
    assert len(sb) == 16 and len(sa) == 10
    assert sa == sb[:10]


@pytest.mark.parametrize(
    ("m", "batch_size", "length"),
    [(4, 10, 100), (4, 8, 4), (5, 60, 100), (0, None, 10)],
)
def test_m_per_class_same_errors(m: int, batch_size: int | None, length: int) -> None:
    labels = list(range(7)) * 3
    with pytest.raises((AssertionError, ZeroDivisionError)):
        ref.MPerClassSampler(labels, m, batch_size=batch_size, length_before_new_iter=length)
    with pytest.raises(AssertionError):  # ours: InvalidArgumentError (also a ValueError)
        ours.MPerClassSampler(labels, m, batch_size=batch_size, length_before_new_iter=length)


@pytest.mark.parametrize("num_triplets", [1, 7, 50])
@pytest.mark.parametrize("kind", ["array", "strings"])
def test_fixed_set_of_triplets_same_set_and_order(num_triplets: int, kind: str) -> None:
    labels = _labels(kind)
    np.random.seed(11)
    a = ours.FixedSetOfTriplets(labels, num_triplets)
    np.random.seed(11)
    b = ref.FixedSetOfTriplets(labels, num_triplets)
    assert np.array_equal(a.fixed_set_of_triplets, b.fixed_set_of_triplets)
    assert len(a) == len(b) == 3 * num_triplets
    sa, sb = _stream(a, 2), _stream(b, 2)
    assert sa == sb and all(type(x) is int for x in sa[0])


def test_fixed_set_of_triplets_errors() -> None:
    for bad in (0, -3):
        with pytest.raises(AssertionError):
            ref.FixedSetOfTriplets([0, 1], bad)
        with pytest.raises(AssertionError):
            ours.FixedSetOfTriplets([0, 1], bad)
    with pytest.raises(ValueError):
        ref.FixedSetOfTriplets([0, 0, 0], 3)
    with pytest.raises(ValueError, match="labels"):
        ours.FixedSetOfTriplets([0, 0, 0], 3)


def _hier_labels() -> np.ndarray:
    rs = np.random.RandomState(1)
    classes = rs.randint(0, 12, 150)
    return np.stack([classes, classes % 4], axis=1)  # 12 classes in 4 super classes


@pytest.mark.parametrize(
    ("batch_size", "spc", "bpst", "scpb"),
    [(8, 2, 4, 2), (12, 3, 2, 2), (12, 2, 3, 3), (16, "all", 2, 2), (6, 1, 1, 2)],
)
def test_hierarchical_same_batches(batch_size: int, spc: object, bpst: int, scpb: int) -> None:
    labels = _hier_labels()
    np.random.seed(4)
    a = ours.HierarchicalSampler(labels, batch_size, spc, bpst, scpb)
    np.random.seed(4)
    b = ref.HierarchicalSampler(labels, batch_size, spc, bpst, scpb)
    assert len(a) == len(b)
    assert [[int(i) for i in x] for x in a.batches] == [[int(i) for i in x] for x in b.batches]
    assert a.super_pairs == b.super_pairs
    np.random.seed(9)
    first_a = [[int(i) for i in x] for x in a]
    second_a = [[int(i) for i in x] for x in a]
    np.random.seed(9)
    first_b = [[int(i) for i in x] for x in b]
    second_b = [[int(i) for i in x] for x in b]
    assert (first_a, second_a) == (first_b, second_b)
    assert all(isinstance(i, np.int64) for i in next(iter(a)))


def test_hierarchical_inner_outer_columns_and_tensor_labels() -> None:
    labels = _hier_labels()[:, ::-1].copy()
    np.random.seed(0)
    a = ours.HierarchicalSampler(torch.as_tensor(labels), 8, 2, inner_label=1, outer_label=0)
    np.random.seed(0)
    b = ref.HierarchicalSampler(torch.as_tensor(labels), 8, 2, inner_label=1, outer_label=0)
    assert [[int(i) for i in x] for x in a.batches] == [[int(i) for i in x] for x in b.batches]


@pytest.mark.parametrize(("batch_size", "spc", "scpb"), [(9, 3, 2), (8, 3, 2), (8, 0, 2)])
def test_hierarchical_same_errors(batch_size: int, spc: int, scpb: int) -> None:
    labels = _hier_labels()
    with pytest.raises(AssertionError):
        ref.HierarchicalSampler(labels, batch_size, spc, super_classes_per_batch=scpb)
    with pytest.raises(AssertionError):
        ours.HierarchicalSampler(labels, batch_size, spc, super_classes_per_batch=scpb)


class _Data(torch.utils.data.Dataset):
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(40, 5, generator=g)
        self.y = torch.arange(40) % 5

    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


@pytest.mark.parametrize("subset_size", [None, 25])
def test_tuples_to_weights_same_draws(subset_size: int | None) -> None:
    from pytorch_metric_learning.miners import MultiSimilarityMiner as RefMiner

    from pml.miners import MultiSimilarityMiner

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.BatchNorm1d(4))
    kw = {"dataloader_num_workers": 0, "data_device": "cpu", "batch_size": 8}
    a = ours.TuplesToWeightsSampler(model, MultiSimilarityMiner(), _Data(), subset_size, **kw)
    b = ref.TuplesToWeightsSampler(model, RefMiner(), _Data(), subset_size, **kw)
    assert len(a) == len(b)
    np.random.seed(1)
    torch.manual_seed(1)
    model.train()
    sa = list(a)
    assert model.training  # fix: the reference leaves the model in eval mode
    np.random.seed(1)
    torch.manual_seed(1)
    sb = list(b)
    assert not model.training
    assert sa == sb and all(type(x) is int for x in sa)
    torch.testing.assert_close(a.weights, b.weights)


def test_integral_float_counts_are_accepted_like_the_reference() -> None:
    labels = _labels("array")
    a = ours.MPerClassSampler(labels, 2.0, batch_size=np.float64(8.0), length_before_new_iter=40)
    b = ref.MPerClassSampler(labels, 2.0, batch_size=np.float64(8.0), length_before_new_iter=40)
    assert len(a) == len(b) and _stream(a, 3) == _stream(b, 3)
    np.random.seed(2)
    a = ours.FixedSetOfTriplets(labels, 4.0)
    np.random.seed(2)
    b = ref.FixedSetOfTriplets(labels, 4.0)
    assert np.array_equal(a.fixed_set_of_triplets, b.fixed_set_of_triplets)
    np.random.seed(4)
    a = ours.HierarchicalSampler(_hier_labels(), 8.0, 2)
    np.random.seed(4)
    b = ref.HierarchicalSampler(_hier_labels(), 8.0, 2)
    assert [[int(i) for i in x] for x in a.batches] == [[int(i) for i in x] for x in b.batches]


@pytest.mark.parametrize("m", [2.7, True])
def test_non_integral_or_bool_counts_are_rejected(m: object) -> None:
    labels = _labels("array")
    assert ref.MPerClassSampler(labels, m).m_per_class == int(m)  # silently truncated
    with pytest.raises(TypeError, match="m must be an int"):
        ours.MPerClassSampler(labels, m)
    assert len(ref.FixedSetOfTriplets(labels, m)) == 3 * int(m)
    with pytest.raises(TypeError, match="num_triplets"):
        ours.FixedSetOfTriplets(labels, m)


def test_negative_length_before_new_iter_is_rejected() -> None:
    sampler = ref.MPerClassSampler(_labels("array"), 2, length_before_new_iter=-5)
    with pytest.raises(ValueError):  # only when len() is called
        len(sampler)
    with pytest.raises(ValueError, match="length_before_new_iter"):
        ours.MPerClassSampler(_labels("array"), 2, length_before_new_iter=-5)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"super_classes_per_batch": 5, "batch_size": 10, "samples_per_class": 1}, "super"),
        ({"batches_per_super_tuple": 0}, "batches_per_super_tuple"),
    ],
)
def test_hierarchical_configurations_without_batches_are_rejected(kwargs: dict, name: str) -> None:
    kwargs = {"batch_size": 8, "samples_per_class": 2, **kwargs}
    sampler = ref.HierarchicalSampler(_hier_labels(), **kwargs)  # 4 super classes
    assert len(sampler) == 0 and list(sampler) == []
    with pytest.raises(ValueError, match=name):
        ours.HierarchicalSampler(_hier_labels(), **kwargs)


def test_fixed_set_of_singleton_classes_is_rejected() -> None:
    t = ref.FixedSetOfTriplets([0, 1, 2], 5).fixed_set_of_triplets
    assert (t[:, 0] == t[:, 1]).all()  # degenerate triplets
    with pytest.raises(ValueError, match="labels"):
        ours.FixedSetOfTriplets([0, 1, 2], 5)
