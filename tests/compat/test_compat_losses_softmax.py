"""Softmax-style losses vs the reference: NTXent, TupletMargin, Angular, NPairs, NCA, Instance.

Same constructor arguments, same inputs (float64), same loss values and gradients. Where pml
fixes a reference "Known issue" the test asserts the documented difference instead
(docs/compatibility.md, section pml-losses).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.nn import functional as F

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


def no_kwargs(lib: Lib) -> dict:
    return {}


def kw(**values: Any) -> Callable[[Lib], dict]:
    def make(lib: Lib) -> dict:
        return dict(values)

    return make


def with_distance(name: str, **dist_kwargs: Any) -> Callable[[Lib], dict]:
    def make(lib: Lib) -> dict:
        return {"distance": getattr(lib["distances"], name)(**dist_kwargs)}

    return make


def do_nothing(lib: Lib) -> dict:
    return {"reducer": lib["reducers"].DoNothingReducer()}


def sum_reducer(lib: Lib) -> dict:
    return {"reducer": lib["reducers"].SumReducer()}


#: (class, kwargs factory); Angular and Instance are compared where their fixes agree
CONFIGS = [
    ("NTXentLoss", no_kwargs),
    ("NTXentLoss", kw(temperature=0.3)),
    ("NTXentLoss", with_distance("LpDistance")),
    ("NTXentLoss", sum_reducer),
    ("TupletMarginLoss", no_kwargs),
    ("TupletMarginLoss", kw(margin=10, scale=16)),
    ("NPairsLoss", no_kwargs),
    ("NPairsLoss", with_distance("DotProductSimilarity", normalize_embeddings=False)),
    ("NPairsLoss", with_distance("LpDistance")),
    ("NCALoss", no_kwargs),
    ("NCALoss", kw(softmax_scale=2)),
    ("NCALoss", with_distance("CosineSimilarity")),
    ("AngularLoss", no_kwargs),
    ("AngularLoss", kw(alpha=35)),
]
IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CONFIGS)]
ACCEPTS_REF = {"NTXentLoss", "TupletMarginLoss", "NCALoss", "AngularLoss"}
ACCEPTS_TUPLE = {"NTXentLoss", "TupletMarginLoss", "NPairsLoss", "NCALoss", "AngularLoss"}


def build(name: str, make: Callable[[Lib], dict]) -> tuple[Any, Any]:
    return getattr(our_losses, name)(**make(OURS)), getattr(ref_losses, name)(**make(REF))


def batch(n: int = 24, d: int = 8, classes: int = 6, seed: int = 0, unit: bool = False):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    centers = torch.randn(classes, d, generator=g, dtype=torch.float64)
    emb = centers[labels] + 0.7 * torch.randn(n, d, generator=g, dtype=torch.float64)
    if unit:  # AngularLoss: raw == normalised negatives, where pml and the reference agree
        emb = F.normalize(emb)
    return emb, labels


def compare(
    name: str,
    make: Callable[[Lib], dict],
    emb: torch.Tensor,
    labels: torch.Tensor | None,
    indices_tuple: tuple | None = None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run both libraries on copies of the same inputs; assert loss and gradients agree."""
    ours, ref = build(name, make)
    outs, grads = [], []
    for fn in (ours, ref):
        e = emb.clone().requires_grad_()
        r = None if ref_emb is None else ref_emb.clone().requires_grad_()
        loss = fn(e, labels, indices_tuple, r, ref_labels)
        if loss.requires_grad:
            loss.backward()
        outs.append(loss.detach())
        grads.append((e.grad, None if r is None else r.grad))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-9, atol=1e-12, equal_nan=True)
    for inp, ours_g, ref_g in zip((emb, ref_emb), grads[0], grads[1], strict=True):
        if ref_g is None:
            assert ours_g is None or (ours_g == 0).all()
            continue
        if name == "AngularLoss":
            # unit-norm inputs: the reference differentiates the raw negatives, pml their
            # normalisation; pml's gradient is the reference's projected on the unit sphere
            x = inp.to(ref_g.dtype)
            ref_g = ref_g - (ref_g * x).sum(1, keepdim=True) * x
        torch.testing.assert_close(ours_g, ref_g, rtol=1e-7, atol=1e-10)
    return outs[0]


