"""``mat=``: a distance matrix computed once, shared by a miner and a loss (issue 15 item 2)."""

from __future__ import annotations

import copy

import pytest
import torch

import pml.losses as L
from pml.core.testing import assert_close, clustered_embeddings
from pml.distances import CosineSimilarity, LpDistance
from pml.losses.functional import multi_similarity_loss
from pml.miners import MultiSimilarityMiner, TripletMarginMiner

EMB, LABELS = clustered_embeddings(4, 5, 6, seed=1, spread=0.8, dtype=torch.float64)
REF, REF_LABELS = clustered_embeddings(4, 3, 6, seed=2, spread=0.8, dtype=torch.float64)

#: every loss that takes ``mat=`` (with arguments giving non-trivial losses here)
ACCEPTING = [
    ("ContrastiveLoss", {"pos_margin": 0.2, "neg_margin": 1.5}),
    ("SignalToNoiseRatioContrastiveLoss", {}),
    ("IntraPairVarianceLoss", {}),
    ("GeneralizedLiftedStructureLoss", {}),
    ("LiftedStructureLoss", {}),
    ("MultiSimilarityLoss", {}),
    ("CircleLoss", {}),
    ("NTXentLoss", {"temperature": 0.5}),
    ("TupletMarginLoss", {}),
    ("SupConLoss", {}),
    ("NCALoss", {}),
    ("TripletMarginLoss", {"margin": 0.5}),
    ("TripletMarginLoss", {"margin": 0.5, "swap": True}),
    ("MarginLoss", {"margin": 0.5}),
    ("DynamicSoftMarginLoss", {}),
]
#: take ``mat=`` but no reference set
SELF_ONLY = [
    ("HistogramLoss", {}),
    ("InstanceLoss", {}),
    ("FastAPLoss", {}),
    ("PNPLoss", {}),
    ("RankedListLoss", {"margin": 0.4, "Tn": 0, "imbalance": 0.5, "alpha": 1.0, "Tp": 0}),
]
IDS = [f"{n}-{i}" for i, (n, _) in enumerate(ACCEPTING)]


def _leaf(x: torch.Tensor) -> torch.Tensor:
    return x.clone().requires_grad_()


def _loss_and_grads(loss, emb, labels, *, use_mat, ref=None, ref_labels=None, tuples=None):
    loss = copy.deepcopy(loss)  # a fresh state (DynamicSoftMarginLoss keeps a histogram)
    emb = _leaf(emb)
    ref = None if ref is None else _leaf(ref)
    kw = {}
    if use_mat:
        kw["mat"] = loss.distance(emb) if ref is None else loss.distance(emb, ref)
    out = loss(emb, labels, tuples, ref, ref_labels, **kw)
    out.backward()
    return out.detach(), emb.grad, None if ref is None else ref.grad


@pytest.mark.parametrize(
    ("name", "kwargs"), ACCEPTING + SELF_ONLY, ids=IDS + [n for n, _ in SELF_ONLY]
)
def test_shared_mat_gives_the_loss_and_gradients_of_the_loss_alone(name, kwargs):
    loss = getattr(L, name)(**kwargs)
    expected = _loss_and_grads(loss, EMB, LABELS, use_mat=False)
    got = _loss_and_grads(loss, EMB, LABELS, use_mat=True)
    assert expected[0] != 0
    assert_close(got[0], expected[0])
    assert_close(got[1], expected[1])


@pytest.mark.parametrize(("name", "kwargs"), ACCEPTING, ids=IDS)
def test_shared_mat_against_a_reference_set(name, kwargs):
    loss = getattr(L, name)(**kwargs)
    args = {"ref": REF, "ref_labels": REF_LABELS}
    expected = _loss_and_grads(loss, EMB, LABELS, use_mat=False, **args)
    got = _loss_and_grads(loss, EMB, LABELS, use_mat=True, **args)
    for g, e in zip(got, expected):
        assert_close(g, e)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [(n, k) for n, k in ACCEPTING if n not in ("NCALoss", "DynamicSoftMarginLoss")],
)
def test_shared_mat_with_a_miner_tuple(name, kwargs):
    loss = getattr(L, name)(**kwargs)
    miner = TripletMarginMiner(margin=0.5) if "Triplet" in name or "Margin" in name else None
    miner = miner or MultiSimilarityMiner(epsilon=0.5, distance=loss.distance)
    emb = _leaf(EMB)
    mat = loss.distance(emb)
    tuples = miner(emb, LABELS, mat=mat if miner.distance is loss.distance else None)
    got = copy.deepcopy(loss)(emb, LABELS, tuples, mat=mat)
    expected = copy.deepcopy(loss)(EMB, LABELS, tuples)
    assert_close(got.detach(), expected)


def test_the_shared_mat_is_what_the_loss_reads():
    # a matrix unlike the distance's: the loss is the functional formula on it, and the
    # gradient reaches the matrix
    emb = EMB.clone()
    mat = torch.rand(
        len(emb), len(emb), dtype=emb.dtype, generator=torch.Generator().manual_seed(3)
    )
    mat = mat.requires_grad_()
    loss = L.MultiSimilarityLoss()
    out = loss(emb, LABELS, mat=mat)
    pos = (LABELS[:, None] == LABELS[None]) & ~torch.eye(len(emb), dtype=torch.bool)
    neg = LABELS[:, None] != LABELS[None]
    expected = multi_similarity_loss(mat.detach(), pos, neg, 2, 50, 0.5, is_inverted=True).mean()
    assert_close(out.detach(), expected)
    out.backward()
    assert mat.grad is not None and mat.grad.abs().sum() > 0


