"""Margin-softmax classification losses vs the reference: L-Softmax, SphereFace, ArcFace, CosFace,
sub-center ArcFace (and get_outliers), NormalizedSoftmax.

Every comparison builds the reference loss, loads its ``state_dict`` into pml's with
``strict=True`` (same ``W``) and compares the loss and the gradients of the embeddings and of
``W`` on the same inputs. Where pml fixes a reference "Known issue" the test asserts the
documented difference instead (docs/compatibility.md, section pml-losses).
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
C, D = 6, 8


def kw(**values: Any) -> Callable[[Lib], dict]:
    def make(lib: Lib) -> dict:
        return dict(values)

    return make


def with_reg(name: str, weight: float = 0.3, **reg_kwargs: Any) -> Callable[[Lib], dict]:
    def make(lib: Lib) -> dict:
        reg = getattr(lib["regularizers"], name)(**reg_kwargs)
        return {"weight_regularizer": reg, "weight_reg_weight": weight}

    return make


def with_distance(name: str, **dist_kwargs: Any) -> Callable[[Lib], dict]:
    def make(lib: Lib) -> dict:
        return {"distance": getattr(lib["distances"], name)(**dist_kwargs)}

    return make


def with_reducer(name: str) -> Callable[[Lib], dict]:
    def make(lib: Lib) -> dict:
        return {"reducer": getattr(lib["reducers"], name)()}

    return make


#: (class, kwargs factory)
CONFIGS = [
    ("LargeMarginSoftmaxLoss", kw()),
    ("LargeMarginSoftmaxLoss", kw(margin=3, scale=2)),
    ("LargeMarginSoftmaxLoss", with_reg("RegularFaceRegularizer")),
    ("SphereFaceLoss", kw()),
    ("SphereFaceLoss", kw(margin=2, scale=3)),
    ("SphereFaceLoss", with_reg("CenterInvariantRegularizer")),
    ("ArcFaceLoss", kw()),
    ("ArcFaceLoss", kw(margin=10, scale=16)),
    ("ArcFaceLoss", kw(margin=150, scale=8)),  # past π - m: the linear branch
    ("ArcFaceLoss", with_reg("RegularFaceRegularizer", 0.5)),
    ("ArcFaceLoss", with_reducer("SumReducer")),
    ("CosFaceLoss", kw()),
    ("CosFaceLoss", kw(margin=0.2, scale=30)),
    ("CosFaceLoss", with_reg("LpRegularizer")),
    ("SubCenterArcFaceLoss", kw()),
    ("SubCenterArcFaceLoss", kw(sub_centers=2, margin=20, scale=30)),
    (
        "SubCenterArcFaceLoss",
        with_reg("SparseCentersRegularizer", num_classes=C, centers_per_class=3),
    ),
    ("NormalizedSoftmaxLoss", kw()),
    ("NormalizedSoftmaxLoss", kw(temperature=0.5)),
    ("NormalizedSoftmaxLoss", with_reg("LpRegularizer", 0.2)),
    ("NormalizedSoftmaxLoss", with_distance("LpDistance")),
    ("NormalizedSoftmaxLoss", with_distance("DotProductSimilarity", normalize_embeddings=False)),
]
IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CONFIGS)]
NAMES = sorted({name for name, _ in CONFIGS})


def no_kwargs(lib: Lib) -> dict:
    return {}


def build(name: str, make: Callable[[Lib], dict] = no_kwargs, **extra: Any) -> tuple[Any, Any]:
    """The reference loss and pml's, with the reference's ``W`` loaded into pml's (strict)."""
    ref = getattr(ref_losses, name)(num_classes=C, embedding_size=D, **make(REF), **extra)
    ours = getattr(our_losses, name)(num_classes=C, embedding_size=D, **make(OURS), **extra)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref


def batch(n: int = 24, seed: int = 0, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, C, (n,), generator=g)
    centers = torch.randn(C, D, generator=g, dtype=torch.float64)
    emb = centers[labels] + 0.7 * torch.randn(n, D, generator=g, dtype=torch.float64)
    return emb.to(dtype), labels


def compare(
    name: str,
    make: Callable[[Lib], dict],
    emb: torch.Tensor,
    labels: torch.Tensor,
    indices_tuple: tuple | None = None,
    rtol: float = 1e-9,
    atol: float = 1e-12,
) -> torch.Tensor:
    """Both libraries on copies of the same inputs and W: loss, d/d embeddings, d/d W agree."""
    ours, ref = build(name, make)
    if emb.dtype == torch.float64:
        ours, ref = ours.double(), ref.double()
    outs, grads = [], []
    for fn in (ours, ref):
        e = emb.clone().requires_grad_()
        loss = fn(e, labels, indices_tuple)
        loss.backward()
        outs.append(loss.detach())
        grads.append((e.grad, fn.W.grad))
    torch.testing.assert_close(outs[0], outs[1], rtol=rtol, atol=atol)
    for ours_g, ref_g in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(ours_g, ref_g.to(ours_g.dtype), rtol=rtol * 100, atol=atol)
    return outs[0]