def unit_if_angular(name: str) -> bool:
    return name == "AngularLoss"


@pytest.mark.parametrize(("name", "make"), CONFIGS, ids=IDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_labels(name, make, seed):
    emb, labels = batch(seed=seed, unit=unit_if_angular(name))
    value = compare(name, make, emb, labels)
    assert torch.isfinite(value) and value != 0


@pytest.mark.parametrize(("name", "make"), CONFIGS, ids=IDS)
@pytest.mark.parametrize(
    "miner",
    [
        lambda: ref_miners.MultiSimilarityMiner(epsilon=0.1),
        lambda: ref_miners.PairMarginMiner(pos_margin=0.3, neg_margin=0.9),
        lambda: ref_miners.TripletMarginMiner(margin=0.3, type_of_triplets="all"),
        lambda: ref_miners.BatchHardMiner(),
    ],
    ids=["multisim_pairs", "pair_margin_pairs", "triplets_all", "batch_hard_triplets"],
)
def test_miner_indices_tuple(name, make, miner):
    if name not in ACCEPTS_TUPLE:
        pytest.skip("no indices_tuple")
    emb, labels = batch(seed=3, unit=unit_if_angular(name))
    indices_tuple = miner()(emb, labels)
    assert len(indices_tuple[0]) > 0
    compare(name, make, emb, labels, indices_tuple)
    if name in {"NTXentLoss", "TupletMarginLoss"}:  # labels not needed with a tuple
        compare(name, make, emb, None, indices_tuple)


@pytest.mark.parametrize(("name", "make"), CONFIGS, ids=IDS)
def test_ref_emb(name, make):
    if name not in ACCEPTS_REF:
        pytest.skip("ref_emb not supported")
    emb, labels = batch(seed=4, unit=unit_if_angular(name))
    ref_emb, ref_labels = batch(n=17, seed=5, unit=unit_if_angular(name))
    compare(name, make, emb, labels, ref_emb=ref_emb, ref_labels=ref_labels)
    # same objects as ref_emb / ref_labels, and an equal copy of the labels (keeps i == i)
    compare(name, make, emb, labels, ref_emb=emb, ref_labels=labels)
    if name != "TupletMarginLoss":  # self pairs: cos(i, i) may round above 1 (NaN there)
        compare(name, make, emb, labels, ref_emb=emb, ref_labels=labels.clone())


@pytest.mark.parametrize(("name", "make"), CONFIGS, ids=IDS)
@pytest.mark.parametrize("case", ["no_positives", "single_class", "single_sample", "two_labels"])
def test_edge_batches(name, make, case):
    emb, _ = batch(n=8, seed=6, unit=unit_if_angular(name))
    labels = {
        "no_positives": torch.arange(8),
        "single_class": torch.zeros(8, dtype=torch.long),
        "single_sample": torch.tensor([2]),
        "two_labels": torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]),
    }[case]
    emb = emb[: len(labels)]
    if name == "NCALoss" and case == "no_positives":
        pytest.skip("documented difference: test_nca_all_distinct_labels_differs")
    compare(name, make, emb, labels)


def test_empty_indices_tuple():
    emb, labels = batch()
    empty = tuple(torch.empty(0, dtype=torch.long) for _ in range(3))
    for name in ("NTXentLoss", "TupletMarginLoss", "AngularLoss", "NCALoss"):
        compare(name, no_kwargs, emb, labels, empty)


def test_ntxent_saturation_matches():
    emb = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 2])
    compare("NTXentLoss", kw(temperature=0.001), emb, labels)
    compare("NTXentLoss", kw(temperature=0.001), emb.float(), labels)


@pytest.mark.parametrize("name", ["NTXentLoss", "TupletMarginLoss", "NCALoss", "NPairsLoss"])
def test_float32_close(name):
    emb, labels = batch(seed=8)
    ours, ref = build(name, no_kwargs)
    torch.testing.assert_close(ours(emb.float(), labels), ref(emb.float(), labels))


