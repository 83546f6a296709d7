"""TripletMarginMiner, AngularMiner, DistanceWeightedMiner, EmbeddingsAlreadyPackagedAsTriplets."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from pml.core.testing import clustered_embeddings
from pml.core.validation import InvalidArgumentError
from pml.distances import CosineSimilarity, DotProductSimilarity, LpDistance
from pml.miners import (
    AngularMiner,
    DistanceWeightedMiner,
    EmbeddingsAlreadyPackagedAsTriplets,
    TripletMarginMiner,
)
from pml.miners import functional as MF


def data(n_classes: int = 4, per_class: int = 4, dim: int = 6, seed: int = 0, spread: float = 1.0):
    return clustered_embeddings(
        n_classes, per_class, dim, seed=seed, spread=spread, dtype=torch.float64
    )


def all_triplets(labels, ref_labels, same):  # naive enumeration, lexicographic
    out = []
    for a in range(len(labels)):
        for p in range(len(ref_labels)):
            if labels[a] != ref_labels[p] or (same and a == p):
                continue
            for n in range(len(ref_labels)):
                if labels[a] != ref_labels[n]:
                    out.append((a, p, n))
    return out


def naive_triplet_margin(mat, labels, ref_labels, same, margin, kind, inverted):
    out = []
    for a, p, n in all_triplets(labels.tolist(), ref_labels.tolist(), same):
        ap, an = mat[a, p].item(), mat[a, n].item()
        tm = ap - an if inverted else an - ap
        if kind == "easy":
            ok = tm > margin
        else:
            ok = tm <= margin
            if kind == "hard":
                ok = ok and tm <= 0
            elif kind == "semihard":
                ok = ok and tm > 0
        if ok:
            out.append((a, p, n))
    return out


def as_rows(t):
    return list(zip(*(x.tolist() for x in t)))


# ----------------------------------------------------------------------------- TripletMarginMiner


@pytest.mark.parametrize("kind", ["all", "hard", "semihard", "easy"])
@pytest.mark.parametrize("distance", [None, CosineSimilarity()], ids=["lp", "cosine"])
@pytest.mark.parametrize("with_ref", [False, True])
def test_triplet_margin_matches_naive(kind, distance, with_ref):
    emb, labels = data()
    ref_emb, ref_labels = (data(seed=1)[0][:11], data(seed=1)[1][:11]) if with_ref else (None, None)
    miner = TripletMarginMiner(margin=0.3, type_of_triplets=kind, distance=distance)
    out = miner(emb, labels, ref_emb, ref_labels)
    r, rl = (emb, labels) if ref_emb is None else (ref_emb, ref_labels)
    mat = miner.distance(emb, r)
    expected = naive_triplet_margin(
        mat, labels, rl, not with_ref, 0.3, kind, miner.distance.is_inverted
    )
    assert as_rows(out) == expected  # same lexicographic order
    assert miner.num_triplets == len(expected)


def test_triplet_margin_spec_example_counts():
    torch.manual_seed(0)
    emb = torch.randn(6, 4)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    counts = {k: len(TripletMarginMiner(type_of_triplets=k)(emb, labels)[0]) for k in
              ("all", "hard", "semihard", "easy")}  # fmt: skip
    assert counts == {"all": 20, "hard": 15, "semihard": 5, "easy": 4}


def test_triplet_margin_blocks_do_not_change_output():
    emb, labels = data(5, 6, 8)
    mat = LpDistance()(emb)
    full = MF.triplet_margin_miner(mat, labels, margin=0.5)
    for max_elements in (1, 7, 64, 1000):
        chunked = MF.triplet_margin_miner(mat, labels, margin=0.5, max_elements=max_elements)
        assert all(torch.equal(x, y) for x, y in zip(full, chunked))
    with pytest.raises(ValueError, match="max_elements"):
        MF.triplet_margin_miner(mat, labels, max_elements=0)


def test_triplet_margin_unknown_type_warns_and_behaves_like_all():
    emb, labels = data()
    with pytest.warns(UserWarning, match="type_of_triplets"):
        miner = TripletMarginMiner(type_of_triplets="semi-hard")
    got = miner(emb, labels)
    expected = TripletMarginMiner()(emb, labels)
    assert all(torch.equal(x, y) for x, y in zip(got, expected))


def test_triplet_margin_stats_match_naive():
    emb, labels = data()
    miner = TripletMarginMiner(margin=0.2, collect_stats=True)
    miner(emb, labels)
    mat = miner.distance(emb)
    rows = all_triplets(labels.tolist(), labels.tolist(), True)
    ap = torch.tensor([mat[a, p].item() for a, p, _ in rows], dtype=torch.float64)
    an = torch.tensor([mat[a, n].item() for a, _, n in rows], dtype=torch.float64)
    assert miner.pos_pair_dist == pytest.approx(ap.mean().item(), rel=1e-12)
    assert miner.neg_pair_dist == pytest.approx(an.mean().item(), rel=1e-12)
    assert miner.avg_triplet_margin == pytest.approx((an - ap).mean().item(), rel=1e-9)
    assert "avg_triplet_margin" in miner._record_these_stats
    assert miner._record_these == ["margin"]


def test_triplet_margin_stats_nan_without_triplets():
    miner = TripletMarginMiner(collect_stats=True)
    miner(torch.randn(3, 4), torch.tensor([0, 1, 2]))
    assert math.isnan(miner.pos_pair_dist) and math.isnan(miner.avg_triplet_margin)


@pytest.mark.parametrize(
    "labels",
    [[0, 1, 2, 3], [0, 0, 0, 0], [0], []],
    ids=["no-positives", "one-class", "one", "empty"],
)
def test_triplet_miners_edge_cases(labels):
    labels = torch.tensor(labels, dtype=torch.long)
    emb = torch.randn(len(labels), 4)
    for miner in (TripletMarginMiner(), AngularMiner(), DistanceWeightedMiner()):
        a, p, n = miner(emb, labels)
        assert len(a) == len(p) == len(n) == 0 and a.dtype == torch.long
        assert miner.num_triplets == 0


def test_triplet_margin_dtype_device(dtype, device):
    emb, labels = data(3, 4, 5, spread=0.3)
    miner = TripletMarginMiner(margin=0.1, type_of_triplets="semihard")
    expected = miner(emb, labels)
    got = miner(emb.to(device, dtype), labels.to(device))
    assert all(t.device == emb.to(device).device and t.dtype == torch.long for t in got)
    if dtype in (torch.float32, torch.float64):
        assert all(torch.equal(x.cpu(), y) for x, y in zip(got, expected))
    else:  # rounding may move triplets across the margin: check validity instead
        mat = miner.distance(emb.to(device, dtype))
        tm = mat[got[0], got[2]] - mat[got[0], got[1]]
        assert bool(((tm > 0) & (tm <= 0.1)).all())


def test_triplet_margin_large_batch_is_memory_bounded():
    # N = 512: the N x N x N tensor would be 134M entries; blocks hold at most 4M
    emb, labels = clustered_embeddings(128, 4, 16, seed=0)
    a, p, n = TripletMarginMiner(margin=0.05, type_of_triplets="hard")(emb, labels)
    assert len(a) > 0
    mat = LpDistance()(emb)
    assert bool((labels[a] == labels[p]).all() and (labels[a] != labels[n]).all())
    assert bool((mat[a, n] - mat[a, p] <= 0).all())


# ---------------------------------------------------------------------------------- AngularMiner


def naive_angular(emb, labels, ref_emb, ref_labels, same, angle):
    out, angles = [], []
    for a, p, n in all_triplets(labels.tolist(), ref_labels.tolist(), same):
        A, P, N = emb[a : a + 1], ref_emb[p : p + 1], ref_emb[n : n + 1]
        c = (A + P) / 2
        ang = torch.atan(F.pairwise_distance(A, P) / (2 * F.pairwise_distance(N, c))).item()
        angles.append(ang)
        if ang > angle:
            out.append((a, p, n))
    return out, angles


@pytest.mark.parametrize("with_ref", [False, True])
@pytest.mark.parametrize("angle", [10, 20, 40])
def test_angular_matches_naive(with_ref, angle):
    emb, labels = data(4, 4, 5, spread=0.8)
    emb = emb * 3  # raw rows: not normalised
    ref_emb, ref_labels = (emb[3:14] + 0.1, labels[3:14].clone()) if with_ref else (emb, labels)
    miner = AngularMiner(angle=angle)
    out = miner(emb, labels, *((ref_emb, ref_labels) if with_ref else ()))
    expected, _ = naive_angular(emb, labels, ref_emb, ref_labels, not with_ref, math.radians(angle))
    assert as_rows(out) == expected
    assert miner.angle == math.radians(angle)


def test_angular_is_scale_invariant_and_not_normalised():
    torch.manual_seed(3)
    emb = torch.randn(6, 3, dtype=torch.float64) * torch.tensor([[1.0], [5], [0.2], [2], [1], [3]],
                                                                 dtype=torch.float64)  # fmt: skip
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    base = AngularMiner()(emb, labels)
    scaled = AngularMiner()(emb * 7.0, labels)
    assert all(torch.equal(x, y) for x, y in zip(base, scaled))
    normalised = AngularMiner()(F.normalize(emb), labels)
    expected, _ = naive_angular(emb, labels, emb, labels, True, math.radians(20))
    assert as_rows(base) == expected
    assert as_rows(normalised) != expected  # the selection uses raw rows


def test_angular_threshold_band_is_recomputed_exactly():
    # a negative exactly on the threshold: the Gram route alone cannot decide it
    emb, labels = data(3, 3, 4)
    _, angles = naive_angular(emb, labels, emb, labels, True, 0.0)
    for thr in sorted(angles)[::7]:
        got = MF.angular_miner(emb, labels, angle=thr)
        expected, _ = naive_angular(emb, labels, emb, labels, True, thr)
        assert as_rows(got) == expected


def test_angular_float32_matches_reference_formula():
    emb, labels = clustered_embeddings(8, 4, 16, seed=5, spread=0.7, dtype=torch.float32)
    got = AngularMiner(angle=25)(emb, labels)
    expected, _ = naive_angular(emb, labels, emb, labels, True, math.radians(25))
    assert as_rows(got) == expected


def test_angular_blocks_do_not_change_output():
    emb, labels = data(4, 5, 6)
    full = MF.angular_miner(emb, labels, angle=0.3)
    for max_elements in (1, 13, 100):
        part = MF.angular_miner(emb, labels, angle=0.3, max_elements=max_elements)
        assert all(torch.equal(x, y) for x, y in zip(full, part))


def test_angular_stats():
    emb, labels = data(3, 4, 5)
    miner = AngularMiner(angle=20, collect_stats=True)
    out = miner(emb, labels)
    _, angles = naive_angular(emb, labels, emb, labels, True, 0.0)
    deg = torch.tensor(angles, dtype=torch.float64).rad2deg()
    thr = 20.0
    assert miner.average_angle == pytest.approx(deg.mean().item(), rel=1e-9)
    assert miner.min_angle == pytest.approx(deg.min().item(), rel=1e-9)
    assert miner.max_angle == pytest.approx(deg.max().item(), rel=1e-9)
    assert miner.std_of_angle == pytest.approx(deg.std().item(), rel=1e-7)
    assert miner.average_angle_above_threshold == pytest.approx(deg[deg > thr].mean().item())
    assert miner.average_angle_below_threshold == pytest.approx(deg[deg <= thr].mean().item())
    assert len(out[0]) == int((deg > thr).sum())


def test_angular_requires_default_lp_distance():
    for bad in (CosineSimilarity(), LpDistance(power=2), LpDistance(normalize_embeddings=False)):
        with pytest.raises(InvalidArgumentError, match="distance"):
            AngularMiner(distance=bad)
        with pytest.raises(AssertionError):
            DistanceWeightedMiner(distance=bad)


def test_angular_dtype_device(dtype, device):
    emb, labels = data(3, 4, 5, spread=0.5)
    got = AngularMiner()(emb.to(device, dtype), labels.to(device))
    assert all(t.device.type == device.type and t.dtype == torch.long for t in got)
    assert bool((labels[got[0].cpu()] == labels[got[1].cpu()]).all())
    if dtype in (torch.float32, torch.float64):
        expected = AngularMiner()(emb.to(dtype), labels)
        assert all(torch.equal(x.cpu(), y) for x, y in zip(got, expected))


# ------------------------------------------------------------------------- DistanceWeightedMiner


def naive_distance_weighted(emb, labels, cutoff, nonzero_loss_cutoff):
    """The spec's algorithm, written out with a per-label loop (RNG-exact)."""
    d = float(emb.shape[1])
    mat = torch.clamp(LpDistance()(emb), min=cutoff)
    logw = (2.0 - d) * torch.log(mat) - ((d - 3) / 2) * torch.log(1.0 - 0.25 * (mat**2))
    bad = torch.isinf(logw) | torch.isnan(logw)
    same = labels[:, None] == labels[None, :]
    logw = logw * ~same
    w = torch.exp(logw - logw[~bad].max())
    w = w * ~same * (mat < nonzero_loss_cutoff)
    w[bad] = 0
    w = w / w.sum(dim=1, keepdim=True)
    out_a, out_p, out_n = [], [], []
    for label in torch.unique(labels):
        pos = torch.where(labels == label)[0]
        neg = torch.where(labels != label)[0]
        if len(pos) < 2 or len(neg) == 0:
            continue
        k = len(pos)
        cand = torch.stack([torch.cat([pos[:i], pos[i + 1 :]]) for i in range(len(pos))])
        r_p = torch.randint(0, cand.shape[1], (len(pos) * k,))
        rows = torch.arange(len(pos)).repeat_interleave(k)
        p, a = cand[rows, r_p], pos[rows]
        ww = w[a][:, neg]
        keep = ww.sum(1) > 0
        if not keep.any():
            continue
        n = torch.multinomial(ww[keep], 1, replacement=True).flatten()
        out_a.append(a[keep]), out_p.append(p[keep]), out_n.append(neg[n])
    return torch.cat(out_a), torch.cat(out_p), torch.cat(out_n)


