"""pml.reducers: behaviour from the spec, fixes of known issues, dtypes, errors."""

from __future__ import annotations

import pytest
import torch

from pml.core.testing import assert_close
from pml.core.validation import InvalidArgumentError
from pml.reducers import (
    AvgNonZeroReducer,
    ClassWeightedReducer,
    DivisorReducer,
    DoNothingReducer,
    MeanReducer,
    ModuleWithRecordsAndReducer,
    MultipleReducers,
    PerAnchorReducer,
    SumReducer,
    ThresholdReducer,
)
from pml.reducers import functional as RF

EMB = torch.zeros(8, 2, requires_grad=True)


def element(values, dtype=torch.float64):
    v = torch.tensor(values, dtype=dtype)
    return {"loss": {"losses": v, "indices": torch.arange(len(v)), "reduction_type": "element"}}


def pairs(values, a, p, kind="pos_pair"):
    return {
        "loss": {
            "losses": torch.tensor(values, dtype=torch.float64),
            "indices": (torch.tensor(a), torch.tensor(p)),
            "reduction_type": kind,
        }
    }


def test_spec_examples() -> None:
    assert AvgNonZeroReducer()(element([0, 2, 0, 3]), EMB, None).item() == 2.5
    x = [3, 7, 1, 13, 5]
    assert ThresholdReducer(low=6)(element(x), EMB, None).item() == 10
    assert ThresholdReducer(high=6)(element(x), EMB, None).item() == 3
    assert ThresholdReducer(low=6, high=12)(element(x), EMB, None).item() == 7
    d = element([1, 2, 3])
    d["loss"]["divisor"] = 4
    assert DivisorReducer()(d, EMB, None).item() == 1.5
    w = ClassWeightedReducer(torch.tensor([1.0, 3.0]))
    assert w(element([1, 2, 3, 4]), EMB, torch.tensor([0, 0, 1, 1])).item() == 6
    assert SumReducer()(element([1, 2, 3]), EMB, None).item() == 6
    assert torch.isnan(MeanReducer()(element([]), EMB, None))


def test_threshold_stats() -> None:
    # fix: the reference's registered num_below_high stays 0 (count written to num_above_high)
    r = ThresholdReducer(low=0.5, high=2, collect_stats=True)
    out = r(element([0.1, 1, 3, 1.5]), EMB, None)
    assert out.item() == 1.25
    assert (r.num_past_filter, r.num_above_low, r.num_below_high) == (2, 3, 2)
    assert r.num_above_high == 2
    assert "num_below_high" in r._record_these_stats


def test_avg_non_zero_drops_negative_and_nan_without_nan_gradients() -> None:
    v = torch.tensor([float("nan"), -1.0, 2.0, 4.0], requires_grad=True)
    out = AvgNonZeroReducer()(
        {"loss": {"losses": v, "indices": torch.arange(4), "reduction_type": "element"}}, EMB, None
    )
    out.backward()
    assert out.item() == 3 and v.grad.tolist() == [0, 0, 0.5, 0.5]


def test_zero_loss_when_nothing_passes_is_on_the_graph() -> None:
    emb = torch.randn(3, 2, requires_grad=True)
    out = ThresholdReducer(low=10)(element([1.0, 2.0]), emb, None)
    out.backward()
    assert out.item() == 0 and torch.equal(emb.grad, torch.zeros(3, 2))
    nan_emb = torch.full((2, 2), float("nan"))
    assert torch.isnan(AvgNonZeroReducer()(element([0.0]), nan_emb, None))


def test_divisor_zero_and_tensor_divisor() -> None:
    for divisor in (0, torch.tensor(0)):
        d = element([1.0, 2.0])
        d["loss"]["divisor"] = divisor
        assert DivisorReducer()(d, EMB, None).item() == 0
    d = element([1.0, 2.0])
    d["loss"]["divisor"] = torch.tensor(3)
    r = DivisorReducer(collect_stats=True)
    assert_close(r(d, EMB, None), torch.tensor(1.0, dtype=torch.float64))
    assert int(r.divisor) == 3
    with pytest.raises(KeyError, match="divisor"):
        DivisorReducer()(element([1.0]), EMB, None)


