"""Proxy losses vs the reference: ProxyAnchor, ProxyNCA, SoftTriple, P2SGrad, Manifold.

Both libraries are built after the same seed (the parameters must come out identical), then
fed copies of the same inputs; losses, embedding gradients and parameter gradients must agree
(float64 modules: 1e-9; float32: 1e-5; ManifoldLoss inverts in float32 in both libraries:
float32 tolerances). Where pml fixes a reference "Known issue" the test asserts the documented
difference instead (docs/compatibility.md, section pml-losses).
"""

from __future__ import annotations

import math
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
C, D, K = 6, 8, 6


def kw(**values: Any) -> Callable[[Lib], dict]:
    return lambda lib: dict(values)


def with_distance(name: str, **values: Any) -> Callable[[Lib], dict]:
    return lambda lib: {**values, "distance": getattr(lib["distances"], name)()}


def with_weight_reg(name: str, weight: float = 0.5, **values: Any) -> Callable[[Lib], dict]:
    def make(lib: Lib) -> dict:
        reg_kwargs = {"num_classes": C, "centers_per_class": 3} if name == "SparseCenters" else {}
        reg = getattr(lib["regularizers"], f"{name}Regularizer")(**reg_kwargs)
        return {**values, "weight_regularizer": reg, "weight_reg_weight": weight}

    return make


CLASS_ARGS = {"num_classes": C, "embedding_size": D}
CONFIGS = [
    ("ProxyAnchorLoss", kw(**CLASS_ARGS)),
    ("ProxyAnchorLoss", kw(**CLASS_ARGS, margin=0.2, alpha=16)),
    ("ProxyAnchorLoss", with_distance("LpDistance", **CLASS_ARGS)),
    ("ProxyAnchorLoss", with_weight_reg("CenterInvariant", **CLASS_ARGS)),
    ("ProxyNCALoss", kw(**CLASS_ARGS)),
    ("ProxyNCALoss", kw(**CLASS_ARGS, softmax_scale=3)),
    ("ProxyNCALoss", with_distance("CosineSimilarity", **CLASS_ARGS)),
    ("ProxyNCALoss", with_weight_reg("Lp", 0.3, **CLASS_ARGS)),
    ("SoftTripleLoss", kw(**CLASS_ARGS)),
    ("SoftTripleLoss", kw(**CLASS_ARGS, centers_per_class=3, la=10, gamma=0.2, margin=0.05)),
    ("SoftTripleLoss", with_weight_reg("SparseCenters", 0.2, **CLASS_ARGS, centers_per_class=3)),
    ("SoftTripleLoss", with_distance("DotProductSimilarity", **CLASS_ARGS)),
    ("P2SGradLoss", kw(descriptors_dim=D, num_classes=C)),
    ("ManifoldLoss", kw(l=D, K=K)),
    ("ManifoldLoss", kw(l=D, K=K, lambdaC=0.5, alpha=0.6, margin=0.01)),
    ("ManifoldLoss", with_distance("LpDistance", l=D, K=K)),
]
IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CONFIGS)]
TAKES_TUPLE = {"ProxyAnchorLoss", "ProxyNCALoss", "SoftTripleLoss"}