@pytest.mark.parametrize("kwargs", [{}, {"cutoff": 0.3, "nonzero_loss_cutoff": 1.2}])
def test_distance_weighted_is_rng_exact(kwargs):
    emb, labels = data(4, 4, 3)
    torch.manual_seed(7)
    got = DistanceWeightedMiner(**kwargs)(emb, labels)
    torch.manual_seed(7)
    expected = naive_distance_weighted(emb, labels, kwargs.get("cutoff", 0.5),
                                       kwargs.get("nonzero_loss_cutoff", 1.4))  # fmt: skip
    assert all(torch.equal(x, y) for x, y in zip(got, expected))
    miner = DistanceWeightedMiner(**kwargs)
    assert miner._record_these == ["cutoff", "nonzero_loss_cutoff"]
    assert isinstance(miner.cutoff, float)


def test_distance_weighted_with_ref_is_valid():
    emb, labels = data(4, 4, 3)
    ref, ref_labels = data(4, 3, 3, seed=2)
    a, p, n = DistanceWeightedMiner()(emb, labels, ref, ref_labels)
    assert len(a) > 0
    assert bool((labels[a] == ref_labels[p]).all() and (labels[a] != ref_labels[n]).all())


def test_distance_weighted_without_any_finite_weight_returns_nothing():
    # fix: the reference takes the max of an empty tensor and raises
    emb = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    a, p, n = DistanceWeightedMiner(cutoff=2.0)(emb, torch.tensor([0, 1, 0, 1]))
    assert len(a) == len(p) == len(n) == 0