def test_float16_divisor_sums_in_float32() -> None:
    d = element([60000.0, 60000.0], dtype=torch.float16)
    d["loss"]["divisor"] = 2
    out = DivisorReducer()(d, EMB, None)
    assert out.dtype == torch.float16 and out.item() == 60000


def test_class_weighted_uses_anchor_labels_and_accepts_lists() -> None:
    r = ClassWeightedReducer([0.5, 2.0])
    out = r(pairs([1.0, 1.0], [0, 1], [1, 0]), EMB, torch.tensor([1, 0]))
    assert out.item() == pytest.approx((2.0 + 0.5) / 2)
    with pytest.raises(ValueError, match="labels"):
        r(element([1.0]), EMB, None)


def test_per_anchor_spec_examples() -> None:
    emb = torch.zeros(4, 2)
    d = pairs([0.0, 2.0], [0, 0], [1, 2])
    assert PerAnchorReducer()(d, emb, None).item() == 0.25
    assert PerAnchorReducer(AvgNonZeroReducer())(d, emb, None).item() == 1.0
    with pytest.raises(NotImplementedError):
        PerAnchorReducer()(
            {
                "loss": {
                    "losses": torch.ones(1),
                    "indices": (torch.tensor([0]),) * 3,
                    "reduction_type": "triplet",
                }
            },
            emb,
            None,
        )


def test_per_anchor_duplicates_all_count() -> None:
    # fix: the reference's dense matrix lets (0,1)=5 overwrite (0,1)=1 -> row 0 mean 3.5, total 1.625
    d = pairs([1.0, 2.0, 3.0, 5.0], [0, 0, 1, 0], [1, 2, 3, 1])
    out = PerAnchorReducer()(d, torch.zeros(4, 2), None)
    assert out.item() == pytest.approx(((1 + 2 + 5) / 3 + 3) / 4)


def test_per_anchor_larger_reference() -> None:
    # fix: the reference raises IndexError for pairs into a reference larger than the batch
    d = pairs([1.0, 3.0], [0, 1], [7, 9])
    assert PerAnchorReducer()(d, torch.zeros(2, 2), None).item() == 2.0


def test_per_anchor_max_value_counts() -> None:
    # fix: a loss equal to finfo.max was "missing" in the reference
    big = torch.finfo(torch.float64).max
    d = pairs([big, 1.0], [0, 1], [1, 0])
    assert PerAnchorReducer()(d, torch.zeros(2, 2), None).item() == pytest.approx(big / 2 + 0.5)


def test_per_anchor_custom_aggregation_gets_the_dense_matrix() -> None:
    seen = {}

    def agg(x, num_per_row):
        seen["shape"], seen["num"] = tuple(x.shape), num_per_row.tolist()
        return RF.mean_per_row(x, num_per_row)

    d = pairs([0.0, 2.0], [0, 0], [1, 2])
    assert PerAnchorReducer(aggregation_func=agg)(d, torch.zeros(4, 2), None).item() == 0.25
    assert seen == {"shape": (4, 4), "num": [2, 0, 0, 0]}


def test_multiple_reducers_spec_example_and_dtype() -> None:
    v = [1.0, 2.0, 3.0, 4.0]
    d = {
        "a": element(v)["loss"],
        "b": element(v)["loss"],
        "c": {"losses": 0, "indices": None, "reduction_type": "already_reduced"},
    }
    emb = torch.zeros(4, 2, dtype=torch.float64)
    out = MultipleReducers({"a": SumReducer()})(d, emb, None)
    assert out.item() == 12.5 and out.dtype == torch.float64
    shaped = {
        "a": {"losses": torch.tensor([0.5]), "indices": None, "reduction_type": "already_reduced"}
    }
    assert MultipleReducers({})(shaped, emb, None).item() == 0.5