def build(name: str, make: Callable[[Lib], dict], seed: int = 0) -> tuple[Any, Any]:
    """Both libraries' objects, each built right after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    ours = getattr(our_losses, name)(**make(OURS))
    torch.manual_seed(seed)
    ref = getattr(ref_losses, name)(**make(REF))
    return ours, ref


def batch(n: int = 24, d: int = D, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, C, (n,), generator=g)
    centers = torch.randn(C, d, generator=g, dtype=torch.float64)
    emb = centers[labels] + 0.7 * torch.randn(n, d, generator=g, dtype=torch.float64)
    return emb, labels


def meta_classes(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.arange(K), torch.randint(0, K, (n - K,), generator=g)])


def run(fn: Any, name: str, emb: torch.Tensor, labels, indices_tuple=None, seed=None):
    """Loss, embedding gradient and parameter gradients of one call."""
    e = emb.clone().requires_grad_()
    if seed is not None:
        torch.manual_seed(seed)
    loss = fn(e, None if name == "ManifoldLoss" else labels, indices_tuple)
    loss.backward()
    params = {n: p.grad.detach().clone() for n, p in fn.named_parameters()}
    return loss.detach(), e.grad, params


def tolerances(name: str, dtype: torch.dtype) -> dict:
    if name == "ManifoldLoss" or dtype == torch.float32:
        return {"rtol": 1e-4, "atol": 1e-6}
    return {"rtol": 1e-9, "atol": 1e-12}


def compare(ours, ref, name, emb, labels, indices_tuple=None, seed=None) -> torch.Tensor:
    """Same loss, embedding gradient and parameter gradients (parameters compared first)."""
    for (n1, p1), (n2, p2) in zip(ours.named_parameters(), ref.named_parameters(), strict=True):
        assert n1 == n2 and torch.equal(p1.detach().to(p2.dtype), p2.detach()), n1
    a = run(ours, name, emb, labels, indices_tuple, seed)
    b = run(ref, name, emb, labels, indices_tuple, seed)
    tol = tolerances(name, emb.dtype)
    torch.testing.assert_close(a[0], b[0].to(a[0].dtype), **tol)
    torch.testing.assert_close(a[1], b[1], **tol)
    assert a[2].keys() == b[2].keys()
    for key in a[2]:
        torch.testing.assert_close(a[2][key], b[2][key].to(a[2][key].dtype), **tol)
    return a[0]


def inputs_for(name: str, n: int = 24, seed: int = 0):
    emb, labels = batch(n, seed=seed)
    if name == "ManifoldLoss":
        return emb, None, meta_classes(n, seed)
    return emb, labels, None


@pytest.mark.parametrize(("name", "make"), CONFIGS, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_loss_and_gradients(name, make, dtype):
    ours, ref = build(name, make)
    if dtype == torch.float64:
        ours, ref = ours.double(), ref.double()
    emb, labels, meta = inputs_for(name)
    value = compare(ours, ref, name, emb.to(dtype), labels, meta)
    assert torch.isfinite(value) and value != 0
    # a second call: the parameters (P2SGrad: renormalised in place) are still in step
    emb, labels, meta = inputs_for(name, seed=1)
    compare(ours, ref, name, emb.to(dtype), labels, meta)


@pytest.mark.parametrize(("name", "make"), CONFIGS, ids=IDS)
def test_state_dict_of_the_reference_loads_strictly(name, make):
    """A reference checkpoint loads into pml (strict) and gives the same loss and gradients."""
    torch.manual_seed(123)
    ours = getattr(our_losses, name)(**make(OURS))
    torch.manual_seed(7)
    ref = getattr(ref_losses, name)(**make(REF))
    ours.load_state_dict(ref.state_dict(), strict=True)
    emb, labels, meta = inputs_for(name, seed=2)
    compare(ours.double(), ref.double(), name, emb, labels, meta)
    ref.load_state_dict(ours.state_dict(), strict=True)  # and back


@pytest.mark.parametrize(("name", "make"), [c for c in CONFIGS if c[0] in TAKES_TUPLE])
@pytest.mark.parametrize(
    "miner",
    [
        lambda: ref_miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard"),
        lambda: ref_miners.MultiSimilarityMiner(epsilon=0.1),
    ],
    ids=["semihard_triplets", "multisim_pairs"],
)
def test_miner_indices_tuple(name, make, miner):
    ours, ref = build(name, make)
    emb, labels = batch(seed=3)
    indices_tuple = miner()(emb, labels)
    assert len(indices_tuple[0]) > 0
    compare(ours.double(), ref.double(), name, emb, labels, indices_tuple)


@pytest.mark.parametrize("name", ["ProxyAnchorLoss", "ProxyNCALoss", "SoftTripleLoss"])
@pytest.mark.parametrize("case", ["all_distinct", "single_class", "single_sample"])
def test_edge_batches(name, case):
    ours, ref = build(name, kw(**CLASS_ARGS))
    emb, _ = batch(n=C, seed=6)
    labels = {
        "all_distinct": torch.arange(C),
        "single_class": torch.full((C,), 2),
        "single_sample": torch.tensor([4]),
    }[case]
    compare(ours.double(), ref.double(), name, emb[: len(labels)], labels)


def test_manifold_random_meta_classes_match_the_reference_draws():
    ours, ref = build("ManifoldLoss", kw(l=D, K=K))
    emb, _ = batch(n=20, seed=4)
    compare(ours.double(), ref.double(), "ManifoldLoss", emb, None, None, seed=5)


@pytest.mark.parametrize("name", ["ProxyAnchorLoss", "ProxyNCALoss", "SoftTripleLoss"])
def test_get_logits_and_unreduced_loss_dict(name):
    ours, ref = build(
        name, lambda lib: {**CLASS_ARGS, "reducer": lib["reducers"].DoNothingReducer()}
    )
    emb, labels = batch(seed=7)
    torch.testing.assert_close(ours.get_logits(emb.float()), ref.get_logits(emb.float()))
    a, b = ours(emb, labels), ref(emb, labels)
    assert list(a) == list(b)
    for key in a:
        assert a[key]["reduction_type"] == b[key]["reduction_type"]
        torch.testing.assert_close(a[key]["losses"], b[key]["losses"], rtol=1e-9, atol=1e-12)
        assert torch.equal(a[key]["indices"], b[key]["indices"])
        if "divisor" in b[key]:
            assert int(a[key]["divisor"]) == b[key]["divisor"]


@pytest.mark.parametrize(("name", "make"), CONFIGS, ids=IDS)
def test_records_match(name, make):
    ours, ref = build(name, lambda lib: {**make(lib), "collect_stats": True})
    assert getattr(ours, "_record_these", []) == getattr(ref, "_record_these", [])
    assert getattr(ours, "_record_these_stats", []) == getattr(ref, "_record_these_stats", [])
    for attr in getattr(ref, "_record_these", []):
        if not (name == "ProxyNCALoss" and attr == "num_classes") and not (
            name == "SoftTripleLoss" and attr == "embedding_size"
        ):
            assert getattr(ours, attr) == pytest.approx(getattr(ref, attr)), attr


# ---------------------------------------------------------------- documented differences


def test_unassigned_attributes_read_their_values():
    """Reference: ProxyNCALoss.num_classes and SoftTripleLoss.embedding_size read 0."""
    ours, ref = build("ProxyNCALoss", kw(**CLASS_ARGS))
    assert ref.num_classes == 0 and ours.num_classes == C
    ours, ref = build("SoftTripleLoss", kw(**CLASS_ARGS))
    assert ref.embedding_size == 0 and ours.embedding_size == D


@pytest.mark.parametrize(
    "name", ["ProxyAnchorLoss", "ProxyNCALoss", "SoftTripleLoss", "P2SGradLoss"]
)
def test_half_embeddings_keep_float32_parameters(name):
    """Reference: the parameter becomes float16 for good; pml: float32, same value."""
    make = kw(descriptors_dim=D, num_classes=C) if name == "P2SGradLoss" else kw(**CLASS_ARGS)
    ours, ref = build(name, make)
    emb, labels = batch(seed=8)
    a, b = ours(emb.half(), labels), ref(emb.half(), labels)
    assert next(ref.parameters()).dtype == torch.float16
    assert next(ours.parameters()).dtype == torch.float32
    assert a.dtype == torch.float16 and torch.isfinite(a)
    torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=2e-2)


def test_proxy_nca_underflowing_rows_are_kept():
    """Reference: rows with p_i == 0 dropped, NaN when all are; pml: the exact -log p_i."""
    ours, ref = build("ProxyNCALoss", kw(**CLASS_ARGS, softmax_scale=5000))
    emb, labels = batch(n=8, seed=9)
    # every embedding sits on another class's proxy: p_i underflows in every row
    with torch.no_grad():
        ref.proxies.copy_(torch.randn(C, D))
    ours.load_state_dict(ref.state_dict())
    wrong = (labels + 1) % C
    emb = ref.proxies.detach().double()[wrong] + 1e-3 * emb
    assert ref.double()(emb, labels).isnan()
    value = ours.double()(emb, labels)
    assert torch.isfinite(value) and value > 100


def test_soft_triple_needs_a_similarity():
    """Both raise AssertionError (pml: InvalidArgumentError, with a message)."""
    with pytest.raises(AssertionError):
        ref_losses.SoftTripleLoss(C, D, distance=ref_distances.LpDistance())
    with pytest.raises(AssertionError, match="similarity"):
        our_losses.SoftTripleLoss(C, D, distance=our_distances.LpDistance())


def test_p2sgrad_without_labels():
    """Reference: AttributeError; pml: ValueError naming labels."""
    ours, ref = build("P2SGradLoss", kw(descriptors_dim=D, num_classes=C))
    emb, _ = batch(seed=10)
    with pytest.raises(AttributeError):
        ref(emb)
    with pytest.raises(ValueError, match="labels"):
        ours(emb)


def test_p2sgrad_zero_column():
    """Both raise AssertionError (pml: InvalidArgumentError, with a message)."""
    ours, ref = build("P2SGradLoss", kw(descriptors_dim=D, num_classes=C))
    emb, labels = batch(seed=10)
    for fn in (ours, ref):
        with torch.no_grad():
            fn.weight[:, 1] = 0
    with pytest.raises(AssertionError):
        ref(emb.float(), labels)
    with pytest.raises(AssertionError, match="column 1"):
        ours(emb.float(), labels)


def test_manifold_lambda_c_inf_is_the_context_term():
    """Reference: inf; pml: the context term alone (what the reference documents)."""
    ours, ref = build("ManifoldLoss", kw(l=D, K=K, lambdaC=math.inf))
    emb, _, meta = inputs_for("ManifoldLoss", seed=11)
    assert torch.isinf(ref(emb, indices_tuple=meta)).all()
    value = ours(emb, indices_tuple=meta)
    one, _ = build("ManifoldLoss", kw(l=D, K=K, lambdaC=1.0))
    zero, _ = build("ManifoldLoss", kw(l=D, K=K, lambdaC=0.0))
    expected = one(emb, indices_tuple=meta) - zero(emb, indices_tuple=meta)
    torch.testing.assert_close(value, expected)


def test_manifold_half_precision_does_not_overflow():
    """Reference in half (module and inputs): NaN; pml computes in float32."""

    def make(lib: Lib) -> dict:
        return {"l": D, "K": K, "distance": lib["distances"].LpDistance(normalize_embeddings=False)}

    ours, ref = build("ManifoldLoss", make)
    emb, _, meta = inputs_for("ManifoldLoss", seed=12)
    expected = ours(emb.half().float(), indices_tuple=meta)
    assert ref.half()(emb.half(), indices_tuple=meta).isnan()
    value = ours.half()(emb.half(), indices_tuple=meta)
    assert value.dtype == torch.float16 and torch.isfinite(value)
    torch.testing.assert_close(value.float(), expected, rtol=2e-2, atol=2e-2)


def test_manifold_bad_meta_classes():
    """Reference: IndexError, a negative-size error, or -1 read as the last proxy."""
    ours, ref = build("ManifoldLoss", kw(l=D, K=K))
    emb, _, meta = inputs_for("ManifoldLoss", seed=13)
    bad = meta.clone()
    bad[0] = -1
    assert torch.isfinite(ref(emb, indices_tuple=bad))  # wrapped around
    with pytest.raises(ValueError, match="indices_tuple"):
        ours(emb, indices_tuple=bad)
    bad[0] = K
    with pytest.raises(IndexError):
        ref(emb, indices_tuple=bad)
    with pytest.raises(ValueError, match="indices_tuple"):
        ours(emb, indices_tuple=bad)
    with pytest.raises(RuntimeError):
        ref(emb[: K - 1])
    with pytest.raises(ValueError, match="at least K"):
        ours(emb[: K - 1])


def test_empty_batch_gives_the_zero_loss():
    """Reference: NaN (the mean of nothing) for all but ProxyAnchor; pml: the zero loss."""
    emb = torch.zeros(0, D, dtype=torch.float64)
    no_labels = torch.zeros(0, dtype=torch.long)
    for name, make in [
        ("ProxyNCALoss", kw(**CLASS_ARGS)),
        ("SoftTripleLoss", kw(**CLASS_ARGS)),
        ("P2SGradLoss", kw(descriptors_dim=D, num_classes=C)),
        ("ManifoldLoss", kw(l=D, K=K)),
    ]:
        ours, ref = build(name, make)
        args = (None, no_labels) if name == "ManifoldLoss" else (no_labels,)
        assert ref.double()(emb, *args).isnan(), name
        assert ours.double()(emb, *args) == 0, name
    ours, ref = build("ProxyAnchorLoss", kw(**CLASS_ARGS))
    assert ours(emb, no_labels) == 0 and ref(emb, no_labels) == 0


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("ProxyAnchorLoss", {**CLASS_ARGS, "alpha": 0}),
        ("ProxyAnchorLoss", {**CLASS_ARGS, "alpha": -1}),
        ("SoftTripleLoss", {**CLASS_ARGS, "la": 0}),
        ("ManifoldLoss", {"l": D, "alpha": 1.0}),
        ("ManifoldLoss", {"l": D, "alpha": 1.5}),
    ],
)
def test_arguments_the_reference_accepted_are_rejected(name, kwargs):
    """Reference: a constant or flipped loss (alpha >= 1: a diverging random walk)."""
    getattr(ref_losses, name)(**kwargs)
    with pytest.raises(ValueError, match=next(k for k in kwargs if k in ("alpha", "la"))):
        getattr(our_losses, name)(**kwargs)


def test_soft_triple_gamma_zero():
    """Reference: ZeroDivisionError; pml: ValueError naming gamma."""
    with pytest.raises(ZeroDivisionError):
        ref_losses.SoftTripleLoss(C, D, gamma=0)
    with pytest.raises(ValueError, match="gamma"):
        our_losses.SoftTripleLoss(C, D, gamma=0)
