"""Triplet family vs the reference: TripletMargin, Margin, ThresholdConsistentMargin,
DynamicSoftMargin and Histogram losses.

Same constructor arguments, same inputs (float64), same loss values and gradients, for labels,
miner outputs (pairs and triplets, from the reference's miners), ref_emb and edge batches.
Where pml fixes a reference "Known issue" the test asserts the documented difference instead
(docs/compatibility.md, section pml-losses).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

pytest.importorskip("pytorch_metric_learning")
import pytorch_metric_learning.distances as ref_distances
import pytorch_metric_learning.losses as ref_losses
import pytorch_metric_learning.miners as ref_miners
import pytorch_metric_learning.reducers as ref_reducers

import pml.distances as our_distances
import pml.losses as our_losses
import pml.reducers as our_reducers

pytestmark = pytest.mark.compat

Lib = dict[str, Any]
OURS: Lib = {"losses": our_losses, "distances": our_distances, "reducers": our_reducers}
REF: Lib = {"losses": ref_losses, "distances": ref_distances, "reducers": ref_reducers}


def kw(**values: Any) -> Callable[[Lib], dict]:
    def make(lib: Lib) -> dict:
        return dict(values)

    return make


def with_distance(name: str, **values: Any) -> Callable[[Lib], dict]:
    def make(lib: Lib) -> dict:
        return {"distance": getattr(lib["distances"], name)(), **values}

    return make


def with_reducer(name: str, **rkw: Any) -> Callable[[Lib], dict]:
    def make(lib: Lib) -> dict:
        return {"reducer": getattr(lib["reducers"], name)(**rkw)}

    return make


CONFIGS = [
    ("TripletMarginLoss", kw()),
    ("TripletMarginLoss", kw(margin=0.3)),
    ("TripletMarginLoss", kw(margin=0.2, swap=True)),
    ("TripletMarginLoss", kw(smooth_loss=True)),
    ("TripletMarginLoss", with_distance("CosineSimilarity", margin=0.1)),
    ("TripletMarginLoss", with_reducer("MeanReducer")),
    ("TripletMarginLoss", with_reducer("ThresholdReducer", low=0.05, high=0.4)),
    ("MarginLoss", kw()),
    ("MarginLoss", kw(margin=0.3, beta=0.9)),
    ("MarginLoss", with_distance("CosineSimilarity", beta=0.5)),
    ("MarginLoss", kw(learn_beta=True, nu=0.1)),
    ("MarginLoss", kw(learn_beta=True, nu=0.1, num_classes=6)),
    ("ThresholdConsistentMarginLoss", kw()),
    ("ThresholdConsistentMarginLoss", kw(lambda_plus=0.5, margin_plus=0.7, margin_minus=0.1)),
    ("DynamicSoftMarginLoss", kw()),
    ("DynamicSoftMarginLoss", kw(num_bins=20, momentum=0.1)),
    ("HistogramLoss", kw()),
    ("HistogramLoss", kw(n_bins=10)),
]
IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CONFIGS)]
ACCEPTS_REF = {"TripletMarginLoss", "MarginLoss", "DynamicSoftMarginLoss"}
FLOAT32_ACCURATE = {"HistogramLoss"}  # float32 bin positions in both libraries


def build(name: str, make: Callable[[Lib], dict]) -> tuple[Any, Any]:
    ours = getattr(our_losses, name)(**make(OURS)).double()
    ref = getattr(ref_losses, name)(**make(REF)).double()
    for p_ours, p_ref in zip(ours.parameters(), ref.parameters(), strict=True):
        with torch.no_grad():
            p_ours.copy_(p_ref)
    return ours, ref


def batch(n: int = 24, d: int = 8, classes: int = 6, seed: int = 0, spread: float = 0.7):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    centers = torch.randn(classes, d, generator=g, dtype=torch.float64)
    return centers[labels] + spread * torch.randn(n, d, generator=g, dtype=torch.float64), labels


def run(fn, emb, labels, indices_tuple=None, ref_emb=None, ref_labels=None):
    e = emb.clone().requires_grad_()
    r = None if ref_emb is None else ref_emb.clone().requires_grad_()
    loss = fn(e, labels, indices_tuple, r, ref_labels)
    params = [p for p in fn.parameters() if p.requires_grad]
    wrt = [e] + ([r] if r is not None else []) + params
    grads = (
        torch.autograd.grad(loss, wrt, allow_unused=True)
        if loss.requires_grad
        else [None] * len(wrt)
    )
    return loss.detach(), grads


def compare(name, make, emb, labels, indices_tuple=None, ref_emb=None, ref_labels=None):
    ours, ref = build(name, make)
    a = run(ours, emb, labels, indices_tuple, ref_emb, ref_labels)
    b = run(ref, emb, labels, indices_tuple, ref_emb, ref_labels)
    rtol = 1e-6 if name in FLOAT32_ACCURATE else 1e-9
    torch.testing.assert_close(a[0], b[0], rtol=rtol, atol=1e-12)
    for ga, gb in zip(a[1], b[1], strict=True):
        if gb is None:
            assert ga is None or not ga.any()
        else:
            torch.testing.assert_close(
                ga, gb, rtol=1e-4 if rtol > 1e-9 else 1e-7, atol=1e-8 if rtol > 1e-9 else 1e-11
            )
    return a[0]


@pytest.mark.parametrize(("name", "make"), CONFIGS, ids=IDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_labels(name, make, seed):
    emb, labels = batch(seed=seed)
    value = compare(name, make, emb, labels)
    assert torch.isfinite(value) and value != 0


MINERS = {
    "multisim_pairs": lambda: ref_miners.MultiSimilarityMiner(epsilon=0.1),
    "pair_margin_pairs": lambda: ref_miners.PairMarginMiner(pos_margin=0.3, neg_margin=0.9),
    "triplets_semihard": lambda: ref_miners.TripletMarginMiner(
        margin=0.3, type_of_triplets="semihard"
    ),
    "batch_hard_triplets": lambda: ref_miners.BatchHardMiner(),
}


@pytest.mark.parametrize(("name", "make"), CONFIGS, ids=IDS)
@pytest.mark.parametrize("miner", list(MINERS))
def test_miner_indices_tuple(name, make, miner):
    emb, labels = batch(seed=3)
    indices_tuple = MINERS[miner]()(emb, labels)
    assert len(indices_tuple[0]) > 0
    compare(name, make, emb, labels, indices_tuple)
    if name not in {"DynamicSoftMarginLoss"} and not (
        name == "MarginLoss" and "num_classes" in str(make(OURS))
    ):
        compare(name, make, emb, None, indices_tuple)  # labels are not needed with a tuple


@pytest.mark.parametrize(("name", "make"), CONFIGS, ids=IDS)
def test_ref_emb(name, make):
    if name not in ACCEPTS_REF:
        pytest.skip("ref_emb not supported (or a documented difference)")
    emb, labels = batch(seed=4)
    ref_emb, ref_labels = batch(n=30, seed=5)
    if "swap" in str(make(OURS)):
        pytest.skip("documented difference: test_triplet_swap_with_ref_emb_differs")
    compare(name, make, emb, labels, ref_emb=ref_emb, ref_labels=ref_labels)
    compare(name, make, emb, labels, ref_emb=emb, ref_labels=labels)
    compare(name, make, emb, labels, ref_emb=emb, ref_labels=labels.clone())


@pytest.mark.parametrize(("name", "make"), CONFIGS, ids=IDS)
@pytest.mark.parametrize("case", ["no_positives", "single_class", "single_sample", "two_labels"])
def test_edge_batches(name, make, case):
    emb, _ = batch(n=8, seed=6)
    labels = {
        "no_positives": torch.arange(8),
        "single_class": torch.zeros(8, dtype=torch.long),
        "single_sample": torch.tensor([2]),
        "two_labels": torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]),
    }[case]
    compare(name, make, emb[: len(labels)], labels)


def test_empty_indices_tuple():
    emb, labels = batch()
    empty = tuple(torch.empty(0, dtype=torch.long) for _ in range(3))
    for name in ("TripletMarginLoss", "MarginLoss", "HistogramLoss"):
        compare(name, kw(), emb, labels, empty)


def test_random_triplets_per_anchor_are_rng_exact():
    emb, labels = batch(seed=7)
    for name in ("TripletMarginLoss", "MarginLoss"):
        ours, ref = build(name, kw(triplets_per_anchor=4))
        torch.manual_seed(11)
        a = ours(emb, labels)
        torch.manual_seed(11)
        b = ref(emb, labels)
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


@pytest.mark.parametrize("reducer", ["AvgNonZeroReducer", "MeanReducer"])
@pytest.mark.parametrize("pairs", [False, True])
def test_reducer_stats_match(reducer, pairs):
    emb, labels = batch(seed=8)
    it = ref_miners.MultiSimilarityMiner(epsilon=0.1)(emb, labels) if pairs else None
    ours = our_losses.TripletMarginLoss(reducer=getattr(our_reducers, reducer)(collect_stats=True))
    ref = ref_losses.TripletMarginLoss(reducer=getattr(ref_reducers, reducer)(collect_stats=True))
    torch.testing.assert_close(ours(emb, labels, it), ref(emb, labels, it))
    for stat in ref.reducer._record_these_stats:
        assert getattr(ours.reducer, stat) == pytest.approx(getattr(ref.reducer, stat)), stat


def test_margin_loss_divisor_stat_matches():
    emb, labels = batch(seed=9)
    ours = our_losses.MarginLoss(reducer=our_reducers.DivisorReducer(collect_stats=True))
    ref = ref_losses.MarginLoss(reducer=ref_reducers.DivisorReducer(collect_stats=True))
    torch.testing.assert_close(ours(emb, labels), ref(emb, labels))
    for name in ("margin_loss", "beta_reg_loss"):
        a, b = ours.reducer.reducers[name], ref.reducer.reducers[name]
        assert a.losses_size == b.losses_size
        assert float(a.divisor) == float(b.divisor)


def test_dynamic_soft_margin_consecutive_calls():
    ours, ref = build("DynamicSoftMarginLoss", kw())
    for seed in range(3):
        emb, labels = batch(seed=seed)
        a = ours(emb.clone().requires_grad_(), labels)
        e = emb.clone().requires_grad_()
        b = ref(e, labels)
        torch.testing.assert_close(a, b.detach(), rtol=1e-9, atol=1e-12)
        a.backward()  # fix: the reference needs retain_graph here (its histogram keeps history)
        b.backward(retain_graph=True)
    torch.testing.assert_close(ours.hist_, ref.hist_.detach())


# --------------------------------------------------------------------------- documented fixes


def test_tcm_with_ref_emb_differs():
    """docs/compatibility.md: TCM reads positives/negatives from ref_emb (ref: from embeddings)."""
    emb, labels = batch(seed=10)
    ref_emb, ref_labels = batch(seed=11)
    a = our_losses.ThresholdConsistentMarginLoss()(emb, labels, None, ref_emb, ref_labels)
    b = ref_losses.ThresholdConsistentMarginLoss()(emb, labels, None, ref_emb, ref_labels)
    assert not torch.isclose(a, b)
    # the reference's value is ours with ref_emb replaced by embeddings
    c = our_losses.ThresholdConsistentMarginLoss()(emb, labels, None, emb.clone(), ref_labels)
    torch.testing.assert_close(b, c)


def test_triplet_swap_with_ref_emb_differs():
    """docs/compatibility.md: swap uses d(ref p, ref n); the reference indexed query rows."""
    emb, _ = batch(n=3, seed=12)
    ref_emb, _ = batch(n=10, seed=13)
    labels = torch.tensor([0, 1, 0])
    ref_labels = torch.tensor([1, 1, 1, 1, 1, 1, 0, 0, 1, 0])  # positives of 0 at rows >= 6
    with pytest.raises(IndexError):
        ref_losses.TripletMarginLoss(swap=True)(emb, labels, None, ref_emb, ref_labels)
    value = our_losses.TripletMarginLoss(swap=True)(emb, labels, None, ref_emb, ref_labels)
    assert torch.isfinite(value)


def test_dynamic_soft_margin_paired_mode_backward_works():
    """docs/compatibility.md: the reference's backward raises (in-place diagonal overwrite)."""
    emb, _ = batch(n=8, seed=14)
    ref_emb, _ = batch(n=8, seed=15)
    ours, ref = build("DynamicSoftMarginLoss", kw(num_bins=5))
    a = ours(emb.clone().requires_grad_(), None, None, ref_emb)
    b = ref(emb.clone().requires_grad_(), None, None, ref_emb)
    torch.testing.assert_close(a, b.detach(), rtol=1e-9, atol=1e-12)
    with pytest.raises(RuntimeError):
        b.backward()
    a.backward()


