"""anchor_batched_backward: exact gradients by chunks of anchors (issue 15 item 3)."""

from __future__ import annotations

import copy

import pytest
import torch

import pml.losses as L
from pml.core.testing import assert_close, clustered_embeddings
from pml.losses import anchor_batched_backward
from pml.reducers import (
    AvgNonZeroReducer,
    ClassWeightedReducer,
    DivisorReducer,
    DoNothingReducer,
    MeanReducer,
    MultipleReducers,
    PerAnchorReducer,
    SumReducer,
    ThresholdReducer,
)
from pml.regularizers import LpRegularizer

EMB, LABELS = clustered_embeddings(4, 5, 6, seed=1, spread=0.8, dtype=torch.float64)
REF, REF_LABELS = clustered_embeddings(4, 4, 6, seed=2, spread=0.8, dtype=torch.float64)

#: every loss declared ``anchor_batching = "reference"``, with non-default reducers too
REFERENCE_LOSSES = [
    ("ContrastiveLoss", {}),
    ("ContrastiveLoss", {"reducer": MeanReducer()}),
    ("ContrastiveLoss", {"reducer": ThresholdReducer(low=0.05, high=1.0)}),
    ("SignalToNoiseRatioContrastiveLoss", {}),
    ("GeneralizedLiftedStructureLoss", {}),
    ("MultiSimilarityLoss", {}),
    ("MultiSimilarityLoss", {"reducer": SumReducer()}),
    ("CircleLoss", {}),
    ("NTXentLoss", {"temperature": 0.3}),
    ("NTXentLoss", {"reducer": AvgNonZeroReducer()}),
    ("TupletMarginLoss", {}),
    ("SupConLoss", {}),
    ("TripletMarginLoss", {"margin": 0.5}),
    ("TripletMarginLoss", {"margin": 0.5, "reducer": MeanReducer()}),
    ("TripletMarginLoss", {"margin": 0.5, "smooth_loss": True}),
    ("TripletMarginLoss", {"margin": 0.5, "swap": True}),
    ("MarginLoss", {"margin": 0.3}),
    ("MarginLoss", {"margin": 0.3, "learn_beta": True, "num_classes": 4, "nu": 0.1}),
    ("MarginLoss", {"margin": 0.3, "reducer": MeanReducer()}),
]
IDS = [f"{n}-{i}" for i, (n, _) in enumerate(REFERENCE_LOSSES)]

SAMPLE_LOSSES = [
    ("ArcFaceLoss", {}),
    ("CosFaceLoss", {}),
    ("SphereFaceLoss", {}),
    ("LargeMarginSoftmaxLoss", {}),
    ("SubCenterArcFaceLoss", {}),
    ("NormalizedSoftmaxLoss", {}),
    ("SoftTripleLoss", {"centers_per_class": 3}),
    ("ProxyNCALoss", {}),
]


def _whole(loss, emb, labels, ref=None, ref_labels=None):
    """The unchunked loss and gradients (the loss's parameters' gradients included)."""
    loss = copy.deepcopy(loss)
    emb = emb.clone().requires_grad_()
    ref = None if ref is None else ref.clone().requires_grad_()
    out = loss(emb, labels, None, ref, ref_labels)
    out.backward()
    params = [p.grad for p in loss.parameters()]
    return out.detach(), emb.grad, None if ref is None else ref.grad, params


def _chunked(loss, emb, labels, batch_size, ref=None, ref_labels=None):
    loss = copy.deepcopy(loss)
    emb = emb.clone().requires_grad_()
    ref = None if ref is None else ref.clone().requires_grad_()
    out = anchor_batched_backward(loss, emb, labels, batch_size, ref_emb=ref, ref_labels=ref_labels)
    params = [p.grad for p in loss.parameters()]
    return out, emb.grad, None if ref is None else ref.grad, params


def _assert_same(got, expected):
    assert got[0].requires_grad is False
    for g, e in zip(got[:3], expected[:3]):
        assert (g is None) == (e is None)
        if e is not None:
            assert_close(g, e)
    for g, e in zip(got[3], expected[3]):
        assert_close(g, e)


@pytest.mark.parametrize(("name", "kwargs"), REFERENCE_LOSSES, ids=IDS)
@pytest.mark.parametrize("batch_size", [1, 3, 7, 20, 64])
def test_chunked_gradients_equal_the_unchunked_loss(name, kwargs, batch_size):
    loss = getattr(L, name)(**kwargs)
    expected = _whole(loss, EMB, LABELS)
    assert expected[0] != 0
    _assert_same(_chunked(loss, EMB, LABELS, batch_size), expected)