@pytest.mark.parametrize("name", ["NTXentLoss", "TupletMarginLoss", "AngularLoss", "NPairsLoss"])
def test_unreduced_loss_dict(name):
    emb, labels = batch(seed=9, unit=unit_if_angular(name))
    ours, ref = build(name, do_nothing)
    a, b = ours(emb, labels)["loss"], ref(emb, labels)["loss"]
    assert a["reduction_type"] == b["reduction_type"]
    assert a["losses"].shape == b["losses"].shape
    torch.testing.assert_close(a["losses"], b["losses"], rtol=1e-9, atol=1e-12)
    idx_a = a["indices"] if isinstance(a["indices"], tuple) else (a["indices"],)
    idx_b = b["indices"] if isinstance(b["indices"], tuple) else (b["indices"],)
    assert all(torch.equal(x, y) for x, y in zip(idx_a, idx_b, strict=True))


def test_records_and_stats_match():
    emb, labels = batch(seed=10)
    for name in ("NTXentLoss", "TupletMarginLoss", "AngularLoss", "NPairsLoss", "NCALoss"):
        ours, ref = build(name, kw(collect_stats=True))
        assert getattr(ours, "_record_these", None) == getattr(ref, "_record_these", None)
        assert getattr(ours, "_record_these_stats", []) == getattr(ref, "_record_these_stats", [])
    ours, ref = build("TupletMarginLoss", kw(collect_stats=True))
    ours(emb, labels)
    ref(emb, labels)
    assert ours.margin == pytest.approx(float(ref.margin), rel=1e-15)
    assert ours.avg_pos_angle == pytest.approx(ref.avg_pos_angle, rel=1e-9)
    assert ours.avg_neg_angle == pytest.approx(ref.avg_neg_angle, rel=1e-9)
    ours, ref = build("NPairsLoss", no_kwargs)
    ours(emb, labels)
    ref(emb, labels)
    assert ours.num_pairs == ref.num_pairs
    unit = F.normalize(emb)
    ours, ref = build("AngularLoss", kw(collect_stats=True))
    ours(unit, labels)
    ref(unit, labels)
    assert ours.average_angle == pytest.approx(ref.average_angle, rel=1e-9)
    assert torch.equal(ours.alpha, ref.alpha) and ours.alpha.dtype == ref.alpha.dtype


# ---------------------------------------------------------------- documented differences


def test_angular_raw_negatives_differs():
    """Reference: raw ref embeddings in the negative term; pml normalises them."""
    emb, labels = batch(seed=11)
    ours, ref = build("AngularLoss", no_kwargs)
    assert not torch.allclose(ours(emb, labels), ref(emb, labels))
    torch.testing.assert_close(ours(emb * 3, labels), ours(emb, labels))
    torch.testing.assert_close(ours(emb, labels), ref(F.normalize(emb), labels))


def test_instance_targets_differ_for_class_labels():
    """Reference: target column rank(label); pml: every column with the same label."""
    emb, labels = batch(seed=12)
    ours, ref = build("InstanceLoss", no_kwargs)
    assert not torch.allclose(ours(emb, labels), ref(emb, labels))
    ids = torch.arange(len(emb))  # instance ids in batch order: identical
    compare("InstanceLoss", no_kwargs, emb, ids)
    compare("InstanceLoss", kw(gamma=10), emb, ids)


def test_nca_all_distinct_labels_differs():
    """Reference: mean over no rows = NaN; pml: the zero loss."""
    emb, _ = batch(n=8, seed=13)
    ours, ref = build("NCALoss", no_kwargs)
    assert ref(emb, torch.arange(8)).isnan()
    assert ours(emb, torch.arange(8)).item() == 0


def test_tuplet_duplicate_embeddings_differ():
    """Reference: acos of cosines rounding above 1 gives NaN; pml clamps (angle 0)."""
    emb, labels = batch(n=8, seed=14)
    emb = torch.cat([emb, emb]).float()
    labels = torch.cat([labels, labels])
    ours, ref = build("TupletMarginLoss", no_kwargs)
    assert ref(emb, labels).isnan()
    e = emb.clone().requires_grad_()
    our_value = ours(e, labels)
    our_value.backward()
    assert torch.isfinite(our_value) and torch.isfinite(e.grad).all()
