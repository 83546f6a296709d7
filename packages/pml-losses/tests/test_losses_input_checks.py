"""Input checks of every loss: indices_tuple bounds and dtypes, non-finite inputs outside the
tuple, a reference set in another float dtype, and shape checks that go through the distance.

Every loss class of ``pml.losses`` is looped over, so a loss that bypasses the common path
is caught too.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from pml import losses as L
from pml.core.testing import assert_close
from pml.distances import CosineSimilarity, LpDistance
from pml.losses._base import BaseMetricLossFunction
from pml.reducers import MeanReducer

N, D = 8, 4

#: every loss of pml.losses, with constructor arguments it needs
LOSSES: dict[str, dict[str, Any]] = {
    "AngularLoss": {},
    "ArcFaceLoss": {"num_classes": 4, "embedding_size": D},
    "CircleLoss": {},
    "ContrastiveLoss": {},
    "CosFaceLoss": {"num_classes": 4, "embedding_size": D},
    "DecoupledContrastiveLoss": {},
    "DynamicArcFaceLoss": {"class_counts": [4, 2, 1, 1], "embedding_size": D},
    "DynamicSoftMarginLoss": {},
    "FastAPLoss": {},
    "GeneralizedLiftedStructureLoss": {},
    "HistogramLoss": {"n_bins": 10},
    "InstanceLoss": {},
    "IntraPairVarianceLoss": {},
    "LargeMarginSoftmaxLoss": {"num_classes": 4, "embedding_size": D},
    "LiftedStructureLoss": {},
    "ManifoldLoss": {"l": D},
    "MarginLoss": {},
    "MultiSimilarityLoss": {},
    "MultiSupConLoss": {},
    "NCALoss": {},
    "NPairsLoss": {},
    "NTXentLoss": {},
    "NormalizedSoftmaxLoss": {"num_classes": 4, "embedding_size": D},
    "P2SGradLoss": {"descriptors_dim": D, "num_classes": 4},
    "PNPLoss": {},
    "ProxyAnchorLoss": {"num_classes": 4, "embedding_size": D},
    "ProxyNCALoss": {"num_classes": 4, "embedding_size": D},
    "RankedListLoss": {"margin": 0.4, "Tn": 1.0},
    "SelectivelyContrastiveTripletLoss": {},
    "SignalToNoiseRatioContrastiveLoss": {},
    "SmoothAPLoss": {},
    "SoftTripleLoss": {"num_classes": 4, "embedding_size": D},
    "SphereFaceLoss": {"num_classes": 4, "embedding_size": D},
    "SubCenterArcFaceLoss": {"num_classes": 4, "embedding_size": D},
    "SupConLoss": {},
    "ThresholdConsistentMarginLoss": {},
    "TripletMarginLoss": {},
    "TupletMarginLoss": {},
    "VICRegLoss": {},
}

#: losses that take an indices_tuple (the others reject one by name; ManifoldLoss's is not a
#: miner's tuple)
TUPLE_LOSSES = [
    n
    for n in LOSSES
    if n
    not in (
        "InstanceLoss",
        "NPairsLoss",
        "PNPLoss",
        "RankedListLoss",
        "VICRegLoss",
        "P2SGradLoss",
        "ManifoldLoss",
    )
]


def make(name: str) -> BaseMetricLossFunction:
    torch.manual_seed(0)  # losses with class vectors draw them: the same ones on every call
    return getattr(L, name)(**LOSSES[name])


def test_every_loss_class_is_covered() -> None:
    found = {
        n
        for n in L.__all__
        if isinstance(getattr(L, n), type)
        and issubclass(getattr(L, n), BaseMetricLossFunction)
        and getattr(L, n).__module__ not in ("pml.losses._base", "pml.losses._generic_pair")
    }
    assert found == set(LOSSES)


def _data(n: int = N, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(n, D, generator=g)
    labels = torch.arange(n) // 2
    return emb, labels


def _triplets() -> tuple[Tensor, Tensor, Tensor]:
    # rows 0..5 only: row 6 and 7 are in no triplet
    return torch.tensor([0, 2, 4, 1]), torch.tensor([1, 3, 5, 0]), torch.tensor([2, 4, 0, 3])


def _pairs() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return (
        torch.tensor([0, 2, 4, 1]),
        torch.tensor([1, 3, 5, 0]),
        torch.tensor([0, 2, 4, 1]),
        torch.tensor([2, 4, 0, 3]),
    )


# ---------------------------------------------------------------------- 1. indices_tuple bounds


def _with(t: tuple[Tensor, ...], pos: int, value: int) -> tuple[Tensor, ...]:
    out = [x.clone() for x in t]
    out[pos][1] = value
    return tuple(out)


@pytest.mark.parametrize("form", ["pairs", "triplets"])
@pytest.mark.parametrize("name", TUPLE_LOSSES)
def test_negative_index_in_indices_tuple_is_rejected(name: str, form: str) -> None:
    emb, labels = _data()
    base = _pairs() if form == "pairs" else _triplets()
    for pos in range(len(base)):
        with pytest.raises(ValueError, match="indices_tuple"):
            make(name)(emb, labels, _with(base, pos, -1))


@pytest.mark.parametrize("form", ["pairs", "triplets"])
@pytest.mark.parametrize("name", TUPLE_LOSSES)
def test_index_equal_to_batch_size_in_indices_tuple_is_rejected(name: str, form: str) -> None:
    emb, labels = _data()
    base = _pairs() if form == "pairs" else _triplets()
    for pos in range(len(base)):
        with pytest.raises(ValueError, match="indices_tuple"):
            make(name)(emb, labels, _with(base, pos, N))


@pytest.mark.parametrize("name", ["ContrastiveLoss", "TripletMarginLoss", "NCALoss"])
def test_indices_tuple_bounds_follow_ref_emb(name: str) -> None:
    """Anchors index ``embeddings`` (N rows), positives/negatives ``ref_emb`` (M rows)."""
    emb, labels = _data(4)
    ref, ref_labels = _data(N, seed=1)
    a, p, n = torch.tensor([0, 1]), torch.tensor([6, 7]), torch.tensor([2, 3])
    loss = make(name)
    out = loss(emb, labels, (a, p, n), ref, ref_labels)  # p = 7 < M = 8: fine
    assert out.isfinite()
    with pytest.raises(ValueError, match="indices_tuple"):
        loss(emb, labels, (a, p, torch.tensor([2, N])), ref, ref_labels)
    with pytest.raises(ValueError, match="indices_tuple"):
        loss(emb, labels, (torch.tensor([0, 4]), p, n), ref, ref_labels)  # anchor 4 >= N = 4


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.uint8])
@pytest.mark.parametrize("name", ["ContrastiveLoss", "TripletMarginLoss", "NCALoss"])
def test_small_integer_dtype_in_indices_tuple_is_rejected(name: str, dtype: torch.dtype) -> None:
    emb, labels = _data()
    t = tuple(x.to(dtype) for x in _triplets())
    with pytest.raises(TypeError, match="indices_tuple"):
        make(name)(emb, labels, t)


@pytest.mark.parametrize("name", TUPLE_LOSSES)
def test_int32_indices_tuple_gives_the_int64_result(name: str) -> None:
    emb, labels = _data()
    t64 = _triplets()
    t32 = tuple(x.int() for x in t64)
    assert_close(make(name)(emb, labels, t32), make(name)(emb, labels, t64))


def test_multiple_losses_rejects_out_of_range_indices_tuple() -> None:
    emb, labels = _data()
    losses = L.MultipleLosses([L.TripletMarginLoss(), L.ContrastiveLoss()])
    for bad in (-1, N):
        with pytest.raises(ValueError, match="indices_tuple"):
            losses(emb, labels, _with(_triplets(), 2, bad))
    with pytest.raises(TypeError, match="indices_tuple"):
        losses(emb, labels, tuple(x.to(torch.uint8) for x in _triplets()))


def test_multiple_losses_checks_bounds_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The wrapper checks the shared tuple; the wrapped losses do not check it again."""
    from pml.core import validation

    emb, labels = _data()
    calls: list[bool] = []
    real = validation.check_indices_tuple

    def spy(*args: Any, **kwargs: Any) -> None:
        calls.append(bool(kwargs.get("check_bounds")))
        real(*args, **kwargs)

    import pml.losses._base as base
    import pml.losses._wrappers as wrappers

    monkeypatch.setattr(base, "check_indices_tuple", spy)
    monkeypatch.setattr(wrappers, "check_indices_tuple", spy)
    losses = L.MultipleLosses([L.TripletMarginLoss(), L.ContrastiveLoss()])
    expected = L.TripletMarginLoss()(emb, labels, _triplets()) + L.ContrastiveLoss()(
        emb, labels, _triplets()
    )
    calls.clear()
    assert_close(losses(emb, labels, _triplets()), expected)
    assert calls.count(True) == 1


