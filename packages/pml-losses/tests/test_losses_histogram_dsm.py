"""HistogramLoss and DynamicSoftMarginLoss: naive per-triplet/per-value loops from the spec."""

from __future__ import annotations

import functools

import pytest
import torch
from torch.autograd import gradcheck

from pml.core.testing import (
    assert_close,
    naive_pair_triplets,
    naive_triplets,
    random_embeddings,
    subsampled_pairs,
)
from pml.core.validation import InvalidArgumentError
from pml.distances import CosineSimilarity, LpDistance
from pml.losses import DynamicSoftMarginLoss, HistogramLoss
from pml.losses._histogram_dsm import histogram_pair_sets
from pml.losses.functional import (
    dynamic_soft_margin_loss,
    dynamic_soft_margin_loss_from_mat,
    dynamic_soft_margin_paired_x,
    histogram_loss,
    soft_histogram,
)
from pml.losses.functional._triplet_engine import _threshold_sums

LABELS = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 0, 2])
data = functools.partial(random_embeddings, d=5)


# --------------------------------------------------------------------------- HistogramLoss


def naive_soft_histogram(values, delta):
    """Spec: node r = floor((v + 1) / delta) in float32, linear split between r and r+1."""
    size = round(1 + 2 / delta)
    h = [values.new_zeros(()) for _ in range(size)]
    for v in values:
        r = torch.floor((v.float() + 1) / delta)  # float32, like the reference
        ri = int(r)
        h[ri + 1] = h[ri + 1] + (v + 1 - r * delta) / delta
        h[ri] = h[ri] + ((r + 1) * delta - 1 - v) / delta
    return torch.stack(h) / len(values)


def naive_histogram_loss(pos, neg, delta):
    hp, hn = naive_soft_histogram(pos, delta), naive_soft_histogram(neg, delta)
    return (hn * torch.cumsum(hp, 0)).sum()


def dedup(pairs):
    return sorted({(min(i, j), max(i, j)) for i, j in pairs})


def test_soft_histogram_matches_naive_and_sums_to_one():
    v = torch.rand(40, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2 - 1
    for delta in (0.02, 0.2, 0.5):
        h = soft_histogram(v, delta)
        torch.testing.assert_close(h, naive_soft_histogram(v, delta), rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(h.sum(), torch.tensor(1.0, dtype=torch.float64))


def test_soft_histogram_clamps_out_of_range_values():
    # fix: a similarity of exactly 1 (or rounding above it) indexed past the last node
    h = soft_histogram(torch.tensor([1.0, 1.0 + 1e-7, -1.0, -1.5], dtype=torch.float64), 0.5)
    torch.testing.assert_close(h, torch.tensor([0.5, 0, 0, 0, 0.5], dtype=torch.float64))
    nan = torch.tensor([0.1, float("nan")])
    assert torch.isnan(soft_histogram(nan, 0.5)).any()
    assert torch.isnan(histogram_loss(nan, torch.tensor([0.2, 0.3]), 0.5))


def test_histogram_loss_functional_and_gradcheck():
    g = torch.Generator().manual_seed(4)
    pos = torch.rand(12, generator=g, dtype=torch.float64) * 1.6 - 0.6
    neg = torch.rand(20, generator=g, dtype=torch.float64) * 1.6 - 0.9
    torch.testing.assert_close(histogram_loss(pos, neg, 0.1), naive_histogram_loss(pos, neg, 0.1))
    assert gradcheck(
        lambda a, b: histogram_loss(a, b, 0.1), (pos.requires_grad_(), neg.requires_grad_())
    )


@pytest.mark.parametrize("source", ["labels", "triplets", "pairs"])
def test_pair_sets_are_the_deduplicated_triplet_pairs(source):
    if source == "labels":
        trip, it = naive_triplets(LABELS.tolist()), None
    elif source == "triplets":
        trip = [*naive_triplets(LABELS.tolist())[::5], (3, 2, 0)]
        it = tuple(torch.tensor(x) for x in zip(*trip))
    else:
        it = subsampled_pairs(LABELS)
        trip = naive_pair_triplets(it)
    (pi, pj), (ni, nj) = histogram_pair_sets(LABELS, it, len(LABELS))
    assert list(zip(pi.tolist(), pj.tolist())) == dedup((a, p) for a, p, _ in trip)
    assert list(zip(ni.tolist(), nj.tolist())) == dedup((a, n) for a, _, n in trip)


@pytest.mark.parametrize("kwargs", [{}, {"n_bins": 10}, {"delta": 0.25}])
@pytest.mark.parametrize("source", ["labels", "pairs"])
def test_histogram_class_matches_naive(kwargs, source):
    emb = data().requires_grad_()
    it = subsampled_pairs(LABELS) if source == "pairs" else None
    loss_fn = HistogramLoss(**kwargs)
    got = loss_fn(emb, LABELS, it)
    trip = naive_pair_triplets(it) if it is not None else naive_triplets(LABELS.tolist())
    mat = CosineSimilarity()(emb)
    pos = torch.stack([mat[i, j] for i, j in dedup((a, p) for a, p, _ in trip)])
    neg = torch.stack([mat[i, j] for i, j in dedup((a, n) for a, _, n in trip)])
    exp = naive_histogram_loss(pos, neg, loss_fn.delta)
    torch.testing.assert_close(got, exp, rtol=1e-12, atol=1e-14)
    (g,) = torch.autograd.grad(got, emb)
    (ge,) = torch.autograd.grad(exp, emb)
    torch.testing.assert_close(g, ge, rtol=1e-9, atol=1e-12)


def test_histogram_duplicate_embeddings_work():
    # fix: cosine 1.0 between duplicates raised an index error in the reference
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], requires_grad=True)
    loss = HistogramLoss(n_bins=4)(emb, torch.tensor([0, 0, 1, 1]))
    assert torch.isfinite(loss) and loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(emb.grad).all()


