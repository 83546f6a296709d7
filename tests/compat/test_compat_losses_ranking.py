"""Ranking losses and VICReg vs the reference: FastAP, PNP, SmoothAP, RankedList, VICReg.

Same constructor arguments, same inputs (float32 and float64), same loss values and gradients.
Where pml fixes a reference defect the test asserts the documented difference instead
(docs/compatibility.md, section pml-losses).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch

pytest.importorskip("pytorch_metric_learning")
import pytorch_metric_learning.distances as ref_distances
import pytorch_metric_learning.losses as ref_losses
import pytorch_metric_learning.miners as ref_miners
import pytorch_metric_learning.reducers as ref_reducers
import pytorch_metric_learning.regularizers as ref_regularizers

import pml.distances as our_distances
import pml.losses as our_losses
import pml.reducers as our_reducers
import pml.regularizers as our_regularizers

pytestmark = pytest.mark.compat

Lib = dict[str, Any]
OURS: Lib = {
    "losses": our_losses,
    "distances": our_distances,
    "reducers": our_reducers,
    "regularizers": our_regularizers,
}
REF: Lib = {
    "losses": ref_losses,
    "distances": ref_distances,
    "reducers": ref_reducers,
    "regularizers": ref_regularizers,
}


def kw(**values: Any) -> Callable[[Lib], dict]:
    def make(lib: Lib) -> dict:
        return dict(values)

    return make


def with_distance(name: str, **dist_kwargs: Any) -> Callable[[Lib], dict]:
    def make(lib: Lib) -> dict:
        return {"distance": getattr(lib["distances"], name)(**dist_kwargs)}

    return make


def with_reducer(name: str, **extra: Any) -> Callable[[Lib], dict]:
    def make(lib: Lib) -> dict:
        return {"reducer": getattr(lib["reducers"], name)(), **extra}

    return make


def with_embedding_regularizer(lib: Lib) -> dict:
    return {
        "embedding_regularizer": lib["regularizers"].LpRegularizer(),
        "embedding_reg_weight": 0.3,
    }


#: (class, kwargs factory, label layout)
CONFIGS = [
    ("FastAPLoss", kw(), "random"),
    ("FastAPLoss", kw(num_bins=5), "random"),
    ("FastAPLoss", with_distance("LpDistance", power=1), "random"),
    ("FastAPLoss", with_embedding_regularizer, "random"),
    ("PNPLoss", kw(), "random"),
    ("PNPLoss", kw(variant="Ds"), "random"),
    ("PNPLoss", kw(variant="Dq", alpha=0.5), "random"),
    ("PNPLoss", kw(variant="Iu", anneal=0.05), "equal"),
    ("PNPLoss", kw(variant="Ib", b=3, anneal=0.2), "random"),
    ("SmoothAPLoss", kw(), "grouped"),
    ("SmoothAPLoss", kw(temperature=0.1), "grouped"),
    ("SmoothAPLoss", kw(), "equal"),
    ("SmoothAPLoss", with_reducer("SumReducer"), "grouped"),
    ("RankedListLoss", kw(margin=0.4, Tn=1.0), "random"),
    ("RankedListLoss", kw(margin=0.8, Tn=3.0, Tp=2.0, imbalance=0.3, alpha=1.1), "random"),
    ("RankedListLoss", kw(margin=0.4, Tn=1.0, distance=None), "equal"),
    ("RankedListLoss", with_reducer("SumReducer", margin=0.4, Tn=1.0), "random"),
]
IDS = [f"{name}-{i}" for i, (name, _, _) in enumerate(CONFIGS)]
#: classes whose reference runs a float32 step (SmoothAP's AP buffer)
FLOAT32_STEP = {"SmoothAPLoss"}


def labels_for(layout: str, n: int, g: torch.Generator) -> torch.Tensor:
    if layout == "random":
        return torch.randint(0, 5, (n,), generator=g)
    side = math.isqrt(n)
    if layout == "grouped":  # as many samples per class as classes, grouped by label
        return torch.arange(side).repeat_interleave(side)
    return torch.arange(n // 4).repeat(4)[torch.randperm(n, generator=g)]  # "equal": 4 per class


def batch(layout: str, n: int = 16, d: int = 8, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    labels = labels_for(layout, n, g)
    centers = torch.randn(int(labels.max()) + 1, d, generator=g, dtype=torch.float64)
    emb = centers[labels] + 0.7 * torch.randn(n, d, generator=g, dtype=torch.float64)
    return emb.to(dtype), labels


def build(name: str, make: Callable[[Lib], dict]) -> tuple[Any, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(our_losses, name)(**make(OURS)), getattr(ref_losses, name)(**make(REF))


def run(fn: Any, emb: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, Any]:
    e = emb.clone().requires_grad_()
    loss = fn(e, *args, **kwargs)
    if loss.requires_grad:
        loss.backward()
    return loss.detach(), e.grad


def compare(name, make, emb, labels, indices_tuple=None) -> torch.Tensor:
    """Run both libraries on copies of the same inputs; assert loss and gradients agree."""
    ours, ref = build(name, make)
    (ours_loss, ours_grad), (ref_loss, ref_grad) = (
        run(fn, emb, labels, indices_tuple) for fn in (ours, ref)
    )
    loose = name in FLOAT32_STEP or emb.dtype == torch.float32
    rtol, atol = (2e-5, 1e-6) if loose else (1e-9, 1e-12)
    torch.testing.assert_close(ours_loss.double(), ref_loss.double(), rtol=rtol, atol=atol)
    if ref_grad is None:
        assert ours_grad is None or not ours_grad.any()
    else:
        torch.testing.assert_close(ours_grad, ref_grad, rtol=rtol * 100, atol=atol * 10)
    return ours_loss


@pytest.mark.parametrize(("name", "make", "layout"), CONFIGS, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("seed", [0, 1])
def test_labels(name, make, layout, dtype, seed):
    emb, labels = batch(layout, seed=seed, dtype=dtype)
    value = compare(name, make, emb, labels)
    assert torch.isfinite(value) and value != 0


WEIGHTED = [(c, i) for c, i in zip(CONFIGS, IDS) if c[0] in {"FastAPLoss", "SmoothAPLoss"}]


@pytest.mark.parametrize(
    ("name", "make", "layout"), [c for c, _ in WEIGHTED], ids=[i for _, i in WEIGHTED]
)
@pytest.mark.parametrize(
    "miner",
    [
        lambda: ref_miners.TripletMarginMiner(margin=0.3, type_of_triplets="semihard"),
        lambda: ref_miners.MultiSimilarityMiner(epsilon=0.1),
    ],
    ids=["semihard_triplets", "multisim_pairs"],
)
def test_miner_weights(name, make, layout, miner):
    emb, labels = batch(layout, seed=3)
    indices_tuple = miner()(emb, labels)
    assert len(indices_tuple[0]) > 0
    compare(name, make, emb, labels, indices_tuple)
    empty = tuple(torch.empty(0, dtype=torch.long) for _ in range(3))
    compare(name, make, emb, labels, empty)


@pytest.mark.parametrize(("name", "make", "layout"), CONFIGS, ids=IDS)
@pytest.mark.parametrize("case", ["no_positives", "single_class", "single_sample"])
def test_edge_batches(name, make, layout, case):
    emb, _ = batch("random", n=8, seed=6)
    labels = {
        "no_positives": torch.arange(8),
        "single_class": torch.zeros(8, dtype=torch.long),
        "single_sample": torch.tensor([2]),
    }[case]
    compare(name, make, emb[: len(labels)], labels)


@pytest.mark.parametrize("name", ["FastAPLoss", "PNPLoss", "SmoothAPLoss"])
def test_nan_embeddings_give_nan_in_both(name):
    emb, labels = batch("grouped", seed=2)
    emb[3, 1] = float("nan")
    ours, ref = build(name, kw())
    assert torch.isnan(ours(emb, labels)) and torch.isnan(ref(emb, labels))


def test_unsupported_inputs_raise_value_error_in_both():
    emb, labels = batch("random")
    it = (torch.tensor([0]), torch.tensor([1]), torch.tensor([2]))
    for lib, dist_lib in ((our_losses, our_distances), (ref_losses, ref_distances)):
        with pytest.raises(ValueError):
            lib.PNPLoss()(emb, labels, it)
        with pytest.raises(ValueError):
            lib.RankedListLoss(0.4, 1.0)(emb, labels, it)
        for cls in (lib.FastAPLoss, lib.PNPLoss, lib.SmoothAPLoss):
            with pytest.raises(ValueError):
                cls()(emb, labels, ref_emb=emb.clone(), ref_labels=labels)
        with pytest.raises(ValueError):
            lib.PNPLoss(variant="X")
        with pytest.raises(AssertionError):
            lib.RankedListLoss(0.4, 1.0, imbalance=1.5)
        with pytest.raises(AssertionError):
            lib.FastAPLoss(distance=dist_lib.CosineSimilarity())
        with pytest.raises(ValueError):
            lib.SmoothAPLoss()(emb[:3], torch.tensor([0, 0, 1]))


def test_ranked_list_warns_like_the_reference():
    for lib in (our_losses, ref_losses):
        with pytest.warns(UserWarning, match="too high"):
            lib.RankedListLoss(0.4, 6.0)


def test_pnp_loss_dict_matches():
    emb, labels = batch("random")
    ours = our_losses.PNPLoss(reducer=our_reducers.DoNothingReducer())(emb, labels)["loss"]
    ref = ref_losses.PNPLoss(reducer=ref_reducers.DoNothingReducer())(emb, labels)["loss"]
    assert ours["reduction_type"] == ref["reduction_type"]
    assert torch.equal(ours["indices"], ref["indices"])
    torch.testing.assert_close(ours["losses"], ref["losses"], rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------------------------
# VICReg


VIC_CONFIGS = [
    kw(),
    kw(invariance_lambda=10, variance_mu=5, covariance_v=2, eps=1e-3),
    with_reducer("SumReducer"),
]


def views(n: int = 16, d: int = 8, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    return x.to(dtype), (x + 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64)).to(dtype)


@pytest.mark.parametrize("make", VIC_CONFIGS, ids=["default", "args", "sum"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("second_view", [True, False])
def test_vicreg(make, dtype, second_view):
    x, y = views(dtype=dtype)
    ours, ref = build("VICRegLoss", make)
    results = []
    for fn in (ours, ref):
        a = x.clone().requires_grad_()
        b = y.clone().requires_grad_() if second_view else None
        loss = fn(a, ref_emb=b)
        loss.backward()
        results.append((loss.detach(), a.grad, None if b is None else b.grad))
    rtol, atol = (1e-9, 1e-12) if dtype == torch.float64 else (1e-5, 1e-5)
    for got, exp in zip(results[0], results[1], strict=True):
        if exp is not None:
            torch.testing.assert_close(got, exp, rtol=rtol, atol=atol)


def test_vicreg_loss_dict_matches():
    x, y = views()
    ours = our_losses.VICRegLoss(reducer=our_reducers.DoNothingReducer())(x, ref_emb=y)
    ref = ref_losses.VICRegLoss(reducer=ref_reducers.DoNothingReducer())(x, ref_emb=y)
    assert list(ours) == list(ref)
    for name in ref:
        assert ours[name]["reduction_type"] == ref[name]["reduction_type"]
        torch.testing.assert_close(ours[name]["losses"], ref[name]["losses"], rtol=1e-9, atol=1e-12)


def test_vicreg_forbidden_arguments_in_both():
    x, y = views()
    for lib, dist_lib, reg_lib in (
        (our_losses, our_distances, our_regularizers),
        (ref_losses, ref_distances, ref_regularizers),
    ):
        with pytest.raises(ValueError):
            lib.VICRegLoss(distance=None)
        with pytest.raises(ValueError):
            lib.VICRegLoss(distance=dist_lib.LpDistance())
        with pytest.raises(ValueError):
            lib.VICRegLoss(embedding_regularizer=reg_lib.LpRegularizer())
        with pytest.raises(ValueError):
            lib.VICRegLoss()(x, torch.zeros(16, dtype=torch.long), ref_emb=y)
        with pytest.raises(ValueError):
            lib.VICRegLoss()(x, None, (torch.tensor([0]),) * 3, ref_emb=y)


# --------------------------------------------------------------------------------------------
# documented differences (docs/compatibility.md)


def test_smooth_ap_float64_output_differs():
    emb, labels = batch("grouped")
    ours, ref = our_losses.SmoothAPLoss()(emb, labels), ref_losses.SmoothAPLoss()(emb, labels)
    assert ref.dtype == torch.float32 and ours.dtype == torch.float64
    torch.testing.assert_close(ours, ref.double(), rtol=1e-6, atol=1e-7)


def test_smooth_ap_user_reducer_with_embedding_regularizer_differs():
    emb, labels = batch("grouped")
    ours = our_losses.SmoothAPLoss(
        reducer=our_reducers.SumReducer(), embedding_regularizer=our_regularizers.LpRegularizer()
    )(emb, labels)
    ref = ref_losses.SmoothAPLoss(
        reducer=ref_reducers.SumReducer(), embedding_regularizer=ref_regularizers.LpRegularizer()
    )(emb, labels)
    reg = ref_regularizers.LpRegularizer()(emb).mean()
    ap = ref_losses.SmoothAPLoss(reducer=ref_reducers.DoNothingReducer())(emb, labels)["ap_loss"]
    # the reference reduced the AP term with MeanReducer, pml with the user's SumReducer
    torch.testing.assert_close(
        ref.double(), ap["losses"].double().mean() + reg, rtol=1e-6, atol=1e-7
    )
    torch.testing.assert_close(ours, ap["losses"].double().sum() + reg, rtol=1e-6, atol=1e-7)


def test_ranked_list_nan_embeddings_differ():
    emb, labels = batch("random")
    emb[0, 0] = float("nan")
    assert torch.isfinite(ref_losses.RankedListLoss(0.4, 1.0)(emb, labels))
    assert torch.isnan(our_losses.RankedListLoss(0.4, 1.0)(emb, labels))


def test_ranked_list_empty_batch_differs():
    """Reference: the mean of no rows is NaN; pml: the zero loss."""
    emb, labels = torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)
    assert ref_losses.RankedListLoss(0.4, 1.0)(emb, labels).isnan()
    assert our_losses.RankedListLoss(0.4, 1.0)(emb, labels).item() == 0


def test_invalid_hyper_parameters_differ():
    emb, labels = batch("grouped")
    with pytest.raises(ZeroDivisionError):
        ref_losses.FastAPLoss(num_bins=0)(emb, labels)
    with pytest.raises(ValueError, match="num_bins"):
        our_losses.FastAPLoss(num_bins=0)
    assert ref_losses.FastAPLoss(num_bins=2.5).num_bins == 2
    with pytest.raises(TypeError, match="num_bins"):
        our_losses.FastAPLoss(num_bins=2.5)
    assert torch.isnan(ref_losses.PNPLoss(anneal=0)(emb, labels))
    with pytest.raises(ValueError, match="anneal"):
        our_losses.PNPLoss(anneal=0)
    with pytest.raises(ZeroDivisionError):
        ref_losses.PNPLoss(variant="Ib", b=0)(emb, labels)
    with pytest.raises(ValueError, match="b must be"):
        our_losses.PNPLoss(variant="Ib", b=0)
    assert torch.isnan(ref_losses.SmoothAPLoss(temperature=0)(emb, labels))
    with pytest.raises(ValueError, match="temperature"):
        our_losses.SmoothAPLoss(temperature=0)
    x, y = views()
    assert torch.isnan(ref_losses.VICRegLoss(eps=-1)(x, ref_emb=y))
    with pytest.raises(ValueError, match="eps"):
        our_losses.VICRegLoss(eps=-1)


def test_smooth_ap_labels_differ():
    emb, labels = batch("grouped")
    with pytest.raises(RuntimeError):
        ref_losses.SmoothAPLoss()(emb, labels - 1)
    torch.testing.assert_close(
        our_losses.SmoothAPLoss()(emb, labels - 1).double(),
        ref_losses.SmoothAPLoss()(emb, labels).double(),
        rtol=1e-6,
        atol=1e-7,
    )
    empty, none = torch.zeros(0, 8), torch.zeros(0, dtype=torch.long)
    with pytest.raises(ValueError):
        ref_losses.SmoothAPLoss()(empty, none)
    assert our_losses.SmoothAPLoss()(empty, none).item() == 0


def test_vicreg_bad_batches_differ():
    x, y = views()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.isnan(ref_losses.VICRegLoss()(x[:1], ref_emb=y[:1]))
    with pytest.raises(ValueError, match="at least 2"):
        our_losses.VICRegLoss()(x[:1], ref_emb=y[:1])
    with pytest.raises(RuntimeError):
        ref_losses.VICRegLoss()(x, ref_emb=y[:5])
    with pytest.raises(ValueError, match="ref_emb"):
        our_losses.VICRegLoss()(x, ref_emb=y[:5])