def test_miner_and_loss_share_one_matrix_like_two_computations():
    emb = _leaf(EMB)
    loss, miner = L.MultiSimilarityLoss(), MultiSimilarityMiner()
    mat = loss.distance(emb)
    pairs = miner(emb, LABELS, mat=mat)
    out = loss(emb, LABELS, pairs, mat=mat)
    out.backward()
    emb2 = _leaf(EMB)
    expected = loss(emb2, LABELS, miner(emb2, LABELS))
    expected.backward()
    assert_close(out.detach(), expected.detach())
    assert_close(emb.grad, emb2.grad)


def test_shared_mat_in_every_dtype(dtype):
    emb, labels = clustered_embeddings(3, 4, 5, seed=4, dtype=dtype)
    loss = L.MultiSimilarityLoss()
    emb = emb.requires_grad_()
    expected = loss(emb, labels)
    got = loss(emb, labels, mat=loss.distance(emb))
    assert got.dtype == dtype
    assert_close(got, expected)
    ntx = L.NTXentLoss()
    assert_close(ntx(emb, labels, mat=ntx.distance(emb)), ntx(emb, labels))


def test_a_mat_of_another_dtype_is_read_like_the_loss_own_matrix():
    emb = EMB.float().requires_grad_()
    loss = L.ContrastiveLoss()
    got = loss(emb, LABELS, mat=loss.distance(emb.double()))
    assert got.dtype == torch.float32
    assert_close(got, loss(emb, LABELS))


@pytest.mark.parametrize("bad", [(5, 20), (20, 5), (20,), (20, 20, 1)])
def test_mat_of_the_wrong_shape_is_rejected(bad):
    emb = _leaf(EMB)
    mat = torch.zeros(bad, dtype=emb.dtype, requires_grad=True) * 1
    with pytest.raises(ValueError, match=r"mat must have shape \(N, M\) = \(20, 20\)"):
        L.MultiSimilarityLoss()(emb, LABELS, mat=mat)
    with pytest.raises(ValueError, match=r"mat must have shape \(N, M\) = \(20, 12\)"):
        L.ContrastiveLoss()(emb, LABELS, ref_emb=REF, ref_labels=REF_LABELS, mat=mat)


def test_mat_without_autograd_graph_is_rejected_when_embeddings_need_gradients():
    emb = _leaf(EMB)
    loss = L.TripletMarginLoss()
    with torch.no_grad():
        mat = loss.distance(emb)
    with pytest.raises(ValueError, match="mat has no autograd graph"):
        loss(emb, LABELS, mat=mat)
    with pytest.raises(ValueError, match="mat has no autograd graph"):
        loss(emb, LABELS, mat=loss.distance(emb).detach())
    ref = _leaf(REF)  # the reference set alone needs gradients
    with pytest.raises(ValueError, match="mat has no autograd graph"):
        loss(EMB, LABELS, None, ref, REF_LABELS, mat=loss.distance(EMB, REF))


def test_mat_without_graph_is_fine_when_no_gradient_is_needed():
    loss = L.TripletMarginLoss()
    mat = loss.distance(EMB)
    assert_close(loss(EMB, LABELS, mat=mat), loss(EMB, LABELS))
    emb = _leaf(EMB)
    with torch.no_grad():
        assert_close(loss(emb, LABELS, mat=loss.distance(emb)), loss(EMB, LABELS))


@pytest.mark.parametrize(
    "make",
    [
        lambda: L.ArcFaceLoss(4, 6),
        lambda: L.ProxyNCALoss(4, 6),
        lambda: L.ProxyAnchorLoss(4, 6),
        lambda: L.AngularLoss(),
        lambda: L.NPairsLoss(),
        lambda: L.ThresholdConsistentMarginLoss(),
    ],
)
def test_a_loss_that_cannot_take_mat_says_so(make):
    loss = make()
    emb = _leaf(EMB)
    mat = LpDistance()(emb)
    with pytest.raises(TypeError, match=f"{type(loss).__name__} cannot take mat"):
        loss(emb, LABELS, mat=mat)


def test_mat_of_the_wrong_type_is_rejected():
    with pytest.raises(TypeError, match="mat must be a torch.Tensor"):
        L.MultiSimilarityLoss()(EMB, LABELS, mat=[[0.0]])
    with pytest.raises(TypeError, match="mat must be a floating-point tensor"):
        L.MultiSimilarityLoss()(EMB, LABELS, mat=torch.zeros(20, 20, dtype=torch.long))


def test_mat_on_another_device_is_rejected():
    mat = torch.zeros(20, 20, dtype=EMB.dtype, device="meta")
    with pytest.raises(ValueError, match="mat must be on cpu"):
        L.MultiSimilarityLoss()(EMB, LABELS, mat=mat)


def test_mat_is_keyword_only_and_forgotten_after_the_call():
    loss = L.MultiSimilarityLoss()
    mat = CosineSimilarity()(EMB) * 0.5
    with pytest.raises(TypeError):
        loss(EMB, LABELS, None, None, None, mat)  # type: ignore[misc]
    assert_close(loss(EMB, LABELS, mat=mat), loss(EMB * 0 + EMB, LABELS, mat=mat))
    assert loss._given_mat is None
    assert_close(loss(EMB, LABELS), L.MultiSimilarityLoss()(EMB, LABELS))
    with pytest.raises(ValueError, match="mat must have shape"):
        loss(EMB, LABELS, mat=mat[:2])
    assert loss._given_mat is None


def test_nonfinite_embeddings_with_a_shared_mat_give_nan():
    emb = EMB.clone()
    emb[3, 0] = float("nan")
    loss = L.ContrastiveLoss()
    assert torch.isnan(loss(emb, LABELS, mat=loss.distance(emb)))
