"""Reducer arguments and reducer holders: bad values fail at once, naming what is wrong."""

from __future__ import annotations

import pytest
import torch

from pml.reducers import (
    AvgNonZeroReducer,
    DivisorReducer,
    DoNothingReducer,
    MeanReducer,
    ModuleWithRecordsAndReducer,
    MultipleReducers,
    ThresholdReducer,
)

EMB = torch.zeros(4, 2)


def element(values):
    v = torch.tensor(values, dtype=torch.float64)
    return {"loss": {"losses": v, "indices": torch.arange(len(v)), "reduction_type": "element"}}


@pytest.mark.parametrize(("low", "high"), [(2, 1), (1.0, 1.0), (0.5, -0.5)])
def test_threshold_reducer_with_low_not_below_high_always_gives_zero(low, high) -> None:
    # the reference keeps nothing and silently returns the zero loss on every call
    with pytest.raises(ValueError, match="low"):
        ThresholdReducer(low=low, high=high)


@pytest.mark.parametrize(("arg", "bad"), [("low", "x"), ("high", "x"), ("low", [1.0])])
def test_threshold_reducer_non_numeric_bound_fails_only_at_forward(arg, bad) -> None:
    with pytest.raises(TypeError, match=arg):
        ThresholdReducer(**{arg: bad})


@pytest.mark.parametrize("arg", ["low", "high"])
def test_threshold_reducer_nan_bound_keeps_nothing_silently(arg) -> None:
    with pytest.raises(ValueError, match=arg):
        ThresholdReducer(**{arg: float("nan")})


def test_threshold_reducer_reference_accepted_bounds_still_work() -> None:
    assert ThresholdReducer(low=0, high=10)(element([3, 7, 1, 13]), EMB, None).item() == 11 / 3
    assert ThresholdReducer(low=-1)(element([-2.0, 0.0, 2.0]), EMB, None).item() == 1
    assert ThresholdReducer(high=torch.tensor(2.5)).high == torch.tensor(2.5)
    assert ThresholdReducer(low=float("-inf"), high=1)(element([0.0, 2.0]), EMB, None) == 0
    r = AvgNonZeroReducer()
    assert (r.low, r.high) == (0, None)


def test_divisor_reducer_with_a_loss_that_gives_no_divisor_raises_a_bare_key_error() -> None:
    with pytest.raises(ValueError, match="divisor") as info:
        DivisorReducer()(element([1.0, 2.0]), EMB, None)
    message = str(info.value)
    assert "'loss'" in message and "losses, indices, reduction_type" in message
    assert isinstance(info.value, KeyError)  # compat: the reference raised KeyError


@pytest.mark.parametrize("bad", ["mean", MeanReducer, 1.0])
def test_reducer_holder_given_a_non_reducer_is_not_named_in_the_error(bad) -> None:
    with pytest.raises(TypeError, match="reducer must be a BaseReducer"):
        ModuleWithRecordsAndReducer(reducer=bad)


def test_reducer_holder_given_a_class_suggests_an_instance() -> None:
    with pytest.raises(TypeError, match=r"pass an instance: MeanReducer\(\)"):
        ModuleWithRecordsAndReducer(reducer=MeanReducer)
    with pytest.raises(TypeError, match="reducer"):
        ModuleWithRecordsAndReducer().set_reducer("mean")


def test_reducer_holder_accepts_a_user_module_like_the_reference() -> None:
    class MyReducer(torch.nn.Module):
        def forward(self, loss_dict, embeddings, labels):
            return sum(v["losses"].mean() for v in loss_dict.values())

    holder = ModuleWithRecordsAndReducer(reducer=MyReducer())
    assert isinstance(holder.reducer, MyReducer)


def test_reducer_holder_accepts_reducers() -> None:
    for r in (None, MeanReducer(), DoNothingReducer(), MultipleReducers({"loss": MeanReducer()})):
        ModuleWithRecordsAndReducer(reducer=r)


@pytest.mark.parametrize("bad", [[0.0, 1.7, 1.0], [0, -1, 1], [0, 2, 1]])
def test_class_weighted_reducer_float_or_out_of_range_labels_are_rejected_not_truncated(bad):
    from pml.reducers import ClassWeightedReducer

    losses = torch.tensor([1.0, 2.0, 3.0])
    entry = {"loss": {"losses": losses, "indices": torch.arange(3), "reduction_type": "element"}}
    with pytest.raises(ValueError, match="labels"):
        ClassWeightedReducer(weights=[1.0, 3.0])(entry, EMB[:3], torch.tensor(bad))


def test_class_weighted_reducer_uint8_and_bool_labels_index_like_int64():
    from pml.reducers import ClassWeightedReducer

    losses = torch.tensor([1.0, 2.0, 3.0])
    entry = {"loss": {"losses": losses, "indices": torch.arange(3), "reduction_type": "element"}}
    expected = ClassWeightedReducer(weights=[1.0, 3.0])(entry, EMB[:3], torch.tensor([0, 1, 1]))
    for labels in (torch.tensor([0, 1, 1], dtype=torch.uint8), torch.tensor([False, True, True])):
        got = ClassWeightedReducer(weights=[1.0, 3.0])(entry, EMB[:3], labels)
        assert torch.equal(got, expected)