def test_checked_indices_tuple_skips_only_the_bounds_check() -> None:
    from pml.losses._base import checked_indices_tuple

    emb, labels = _data()
    t = checked_indices_tuple(_triplets())
    assert isinstance(t, tuple) and len(t) == 3
    expected = L.TripletMarginLoss()(emb, labels, _triplets())
    assert_close(L.TripletMarginLoss()(emb, labels, t), expected)
    with pytest.raises(TypeError, match="indices_tuple"):  # the form is still checked
        L.TripletMarginLoss()(emb, labels, checked_indices_tuple(_triplets()[:1]))


# ---------------------------------------------------------------- 2. NaN/inf outside the tuple


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("form", ["pairs", "triplets"])
@pytest.mark.parametrize("name", TUPLE_LOSSES)
def test_nonfinite_embedding_outside_indices_tuple_gives_nan(
    name: str, form: str, bad: float
) -> None:
    emb, labels = _data()
    emb[7, 0] = bad  # row 7 is in no pair/triplet
    t = _pairs() if form == "pairs" else _triplets()
    out = make(name)(emb, labels, t)
    assert out.isnan(), f"{name} with {form}: {out}"


def test_nonfinite_ref_emb_outside_indices_tuple_gives_nan() -> None:
    emb, labels = _data()
    ref, ref_labels = _data(seed=1)
    ref[7, 0] = float("nan")
    for name in ("TripletMarginLoss", "DynamicSoftMarginLoss", "ThresholdConsistentMarginLoss"):
        out = make(name)(emb, labels, _triplets(), ref, ref_labels)
        assert out.isnan(), name


