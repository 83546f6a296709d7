"""Verification metrics (TAR@FAR, FNMR@FMR, ROC points) and threshold selection vs brute force."""

from __future__ import annotations

import math

import pytest
import torch

from pml.distances import CosineSimilarity, LpDistance
from pml.eval import MatchFinder, select_threshold, verification_metrics
from pml.eval import functional as EF

TARGETS = [0.0, 1e-3, 0.01, 0.05, 0.1, 0.3, 0.5, 1.0]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def naive_pairs(x, labels, ref=None, ref_labels=None, distance=None):
    """(score, genuine) of every pair in row-major order; scores "larger is more alike"."""
    distance = CosineSimilarity() if distance is None else distance
    other, other_labels = (x, labels) if ref is None else (ref, ref_labels)
    mat = distance(x.double(), other.double()).tolist()
    sign = 1.0 if distance.is_inverted else -1.0
    out = []
    for i in range(len(x)):
        for j in range(i + 1 if ref is None else 0, len(other)):
            out.append((sign * mat[i][j], bool((labels[i] == other_labels[j]).all())))
    return out


def naive_candidates(pairs):
    """(threshold, TA, FA) for +inf and every distinct score, strictest first (one sweep)."""
    rows = [(math.inf, 0, 0)]
    ta = fa = 0
    ordered = sorted(pairs, key=lambda p: -p[0])
    for i, (s, g) in enumerate(ordered):
        ta, fa = ta + g, fa + (not g)
        if i + 1 == len(ordered) or ordered[i + 1][0] != s:
            rows.append((s, ta, fa))
    return rows


def naive_tar_at_fmr(pairs, target):
    num_g = sum(g for _, g in pairs)
    num_i = len(pairs) - num_g
    best = max(ta for _, ta, fa in naive_candidates(pairs) if fa / num_i <= target)
    return best / num_g


def naive_best(pairs, criterion):
    num_g = sum(g for _, g in pairs)
    num_i = len(pairs) - num_g
    best, best_row = -1.0, None
    for t, ta, fa in naive_candidates(pairs):
        if criterion == "accuracy":
            v = (ta + num_i - fa) / (num_g + num_i)
        elif criterion == "balanced_accuracy":
            v = (ta / num_g + (num_i - fa) / num_i) / 2
        else:
            v = 2 * ta / (ta + fa + num_g)
        if v > best + 1e-15:
            best, best_row = v, (t, ta, fa)
    return best, best_row


