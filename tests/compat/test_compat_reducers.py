"""pml.reducers / pml.regularizers vs the reference on random loss dicts."""

from __future__ import annotations

import pytest
import torch

ref_red = pytest.importorskip("pytorch_metric_learning.reducers")
ref_reg = pytest.importorskip("pytorch_metric_learning.regularizers")
import pml.reducers as ours  # noqa: E402
import pml.regularizers as ours_reg  # noqa: E402

pytestmark = pytest.mark.compat

N = 10


def loss_dict(kind: str, seed: int, with_divisor: bool = False):
    g = torch.Generator().manual_seed(seed)
    losses = torch.relu(torch.randn(N, generator=g, dtype=torch.float64))
    if kind == "element":
        idx = torch.arange(N)
    elif kind == "triplet":
        idx = tuple(torch.randint(0, N, (N,), generator=g) for _ in range(3))
    else:  # distinct (anchor, other) pairs so PerAnchorReducer semantics coincide
        flat = torch.randperm(N * N, generator=g)[:N]
        idx = (flat // N, flat % N)
    d = {"losses": losses, "indices": idx, "reduction_type": kind}
    if with_divisor:
        d["divisor"] = 7
    return {"loss": d}


CONFIGS = [
    ("MeanReducer", {}, False),
    ("SumReducer", {}, False),
    ("AvgNonZeroReducer", {}, False),
    ("ThresholdReducer", {"low": 0.3}, False),
    ("ThresholdReducer", {"high": 0.8}, False),
    ("ThresholdReducer", {"low": 0.1, "high": 1.0}, False),
    ("DivisorReducer", {}, True),
]


@pytest.mark.parametrize(("name", "kwargs", "div"), CONFIGS)
@pytest.mark.parametrize("kind", ["element", "pos_pair", "neg_pair", "triplet"])
@pytest.mark.parametrize("seed", range(3))
def test_reducers_match(name: str, kwargs: dict, div: bool, kind: str, seed: int) -> None:
    emb = torch.randn(N, 3, dtype=torch.float64)
    labels = torch.randint(0, 3, (N,))
    a = getattr(ours, name)(**kwargs)(loss_dict(kind, seed, div), emb, labels)
    b = getattr(ref_red, name)(**kwargs)(loss_dict(kind, seed, div), emb, labels)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kind", ["element", "pos_pair", "neg_pair", "triplet"])
def test_class_weighted_matches(kind: str) -> None:
    emb, labels = torch.randn(N, 3, dtype=torch.float64), torch.randint(0, 3, (N,))
    w = torch.tensor([0.5, 2.0, 1.5], dtype=torch.float64)
    a = ours.ClassWeightedReducer(w)(loss_dict(kind, 1), emb, labels)
    b = ref_red.ClassWeightedReducer(w.clone())(loss_dict(kind, 1), emb, labels)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kind", ["element", "pos_pair", "neg_pair"])
@pytest.mark.parametrize("inner", ["MeanReducer", "AvgNonZeroReducer"])
def test_per_anchor_matches_without_duplicates(kind: str, inner: str) -> None:
    emb = torch.randn(N, 3, dtype=torch.float64)
    a = ours.PerAnchorReducer(getattr(ours, inner)())(loss_dict(kind, 2), emb, None)
    b = ref_red.PerAnchorReducer(getattr(ref_red, inner)())(loss_dict(kind, 2), emb, None)
    torch.testing.assert_close(a, b)


def test_per_anchor_duplicates_differ_on_purpose() -> None:
    # docs/compatibility.md: duplicates all count in pml; last write wins in the reference
    def d():
        return {
            "loss": {
                "losses": torch.tensor([1.0, 2.0, 3.0, 5.0], dtype=torch.float64),
                "indices": (torch.tensor([0, 0, 1, 0]), torch.tensor([1, 2, 3, 1])),
                "reduction_type": "pos_pair",
            }
        }

    emb = torch.zeros(4, 2, dtype=torch.float64)
    assert ref_red.PerAnchorReducer()(d(), emb, None).item() == pytest.approx(1.625)
    assert ours.PerAnchorReducer()(d(), emb, None).item() == pytest.approx(
        ((1 + 2 + 5) / 3 + 3) / 4
    )


def test_multiple_reducers_match() -> None:
    emb = torch.randn(N, 3, dtype=torch.float64)

    def dd():
        return {
            "a": loss_dict("element", 1)["loss"],
            "b": loss_dict("pos_pair", 2)["loss"],
            "c": {"losses": 0, "indices": None, "reduction_type": "already_reduced"},
        }

    a = ours.MultipleReducers({"a": ours.SumReducer()})(dd(), emb, None)
    b = ref_red.MultipleReducers({"a": ref_red.SumReducer()})(dd(), emb, None)
    torch.testing.assert_close(a, b)


def test_threshold_stats_known_issue() -> None:
    def d():
        return {
            "loss": {
                "losses": torch.tensor([0.1, 1, 3, 1.5]),
                "indices": torch.arange(4),
                "reduction_type": "element",
            }
        }

    a, b = (
        ours.ThresholdReducer(0.5, 2, collect_stats=True),
        ref_red.ThresholdReducer(0.5, 2, collect_stats=True),
    )
    a(d(), torch.zeros(4, 1), None)
    b(d(), torch.zeros(4, 1), None)
    assert (a.num_past_filter, a.num_above_low) == (b.num_past_filter, b.num_above_low)
    assert a.num_above_high == b.num_above_high == 2
    assert b.num_below_high == 0 and a.num_below_high == 2  # fixed in pml


REG_CONFIGS = [
    ("LpRegularizer", {}),
    ("LpRegularizer", {"p": 1, "power": 2}),
    ("ZeroMeanRegularizer", {}),
    ("CenterInvariantRegularizer", {}),
    ("RegularFaceRegularizer", {}),
    ("SparseCentersRegularizer", {"num_classes": 3, "centers_per_class": 4}),
]


@pytest.mark.parametrize(("name", "kwargs"), REG_CONFIGS)
def test_regularizers_match(name: str, kwargs: dict) -> None:
    x = torch.randn(12, 5, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    a = getattr(ours_reg, name)(**kwargs)(xa)
    b = getattr(ref_reg, name)(**kwargs)(xb)
    torch.testing.assert_close(a, b)
    a.backward()
    b.backward()
    torch.testing.assert_close(xa.grad, xb.grad)


EXACT_CONFIGS = [
    ("MeanReducer", {}),
    ("SumReducer", {}),
    ("AvgNonZeroReducer", {}),
    ("ThresholdReducer", {"low": 0.0}),
    ("ThresholdReducer", {"low": -1.0}),
    ("ThresholdReducer", {"high": 1.5}),
    ("ThresholdReducer", {"low": -2.0, "high": 2.0}),
    ("ThresholdReducer", {"low": 0.5, "high": 4.0}),
]


def random_element_dict(n: int, seed: int, dtype: torch.dtype) -> dict:
    g = torch.Generator().manual_seed(seed)
    losses = torch.randn(n, generator=g, dtype=torch.float64).mul_(3).to(dtype)
    return {"loss": {"losses": losses, "indices": torch.arange(n), "reduction_type": "element"}}


@pytest.mark.parametrize(("name", "kwargs"), EXACT_CONFIGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [1, 2, 7, 33, 100, 257, 1000, 4099, 10000])
def test_threshold_reducers_last_bits_differ_from_the_reference(name, kwargs, dtype, n) -> None:
    # the reference averages the kept losses with torch.mean: pml is bitwise the same
    emb = torch.zeros(n, 2, dtype=dtype)
    for seed in range(4):
        a = getattr(ours, name)(**kwargs)(random_element_dict(n, seed, dtype), emb, None)
        b = getattr(ref_red, name)(**kwargs)(random_element_dict(n, seed, dtype), emb, None)
        assert a.dtype == b.dtype and torch.equal(a, b), (seed, a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [1, 7, 100, 1000, 10000])
def test_multiple_reducers_last_bits_differ_from_the_reference(dtype, n) -> None:
    emb = torch.zeros(n, 2, dtype=dtype)
    for seed in range(4):

        def dd(seed=seed):
            return {
                "a": random_element_dict(n, seed, dtype)["loss"],
                "b": random_element_dict(n, seed + 100, dtype)["loss"],
                "c": random_element_dict(n, seed + 200, dtype)["loss"],
            }

        a = ours.MultipleReducers(
            {"a": ours.ThresholdReducer(low=0.2), "b": ours.SumReducer()},
            default_reducer=ours.AvgNonZeroReducer(),
        )(dd(), emb, None)
        b = ref_red.MultipleReducers(
            {"a": ref_red.ThresholdReducer(low=0.2), "b": ref_red.SumReducer()},
            default_reducer=ref_red.AvgNonZeroReducer(),
        )(dd(), emb, None)
        assert torch.equal(a, b), (seed, a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_class_weighted_and_divisor_are_bitwise_the_reference(dtype) -> None:
    for n in [1, 7, 100, 1000, 10000]:
        emb = torch.zeros(n, 2, dtype=dtype)
        labels = torch.arange(n) % 3
        w = torch.tensor([0.5, 2.0, 1.5], dtype=dtype)
        a = ours.ClassWeightedReducer(w)(random_element_dict(n, 0, dtype), emb, labels)
        b = ref_red.ClassWeightedReducer(w.clone())(random_element_dict(n, 0, dtype), emb, labels)
        assert torch.equal(a, b)
        d = random_element_dict(n, 1, dtype)
        d["loss"]["divisor"] = 7
        assert torch.equal(
            ours.DivisorReducer()(d, emb, None), ref_red.DivisorReducer()(d, emb, None)
        )


def test_threshold_reducer_empty_interval_differs_on_purpose() -> None:
    # docs/compatibility.md: the reference keeps nothing and returns 0 on every call
    d = {"loss": {"losses": torch.tensor([1.0, 2.0]), "indices": torch.arange(2)}}
    d["loss"]["reduction_type"] = "element"
    assert ref_red.ThresholdReducer(low=2, high=1)(d, torch.zeros(2, 1), None).item() == 0
    with pytest.raises(ValueError, match="low must be < high"):
        ours.ThresholdReducer(low=2, high=1)


def test_divisor_reducer_missing_divisor_is_still_a_key_error() -> None:
    def d():
        return {
            "loss": {
                "losses": torch.ones(2),
                "indices": torch.arange(2),
                "reduction_type": "element",
            }
        }

    with pytest.raises(KeyError):
        ref_red.DivisorReducer()(d(), torch.zeros(2, 1), None)
    with pytest.raises(KeyError, match="divisor"):
        ours.DivisorReducer()(d(), torch.zeros(2, 1), None)
    with pytest.raises(ValueError, match="sub-loss 'loss'"):
        ours.DivisorReducer()(d(), torch.zeros(2, 1), None)