def test_histogram_constructor():
    assert HistogramLoss().delta == 0.02 and "delta" in HistogramLoss()._record_these
    assert HistogramLoss(n_bins=8, delta=0.25).delta == 0.25
    with pytest.raises(InvalidArgumentError, match="delta"):
        HistogramLoss(n_bins=10, delta=0.3)
    with pytest.raises(AssertionError):
        HistogramLoss(n_bins=10, delta=0.3)
    with pytest.raises(ValueError, match="n_bins"):
        HistogramLoss(n_bins=0)
    with pytest.raises(ValueError, match="delta"):
        HistogramLoss(delta=-0.1)
    assert type(HistogramLoss().distance) is CosineSimilarity


def test_histogram_bad_calls():
    emb = data()
    with pytest.raises(ValueError, match="ref_emb"):
        HistogramLoss()(emb, LABELS, ref_emb=data(seed=1), ref_labels=LABELS)
    with pytest.raises(ValueError, match="labels"):
        HistogramLoss()(emb)


@pytest.mark.parametrize(
    "labels", [torch.arange(6), torch.zeros(6, dtype=torch.long), torch.tensor([2])]
)
def test_histogram_no_triplets_gives_zero(labels):
    emb = data(len(labels)).requires_grad_()
    loss = HistogramLoss()(emb, labels)
    assert loss.item() == 0
    loss.backward()
    assert not emb.grad.any()


def test_histogram_dtype_and_device(dtype, device):
    emb = data(dtype=torch.float32).to(device, dtype)
    loss = HistogramLoss(n_bins=10)(emb, LABELS.to(device))
    assert loss.dtype == dtype and loss.device == emb.device
    assert_close(loss, HistogramLoss(n_bins=10)(emb.double(), LABELS.to(device)).to(dtype))


# --------------------------------------------------------------------------- DynamicSoftMargin


def naive_dsm(x, hist, min_val=-2.0, momentum=0.01):
    """Spec DynamicSoftMarginLoss, one value at a time (in-range values)."""
    nb = len(hist)
    delta = 2 * abs(min_val) / nb
    mom = momentum if hist.sum() != 0 else 1.0
    h = [(1 - mom) * hist[b] for b in range(nb)]
    idx = []
    for v in x:
        u = (v - min_val) / delta
        i = int(torch.floor(u))
        alpha = torch.frac(u)
        h[i] = h[i] + mom * (1 - alpha)
        h[i + 1] = h[i + 1] + mom * alpha
        idx.append(i)
    h = torch.stack(h)
    h = h / h.sum()
    cdf = torch.cumsum(h, 0)
    return torch.stack([cdf[i] * v for i, v in zip(idx, x)]).mean(), h


def in_range_x(n=30, seed=5):
    return (
        torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3 - 1.9
    )