def clustered(n=40, dim=8, classes=4, spread=0.6, seed=0):
    g = _gen(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    centres = torch.randn(classes, dim, generator=g)
    return centres[labels] + spread * torch.randn(n, dim, generator=g), labels


def concentrated(n=60, seed=0):
    """Cosine similarities in [0.986, 1]: 48 histogram bins of up to 149 of the 1770 pairs."""
    g = _gen(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    shift = labels.unsqueeze(1).float() * torch.tensor([1.0, 0.0, -1.0, 0.0])
    x = torch.ones(n, 4) + 0.05 * torch.randn(n, 4, generator=g) + 0.05 * shift
    return x.double(), labels


# ------------------------------------------------------------------------------- functional
def test_operating_points_hand_computed():
    p = EF.operating_points(
        torch.tensor([0.9, 0.4, 0.7, 0.4, 0.9], dtype=torch.float64),
        torch.tensor([True, True, False, False, False]),
    )
    assert p.thresholds.tolist() == [math.inf, 0.9, 0.7, 0.4]
    assert p.true_accepts.tolist() == [0, 1, 1, 2]
    assert p.false_accepts.tolist() == [0, 1, 2, 3]
    assert (p.num_genuine, p.num_impostor) == (2, 3)
    rows, slack = EF.points_at_fmr(p, [0.0, 1 / 3, 0.5, 2 / 3, 1.0])
    assert rows.tolist() == [0, 1, 1, 2, 3]
    assert slack.tolist() == [0.0] * 5


@pytest.mark.parametrize("same_set", [True, False])
def test_pair_score_blocks_match_naive(same_set):
    x, labels = clustered(15)
    ref, ref_labels = (None, None) if same_set else clustered(11, seed=1)
    for distance in (CosineSimilarity(), LpDistance()):
        ids = EF.label_ids(labels, labels if ref is None else ref_labels)
        blocks = EF.pair_score_blocks(
            x.double(),
            ids[0],
            None if ref is None else ref.double(),
            None if ref is None else ids[1],
            distance_fn=distance,
            is_inverted=distance.is_inverted,
            batch_size=4,
        )
        got = [(round(float(s), 9), bool(g)) for b in blocks for s, g in zip(*b)]
        want = [(round(s, 9), g) for s, g in naive_pairs(x, labels, ref, ref_labels, distance)]
        assert got == want


# ------------------------------------------------------------------------ verification_metrics
@pytest.mark.parametrize("same_set", [True, False])
def test_verification_metrics_match_naive(same_set):
    x, labels = clustered(36)
    ref, ref_labels = (None, None) if same_set else clustered(30, seed=1)
    res = verification_metrics(x.double(), labels, ref, ref_labels, fmr_targets=TARGETS)
    pairs = naive_pairs(x, labels, ref, ref_labels)
    assert res.route == "sorted" and res.exact
    assert res.num_genuine == sum(g for _, g in pairs)
    assert res.num_impostor == len(pairs) - res.num_genuine
    for i, t in enumerate(TARGETS):
        assert res.tar[i] == pytest.approx(naive_tar_at_fmr(pairs, t), abs=1e-12)
        assert res.fnmr[i] == pytest.approx(1 - res.tar[i])
        assert res.fmr[i] <= t
        # the threshold gives exactly these rates on the pairs
        th = res.thresholds[i]
        tar = sum(g and s >= th for s, g in pairs) / res.num_genuine
        fmr = sum((not g) and s >= th for s, g in pairs) / res.num_impostor
        assert (tar, fmr) == (pytest.approx(res.tar[i]), pytest.approx(res.fmr[i]))


def test_tar_at_far_is_the_impostor_quantile_hand_computed():
    # impostors 0.8, 0.5, 0.3, 0.1: at FMR 0.25 one impostor (0.8) may match
    scores = torch.tensor([0.95, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.1])
    genuine = torch.tensor([True, False, True, True, False, True, False, False])
    res = verification_metrics(scores=scores, is_genuine=genuine, fmr_targets=[0.0, 0.25, 0.5])
    assert res.tar == [0.25, 0.75, 1.0]
    assert res.fmr == [0.0, 0.25, 0.5]
    assert res.fnmr == [0.75, 0.25, 0.0]
    # thresholds halfway between the deciding score and the next one
    assert res.thresholds == pytest.approx([0.875, 0.55, 0.35])
    assert res.as_dict()["tar_at_far_0.25"] == 0.75
    assert res.as_dict()["fnmr_at_fmr_0.5"] == 0.0
    assert res.as_dict()["threshold_at_fmr_0"] == pytest.approx(0.875)


def test_distance_scores_are_thresholded_in_distance_units():
    distances = torch.tensor([0.1, 0.2, 0.35, 0.4, 0.9])
    genuine = torch.tensor([True, True, False, True, False])
    res = verification_metrics(
        scores=distances, is_genuine=genuine, is_inverted=False, fmr_targets=[0.5]
    )
    assert not res.is_inverted
    assert res.tar == [1.0] and res.fmr == [0.5]
    assert res.thresholds == pytest.approx([0.65])  # distance <= 0.65 matches
    same = verification_metrics(
        scores=distances, is_genuine=genuine, distance=LpDistance(), fmr_targets=[0.5]
    )
    assert same == res


def test_multi_column_labels_are_genuine_when_every_column_matches():
    x, _ = clustered(12)
    labels = torch.stack([torch.arange(12) % 2, torch.arange(12) % 3], 1)
    ref, _ = clustered(10, seed=1)
    ref_labels = torch.stack([torch.arange(10) % 2, torch.arange(10) % 3], 1)
    res = verification_metrics(x, labels, ref, ref_labels, fmr_targets=[0.1])
    pairs = naive_pairs(x, labels, ref, ref_labels)
    assert res.num_genuine == sum(g for _, g in pairs)
    assert res.tar[0] == pytest.approx(naive_tar_at_fmr(pairs, 0.1), abs=1e-6)


def test_histogram_route_is_exact_when_the_deciding_bins_fit():
    x, labels = concentrated()
    pairs = naive_pairs(x, labels)
    num_pairs = len(pairs)
    res = verification_metrics(x, labels, fmr_targets=TARGETS, max_buffered_scores=num_pairs // 2)
    assert res.route == "histogram" and res.exact
    for i, t in enumerate(TARGETS):
        assert res.tar[i] == pytest.approx(naive_tar_at_fmr(pairs, t), abs=1e-12)
    full = verification_metrics(x, labels, fmr_targets=TARGETS)
    assert full.route == "sorted"
    assert (full.tar, full.fmr) == (res.tar, res.fmr)
    # FMR 1 (accept all) needs no exact bin: the histogram's threshold is the lowest bin's edge
    assert full.thresholds[:-1] == res.thresholds[:-1]
    assert res.thresholds[-1] <= full.thresholds[-1]


def test_histogram_route_states_its_error_when_a_bin_does_not_fit():
    x, labels = concentrated()
    pairs = naive_pairs(x, labels)
    res = verification_metrics(x, labels, fmr_targets=TARGETS, max_buffered_scores=1)
    assert res.route == "histogram"
    assert not res.exact
    for i, t in enumerate(TARGETS):
        best = naive_tar_at_fmr(pairs, t)
        assert res.fmr[i] <= t
        assert res.tar[i] <= best + 1e-12
        assert res.tar[i] + res.tar_slack[i] >= best - 1e-12
        th = res.thresholds[i]  # still exactly the stated rates at the stated threshold
        assert sum(g and s >= th for s, g in pairs) / res.num_genuine == pytest.approx(res.tar[i])


def test_histogram_bins_are_order_preserving_and_edges_below_values():
    values = torch.tensor(
        [-3.0, -1e-30, -0.0, 0.0, 1e-30, 0.5, 0.5000001, 7.0], dtype=torch.float64
    )
    p = EF.streamed_operating_points(
        lambda: iter([(values, torch.arange(8) % 2 == 0)]), max_buffered_scores=0
    )
    assert (p.thresholds[1:].diff() < 0).all()  # strictly descending edges
    for t, ta, fa in zip(p.thresholds.tolist(), p.true_accepts, p.false_accepts):
        genuine = torch.arange(8) % 2 == 0
        assert int(ta) == int(((values >= t) & genuine).sum())
        assert int(fa) == int(((values >= t) & ~genuine).sum())


def test_verification_dtypes(dtype):
    x, labels = clustered(20)
    res = verification_metrics(x.to(dtype), labels, fmr_targets=[0.1])
    ref = verification_metrics(x.to(dtype).float(), labels, fmr_targets=[0.1])
    assert res.tar == ref.tar and res.fmr == ref.fmr
    pairs = verification_metrics(scores=torch.rand(30).to(dtype), is_genuine=torch.rand(30) > 0.5)
    assert len(pairs.tar) == 6


def test_numpy_inputs():
    x, labels = clustered(20)
    a = verification_metrics(x.numpy(), labels.numpy(), fmr_targets=[0.1])
    b = verification_metrics(x, labels, fmr_targets=[0.1])
    assert a == b


# ------------------------------------------------------------------------- select_threshold
@pytest.mark.parametrize("criterion", ["accuracy", "balanced_accuracy", "f1"])
def test_select_threshold_matches_naive(criterion):
    x, labels = clustered(30, spread=1.0)
    pairs = naive_pairs(x, labels)
    sel = select_threshold(x.double(), labels, criterion=criterion)
    value, (t, ta, fa) = naive_best(pairs, criterion)
    assert sel.value == pytest.approx(value, abs=1e-12)
    assert getattr(sel, criterion) == sel.value
    assert (sel.true_accepts, sel.false_accepts) == (ta, fa)
    assert sel.slack == 0.0 and sel.route == "sorted"
    assert sel.tar == ta / sel.num_genuine and sel.fmr == fa / sel.num_impostor


@pytest.mark.parametrize("criterion", ["accuracy", "balanced_accuracy", "f1"])
def test_select_threshold_histogram_route(criterion):
    x, labels = concentrated()
    pairs = naive_pairs(x, labels)
    value, _ = naive_best(pairs, criterion)
    exact = select_threshold(x, labels, criterion=criterion, max_buffered_scores=len(pairs) - 1)
    assert exact.route == "histogram"
    assert exact.value == pytest.approx(value, abs=1e-12) and exact.slack == 0.0
    rough = select_threshold(x, labels, criterion=criterion, max_buffered_scores=1)
    assert rough.value <= value + 1e-12 <= rough.value + rough.slack + 2e-12


def test_select_threshold_hand_computed():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.2])
    genuine = torch.tensor([True, True, False, True, False])
    sel = select_threshold(scores=scores, is_genuine=genuine)
    # accuracy 0.8 at >= 0.8 and at >= 0.6: the strictest wins, halfway down to 0.7
    assert sel.accuracy == 0.8 and sel.threshold == pytest.approx(0.75)
    assert (sel.true_accepts, sel.false_accepts) == (2, 0)
    f1 = select_threshold(scores=scores, is_genuine=genuine, criterion="f1")
    assert f1.f1 == pytest.approx(2 * 3 / (3 + 1 + 3)) and f1.threshold == pytest.approx(0.4)
    fmr = select_threshold(scores=scores, is_genuine=genuine, criterion="fmr", target_fmr=0.0)
    assert (fmr.tar, fmr.fmr, fmr.value) == (2 / 3, 0.0, 2 / 3)


@pytest.mark.parametrize("distance", [CosineSimilarity(), LpDistance()], ids=["cos", "lp"])
@pytest.mark.parametrize("criterion", ["accuracy", "fmr"])
def test_selected_threshold_configures_match_finder(distance, criterion):
    x, labels = clustered(40, spread=1.0)
    kwargs = {"target_fmr": 0.05} if criterion == "fmr" else {}
    sel = select_threshold(x, labels, distance=distance, criterion=criterion, **kwargs)
    assert sel.is_inverted == distance.is_inverted
    for mf in (
        MatchFinder.from_threshold_selection(sel),
        MatchFinder(distance=distance, threshold=sel.threshold),
    ):
        matches = torch.from_numpy(mf.get_matching_pairs(x))
        upper = torch.triu(torch.ones(40, 40, dtype=torch.bool), 1)
        same = labels.unsqueeze(1) == labels.unsqueeze(0)
        assert int((matches & upper & same).sum()) == sel.true_accepts
        assert int((matches & upper & ~same).sum()) == sel.false_accepts


def test_match_finder_from_selection_errors():
    sel = select_threshold(scores=torch.tensor([0.9, 0.1]), is_genuine=torch.tensor([True, False]))
    with pytest.raises(TypeError, match="distance"):
        MatchFinder.from_threshold_selection(sel)
    with pytest.raises(ValueError, match="distance"):
        MatchFinder.from_threshold_selection(sel, LpDistance())
    assert MatchFinder.from_threshold_selection(sel, CosineSimilarity()).threshold == sel.threshold


# --------------------------------------------------------------------------------- errors
def test_verification_input_errors():
    x, labels = clustered(10)
    s, g = torch.rand(6), torch.rand(6) > 0.5
    with pytest.raises(ValueError, match="not both"):
        verification_metrics(x, labels, scores=s, is_genuine=g)
    with pytest.raises(ValueError, match="not both and not neither"):
        verification_metrics()
    with pytest.raises(ValueError, match="together"):
        verification_metrics(scores=s)
    with pytest.raises(TypeError, match="is_genuine"):
        verification_metrics(scores=s, is_genuine=g.long())
    with pytest.raises(ValueError, match="is_genuine must have shape"):
        verification_metrics(scores=s, is_genuine=g[:3])
    with pytest.raises(ValueError, match="scores must be a 1-D"):
        verification_metrics(scores=s.view(2, 3), is_genuine=g.view(2, 3))
    with pytest.raises(ValueError, match="scores must be finite"):
        verification_metrics(scores=torch.tensor([0.1, float("nan")]), is_genuine=g[:2])
    with pytest.raises(ValueError, match="query must be finite"):
        verification_metrics(torch.full((3, 2), float("nan")), torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="no impostor"):
        verification_metrics(x, torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match="no genuine"):
        verification_metrics(x, torch.arange(10))
    with pytest.raises(ValueError, match=r"fmr_targets\[1\]"):
        verification_metrics(x, labels, fmr_targets=[0.1, 1.5])
    with pytest.raises(ValueError, match="fmr_targets must not be empty"):
        verification_metrics(x, labels, fmr_targets=[])
    with pytest.raises(ValueError, match="query_labels"):
        verification_metrics(x, labels[:5])
    with pytest.raises(ValueError, match="reference_labels"):
        verification_metrics(x, labels, x)
    with pytest.raises(ValueError, match="reference must have dim"):
        verification_metrics(x, labels, x[:, :2], labels)
    with pytest.raises(ValueError, match="is_inverted"):
        verification_metrics(x, labels, is_inverted=False)
    with pytest.raises(ValueError, match="contradicts"):
        verification_metrics(scores=s, is_genuine=g, distance=LpDistance(), is_inverted=True)
    with pytest.raises(TypeError, match="distance"):
        verification_metrics(x, labels, distance="cosine")
    with pytest.raises(TypeError, match="max_buffered_scores"):
        verification_metrics(x, labels, max_buffered_scores=1.5)
    with pytest.raises(ValueError, match="criterion"):
        select_threshold(x, labels, criterion="precision")
    with pytest.raises(ValueError, match="target_fmr must be given"):
        select_threshold(x, labels, criterion="fmr")
    with pytest.raises(ValueError, match="target_fmr is only used"):
        select_threshold(x, labels, target_fmr=0.1)
    with pytest.raises(ValueError, match="target_fmr must be"):
        select_threshold(x, labels, criterion="fmr", target_fmr=2.0)