@pytest.mark.parametrize(("name", "kwargs"), REFERENCE_LOSSES, ids=IDS)
def test_chunked_gradients_against_a_reference_set(name, kwargs):
    loss = getattr(L, name)(**kwargs)
    expected = _whole(loss, EMB, LABELS, REF, REF_LABELS)
    _assert_same(_chunked(loss, EMB, LABELS, 6, REF, REF_LABELS), expected)


@pytest.mark.parametrize(("name", "kwargs"), SAMPLE_LOSSES, ids=[n for n, _ in SAMPLE_LOSSES])
def test_class_vector_losses_are_chunked_by_samples(name, kwargs):
    torch.manual_seed(0)
    loss = getattr(L, name)(num_classes=4, embedding_size=6, **kwargs).double()
    expected = _whole(loss, EMB, LABELS)
    got = _chunked(loss, EMB, LABELS, 6)
    assert len(got[3]) > 0 and all(g is not None for g in got[3])
    _assert_same(got, expected)


def test_gradients_flow_through_a_model_once():
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 6).double()
    x = torch.randn(20, 5, dtype=torch.float64)
    loss = L.MultiSimilarityLoss()
    loss(model(x), LABELS).backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    anchor_batched_backward(loss, model(x), LABELS, 4)
    for p, e in zip(model.parameters(), expected):
        assert_close(p.grad, e)


def test_gradients_accumulate_like_backward():
    emb = EMB.clone().requires_grad_()
    loss = L.ContrastiveLoss()
    anchor_batched_backward(loss, emb, LABELS, 5)
    first = emb.grad.clone()
    anchor_batched_backward(loss, emb, LABELS, 5)
    assert_close(emb.grad, 2 * first)


def test_chunked_in_every_dtype(dtype):
    emb, labels = clustered_embeddings(4, 5, 6, seed=3, dtype=dtype)
    loss = L.MultiSimilarityLoss()
    whole = emb.clone().requires_grad_()
    expected = loss(whole, labels)
    expected.backward()
    chunked = emb.clone().requires_grad_()
    got = anchor_batched_backward(loss, chunked, labels, 6)
    assert got.dtype == dtype
    assert_close(got, expected.detach())
    assert_close(chunked.grad, whole.grad)


def test_no_pair_gives_a_zero_loss_and_no_gradient():
    emb = EMB[:4].clone().requires_grad_()
    out = anchor_batched_backward(L.TripletMarginLoss(), emb, torch.arange(4), 2)
    assert out == 0
    assert emb.grad is None or torch.equal(emb.grad, torch.zeros_like(emb))


def test_tiny_sets_follow_the_at_most_one_pair_rule_of_the_whole_set():
    emb = EMB[:3].clone().requires_grad_()
    labels = torch.tensor([0, 0, 1])
    loss = L.ContrastiveLoss(pos_margin=0.0, neg_margin=10.0)
    expected = _whole(loss, EMB[:3], labels)
    _assert_same(_chunked(loss, EMB[:3], labels, 1), expected)
    assert emb.grad is None


def test_an_empty_batch_gives_a_zero_loss():
    emb = torch.zeros(0, 6, dtype=torch.float64, requires_grad=True)
    out = anchor_batched_backward(L.ContrastiveLoss(), emb, torch.zeros(0, dtype=torch.long), 3)
    assert out == 0 and emb.grad is None


def test_embeddings_without_gradients_give_the_value_only():
    out = anchor_batched_backward(L.SupConLoss(), EMB, LABELS, 6)
    assert_close(out, L.SupConLoss()(EMB, LABELS))


def test_nonfinite_embeddings_give_nan():
    emb = EMB.clone()
    emb[2, 1] = float("inf")
    out = anchor_batched_backward(L.TripletMarginLoss(), emb.requires_grad_(), LABELS, 4)
    assert torch.isnan(out)


