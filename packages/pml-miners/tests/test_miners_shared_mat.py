"""``mat=``: miners mine from a distance matrix computed once outside (issue 15 item 2)."""

from __future__ import annotations

import pytest
import torch

import pml.miners as M
from pml.core.testing import clustered_embeddings
from pml.distances import CosineSimilarity, LpDistance

EMB, LABELS = clustered_embeddings(4, 6, 5, seed=3, spread=1.0, dtype=torch.float64)
REF, REF_LABELS = clustered_embeddings(4, 4, 5, seed=5, spread=1.0, dtype=torch.float64)

ACCEPTING = [
    ("MultiSimilarityMiner", {"epsilon": 0.5}),
    ("MultiSimilarityMiner", {"epsilon": 0.5, "distance": LpDistance()}),
    ("PairMarginMiner", {"pos_margin": 0.5, "neg_margin": 1.5}),
    ("HDCMiner", {"filter_percentage": 0.6}),
    ("UniformHistogramMiner", {"num_bins": 4, "pos_per_bin": 6, "neg_per_bin": 9}),
    ("TripletMarginMiner", {"margin": 0.5}),
    ("TripletMarginMiner", {"margin": 0.5, "tuples_per_anchor": 3}),
    ("DistanceWeightedMiner", {"cutoff": 0.1}),
    ("BatchEasyHardMiner", {}),
    ("BatchEasyHardMiner", {"pos_strategy": "all", "neg_strategy": "hard"}),
    ("BatchHardMiner", {}),
]
IDS = [f"{n}-{i}" for i, (n, _) in enumerate(ACCEPTING)]


def _mine(name, kwargs, emb, labels, ref=None, ref_labels=None, *, use_mat):
    miner = getattr(M, name)(**kwargs)
    if name == "DistanceWeightedMiner":
        emb = torch.nn.functional.normalize(emb, dim=1)
        ref = None if ref is None else torch.nn.functional.normalize(ref, dim=1)
    mat = miner.distance(emb, ref) if use_mat else None
    torch.manual_seed(7)
    return miner(emb, labels, ref, ref_labels, mat=mat)


@pytest.mark.parametrize(("name", "kwargs"), ACCEPTING, ids=IDS)
@pytest.mark.parametrize("with_ref", [False, True])
def test_mining_from_a_shared_mat_gives_the_same_tuples(name, kwargs, with_ref):
    ref = (REF, REF_LABELS) if with_ref else ()
    expected = _mine(name, kwargs, EMB, LABELS, *ref, use_mat=False)
    got = _mine(name, kwargs, EMB, LABELS, *ref, use_mat=True)
    assert len(expected[0]) > 0
    for g, e in zip(got, expected):
        assert torch.equal(g, e)


def test_the_shared_mat_is_what_the_miner_reads():
    # hand-made distances: batch-hard picks the largest positive and smallest negative cell
    labels = torch.tensor([0, 0, 0, 1, 1])
    mat = torch.tensor(
        [
            [0.0, 5.0, 1.0, 2.0, 9.0],
            [5.0, 0.0, 3.0, 9.0, 1.0],
            [1.0, 3.0, 0.0, 4.0, 8.0],
            [2.0, 9.0, 4.0, 0.0, 6.0],
            [9.0, 1.0, 8.0, 6.0, 0.0],
        ]
    )
    a, p, n = M.BatchHardMiner()(torch.zeros(5, 2), labels, mat=mat)
    assert a.tolist() == [0, 1, 2, 3, 4]
    assert p.tolist() == [1, 0, 1, 4, 3]
    assert n.tolist() == [3, 4, 3, 0, 1]


def test_a_mat_with_a_graph_is_mined_detached():
    emb = EMB.clone().requires_grad_()
    mat = CosineSimilarity()(emb)  # e.g. the loss's matrix, with its autograd graph
    out = M.MultiSimilarityMiner()(emb, LABELS, mat=mat)
    assert all(not t.requires_grad for t in out)


def test_shared_mat_in_every_dtype(dtype):
    emb, labels = clustered_embeddings(3, 4, 5, seed=4, dtype=dtype)
    miner = M.MultiSimilarityMiner(epsilon=0.3)
    got = miner(emb, labels, mat=miner.distance(emb))
    expected = miner(emb, labels)
    for g, e in zip(got, expected):
        assert torch.equal(g, e)


@pytest.mark.parametrize(
    "miner",
    [M.AngularMiner(), M.EmbeddingsAlreadyPackagedAsTriplets()],
    ids=lambda m: type(m).__name__,
)
def test_a_miner_that_cannot_take_mat_says_so(miner):
    emb = EMB[:24]
    with pytest.raises(TypeError, match=f"{type(miner).__name__} cannot take mat"):
        miner(emb, LABELS[:24], mat=LpDistance()(emb))


def test_mat_of_the_wrong_shape_is_rejected():
    miner = M.TripletMarginMiner()
    with pytest.raises(ValueError, match=r"mat must have shape \(N, M\) = \(24, 24\)"):
        miner(EMB, LABELS, mat=torch.zeros(24, 16, dtype=EMB.dtype))
    with pytest.raises(ValueError, match=r"mat must have shape \(N, M\) = \(24, 16\)"):
        miner(EMB, LABELS, REF, REF_LABELS, mat=torch.zeros(24, 24, dtype=EMB.dtype))


def test_mat_of_the_wrong_type_or_device_is_rejected():
    miner = M.PairMarginMiner()
    with pytest.raises(TypeError, match="mat must be a torch.Tensor"):
        miner(EMB, LABELS, mat="distances")
    with pytest.raises(TypeError, match="mat must be a floating-point tensor"):
        miner(EMB, LABELS, mat=torch.zeros(24, 24, dtype=torch.int64))
    with pytest.raises(ValueError, match="mat must be on cpu"):
        miner(EMB, LABELS, mat=torch.zeros(24, 24, dtype=EMB.dtype, device="meta"))


def test_mat_is_forgotten_after_the_call():
    miner = M.BatchHardMiner()
    miner(EMB, LABELS, mat=miner.distance(EMB) * 0)
    assert miner._given_mat is None
    got = miner(EMB, LABELS)
    expected = M.BatchHardMiner()(EMB, LABELS)
    assert all(torch.equal(g, e) for g, e in zip(got, expected))
