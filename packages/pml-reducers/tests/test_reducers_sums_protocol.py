"""The sums protocol: a reducer with a plan finishes from (total, count, num) like from losses."""

import pytest
import torch

from pml.reducers import (
    AvgNonZeroReducer,
    DivisorReducer,
    DoNothingReducer,
    MeanReducer,
    MultipleReducers,
    SumReducer,
    ThresholdReducer,
)

EMB = torch.zeros(4, 2, requires_grad=True)


def _element(losses):
    return {
        "loss": {
            "losses": losses,
            "indices": torch.arange(len(losses)),
            "reduction_type": "element",
        }
    }


def _sums(losses, plan):
    keep = torch.ones_like(losses, dtype=torch.bool)
    if plan.low is not None:
        keep &= losses > plan.low
    if plan.high is not None:
        keep &= losses < plan.high
    total = torch.where(keep, losses, 0).sum(dtype=torch.float64)
    entry = {"losses": total, "indices": None, "reduction_type": "sums"}
    entry.update(count=keep.sum(), num=torch.tensor(len(losses)))
    return {"loss": entry}


@pytest.mark.parametrize(
    "make",
    [
        MeanReducer,
        SumReducer,
        AvgNonZeroReducer,
        lambda **k: ThresholdReducer(low=0.5, high=2.0),
    ],
)
@pytest.mark.parametrize("values", [[0.0, 1.0, 3.0, 0.7], [0.0, 0.0], []])
def test_reducing_from_sums_equals_reducing_the_losses(make, values):
    losses = torch.tensor(values, dtype=torch.float64)
    plain, from_sums = make(collect_stats=True), make(collect_stats=True)
    plan = from_sums.sums_plan()
    assert plan is not None
    want = plain(_element(losses), EMB, None) if len(values) else torch.tensor(0.0)
    got = from_sums(_sums(losses, plan), EMB, None)
    if isinstance(plain, MeanReducer) and not len(values):
        want = torch.tensor(0.0)  # nothing to average: the zero loss (torch.mean would be NaN)
    torch.testing.assert_close(got.double(), want.double())
    if len(values) and from_sums.collect_stats:
        assert int(from_sums.losses_size) == len(values)
        for stat in ("num_past_filter", "num_above_low", "num_below_high"):
            if hasattr(plain, stat):
                assert int(getattr(from_sums, stat)) == int(getattr(plain, stat)), stat


def test_reducers_without_a_plan_and_subclasses_get_losses():
    class MyMean(MeanReducer):
        pass

    class MyDivisor(DivisorReducer):
        pass

    for r in (MyMean(), DoNothingReducer(), MyDivisor()):
        assert r.sums_plan() is None
    with pytest.raises(TypeError, match="cannot reduce from sums"):
        MyMean()(_sums(torch.tensor([1.0]), MeanReducer().sums_plan()), EMB, None)


def test_multiple_reducers_delegate_the_plan_per_sub_loss():
    r = MultipleReducers({"pos_loss": SumReducer()}, default_reducer=AvgNonZeroReducer())
    assert r.sums_plan("pos_loss").kind == "sum"
    assert r.sums_plan("neg_loss") == ("threshold", 0, None)
    assert r.reducer_for("neg_loss") is r.default_reducer


def test_threshold_with_both_bounds_and_stats_has_no_plan():
    assert ThresholdReducer(low=0, high=1, collect_stats=True).sums_plan() is None
    assert ThresholdReducer(low=0, high=1).sums_plan() == ("threshold", 0, 1)


@pytest.mark.parametrize("divisor", [torch.tensor(3), torch.tensor(0), 4])
def test_divisor_reducer_from_sums_divides_the_total_by_the_entry_divisor(divisor):
    losses = torch.tensor([0.5, 0.0, 2.0, 1.5], dtype=torch.float64)
    plain, from_sums = DivisorReducer(collect_stats=True), DivisorReducer(collect_stats=True)
    assert from_sums.sums_plan() == ("sum", None, None)
    want = plain({"loss": {**_element(losses)["loss"], "divisor": divisor}}, EMB, None)
    entry = _sums(losses, from_sums.sums_plan())
    entry["loss"]["divisor"] = divisor
    got = from_sums(entry, EMB, None)
    torch.testing.assert_close(got.double(), want.double())
    assert int(from_sums.losses_size) == len(losses) and from_sums.divisor is divisor
    del entry["loss"]["divisor"]
    with pytest.raises(KeyError, match="divisor"):
        from_sums(entry, EMB, None)


def test_divisor_reducer_from_half_sums_divides_before_casting():
    total = torch.tensor(1e6, dtype=torch.float32)  # beyond float16's range
    entry = {"losses": total, "indices": None, "reduction_type": "sums"}
    entry.update(count=torch.tensor(8), num=torch.tensor(8), divisor=torch.tensor(1000))
    got = DivisorReducer()({"loss": entry}, EMB.half(), None)
    assert got.item() == 1000.0


def test_reducer_holder_asks_its_reducer_for_the_plan_and_a_user_module_has_none():
    from pml.reducers import ModuleWithRecordsAndReducer

    class MyReducer(torch.nn.Module):
        def forward(self, loss_dict, embeddings, labels):
            return sum(v["losses"].mean() for v in loss_dict.values())

    assert ModuleWithRecordsAndReducer(reducer=SumReducer()).reducer_sums_plan() == (
        "sum",
        None,
        None,
    )
    assert ModuleWithRecordsAndReducer(reducer=MyReducer()).reducer_sums_plan("loss") is None
    multiple = MultipleReducers({"a": MeanReducer()}, default_reducer=DivisorReducer())
    holder = ModuleWithRecordsAndReducer(reducer=multiple)
    assert holder.reducer_sums_plan("a").kind == "mean"
    assert holder.reducer_sums_plan("b").kind == "sum"


@pytest.mark.parametrize("make", [MeanReducer, SumReducer, AvgNonZeroReducer])
def test_nan_total_with_nothing_kept_stays_nan_not_the_zero_loss(make):
    entry = {"losses": torch.tensor(float("nan")), "indices": None, "reduction_type": "sums"}
    entry.update(count=torch.tensor(0), num=torch.tensor(0))
    assert torch.isnan(make()({"loss": entry}, EMB, None))