def test_the_reducer_is_restored_after_a_call_and_after_an_error():
    loss = L.MarginLoss(learn_beta=True, nu=0.1)  # beta_reg_loss: already reduced
    reducer = loss.reducer
    with pytest.raises(ValueError, match="'beta_reg_loss' is already reduced"):
        anchor_batched_backward(loss, EMB.clone().requires_grad_(), LABELS, 4)
    assert loss.reducer is reducer
    loss = L.MultiSimilarityLoss(embedding_regularizer=LpRegularizer())
    with pytest.raises(ValueError, match="'embedding_reg_loss' is already reduced"):
        anchor_batched_backward(loss, EMB.clone().requires_grad_(), LABELS, 4)
    loss = L.TripletMarginLoss()
    reducer = loss.reducer
    anchor_batched_backward(loss, EMB.clone().requires_grad_(), LABELS, 4)
    assert loss.reducer is reducer


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (L.LiftedStructureLoss, "reads the negatives of its positive"),
        (L.IntraPairVarianceLoss, "means over every pair of the batch"),
        (lambda: L.ProxyAnchorLoss(4, 6), "log-sum-exp over every sample"),
        (L.NCALoss, "does not declare that it decomposes over anchors"),
        (L.FastAPLoss, "does not declare"),
        (L.HistogramLoss, "does not declare"),
        (L.AngularLoss, "does not declare"),
        (lambda: L.TripletMarginLoss(triplets_per_anchor=3), "draws random triplets"),
        (lambda: L.MarginLoss(triplets_per_anchor=3), "draws random triplets"),
    ],
)
def test_a_loss_that_does_not_decompose_over_anchors_is_rejected_naming_why(make, why):
    loss = make()
    with pytest.raises(ValueError, match=why) as info:
        anchor_batched_backward(loss, EMB.clone().requires_grad_(), LABELS, 4)
    assert type(loss).__name__ in str(info.value)


@pytest.mark.parametrize(
    "reducer",
    [
        ClassWeightedReducer(torch.ones(4)),
        PerAnchorReducer(),
        DoNothingReducer(),
        MultipleReducers({"loss": PerAnchorReducer()}),
    ],
    ids=lambda r: type(r).__name__,
)
def test_a_reducer_that_does_not_sum_or_average_is_rejected(reducer):
    loss = L.MultiSimilarityLoss(reducer=reducer)
    with pytest.raises(ValueError, match="reducers that sum or average"):
        anchor_batched_backward(loss, EMB.clone().requires_grad_(), LABELS, 4)


def test_multiple_reducers_of_sums_are_fine():
    loss = L.ContrastiveLoss(
        reducer=MultipleReducers({"pos_loss": SumReducer(), "neg_loss": AvgNonZeroReducer()})
    )
    _assert_same(_chunked(loss, EMB, LABELS, 3), _whole(loss, EMB, LABELS))


def test_divisor_reducer_adds_the_divisors_of_the_chunks():
    loss = L.MarginLoss(margin=0.3, reducer=DivisorReducer())
    _assert_same(_chunked(loss, EMB, LABELS, 3), _whole(loss, EMB, LABELS))


def test_bad_arguments_are_rejected():
    emb = EMB.clone().requires_grad_()
    loss = L.MultiSimilarityLoss()
    with pytest.raises(TypeError, match="loss_func"):
        anchor_batched_backward(torch.nn.MSELoss(), emb, LABELS, 4)
    with pytest.raises(ValueError, match="batch_size"):
        anchor_batched_backward(loss, emb, LABELS, 0)
    with pytest.raises(TypeError, match="batch_size"):
        anchor_batched_backward(loss, emb, LABELS, 2.5)
    with pytest.raises(TypeError, match="embeddings"):
        anchor_batched_backward(loss, EMB.long(), LABELS, 4)
    with pytest.raises(TypeError, match="labels"):
        anchor_batched_backward(loss, emb, [0] * 20, 4)
    with pytest.raises(ValueError, match="labels"):
        anchor_batched_backward(loss, emb, LABELS[:5], 4)
    with pytest.raises(ValueError, match="ref_labels"):
        anchor_batched_backward(loss, emb, LABELS, 4, ref_emb=REF)
    with pytest.raises(ValueError, match="ref_emb must be None"):
        anchor_batched_backward(
            L.ArcFaceLoss(4, 6), emb, LABELS, 4, ref_emb=REF, ref_labels=REF_LABELS
        )
    assert emb.grad is None


def test_ref_emb_that_is_the_batch_itself_is_the_same_set():
    loss = L.NTXentLoss()
    expected = _whole(loss, EMB, LABELS)
    emb = EMB.clone().requires_grad_()
    out = anchor_batched_backward(loss, emb, LABELS, 4, ref_emb=emb, ref_labels=LABELS)
    assert_close(out, expected[0])
    assert_close(emb.grad, expected[1])