def test_nonfinite_batch_leaves_dynamic_soft_margin_histogram_unchanged() -> None:
    emb, labels = _data()
    loss = L.DynamicSoftMarginLoss()
    loss(emb, labels, _triplets())
    before = loss.hist_.clone()
    emb[7, 0] = float("nan")
    assert loss(emb, labels, _triplets()).isnan()
    assert torch.equal(loss.hist_, before)


@pytest.mark.parametrize("reducer", [None, MeanReducer()])
def test_triplet_margin_loss_nan_outside_triplets_with_other_reducers(reducer: Any) -> None:
    emb, labels = _data()
    emb[7, 1] = float("nan")
    kwargs = {} if reducer is None else {"reducer": reducer}
    assert L.TripletMarginLoss(margin=10, **kwargs)(emb, labels, _triplets()).isnan()
    # finite batches keep their value: the mean of the listed triplets
    emb[7, 1] = 0.0
    a, p, n = _triplets()
    d = torch.cdist(normalized(emb), normalized(emb))
    expected = torch.relu(d[a, p] - d[a, n] + 10).mean()
    assert_close(L.TripletMarginLoss(margin=10, **kwargs)(emb, labels, _triplets()), expected)


def normalized(x: Tensor) -> Tensor:
    return torch.nn.functional.normalize(x, dim=1)


# ------------------------------------------------------------ 5. ref_emb in another float dtype


def _accepts_ref(name: str) -> bool:
    emb, labels = _data()
    ref, ref_labels = _data(seed=1)
    try:
        make(name)(emb, labels, None, ref, ref_labels)
    except ValueError as e:
        if "not supported" in str(e):
            return False
        raise
    return True


REF_LOSSES = [n for n in LOSSES if _accepts_ref(n)]
MIXED = [
    (torch.float32, torch.float16),
    (torch.float32, torch.float64),
    (torch.float16, torch.float32),
    (torch.float64, torch.float32),
    (torch.bfloat16, torch.float32),
]


def test_ref_losses_found() -> None:
    assert len(REF_LOSSES) >= 14 and "ContrastiveLoss" in REF_LOSSES