def test_dsm_functional_matches_naive_over_calls():
    x1, x2 = in_range_x(), in_range_x(seed=6)
    hist = torch.zeros(10, dtype=torch.float64)
    loss, new = dynamic_soft_margin_loss(x1, hist)
    exp, exp_h = naive_dsm(x1, hist)
    torch.testing.assert_close(loss, exp, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(new, exp_h, rtol=1e-12, atol=1e-15)
    loss2, new2 = dynamic_soft_margin_loss(x2, new.detach())
    exp2, exp_h2 = naive_dsm(x2, exp_h.detach())
    torch.testing.assert_close(loss2, exp2, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(new2, exp_h2, rtol=1e-12, atol=1e-15)


def test_dsm_functional_gradient_includes_the_cdf_path():
    x = in_range_x(12).requires_grad_()
    hist = torch.rand(10, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    hist = hist / hist.sum()
    (g,) = torch.autograd.grad(dynamic_soft_margin_loss(x, hist, momentum=0.3)[0], x)
    x2 = x.detach().clone().requires_grad_()
    (ge,) = torch.autograd.grad(naive_dsm(x2, hist, momentum=0.3)[0], x2)
    torch.testing.assert_close(g, ge, rtol=1e-10, atol=1e-14)
    assert gradcheck(lambda v: dynamic_soft_margin_loss(v, hist, momentum=0.3)[0], (x,))


def test_dsm_out_of_range_values_go_to_the_end_nodes():
    # fix: the reference raised an index error for x >= min_val + (num_bins - 1) * delta
    x = torch.tensor([-3.0, -0.5, 1.7, 2.5], dtype=torch.float64)
    loss, h = dynamic_soft_margin_loss(x, torch.zeros(10, dtype=torch.float64))
    assert torch.isfinite(loss)
    # -3 -> node 0; -0.5 (u = 3.75) -> nodes 3/4 (0.25/0.75 split); 1.7, 2.5 -> last node
    exp = torch.zeros(10, dtype=torch.float64)
    exp[0], exp[3], exp[4], exp[9] = 1, 0.25, 0.75, 2
    torch.testing.assert_close(h, exp / 4)
    cdf = torch.cumsum(exp / 4, 0)
    torch.testing.assert_close(loss, (cdf[0] * -3 + cdf[3] * -0.5 + 1.7 + 2.5) / 4)


@pytest.mark.parametrize("sort_path", [False, True])
@pytest.mark.parametrize("source", ["labels", "ref", "pairs"])
def test_dsm_from_mat_matches_explicit_triplets(monkeypatch, sort_path, source):
    if sort_path:
        monkeypatch.setattr(_threshold_sums, "COMPARE_MAX_POSITIVES", 0)
        monkeypatch.setattr(_threshold_sums, "STORE_ELEMENTS", 0)
    emb, ref = data().requires_grad_(), data(8, seed=2).requires_grad_()
    ref_labels = torch.tensor([0, 1, 1, 2, 3, 3, 0, 2])
    hist = torch.rand(10, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    if source == "ref":
        mat = LpDistance()(emb, ref)
        kw, trip = (
            {"labels": LABELS, "ref_labels": ref_labels},
            naive_triplets(LABELS.tolist(), ref_labels.tolist(), False),
        )
    elif source == "labels":
        mat, kw, trip = LpDistance()(emb), {"labels": LABELS}, naive_triplets(LABELS.tolist())
    else:
        pairs = subsampled_pairs(LABELS)
        mat, kw, trip = LpDistance()(emb), {"pairs": pairs}, naive_pair_triplets(pairs)
    loss, new, num = dynamic_soft_margin_loss_from_mat(mat, hist, **kw, momentum=0.2)
    a, p, n = (torch.tensor(t) for t in zip(*trip))
    exp, exp_h = dynamic_soft_margin_loss(mat[a, p] - mat[a, n], hist, momentum=0.2)
    assert num.item() == len(trip)
    torch.testing.assert_close(loss, exp, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(new, exp_h, rtol=1e-10, atol=1e-14)
    g = torch.autograd.grad(loss, [emb, ref], allow_unused=True, retain_graph=True)
    ge = torch.autograd.grad(exp, [emb, ref], allow_unused=True)
    for x, y in zip(g, ge):
        if y is not None:
            torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-12)


def test_dsm_paired_x_matches_spec():
    for r, c in ((5, 5), (6, 4), (3, 5)):
        mat = torch.rand(r, c, generator=torch.Generator().manual_seed(r * c), dtype=torch.float64)
        size = max(r, c)
        d_pos = torch.zeros(size, dtype=torch.float64)
        d_pos[: min(r, c)] = mat.diagonal()
        m = mat.clone()
        m[range(min(r, c)), range(min(r, c))] = float("inf")
        min_a, min_p = (
            torch.zeros(size, dtype=torch.float64),
            torch.zeros(size, dtype=torch.float64),
        )
        min_a[:c], min_p[:r] = m.min(0).values, m.min(1).values
        torch.testing.assert_close(
            dynamic_soft_margin_paired_x(mat), d_pos - torch.minimum(min_a, min_p)
        )


def test_dsm_paired_mode_gives_a_gradient():
    # fix: the reference overwrote the distance matrix in place and its backward raised
    emb, ref = data(6).requires_grad_(), data(6, seed=1).requires_grad_()
    loss_fn = DynamicSoftMarginLoss(num_bins=5)
    loss = loss_fn(emb, ref_emb=ref)
    x = dynamic_soft_margin_paired_x(LpDistance()(emb, ref))
    exp, _ = naive_dsm(x, torch.zeros(5, dtype=torch.float64), min_val=-2.0)
    torch.testing.assert_close(loss, exp, rtol=1e-12, atol=1e-15)
    loss.backward()
    assert torch.isfinite(emb.grad).all() and torch.isfinite(ref.grad).all() and emb.grad.any()


def test_dsm_consecutive_calls_backward_and_state():
    # fix: the stored histogram kept the previous graph ("backward through the graph a second
    # time" on the next step); ours is stored detached
    loss_fn = DynamicSoftMarginLoss()
    hist = torch.zeros(10, dtype=torch.float64)
    for seed in range(3):
        emb = data(seed=seed).requires_grad_()
        loss = loss_fn(emb, LABELS)
        mat = LpDistance()(emb.detach())
        a, p, n = (torch.tensor(t) for t in zip(*naive_triplets(LABELS.tolist())))
        exp, hist = naive_dsm(mat[a, p] - mat[a, n], hist)
        torch.testing.assert_close(loss.detach(), exp, rtol=1e-10, atol=1e-14)
        loss.backward()
        assert loss_fn.hist_.grad_fn is None and not loss_fn.hist_.requires_grad
        torch.testing.assert_close(loss_fn.hist_, hist)


def test_dsm_triplets_tuple_and_no_triplets():
    emb = data()
    trip = naive_triplets(LABELS.tolist())[::3]
    it = tuple(torch.tensor(t) for t in zip(*trip))
    loss_fn = DynamicSoftMarginLoss()
    mat = LpDistance()(emb)
    a, p, n = it
    exp, _ = naive_dsm(mat[a, p] - mat[a, n], torch.zeros(10, dtype=torch.float64))
    torch.testing.assert_close(loss_fn(emb, LABELS, it), exp, rtol=1e-12, atol=1e-15)
    before = loss_fn.hist_.clone()
    for labels, tup in (
        (torch.arange(10), None),
        (LABELS, (torch.tensor([], dtype=torch.long),) * 3),
    ):
        e = emb.clone().requires_grad_()
        loss = loss_fn(e, labels, tup)
        assert loss.item() == 0
        loss.backward()
        assert not e.grad.any()
    torch.testing.assert_close(loss_fn.hist_, before)
    e1 = data(1).requires_grad_()
    assert loss_fn(e1).item() == 0  # paired mode with a single row


def test_dsm_nan_batch_gives_nan_and_keeps_histogram():
    loss_fn = DynamicSoftMarginLoss()
    loss_fn(data(), LABELS)
    before = loss_fn.hist_.clone()
    emb = data(seed=3)
    emb[1, 1] = float("nan")
    assert torch.isnan(loss_fn(emb, LABELS))
    torch.testing.assert_close(loss_fn.hist_, before)


def test_dsm_constructor_and_distance_lock():
    loss_fn = DynamicSoftMarginLoss(num_bins=7.0)
    assert (
        loss_fn.num_bins == 7
        and loss_fn.hist_.shape == (7,)
        and loss_fn.hist_.dtype == torch.float32
    )
    assert "num_bins" in loss_fn._record_these and "hist_" not in loss_fn.state_dict()
    assert loss_fn.delta == 4 / 7
    for bad in (CosineSimilarity(), LpDistance(p=1), LpDistance(normalize_embeddings=False)):
        with pytest.raises(InvalidArgumentError, match="DynamicSoftMarginLoss"):
            DynamicSoftMarginLoss(distance=bad)
    DynamicSoftMarginLoss(distance=LpDistance(power=2))  # power is not checked
    with pytest.raises(ValueError, match="num_bins"):
        DynamicSoftMarginLoss(num_bins=0)
    with pytest.raises(ValueError, match="min_val"):
        DynamicSoftMarginLoss(min_val=0)


def test_dsm_dtype_and_device(dtype, device):
    emb = data(dtype=torch.float32).to(device, dtype)
    loss = DynamicSoftMarginLoss()(emb, LABELS.to(device))
    assert loss.dtype == dtype and loss.device == emb.device
    exp = DynamicSoftMarginLoss()(emb.double(), LABELS.to(device))
    assert_close(loss, exp.to(dtype))