def test_dynamic_soft_margin_out_of_range_values_work():
    """docs/compatibility.md: x >= min_val + (num_bins - 1) delta raised an index error."""
    emb, labels = batch(seed=16)
    with pytest.raises((RuntimeError, IndexError)):
        ref_losses.DynamicSoftMarginLoss(distance=ref_distances.LpDistance(power=2))(emb, labels)
    value = our_losses.DynamicSoftMarginLoss(distance=our_distances.LpDistance(power=2))(
        emb, labels
    )
    assert torch.isfinite(value)


def test_histogram_similarity_one_works():
    """docs/compatibility.md: a cosine of exactly 1 (duplicate embeddings) raised an index error."""
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.2, 0.9]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    with pytest.raises((RuntimeError, IndexError)):
        ref_losses.HistogramLoss(n_bins=4)(emb, labels)
    assert torch.isfinite(our_losses.HistogramLoss(n_bins=4)(emb, labels))


def test_nan_embeddings_give_nan_not_a_finite_number():
    """docs/compatibility.md: the reference's AvgNonZero filter drops NaN triplets."""
    emb, labels = batch(seed=17)
    emb[3, 0] = float("nan")
    b = ref_losses.TripletMarginLoss()(emb, labels)
    assert torch.isfinite(b)
    assert torch.isnan(our_losses.TripletMarginLoss()(emb, labels))
    assert torch.isnan(our_losses.ThresholdConsistentMarginLoss()(emb, labels))