@pytest.mark.parametrize(("name", "make"), CONFIGS, ids=IDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_labels_float64(name, make, seed):
    emb, labels = batch(seed=seed)
    value = compare(name, make, emb, labels)
    assert torch.isfinite(value) and value != 0


@pytest.mark.parametrize(("name", "make"), CONFIGS, ids=IDS)
def test_labels_float32(name, make):
    emb, labels = batch(seed=2, dtype=torch.float32)
    compare(name, make, emb, labels, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize(("name", "make"), CONFIGS, ids=IDS)
@pytest.mark.parametrize(
    "miner",
    [
        lambda: ref_miners.MultiSimilarityMiner(epsilon=0.1),
        lambda: ref_miners.TripletMarginMiner(margin=0.3, type_of_triplets="all"),
    ],
    ids=["multisim_pairs", "triplets_all"],
)
def test_miner_indices_tuple_weights(name, make, miner):
    emb, labels = batch(seed=3)
    indices_tuple = miner()(emb, labels)
    assert len(indices_tuple[0]) > 0
    compare(name, make, emb, labels, indices_tuple)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("case", ["distinct", "single_class", "single_sample"])
def test_edge_batches(name, case):
    emb, _ = batch(n=6, seed=6)
    labels = {
        "distinct": torch.arange(6),
        "single_class": torch.zeros(6, dtype=torch.long),
        "single_sample": torch.tensor([2]),
    }[case]
    compare(name, kw(), emb[: len(labels)], labels)


def test_empty_indices_tuple_means_no_miner():
    emb, labels = batch()
    empty = tuple(torch.empty(0, dtype=torch.long) for _ in range(3))
    for name in NAMES:
        compare(name, kw(), emb, labels, empty)


@pytest.mark.parametrize("name", NAMES)
def test_unreduced_loss_dict(name):
    emb, labels = batch(seed=9)
    ours, ref = build(name, kw(), reducer=our_reducers.DoNothingReducer())
    ref.reducer = ref_reducers.DoNothingReducer()
    ours, ref = ours.double(), ref.double()
    a, b = ours(emb, labels)["loss"], ref(emb, labels)["loss"]
    assert a["reduction_type"] == b["reduction_type"] == "element"
    assert a["losses"].shape == b["losses"].shape
    torch.testing.assert_close(a["losses"], b["losses"], rtol=1e-9, atol=1e-12)
    assert torch.equal(a["indices"], b["indices"])


@pytest.mark.parametrize("name", NAMES)
def test_get_logits(name):
    emb, _ = batch(seed=10)
    ours, ref = build(name)
    ours, ref = ours.double(), ref.double()
    torch.testing.assert_close(ours.get_logits(emb), ref.get_logits(emb), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_records_and_stats_match(name):
    emb, labels = batch(seed=11)
    ours, ref = build(name, kw(collect_stats=True))
    assert ours._record_these == ref._record_these
    assert getattr(ours, "_record_these_stats", []) == getattr(ref, "_record_these_stats", [])
    ours, ref = ours.double(), ref.double()
    ours(emb, labels)
    ref(emb, labels)
    for attr in ("margin", "scale", "temperature", "sub_centers"):
        if hasattr(ref, attr):
            assert getattr(ours, attr) == pytest.approx(getattr(ref, attr), rel=1e-15), attr
    if hasattr(ref, "avg_angle"):
        assert ours.avg_angle == pytest.approx(ref.avg_angle, rel=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_seeded_init_draws_the_same_weights(name):
    torch.manual_seed(3)
    ref = getattr(ref_losses, name)(num_classes=C, embedding_size=D)
    torch.manual_seed(3)
    ours = getattr(our_losses, name)(num_classes=C, embedding_size=D)
    assert torch.equal(ours.W, ref.W)


def test_sub_center_get_outliers_for_present_classes():
    emb, labels = batch(n=40, seed=12, dtype=torch.float32)
    ours, ref = build("SubCenterArcFaceLoss")
    for threshold in (75, 40, 20):
        a_out, a_centers = ours.get_outliers(emb, labels, threshold=threshold)
        b_out, b_centers = ref.get_outliers(emb, labels, threshold=threshold)
        assert torch.equal(a_out, b_out.long()) and len(a_out) > 0
        present = torch.unique(labels)
        torch.testing.assert_close(a_centers[:, present], b_centers[:, present])


# ---------------------------------------------------------------- documented differences


def test_arcface_margin_in_radians_is_read_as_degrees_with_a_warning():
    """Both read 0.5 as degrees (2.9 semantics); pml also warns that it looks like radians."""
    emb, labels = batch(seed=13)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import pml.losses._margin_softmax as margin_module

        margin_module._WARNED_RADIANS.discard("ArcFaceLoss")
        compare("ArcFaceLoss", kw(margin=0.5), emb, labels)
    assert any("read as degrees" in str(w.message) for w in caught)


def test_sub_center_arcface_positional_arguments():
    """Reference: KeyError('num_classes') for positional arguments; pml takes them."""
    with pytest.raises(KeyError, match="num_classes"):
        ref_losses.SubCenterArcFaceLoss(C, D)
    ours = our_losses.SubCenterArcFaceLoss(C, D)
    ref = ref_losses.SubCenterArcFaceLoss(num_classes=C, embedding_size=D)
    ours.load_state_dict(ref.state_dict(), strict=True)
    emb, labels = batch(seed=14)
    torch.testing.assert_close(ours(emb.float(), labels), ref(emb.float(), labels))


def test_get_outliers_absent_classes_and_empty_result():
    """Reference: uninitialised columns for absent classes, a float32 empty result."""
    emb, labels = batch(n=12, seed=15, dtype=torch.float32)
    labels = labels % 3  # classes 3..5 absent
    ours, ref = build("SubCenterArcFaceLoss")
    _, a_centers = ours.get_outliers(emb, labels)
    _, b_centers = ref.get_outliers(emb, labels)
    assert a_centers[:, 3:].isnan().all()
    torch.testing.assert_close(a_centers[:, :3], b_centers[:, :3])
    a_out, _ = ours.get_outliers(emb, labels, threshold=180)
    b_out, _ = ref.get_outliers(emb, labels, threshold=180)
    assert b_out.numel() == 0 and b_out.dtype == torch.float32
    assert a_out.numel() == 0 and a_out.dtype == torch.int64


@pytest.mark.parametrize(("name", "scale"), [("LargeMarginSoftmaxLoss", 1), ("SphereFaceLoss", 4)])
def test_float16_embeddings_of_large_norm(name, scale):
    """Reference: logits computed in float16 overflow (NaN); pml computes in float32."""
    ours, ref = build(name, scale=scale)
    W = ref.W.detach().clone()
    g = torch.Generator().manual_seed(1)
    labels = torch.tensor([0, 0, 1, 1, 2, 3, 3, 4, 5, 1])
    near = torch.nn.functional.normalize(W.t()[labels] + 0.2 * torch.randn(10, D, generator=g))
    emb16 = (near * 30000).half()
    assert not torch.isfinite(ref(emb16, labels))
    ref.W.data = W  # the reference cast its W to float16 for good
    got = ours(emb16, labels)
    assert torch.isfinite(got) and got.dtype == torch.float16
    torch.testing.assert_close(got, ref(emb16.float(), labels).half())


@pytest.mark.parametrize("name", NAMES)
def test_float16_embeddings_keep_float32_weights(name):
    """Reference: W.data becomes float16 after a float16 forward; pml keeps float32."""
    ours, ref = build(name)
    emb, labels = batch(seed=16, dtype=torch.float16)
    ref(emb, labels)
    ours(emb, labels)
    assert ref.W.dtype == torch.float16 and ours.W.dtype == torch.float32


@pytest.mark.parametrize("name", ["ArcFaceLoss", "SubCenterArcFaceLoss"])
def test_embedding_on_its_class_vector_has_finite_gradients(name):
    """Reference: acos'(1) is infinite: NaN gradients; pml's are finite."""
    extra = {"sub_centers": 1} if name == "SubCenterArcFaceLoss" else {}
    ours, ref = build(name, **extra)
    labels = torch.tensor([0, 1, 2])
    grads = []
    for fn in (ours, ref):
        emb = fn.W.detach().t()[:3].clone().requires_grad_()
        fn(emb, labels).backward()
        grads.append(emb.grad)
    assert not torch.isfinite(grads[1]).all()
    assert torch.isfinite(grads[0]).all()


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch(name):
    """Reference: the mean over no samples is NaN; pml gives the zero loss."""
    ours, ref = build(name)
    emb, labels = torch.zeros(0, D), torch.zeros(0, dtype=torch.long)
    assert ref(emb, labels).isnan()
    assert ours(emb, labels) == 0


def test_normalized_softmax_records():
    """Reference: embedding_size and num_classes are never assigned (they read 0)."""
    ours, ref = build("NormalizedSoftmaxLoss")
    assert (ref.embedding_size, ref.num_classes) == (0, 0)
    assert (ours.embedding_size, ours.num_classes) == (D, C)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("LargeMarginSoftmaxLoss", {"margin": 4.5}),
        ("LargeMarginSoftmaxLoss", {"margin": 0}),
        ("ArcFaceLoss", {"scale": 0}),
        ("NormalizedSoftmaxLoss", {"temperature": 0}),
    ],
)
def test_arguments_the_reference_accepts_silently(name, kwargs):
    """Reference: a truncated or meaningless value is kept; pml rejects it by name."""
    getattr(ref_losses, name)(num_classes=C, embedding_size=D, **kwargs)
    with pytest.raises((TypeError, ValueError), match=next(iter(kwargs))):
        getattr(our_losses, name)(num_classes=C, embedding_size=D, **kwargs)


def test_reference_large_margin_truncates_the_margin():
    assert ref_losses.LargeMarginSoftmaxLoss(C, D, margin=4.7).margin == 4
    assert our_losses.LargeMarginSoftmaxLoss(C, D, margin=4.0).margin == 4
    assert math.isclose(our_losses.ArcFaceLoss(C, D).margin, ref_losses.ArcFaceLoss(C, D).margin)