@pytest.mark.parametrize("form", ["labels", "triplets"])
@pytest.mark.parametrize(("emb_dtype", "ref_dtype"), MIXED, ids=str)
@pytest.mark.parametrize("name", REF_LOSSES)
def test_ref_emb_in_another_float_dtype_is_computed_in_the_promoted_dtype(
    name: str, emb_dtype: torch.dtype, ref_dtype: torch.dtype, form: str
) -> None:
    if form == "triplets" and name not in TUPLE_LOSSES:
        pytest.skip("no indices_tuple")
    emb, labels = _data()
    ref, ref_labels = _data(seed=1)
    emb, ref = emb.to(emb_dtype), ref.to(ref_dtype)
    t = _triplets() if form == "triplets" else None
    common = torch.promote_types(emb_dtype, ref_dtype)
    e = emb.clone().requires_grad_()
    r = ref.clone().requires_grad_()
    out = make(name)(e, labels, t, r, ref_labels)
    assert out.dtype == emb_dtype
    expected = make(name)(emb.to(common), labels, t, ref.to(common), ref_labels)
    assert_close(out, expected.to(emb_dtype))
    out.backward()
    assert e.grad is not None and e.grad.dtype == emb_dtype
    assert r.grad is not None and r.grad.dtype == ref_dtype


# ------------------------------------------------ 10. shape checks go through the distance


class SequenceCosine(CosineSimilarity):
    """Cosine similarity of the time-means of ``(N, T, D)`` sequences."""

    def check_shapes(self, query_emb: Tensor, ref_emb: Tensor | None) -> None:
        if query_emb.ndim != 3 or (ref_emb is not None and ref_emb.ndim != 3):
            raise ValueError("query_emb and ref_emb must be (N, T, D)")

    def maybe_normalize(self, embeddings: Tensor, dim: int = 1, **kwargs: Any) -> Tensor:
        return super().maybe_normalize(embeddings.mean(dim=1), dim=dim, **kwargs)


@pytest.mark.parametrize("name", ["ContrastiveLoss", "TripletMarginLoss", "MultiSimilarityLoss"])
def test_custom_distance_accepting_sequence_embeddings_works_with_losses(name: str) -> None:
    g = torch.Generator().manual_seed(3)
    seq = torch.randn(N, 5, D, generator=g, requires_grad=True)
    labels = torch.arange(N) // 2
    got = getattr(L, name)(distance=SequenceCosine())(seq, labels)
    expected = getattr(L, name)(distance=CosineSimilarity())(seq.mean(dim=1), labels)
    assert_close(got, expected)
    got.backward()
    assert seq.grad is not None and seq.grad.shape == seq.shape
    # with a reference set and a miner's tuple too
    ref = torch.randn(6, 5, D, generator=g)
    ref_labels = torch.arange(6) // 2
    t = _triplets()
    got = getattr(L, name)(distance=SequenceCosine())(seq, labels, t, ref, ref_labels)
    expected = getattr(L, name)(distance=CosineSimilarity())(
        seq.mean(dim=1), labels, t, ref.mean(dim=1), ref_labels
    )
    assert_close(got, expected)


def test_distance_check_shapes_decides_the_embeddings_rank() -> None:
    seq = torch.randn(N, 5, D)
    labels = torch.arange(N) // 2
    with pytest.raises(ValueError, match="embeddings"):  # the default distance: 2-D only
        L.ContrastiveLoss(distance=CosineSimilarity())(seq, labels)
    with pytest.raises(ValueError, match="N, T, D"):  # the custom distance's own message
        L.ContrastiveLoss(distance=SequenceCosine())(seq[:, 0], labels)
    with pytest.raises(TypeError, match="embeddings"):  # floating point is still required
        L.ContrastiveLoss(distance=SequenceCosine())(seq.long(), labels)
    with pytest.raises(ValueError, match="labels"):  # labels still match the first dim
        L.ContrastiveLoss(distance=SequenceCosine())(seq, labels[:5])
    with pytest.raises(ValueError, match="ref_emb"):  # default: embedding sizes must agree
        L.ContrastiveLoss(distance=LpDistance())(
            seq[:, 0], labels, ref_emb=seq[:, 0, :3], ref_labels=labels
        )


@pytest.mark.parametrize("name", ["ContrastiveLoss", "TripletMarginLoss", "MultiSimilarityLoss"])
def test_nonfinite_ref_emb_gives_nan_even_when_a_filtering_reducer_drops_every_loss(name):
    from pml.reducers import AvgNonZeroReducer

    g = torch.Generator().manual_seed(0)
    emb = torch.randn(6, 4, generator=g)
    ref = torch.randn(6, 4, generator=g)
    ref[:] = float("nan")
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    pairs = (torch.tensor([0]), torch.tensor([1]), torch.tensor([0]), torch.tensor([2]))
    loss = getattr(L, name)(reducer=AvgNonZeroReducer())(emb, labels, pairs, ref, labels)
    assert torch.isnan(loss)