def test_distance_weighted_dtype_device(dtype, device):
    emb, labels = data(4, 4, 3)
    a, p, n = DistanceWeightedMiner()(emb.to(device, dtype), labels.to(device))
    assert a.device.type == device.type and len(a) > 0
    assert bool((labels.to(device)[a] == labels.to(device)[p]).all())
    assert bool((a != p).all())


# ------------------------------------------------------------ EmbeddingsAlreadyPackagedAsTriplets


def test_packaged_triplets(device):
    emb = torch.randn(9, 2, device=device)
    a, p, n = EmbeddingsAlreadyPackagedAsTriplets()(emb, torch.zeros(9, device=device))
    assert (a.tolist(), p.tolist(), n.tolist()) == ([0, 3, 6], [1, 4, 7], [2, 5, 8])
    assert a.device == emb.device  # fix: the reference returns CPU indices


def test_packaged_triplets_labels_not_needed_and_bad_sizes():
    miner = EmbeddingsAlreadyPackagedAsTriplets()
    assert [t.tolist() for t in miner(torch.randn(6, 2), None)] == [[0, 3], [1, 4], [2, 5]]
    for n in (7, 8):
        with pytest.raises(InvalidArgumentError, match="multiple of 3"):
            miner(torch.randn(n, 2), torch.zeros(n))
    with pytest.raises(AssertionError):  # still what code written for the reference catches
        miner(torch.randn(7, 2), torch.zeros(7))
    assert [len(t) for t in miner(torch.randn(0, 2), None)] == [0, 0, 0]


def test_dot_product_distance_accepted_by_triplet_margin():
    emb, labels = data()
    miner = TripletMarginMiner(distance=DotProductSimilarity(normalize_embeddings=False))
    out = miner(emb, labels)
    mat = emb @ emb.T
    assert as_rows(out) == naive_triplet_margin(mat, labels, labels, True, 0.2, "all", True)


@pytest.mark.parametrize("degrees", [-5, 0, 1e-3, 60, 85, 89.9, 90, 120])
def test_angular_extreme_thresholds(degrees):
    emb, labels = data(3, 3, 4, spread=0.1)  # tight clusters: angles close to 90 degrees
    for e in (emb, emb * 0.3 + 1):
        got = AngularMiner(angle=degrees)(e, labels)
        expected, _ = naive_angular(e, labels, e, labels, True, math.radians(degrees))
        assert as_rows(got) == expected


def test_angular_zero_gap_pairs():
    emb = torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 3.0], [1.0 + 1e-6, 1.0 + 1e-6]])
    labels = torch.tensor([0, 0, 1, 1])
    for degrees in (0, 10):
        expected, _ = naive_angular(emb, labels, emb, labels, True, math.radians(degrees))
        assert as_rows(AngularMiner(angle=degrees)(emb, labels)) == expected
