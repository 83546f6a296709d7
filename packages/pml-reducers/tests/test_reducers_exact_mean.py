"""Mean-like reducers give exactly ``torch.mean`` of the kept losses for float32/float64.

The reference computes ``torch.mean(losses[kept])``; a masked sum over all entries divided
by the count is the same number up to summation order, i.e. not bitwise the same. For
float32/float64 inputs pml reduces exactly like the reference; half inputs reduce in float32.
"""

from __future__ import annotations

import pytest
import torch

from pml.reducers import (
    AvgNonZeroReducer,
    ClassWeightedReducer,
    MeanReducer,
    MultipleReducers,
    SumReducer,
    ThresholdReducer,
)
from pml.reducers import functional as RF

SIZES = [1, 2, 7, 33, 100, 257, 1000, 4099, 10000]
SEEDS = range(4)
EXACT_DTYPES = [torch.float32, torch.float64]


def random_losses(n: int, seed: int, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g, dtype=torch.float64).mul_(3).to(dtype)


def element(losses: torch.Tensor) -> dict:
    return {
        "loss": {
            "losses": losses,
            "indices": torch.arange(len(losses)),
            "reduction_type": "element",
        }
    }


def emb_for(losses: torch.Tensor) -> torch.Tensor:
    return torch.zeros(len(losses), 2, dtype=losses.dtype)


BOUNDS = [(0.0, None), (-1.0, None), (None, 1.5), (-2.0, 2.0), (0.5, 4.0)]


@pytest.mark.parametrize("dtype", EXACT_DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize(("low", "high"), BOUNDS)
def test_threshold_reducer_last_bits_differ_from_torch_mean_of_kept(dtype, n, low, high) -> None:
    for seed in SEEDS:
        losses = random_losses(n, seed, dtype)
        kept = RF.threshold_mask(losses, low, high)
        out = ThresholdReducer(low=low, high=high)(element(losses), emb_for(losses), None)
        if kept.any():
            assert torch.equal(out, losses[kept].mean()), (seed, out, losses[kept].mean())
        else:
            assert torch.equal(out, torch.zeros((), dtype=dtype))


@pytest.mark.parametrize("dtype", EXACT_DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_avg_non_zero_reducer_last_bits_differ_from_torch_mean_of_positives(dtype, n) -> None:
    for seed in SEEDS:
        losses = random_losses(n, seed, dtype).relu()
        out = AvgNonZeroReducer()(element(losses), emb_for(losses), None)
        kept = losses > 0
        expected = losses[kept].mean() if kept.any() else torch.zeros((), dtype=dtype)
        assert torch.equal(out, expected), (seed, out, expected)


@pytest.mark.parametrize("dtype", EXACT_DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_mean_and_sum_reducers_are_bitwise_torch_mean_and_sum(dtype, n) -> None:
    for seed in SEEDS:
        losses = random_losses(n, seed, dtype)
        assert torch.equal(MeanReducer()(element(losses), emb_for(losses), None), losses.mean())
        assert torch.equal(SumReducer()(element(losses), emb_for(losses), None), losses.sum())


@pytest.mark.parametrize("dtype", EXACT_DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_multiple_reducers_last_bits_differ_from_sum_of_torch_means(dtype, n) -> None:
    for seed in SEEDS:
        a, b = random_losses(n, seed, dtype), random_losses(n, seed + 100, dtype)
        d = {"a": element(a)["loss"], "b": element(b)["loss"]}
        r = MultipleReducers({"a": ThresholdReducer(low=0.2)}, default_reducer=AvgNonZeroReducer())
        out = r(d, emb_for(a), None)
        parts = torch.stack(
            [
                a[a > 0.2].mean() if (a > 0.2).any() else torch.zeros((), dtype=dtype),
                b[b > 0].mean() if (b > 0).any() else torch.zeros((), dtype=dtype),
            ]
        )
        assert torch.equal(out, parts.sum())


@pytest.mark.parametrize("dtype", EXACT_DTYPES)
def test_class_weighted_reducer_is_bitwise_mean_of_weighted(dtype) -> None:
    for n in SIZES:
        losses = random_losses(n, 0, dtype)
        labels = torch.arange(n) % 3
        w = torch.tensor([0.5, 2.0, 1.5], dtype=dtype)
        out = ClassWeightedReducer(w)(element(losses), emb_for(losses), labels)
        assert torch.equal(out, (losses * w[labels]).mean())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_reduce_in_float32(dtype) -> None:
    # 4096 halves of 1.0 + 0.5: a half accumulator would stall; float32 does not
    losses = torch.full((4096,), 1.5, dtype=dtype)
    out = ThresholdReducer(low=1.0)(element(losses), emb_for(losses), None)
    assert out.dtype == dtype and out.item() == 1.5
    exact = random_losses(3000, 1, torch.float32)
    half = exact.to(dtype)
    kept = half > 0
    out = AvgNonZeroReducer()(element(half), emb_for(half), None)
    assert torch.equal(out, half[kept].float().mean().to(dtype))


def test_threshold_gradients_flow_to_kept_entries_only() -> None:
    v = torch.tensor([float("nan"), -1.0, 2.0, 4.0, 0.5], dtype=torch.float64, requires_grad=True)
    out = ThresholdReducer(low=0.0, high=3.0)(element(v), emb_for(v), None)
    out.backward()
    assert out.item() == 1.25 and v.grad.tolist() == [0, 0, 0.5, 0, 0.5]


def test_mean_or_fallback_empty_mask_gives_fallback_on_graph() -> None:
    emb = torch.randn(3, 2, requires_grad=True)
    losses = torch.tensor([1.0, 2.0])
    out = RF.mean_or_fallback(losses, torch.zeros(2, dtype=torch.bool), (emb * 0).sum())
    out.backward()
    assert out.item() == 0 and torch.equal(emb.grad, torch.zeros(3, 2))