def test_do_nothing_returns_the_same_dict() -> None:
    d = element([1.0])
    assert DoNothingReducer()(d, EMB, None) is d


def test_reducers_in_every_dtype(dtype: torch.dtype, device: torch.device) -> None:
    vals = [0.0, 0.5, 1.5, 3.0]
    emb = torch.zeros(4, 2, dtype=dtype, device=device)
    for reducer, want in (
        (MeanReducer(), 1.25),
        (SumReducer(), 5.0),
        (AvgNonZeroReducer(), 5 / 3),
        (ThresholdReducer(high=1), 0.25),
    ):
        d = element(vals, dtype=dtype)
        d["loss"]["losses"] = d["loss"]["losses"].to(device)
        d["loss"]["indices"] = d["loss"]["indices"].to(device)
        out = reducer(d, emb, None)
        assert out.dtype == dtype and out.device.type == device.type
        assert_close(out, want)


def test_bad_loss_dicts_raise_clear_errors() -> None:
    with pytest.raises(InvalidArgumentError, match="one sub-loss"):
        MeanReducer()({**element([1.0]), "x": element([1.0])["loss"]}, EMB, None)
    with pytest.raises(InvalidArgumentError, match="length 2"):
        MeanReducer()(
            {
                "loss": {
                    "losses": torch.ones(2),
                    "indices": torch.arange(3),
                    "reduction_type": "element",
                }
            },
            EMB,
            None,
        )
    with pytest.raises(InvalidArgumentError, match="tuple of 3 tensors"):
        MeanReducer()(
            {
                "loss": {
                    "losses": torch.ones(2),
                    "indices": (torch.arange(2),) * 2,
                    "reduction_type": "triplet",
                }
            },
            EMB,
            None,
        )
    with pytest.raises(ValueError, match="reduction_type must be one of"):
        MeanReducer()(
            {"loss": {"losses": torch.ones(1), "indices": None, "reduction_type": "bogus"}},
            EMB,
            None,
        )
    with pytest.raises(InvalidArgumentError, match="0-dim or length-1"):
        MeanReducer()(
            {
                "loss": {
                    "losses": torch.ones(2),
                    "indices": None,
                    "reduction_type": "already_reduced",
                }
            },
            EMB,
            None,
        )
    with pytest.raises(InvalidArgumentError, match="low or high"):
        ThresholdReducer()
    with pytest.raises(TypeError, match="multiple values"):
        AvgNonZeroReducer(low=1)


def test_losses_size_stat() -> None:
    r = MeanReducer(collect_stats=True)
    r(element([1.0, 2.0, 3.0]), EMB, None)
    assert r.losses_size == 3
    r({"loss": {"losses": 0, "indices": None, "reduction_type": "element"}}, EMB, None)
    assert r.losses_size == 1


class _TwoLosses(ModuleWithRecordsAndReducer):
    def _sub_loss_names(self):
        return ["pos_loss", "neg_loss"]


def test_set_reducer_rules() -> None:
    one = ModuleWithRecordsAndReducer()
    assert isinstance(one.reducer, MeanReducer)
    mine = ThresholdReducer(low=1)
    copied = ModuleWithRecordsAndReducer(reducer=mine)
    assert isinstance(copied.reducer, ThresholdReducer) and copied.reducer is not mine
    two = _TwoLosses(reducer=mine)
    assert isinstance(two.reducer, MultipleReducers)
    assert set(two.reducer.reducers) == {"pos_loss", "neg_loss"}
    assert two.reducer.reducers["pos_loss"] is not two.reducer.reducers["neg_loss"]
    dn = DoNothingReducer()
    assert _TwoLosses(reducer=dn).reducer is dn
    mr = MultipleReducers({"pos_loss": SumReducer()})
    assert _TwoLosses(reducer=mr).reducer is mr
