"""Margin-softmax classification losses: naive loops from the spec, the fixes, dtypes, edges.

LargeMarginSoftmaxLoss, SphereFaceLoss, ArcFaceLoss, CosFaceLoss, SubCenterArcFaceLoss (and
``get_outliers``), NormalizedSoftmaxLoss, and their functional pieces.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch.nn import functional as F

import pml.losses._margin_softmax as margin_module
import pml.losses.functional._margin_softmax as functional_module
from pml.core.indices import convert_to_weights
from pml.core.testing import assert_close, gradcheck
from pml.core.validation import InvalidArgumentError
from pml.distances import CosineSimilarity, DotProductSimilarity, LpDistance
from pml.losses import (
    ArcFaceLoss,
    CosFaceLoss,
    LargeMarginSoftmaxLoss,
    NormalizedSoftmaxLoss,
    SphereFaceLoss,
    SubCenterArcFaceLoss,
)
from pml.losses.functional import (
    arcface_target_logits,
    class_logits,
    cosface_target_logits,
    large_margin_target_logits,
    margin_cross_entropy,
    sub_center_max,
    sub_center_outliers,
)
from pml.reducers import AvgNonZeroReducer, DoNothingReducer
from pml.regularizers import (
    CenterInvariantRegularizer,
    LpRegularizer,
    RegularFaceRegularizer,
    SparseCentersRegularizer,
)

C, D = 5, 6
LABELS = torch.tensor([0, 0, 1, 1, 2, 3, 3, 4, 4, 1])
TRIPLETS = (torch.tensor([0, 2, 5, 0]), torch.tensor([1, 3, 6, 1]), torch.tensor([2, 4, 7, 3]))
CLASSES = [
    LargeMarginSoftmaxLoss,
    SphereFaceLoss,
    ArcFaceLoss,
    CosFaceLoss,
    SubCenterArcFaceLoss,
    NormalizedSoftmaxLoss,
]
IDS = [c.__name__ for c in CLASSES]


def data(n: int = 10, d: int = D, seed: int = 0, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype)


def build(cls, num_classes: int = C, embedding_size: int = D, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return cls(num_classes=num_classes, embedding_size=embedding_size, **kwargs)


# ------------------------------------------------------------------ naive references (loops)


def _cos(e, w):
    return torch.dot(e, w) / (e.norm() * w.norm())


def naive_logits_and_target(loss, e, W, y):
    """Spec formulas, one sample: (logits without margin (C,), target logit with margin)."""
    name = type(loss).__name__
    if name == "SubCenterArcFaceLoss":
        k = loss.sub_centers
        cos = torch.stack(
            [
                torch.stack([_cos(e, W[:, c * k + j]) for j in range(k)]).max()
                for c in range(W.shape[1] // k)
            ]
        )
    else:
        cos = torch.stack([_cos(e, W[:, j]) for j in range(W.shape[1])])
    c = cos[y]
    theta = torch.acos(c.clamp(-1, 1))
    if name in ("LargeMarginSoftmaxLoss", "SphereFaceLoss"):
        m = loss.margin
        k = math.floor(theta.item() / (math.pi / m))
        psi = (-1) ** k * torch.cos(m * theta) - 2 * k
        factor = e.norm() * loss.scale * torch.ones(W.shape[1], dtype=e.dtype)
        if name == "LargeMarginSoftmaxLoss":
            factor = factor * W.norm(dim=0)
        return cos * factor, psi * factor[y]
    if name == "CosFaceLoss":
        return cos * loss.scale, (c - loss.margin) * loss.scale
    m = loss.margin  # ArcFace family, radians
    psi = torch.cos(theta + m) if theta <= math.pi - m else torch.cos(theta) - m * math.sin(m)
    return cos * loss.scale, psi * loss.scale


def naive_losses(loss, emb, labels, indices_tuple=None, W=None):
    """Per-sample losses ``CE(logits with the target replaced) · w``, one sample at a time."""
    W = (loss.W if W is None else W).to(emb.dtype)
    w = convert_to_weights(indices_tuple, labels, emb.dtype)
    out = []
    for i in range(len(emb)):
        y = int(labels[i])
        if isinstance(loss, NormalizedSoftmaxLoss):
            logits = (
                torch.stack([_cos(emb[i], W[:, j]) for j in range(W.shape[1])]) / loss.temperature
            )
            target = logits[y]
        else:
            logits, target = naive_logits_and_target(loss, emb[i], W, y)
        z = torch.cat([logits[:y], target.reshape(1), logits[y + 1 :]])
        out.append((torch.logsumexp(z, 0) - target) * w[i])
    return torch.stack(out)


# ------------------------------------------------------------------------ values and grads

KWARGS = {
    "LargeMarginSoftmaxLoss": [{}, {"margin": 3, "scale": 2}, {"margin": 1}],
    "SphereFaceLoss": [{}, {"margin": 2, "scale": 3}],
    "ArcFaceLoss": [{}, {"margin": 10, "scale": 16}, {"margin": 120, "scale": 4}],
    "CosFaceLoss": [{}, {"margin": 0.2, "scale": 30}],
    "SubCenterArcFaceLoss": [{}, {"sub_centers": 2, "margin": 20, "scale": 30}],
    "NormalizedSoftmaxLoss": [{}, {"temperature": 0.5}],
}
CASES = [(cls, kw) for cls in CLASSES for kw in KWARGS[cls.__name__]]
CASE_IDS = [f"{cls.__name__}-{i}" for i, (cls, _) in enumerate(CASES)]


@pytest.mark.parametrize(("cls", "kwargs"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("mined", [False, True], ids=["labels", "triplets"])
def test_loss_and_gradients_match_a_naive_loop(cls, kwargs, mined):
    loss = build(cls, **kwargs).double()
    t = TRIPLETS if mined else None
    emb = data().requires_grad_()
    got = loss(emb, LABELS, t)
    got.backward()
    emb2 = emb.detach().clone().requires_grad_()
    W2 = loss.W.detach().clone().requires_grad_()
    expected = naive_losses(loss, emb2, LABELS, t, W=W2).mean()
    expected.backward()
    assert_close(got, expected)
    assert_close(emb.grad, emb2.grad)
    assert_close(loss.W.grad, W2.grad)


@pytest.mark.parametrize(("cls", "kwargs"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("route", ["product_side", "one_pass_fused"])
def test_narrow_batch_routes_match_a_naive_loop(cls, kwargs, route, monkeypatch):
    # N <= D: the column factors scale the (N, C) product; one_pass_fused: the custom W
    # gradient and the fused target cross entropy (the routes of a batch vs many classes)
    if route == "one_pass_fused":
        monkeypatch.setattr(functional_module, "_ONE_PASS_MIN", 0)
        monkeypatch.setattr(functional_module, "_FUSED_CE_MIN", 0)
    loss = build(cls, **kwargs).double()
    labels = torch.tensor([0, 3, 1, 1, 4])
    emb = data(5, D, seed=4).requires_grad_()
    got = loss(emb, labels)
    got.backward()
    emb2 = emb.detach().clone().requires_grad_()
    W2 = loss.W.detach().clone().requires_grad_()
    expected = naive_losses(loss, emb2, labels, W=W2).mean()
    expected.backward()
    assert_close(got, expected)
    assert_close(emb.grad, emb2.grad)
    assert_close(loss.W.grad, W2.grad)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_unreduced_losses_are_per_sample_elements(cls):
    loss = build(cls, reducer=DoNothingReducer()).double()
    out = loss(data(), LABELS, TRIPLETS)
    entry = out["loss"]
    assert list(out) == ["loss"] and entry["reduction_type"] == "element"
    assert torch.equal(entry["indices"], torch.arange(10))
    assert_close(entry["losses"], naive_losses(loss, data(), LABELS, TRIPLETS))
    # samples absent from the miner's tuple weigh 0 but stay in the batch (the mean over N)
    assert (entry["losses"][[8, 9]] == 0).all()


REGULARIZED = [
    (cls, reg)
    for cls in CLASSES
    for reg in (RegularFaceRegularizer, CenterInvariantRegularizer, LpRegularizer)
] + [(SubCenterArcFaceLoss, SparseCentersRegularizer)]  # several centers per class only


@pytest.mark.parametrize(
    ("cls", "regularizer"), REGULARIZED, ids=[f"{c.__name__}-{r.__name__}" for c, r in REGULARIZED]
)
def test_weight_regularizer_is_applied_to_w_transposed(cls, regularizer):
    reg = regularizer(C, 3) if regularizer is SparseCentersRegularizer else regularizer()
    loss = build(cls, weight_regularizer=reg, weight_reg_weight=0.3).double()
    plain = build(cls).double()
    got = loss(data(), LABELS)
    expected = plain(data(), LABELS) + 0.3 * reg(loss.W.t())
    assert_close(got, expected)
    out = build(cls, weight_regularizer=reg, reducer=DoNothingReducer()).double()(data(), LABELS)
    assert list(out) == ["loss", "weight_reg_loss"]
    assert out["weight_reg_loss"]["reduction_type"] == "already_reduced"


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_gradcheck_embeddings_and_weights(cls):
    loss = build(cls, num_classes=3, embedding_size=4).double()
    labels = torch.tensor([0, 1, 2, 1, 0])
    W = loss.W.detach().clone()
    del loss.W  # a plain tensor attribute from here on: gradcheck's input itself

    def fn(emb, w):
        loss.W = w
        return loss(emb, labels, (torch.tensor([0, 1, 3, 0]),) * 3)

    assert gradcheck(fn, (data(5, 4, seed=3), W))


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_get_logits_are_the_logits_without_margin(cls):
    loss = build(cls).double()
    emb = data()
    got = loss.get_logits(emb)
    assert got.shape == (10, C)
    if cls is NormalizedSoftmaxLoss:
        expected = F.normalize(emb) @ F.normalize(loss.W, dim=0) / loss.temperature
    else:
        expected = torch.stack([naive_logits_and_target(loss, e, loss.W, 0)[0] for e in emb])
    assert_close(got, expected)
    assert got.requires_grad


# ------------------------------------------------------------------------ dtypes and devices


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_every_float_dtype_gives_the_float64_value(cls, dtype, device):
    loss = build(cls, scale=4) if cls is not NormalizedSoftmaxLoss else build(cls)
    emb = data(dtype=dtype).to(device).requires_grad_()
    got = loss.to(device)(emb, LABELS.to(device))
    assert got.dtype == dtype and loss.W.dtype == torch.float32
    expected = build(cls, **({"scale": 4} if cls is not NormalizedSoftmaxLoss else {}))
    expected = expected.to(device)(emb.detach().double(), LABELS.to(device))
    assert_close(got, expected.to(dtype))
    got.backward()
    assert emb.grad.dtype == dtype and torch.isfinite(emb.grad).all()


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@pytest.mark.parametrize("low", [torch.float16, torch.bfloat16])
def test_low_precision_embeddings_cast_the_weights_to_low_precision_for_good(cls, low):
    # fix: the reference replaced W.data by a float16/bfloat16 copy (Adam then gives NaN)
    loss = build(cls)
    emb = data(dtype=low).requires_grad_()
    loss(emb, LABELS).backward()
    assert loss.W.dtype == torch.float32
    assert loss.W.grad is not None and loss.W.grad.dtype == torch.float32
    assert torch.isfinite(loss.W.grad).all()


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_autocast_bfloat16_keeps_float32_weights_and_computation(cls):
    loss = build(cls)
    emb = data(dtype=torch.float32).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = loss(emb, LABELS)
    out.backward()
    assert loss.W.dtype == torch.float32 and loss.W.grad.dtype == torch.float32
    assert torch.isfinite(loss.W.grad).all()
    assert out.dtype == torch.float32
    assert_close(out, build(cls)(emb.detach(), LABELS))


@pytest.mark.parametrize(
    ("cls", "scale"), [(LargeMarginSoftmaxLoss, 1), (SphereFaceLoss, 4)], ids=["lsoftmax", "sphere"]
)
def test_large_margin_float16_embeddings_of_large_norm_overflow(cls, scale):
    # fix: the reference computes the logits ‖W‖·‖e‖·ψ in float16: NaN here (compat test)
    loss = build(cls, scale=scale)
    W = loss.W.detach()
    g = torch.Generator().manual_seed(1)
    near = F.normalize(W.t()[LABELS] + 0.2 * torch.randn(10, D, generator=g, dtype=W.dtype))
    emb16 = (near * 30000).half().requires_grad_()
    got = loss(emb16, LABELS)
    got.backward()
    expected = loss(emb16.detach().float(), LABELS)
    assert torch.isfinite(got) and got.dtype == torch.float16 and got > 100
    assert_close(got, expected.half())
    assert torch.isfinite(emb16.grad).all() and torch.isfinite(loss.W.grad).all()


def test_double_module_computes_in_float64_and_keeps_its_dtype():
    loss = build(ArcFaceLoss).double()
    out = loss(data(dtype=torch.float32), LABELS)
    assert out.dtype == torch.float32 and loss.W.dtype == torch.float64


# ------------------------------------------------------------------------ fixes and edges


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_empty_batch_gives_nan(cls):
    # fix: the reference's mean over no samples was NaN; now the zero loss on the graph
    emb = torch.zeros(0, D, requires_grad=True)
    out = build(cls)(emb, torch.zeros(0, dtype=torch.long))
    assert out == 0 and out.requires_grad
    out.backward()
    reg = build(cls, weight_regularizer=LpRegularizer())
    assert_close(reg(emb, torch.zeros(0, dtype=torch.long)), LpRegularizer()(reg.W.t()))


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("reducer", [None, AvgNonZeroReducer()], ids=["mean", "avg_nonzero"])
def test_nonfinite_embedding_or_weight_gives_nan(cls, bad, reducer):
    kwargs = {} if reducer is None else {"reducer": reducer}
    emb = data()
    emb[9, 0] = bad  # row 9 is in no triplet: miner weight 0
    assert build(cls, **kwargs).double()(emb, LABELS, TRIPLETS).isnan()
    loss = build(cls, **kwargs).double()
    with torch.no_grad():
        loss.W[0, 2] = bad
    assert loss(data(), LABELS).isnan()


@pytest.mark.parametrize("cls", [ArcFaceLoss, SubCenterArcFaceLoss], ids=["arcface", "subcenter"])
def test_embedding_equal_to_its_class_vector_gives_nan_arcface_gradient(cls):
    # fix: the reference's acos has an infinite derivative at cos = 1: NaN gradients
    loss = build(cls, sub_centers=1) if cls is SubCenterArcFaceLoss else build(cls)
    emb = loss.W.detach().t()[:3].clone().requires_grad_()
    out = loss(emb, torch.tensor([0, 1, 2]))
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(emb.grad).all()
    assert torch.isfinite(loss.W.grad).all()


def test_arcface_margin_that_looks_like_radians_warns_once(monkeypatch):
    monkeypatch.setattr(margin_module, "_WARNED_RADIANS", set())
    with pytest.warns(UserWarning, match=r"read as degrees.*margin=28\.65"):
        loss = ArcFaceLoss(4, 6, margin=0.5)
    assert loss.margin == pytest.approx(math.radians(0.5))  # compat: still degrees
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ArcFaceLoss(4, 6, margin=0.3)  # once per class and process
        ArcFaceLoss(4, 6)  # degrees: no warning
        ArcFaceLoss(4, 6, margin=0)
    with pytest.warns(UserWarning, match="SubCenterArcFaceLoss"):
        SubCenterArcFaceLoss(4, 6, margin=1.2)


def test_arcface_margin_is_stored_and_recorded_in_radians():
    loss = ArcFaceLoss(4, 6)
    assert loss.margin == pytest.approx(0.4991641660703783, rel=1e-15)
    assert loss._record_these == ["num_classes", "margin", "scale"]


def test_sub_center_arc_face_positional_num_classes_raised_key_error():
    # fix: the reference raised KeyError('num_classes') for positional arguments
    loss = SubCenterArcFaceLoss(4, 6, 10, 16, 2)
    assert (loss.num_classes, loss.embedding_size, loss.sub_centers) == (4, 6, 2)
    assert loss.margin == pytest.approx(math.radians(10)) and loss.scale == 16
    assert loss.W.shape == (6, 8)
    with pytest.raises(TypeError, match="num_classes"):
        SubCenterArcFaceLoss(4, num_classes=4, embedding_size=6)


def test_normalized_softmax_records_embedding_size_and_num_classes_as_zero():
    # fix: the reference never assigned them (its records read 0)
    loss = NormalizedSoftmaxLoss(7, 3)
    assert (loss.num_classes, loss.embedding_size, loss.temperature) == (7, 3, 0.05)
    assert loss._record_these == ["embedding_size", "num_classes", "temperature"]


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_state_dict_holds_only_w(cls):
    loss = build(cls)
    assert list(loss.state_dict()) == ["W"]
    k = 3 if cls is SubCenterArcFaceLoss else 1
    assert loss.W.shape == (D, C * k)
    other = build(cls, seed=5)
    other.load_state_dict(loss.state_dict(), strict=True)
    assert_close(other(data(dtype=torch.float32), LABELS), loss(data(dtype=torch.float32), LABELS))


@pytest.mark.parametrize("cls", CLASSES[:5], ids=IDS[:5])
def test_avg_angle_is_the_mean_target_angle_in_degrees(cls):
    loss = build(cls, collect_stats=True).double()
    emb = data()
    loss(emb, LABELS)
    W = loss.W.detach()
    k = getattr(loss, "sub_centers", 1)
    cos = F.normalize(emb) @ F.normalize(W, dim=0)
    if k > 1:
        cos = cos.view(10, C, k).amax(dim=2)
    expected = torch.rad2deg(torch.acos(cos[torch.arange(10), LABELS])).mean()
    assert loss.avg_angle == pytest.approx(expected.item(), rel=1e-12)
    quiet = build(cls).double()
    quiet(emb, LABELS)
    assert "avg_angle" not in getattr(quiet, "_record_these_stats", [])


def test_many_classes_work_without_per_class_memory():
    # 100,000 classes: one (N, C) logit matrix, no (C, ...) loops
    loss = build(ArcFaceLoss, num_classes=100_000, embedding_size=8)
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 100_000, (16,), generator=g)
    emb = torch.randn(16, 8, generator=g, requires_grad=True)
    out = loss(emb, labels)
    out.backward()
    assert torch.isfinite(out) and loss.W.grad.shape == (8, 100_000)
    sub = build(SubCenterArcFaceLoss, num_classes=100_000, embedding_size=8)
    outliers, centers = sub.get_outliers(emb.detach(), labels)
    assert centers.shape == (8, 100_000) and centers.isnan().any(dim=0).sum() > 99_000


def test_normalized_softmax_any_distance():
    emb = data()
    lp = build(NormalizedSoftmaxLoss, distance=LpDistance()).double()
    d = torch.cdist(F.normalize(emb), F.normalize(lp.W, dim=0).t())
    expected = F.cross_entropy(-d / 0.05, LABELS)
    assert_close(lp(emb, LABELS), expected)
    dot = build(NormalizedSoftmaxLoss, distance=DotProductSimilarity(normalize_embeddings=False))
    dot = dot.double()
    expected = F.cross_entropy(emb @ F.normalize(dot.W, dim=0) / 0.05, LABELS)
    assert_close(dot(emb, LABELS), expected)


class RecordingCosine(CosineSimilarity):
    """A CosineSimilarity subclass: takes the distance-call route."""


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_distance_subclass_and_stats_route_give_the_same_numbers(cls):
    fast = build(cls).double()
    slow = build(cls, distance=RecordingCosine(collect_stats=True)).double()
    e1, e2 = data().requires_grad_(), data().requires_grad_()
    a, b = fast(e1, LABELS, TRIPLETS), slow(e2, LABELS, TRIPLETS)
    assert_close(a, b)
    a.backward()
    b.backward()
    assert_close(e1.grad, e2.grad)
    assert_close(fast.W.grad, slow.W.grad)
    assert_close(fast.get_logits(data()), slow.get_logits(data()))


# ------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_bad_forward_inputs_are_rejected_by_name(cls):
    loss = build(cls)
    emb = data(dtype=torch.float32)
    with pytest.raises(ValueError, match="labels"):
        loss(emb)
    with pytest.raises(ValueError, match="labels"):
        loss(emb, LABELS + 1)  # 5 is not in [0, 5)
    with pytest.raises(ValueError, match="labels"):
        loss(emb, LABELS - 1)
    with pytest.raises(ValueError, match="labels"):
        loss(emb, LABELS.float())
    with pytest.raises(ValueError, match="ref_emb"):
        loss(emb, LABELS, ref_emb=emb.clone(), ref_labels=LABELS)
    with pytest.raises(ValueError, match="embedding_size"):
        loss(data(10, D + 1, dtype=torch.float32), LABELS)
    with pytest.raises(ValueError, match="embedding_size"):
        loss.get_logits(data(10, D + 1, dtype=torch.float32))


@pytest.mark.parametrize(
    ("cls", "kwargs", "error", "arg"),
    [
        (LargeMarginSoftmaxLoss, {"margin": 4.5}, TypeError, "margin"),
        (LargeMarginSoftmaxLoss, {"margin": 0}, ValueError, "margin"),
        (SphereFaceLoss, {"margin": -2}, ValueError, "margin"),
        (LargeMarginSoftmaxLoss, {"scale": 0}, ValueError, "scale"),
        (ArcFaceLoss, {"scale": -1}, ValueError, "scale"),
        (ArcFaceLoss, {"scale": float("inf")}, ValueError, "scale"),
        (ArcFaceLoss, {"margin": float("inf")}, ValueError, "margin"),
        (CosFaceLoss, {"margin": "0.3"}, TypeError, "margin"),
        (SubCenterArcFaceLoss, {"sub_centers": 0}, ValueError, "sub_centers"),
        (SubCenterArcFaceLoss, {"sub_centers": 1.5}, TypeError, "sub_centers"),
        (NormalizedSoftmaxLoss, {"temperature": 0}, ValueError, "temperature"),
        (ArcFaceLoss, {"num_classes": 0}, ValueError, "num_classes"),
        (CosFaceLoss, {"embedding_size": 2.5}, TypeError, "embedding_size"),
    ],
)
def test_bad_constructor_arguments_are_rejected_by_name(cls, kwargs, error, arg):
    full = {"num_classes": 4, "embedding_size": 6, **kwargs}
    with pytest.raises(error, match=arg):
        cls(**full)


@pytest.mark.parametrize("cls", CLASSES[:5], ids=IDS[:5])
def test_margin_family_requires_cosine_similarity(cls):
    with pytest.raises(InvalidArgumentError, match="CosineSimilarity"):
        cls(4, 6, distance=LpDistance())
    cls(4, 6, distance=RecordingCosine())  # a subclass is fine


def test_integral_float_margin_is_taken_like_the_reference():
    assert LargeMarginSoftmaxLoss(4, 6, margin=3.0).margin == 3
    assert CosFaceLoss(4, 6, 0.2).margin == 0.2  # num_classes, embedding_size positional


# ------------------------------------------------------------------------ get_outliers


def naive_outliers(loss, emb, labels, threshold):
    """Spec get_outliers, class by class."""
    k = loss.sub_centers
    W = loss.W.detach().to(emb.dtype)
    outliers, centers = [], torch.full((W.shape[0], loss.num_classes), float("nan"))
    for c in range(loss.num_classes):
        rows = [i for i in range(len(labels)) if labels[i] == c]
        if not rows:
            continue
        cos = F.normalize(emb[rows]) @ F.normalize(W[:, c * k : (c + 1) * k], dim=0)
        votes = torch.bincount(cos.argmax(dim=1), minlength=k)
        dom = int(votes.argmax())
        centers[:, c] = W[:, c * k + dom]
        far = cos[:, dom] < math.cos(math.radians(threshold))
        outliers += [rows[j] for j in range(len(rows)) if far[j]]
    return torch.tensor(outliers, dtype=torch.long), centers


@pytest.mark.parametrize("threshold", [75, 40, 10, 180])
@pytest.mark.parametrize("distance", [None, RecordingCosine], ids=["gathered", "distance_call"])
def test_get_outliers_matches_a_loop_over_classes(threshold, distance):
    kwargs = {} if distance is None else {"distance": distance()}
    loss = build(SubCenterArcFaceLoss, num_classes=6, **kwargs)
    emb = data(dtype=torch.float32)
    outliers, centers = loss.get_outliers(emb, LABELS, threshold=threshold)
    exp_out, exp_centers = naive_outliers(loss, emb, LABELS, threshold)
    assert outliers.dtype == torch.int64 and torch.equal(outliers, exp_out)
    torch.testing.assert_close(centers, exp_centers, equal_nan=True)


def test_get_outliers_columns_of_absent_classes_are_uninitialised():
    # fix: the reference returned torch.empty columns for classes without samples
    loss = build(SubCenterArcFaceLoss, num_classes=8)
    _, centers = loss.get_outliers(data(dtype=torch.float32), LABELS)
    assert centers.isnan().all(dim=0).tolist() == [False] * 5 + [True] * 3


def test_get_outliers_without_outliers_returns_a_float_tensor():
    # fix: the reference's empty result was float32
    loss = build(SubCenterArcFaceLoss)
    outliers, centers = loss.get_outliers(data(dtype=torch.float32), LABELS, threshold=180)
    assert outliers.shape == (0,) and outliers.dtype == torch.int64
    # compat: the 2-tuple comes back whatever return_dominant_centers says
    out = loss.get_outliers(data(dtype=torch.float32), LABELS, return_dominant_centers=False)
    assert isinstance(out, tuple) and len(out) == 2


def test_get_outliers_rejects_bad_input_by_name():
    loss = build(SubCenterArcFaceLoss)
    emb = data(dtype=torch.float32)
    with pytest.raises(ValueError, match="labels"):
        loss.get_outliers(emb, LABELS[:5])
    with pytest.raises(ValueError, match="labels"):
        loss.get_outliers(emb, LABELS + 1)
    with pytest.raises(ValueError, match="threshold"):
        loss.get_outliers(emb, LABELS, threshold=200)
    with pytest.raises(ValueError, match="embedding_size"):
        loss.get_outliers(data(10, 3, dtype=torch.float32), LABELS)


def test_get_outliers_keeps_the_embeddings_dtype_and_no_graph():
    loss = build(SubCenterArcFaceLoss)
    emb = data(dtype=torch.float16).requires_grad_()
    outliers, centers = loss.get_outliers(emb, LABELS)
    assert centers.dtype == torch.float16 and not centers.requires_grad
    assert loss.W.dtype == torch.float32


# ------------------------------------------------------------------------ functional


@pytest.mark.parametrize("p", [2, 3])
def test_class_logits_is_scaled_cosine_similarity(p):
    emb, W = data(), data(D, 8, seed=1)
    got = class_logits(emb, W, scale=3.0, p=p)
    expected = 3 * F.normalize(emb, p=p) @ F.normalize(W, p=p, dim=0)
    assert_close(got, expected)
    raw = class_logits(emb, W, normalize_embeddings=False)
    assert_close(raw, emb @ F.normalize(W, dim=0))
    row, col = torch.rand(10, dtype=torch.float64), torch.rand(8, dtype=torch.float64)
    scaled = class_logits(emb, W, scale=2.0, row_scale=row, col_scale=col, p=p)
    assert_close(scaled, 2 * row[:, None] * expected / 3 * col)
    assert_close(class_logits(emb, W, p=p, sub_centers=2), (expected / 3).view(10, 4, 2).amax(2))


@pytest.mark.parametrize("one_pass", [False, True])
@pytest.mark.parametrize("n", [3, 5])  # fewer rows than D = 4, and more
def test_class_logits_gradients(n, one_pass, monkeypatch):
    if one_pass:
        monkeypatch.setattr(functional_module, "_ONE_PASS_MIN", 0)
    emb, W = data(n, 4), data(4, 6, seed=1)
    assert gradcheck(lambda e, w: class_logits(e, w, scale=3.0), (emb, W))
    assert gradcheck(lambda e, w: class_logits(e, w, p=3), (emb, W))
    assert gradcheck(lambda e, w: class_logits(e, w, sub_centers=3), (emb, W))
    rs = lambda e, w: class_logits(e, w, row_scale=e.norm(dim=1), col_scale=w.norm(dim=0))  # noqa: E731
    assert gradcheck(rs, (emb, W))


@pytest.mark.parametrize("one_pass", [False, True])
def test_class_logits_zero_column_gradient_equals_normalize(one_pass, monkeypatch):
    if one_pass:
        monkeypatch.setattr(functional_module, "_ONE_PASS_MIN", 0)
    emb, W = data(3, 4), data(4, 6, seed=1)
    W[:, 2] = 0
    g = torch.arange(6.0, dtype=torch.float64)
    a, b = emb.clone().requires_grad_(), W.clone().requires_grad_()
    (class_logits(a, b) * g).sum().backward()
    a2, b2 = emb.clone().requires_grad_(), W.clone().requires_grad_()
    ((F.normalize(a2) @ F.normalize(b2, dim=0)) * g).sum().backward()
    assert_close(a.grad, a2.grad)
    assert_close(b.grad, b2.grad, rtol=1e-9, atol=1e-3)


def test_class_logits_low_precision_inputs_compute_in_float32():
    got = class_logits(data(dtype=torch.float16), data(D, 8, seed=1, dtype=torch.bfloat16))
    assert got.dtype == torch.float32


def test_sub_center_max_and_bad_width():
    mat = data(4, 6)
    assert_close(sub_center_max(mat, 3), mat.view(4, 2, 3).amax(2))
    with pytest.raises(ValueError, match="sub_centers"):
        sub_center_max(mat, 4)


@pytest.mark.parametrize("margin", [1, 2, 3, 4, 5, 7])
def test_large_margin_target_logits_equal_the_angle_formula(margin):
    cos = torch.linspace(-1, 1, 101, dtype=torch.float64)
    theta = torch.acos(cos)
    k = torch.floor(theta * margin / math.pi)
    expected = (-1) ** k * torch.cos(margin * theta) - 2 * k
    assert_close(large_margin_target_logits(cos, margin), expected)
    # monotonically decreasing in the angle
    assert (large_margin_target_logits(cos, margin).diff() >= -1e-12).all()


@pytest.mark.parametrize("margin", [0.1, 0.5, 1.0, 2.5])
def test_arcface_target_logits_equal_the_angle_formula(margin):
    cos = torch.linspace(-1, 1, 101, dtype=torch.float64)
    theta = torch.acos(cos)
    expected = torch.where(
        theta <= math.pi - margin, torch.cos(theta + margin), cos - margin * math.sin(margin)
    )
    assert_close(arcface_target_logits(cos, margin), expected)
    inner = torch.linspace(-0.99, 0.99, 7, dtype=torch.float64)
    assert gradcheck(lambda c: arcface_target_logits(c, margin), inner)
    one = torch.ones(3, dtype=torch.float64, requires_grad=True)
    arcface_target_logits(one, margin).sum().backward()
    assert torch.isfinite(one.grad).all()


def test_cosface_target_logits():
    cos = data(7, 1).squeeze(1)
    assert_close(cosface_target_logits(cos, 0.35), cos - 0.35)


@pytest.mark.parametrize("fused", [False, True])
def test_margin_cross_entropy_replaces_the_target_logit_and_weights(fused, monkeypatch):
    if fused:
        monkeypatch.setattr(functional_module, "_FUSED_CE_MIN", 0)
    logits, labels = data(10, C), LABELS
    target = torch.linspace(-1, 1, 10, dtype=torch.float64)
    w = torch.rand(10, dtype=torch.float64)
    got = margin_cross_entropy(logits, labels, target, w)
    z = logits.clone()
    z[torch.arange(10), labels] = target
    assert_close(got, F.cross_entropy(z, labels, reduction="none") * w)
    assert_close(
        margin_cross_entropy(logits, labels), F.cross_entropy(logits, labels, reduction="none")
    )
    assert margin_cross_entropy(logits.half(), labels).dtype == torch.float32
    assert margin_cross_entropy(logits.half(), labels, target.half()).dtype == torch.float32
    assert gradcheck(lambda z, t: margin_cross_entropy(z, labels, t, w).sum(), (logits, target))
    # the replaced entry does not take part: a huge original target logit changes nothing
    huge = logits.clone()
    huge[torch.arange(10), labels] = 1e4
    assert_close(margin_cross_entropy(huge, labels, target, w), got)
    nan = logits.clone()
    nan[3, 0] = float("nan")
    assert (
        margin_cross_entropy(nan, labels, target).isnan().tolist()
        == [False] * 3 + [True] + [False] * 6
    )


def test_sub_center_outliers_ties_and_absent_classes():
    own = torch.tensor([[0.9, 0.9], [0.1, 0.8], [0.7, 0.2], [0.3, 0.1]])
    labels = torch.tensor([2, 2, 0, 0])
    outliers, dominant = sub_center_outliers(own, labels, 3, 0.5)
    # class 2: votes 0 (tie -> lowest) and 1 -> tie -> sub-center 0; row 1 is far from it
    assert dominant.tolist() == [0, -1, 0]
    assert outliers.tolist() == [3, 1]  # class 0 first, then class 2
