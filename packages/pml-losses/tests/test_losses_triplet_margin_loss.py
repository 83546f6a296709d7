"""TripletMarginLoss: naive triplet loops from the spec, fast vs per-triplet paths, engine."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

from pml.core.indices import get_all_pairs_indices, get_random_triplet_indices
from pml.core.testing import assert_close, naive_pair_triplets, naive_triplets
from pml.distances import CosineSimilarity, LpDistance
from pml.losses import BaseMetricLossFunction, TripletMarginLoss
from pml.losses.functional import triplet_margin_loss, triplet_margin_loss_sums
from pml.losses.functional._triplet_engine import _block_sums, _layouts, _threshold_sums
from pml.reducers import (
    AvgNonZeroReducer,
    ClassWeightedReducer,
    DoNothingReducer,
    MeanReducer,
    SumReducer,
    ThresholdReducer,
)
from pml.regularizers import LpRegularizer

LABELS = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 4, 4, 0, 2])

#: the engine's work budgets and route thresholds, by the module that reads them
ENGINE_KNOBS = {
    "CHUNK_ELEMENTS": _layouts,
    "BLOCK_ELEMENTS": _block_sums,
    "COMPARE_BLOCK_ELEMENTS": _threshold_sums,
    "STORE_ELEMENTS": _threshold_sums,
    "COMPARE_MAX_POSITIVES": _threshold_sums,
}


def data(n: int = 12, d: int = 5, seed: int = 0, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype)


def naive_losses(mat, triplets, margin, smooth=False, inverted=False, mat_pn=None):
    out = []
    for a, p, n in triplets:
        ap, an = mat[a, p], mat[a, n]
        if mat_pn is not None:
            pn = mat_pn[p, n]
            an = torch.maximum(an, pn) if inverted else torch.minimum(an, pn)
        v = (an - ap if inverted else ap - an) + margin
        out.append(torch.nn.functional.softplus(v) if smooth else torch.relu(v))
    return torch.stack(out) if out else mat.new_zeros(0)


def avg_nonzero(losses):
    pos = losses[losses > 0]
    return pos.mean() if len(pos) else losses.sum() * 0


def mined_pairs(labels, emb, seed=1):
    """A pairs tuple like a miner's: a random subset of all pairs, with some duplicates."""
    a1, p, a2, n = get_all_pairs_indices(labels)
    g = torch.Generator().manual_seed(seed)
    k1 = torch.rand(len(a1), generator=g) < 0.6
    k2 = torch.rand(len(a2), generator=g) < 0.4
    a1, p, a2, n = a1[k1], p[k1], a2[k2], n[k2]
    return (
        torch.cat([a1, a1[:3]]),
        torch.cat([p, p[:3]]),
        torch.cat([a2, a2[:4]]),
        torch.cat([n, n[:4]]),
    )


# --------------------------------------------------------------------------- functional


def test_functional_per_triplet_formula():
    ap, an = data(2, 30).unbind()
    for inverted in (False, True):
        for smooth in (False, True):
            got = triplet_margin_loss(ap, an, 0.3, smooth=smooth, is_inverted=inverted)
            v = (an - ap if inverted else ap - an) + 0.3
            exp = torch.nn.functional.softplus(v) if smooth else torch.relu(v)
            torch.testing.assert_close(got, exp, rtol=0, atol=0)


def test_functional_per_triplet_gradcheck():
    ap, an = data(2, 8).unbind()
    for smooth in (False, True):
        assert gradcheck(
            lambda a, b, s=smooth: triplet_margin_loss(a, b, 0.1, smooth=s),
            (ap.clone().requires_grad_(), an.clone().requires_grad_()),
        )


SUM_CASES = [
    # (source, smooth, swap, inverted, low)
    ("labels", False, False, False, 0.0),
    ("labels", False, False, True, 0.0),
    ("labels", False, False, False, 0.2),
    ("labels", False, False, False, None),
    ("labels", False, False, False, -1.0),
    ("labels", True, False, False, 0.0),
    ("labels", True, False, True, None),
    ("labels", False, True, False, 0.0),
    ("labels", False, True, True, 0.1),
    ("labels", True, True, False, None),
    ("ref", False, False, False, 0.0),
    ("ref", True, False, True, 0.0),
    ("ref", False, True, False, 0.0),
    ("pairs", False, False, False, 0.0),
    ("pairs", False, False, True, 0.3),
    ("pairs", True, False, False, None),
    ("pairs", False, True, False, 0.0),
]


def _sum_inputs(source, inverted, swap):
    emb, ref = data(), data(9, seed=3)
    dist = CosineSimilarity() if inverted else LpDistance()
    ref_labels = torch.tensor([0, 1, 1, 2, 3, 3, 4, 0, 5])
    if source == "ref":
        mat = dist(emb, ref)
        trip = naive_triplets(LABELS.tolist(), ref_labels.tolist(), same=False)
        kwargs = {"labels": LABELS, "ref_labels": ref_labels}
        mat_pn = dist(ref) if swap else None
    else:
        mat = dist(emb)
        mat_pn = mat if swap else None
        if source == "labels":
            trip = naive_triplets(LABELS.tolist())
            kwargs = {"labels": LABELS}
        else:
            pairs = mined_pairs(LABELS, emb)
            trip = naive_pair_triplets(pairs)
            kwargs = {"pairs": pairs}
    return mat, mat_pn, trip, kwargs


@pytest.mark.parametrize(("source", "smooth", "swap", "inverted", "low"), SUM_CASES)
def test_sums_match_naive_triplet_loop(source, smooth, swap, inverted, low):
    mat, mat_pn, trip, kwargs = _sum_inputs(source, inverted, swap)
    total, count, num = triplet_margin_loss_sums(
        mat, **kwargs, margin=0.2, smooth=smooth, swap_mat=mat_pn, is_inverted=inverted, low=low
    )
    losses = naive_losses(mat, trip, 0.2, smooth, inverted, mat_pn)
    sel = losses > low if low is not None else torch.ones_like(losses, dtype=torch.bool)
    assert num.item() == len(trip)
    assert count.item() == int(sel.sum())
    torch.testing.assert_close(total, losses[sel].sum(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "patch",
    [
        {"COMPARE_MAX_POSITIVES": 0},  # sort + searchsorted path
        {"STORE_ELEMENTS": 0},  # recompute the counts in backward
        {"COMPARE_MAX_POSITIVES": 0, "STORE_ELEMENTS": 0, "CHUNK_ELEMENTS": 20},
        {"CHUNK_ELEMENTS": 13, "BLOCK_ELEMENTS": 7, "COMPARE_BLOCK_ELEMENTS": 5},  # many
    ],
)
@pytest.mark.parametrize("source", ["labels", "ref", "pairs"])
@pytest.mark.parametrize("variant", ["hinge", "smooth", "swap"])
def test_engine_paths_agree(monkeypatch, patch, source, variant):
    def run():
        emb = data().requires_grad_()
        ref = data(9, seed=3).requires_grad_()
        mat = LpDistance()(emb, ref if source == "ref" else None)
        kw = {"labels": LABELS}
        if source == "ref":
            kw["ref_labels"] = torch.tensor([0, 1, 1, 2, 3, 3, 4, 0, 5])
        if source == "pairs":
            kw = {"pairs": mined_pairs(LABELS, emb)}
        swap_mat = None
        if variant == "swap":
            swap_mat = LpDistance()(ref) if source == "ref" else mat
        total, count, num = triplet_margin_loss_sums(
            mat, **kw, margin=0.3, smooth=variant == "smooth", swap_mat=swap_mat
        )
        grads = torch.autograd.grad(total, [emb, ref], allow_unused=True)
        return total.detach(), count, num, grads

    expected = run()
    for name, value in patch.items():
        monkeypatch.setattr(ENGINE_KNOBS[name], name, value)
    got = run()
    torch.testing.assert_close(got[0], expected[0], rtol=1e-12, atol=1e-12)
    assert got[1] == expected[1] and got[2] == expected[2]
    for g, e in zip(got[3], expected[3]):
        if e is None:
            assert g is None or not g.any()
        else:
            torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("sort_path", [False, True])
@pytest.mark.parametrize(
    ("source", "smooth", "swap"),
    [
        ("labels", False, False),
        ("pairs", False, False),
        ("labels", True, False),
        ("pairs", False, True),
    ],
)
def test_sums_gradcheck(monkeypatch, sort_path, source, smooth, swap):
    if sort_path:
        monkeypatch.setattr(_threshold_sums, "COMPARE_MAX_POSITIVES", 0)
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    mat = torch.rand(6, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    kw = {"labels": labels} if source == "labels" else {"pairs": mined_pairs(labels, mat, 5)}

    def f(m):
        total, _, _ = triplet_margin_loss_sums(
            m, **kw, margin=0.1, smooth=smooth, swap_mat=m if swap else None
        )
        return total

    assert gradcheck(f, (mat.requires_grad_(),), eps=1e-7, atol=1e-6)


def test_sums_of_nonfinite_matrix_are_nan():
    mat = LpDistance()(data())
    mat[3, 5] = float("nan")
    for smooth in (False, True):
        total, _, _ = triplet_margin_loss_sums(mat, LABELS, smooth=smooth)
        assert torch.isnan(total)
    mat[3, 5] = float("inf")
    assert torch.isnan(triplet_margin_loss_sums(mat, LABELS)[0])


def test_sums_bad_input():
    mat = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="labels"):
        triplet_margin_loss_sums(mat)
    with pytest.raises(ValueError, match="pairs"):
        triplet_margin_loss_sums(mat, pairs=(torch.tensor([0]),) * 3)


# --------------------------------------------------------------------------- class

REDUCERS = [
    (AvgNonZeroReducer, {}, avg_nonzero),
    (MeanReducer, {}, lambda x: x.mean()),
    (SumReducer, {}, lambda x: x.sum()),
    (ThresholdReducer, {"low": 0.1}, lambda x: x[x > 0.1].mean()),
]


@pytest.mark.parametrize(("reducer_cls", "reducer_kw", "reduce"), REDUCERS)
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"margin": 0.3},
        {"margin": 0.2, "distance": CosineSimilarity()},
        {"smooth_loss": True},
        {"swap": True, "margin": 0.3},
    ],
)
def test_class_matches_naive(reducer_cls, reducer_kw, reduce, kwargs):
    emb = data().requires_grad_()
    loss_fn = TripletMarginLoss(reducer=reducer_cls(**reducer_kw), **kwargs)
    loss = loss_fn(emb, LABELS)
    e2 = emb.detach().clone().requires_grad_()
    mat = loss_fn.distance(e2)
    inverted = loss_fn.distance.is_inverted
    losses = naive_losses(
        mat,
        naive_triplets(LABELS.tolist()),
        loss_fn.margin,
        kwargs.get("smooth_loss", False),
        inverted,
        mat if kwargs.get("swap") else None,
    )
    expected = reduce(losses)
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
    (g,) = torch.autograd.grad(loss, emb)
    (ge,) = torch.autograd.grad(expected, e2)
    torch.testing.assert_close(g, ge, rtol=1e-9, atol=1e-12)


def test_class_pairs_tuple_and_ref_match_naive():
    emb, ref = data().requires_grad_(), data(9, seed=3).requires_grad_()
    ref_labels = torch.tensor([0, 1, 1, 2, 3, 3, 4, 0, 5])
    loss_fn = TripletMarginLoss(margin=0.4)
    pairs = mined_pairs(LABELS, emb)
    got = loss_fn(emb, LABELS, pairs)
    mat = LpDistance()(emb)
    exp = avg_nonzero(naive_losses(mat, naive_pair_triplets(pairs), 0.4))
    torch.testing.assert_close(got, exp, rtol=1e-10, atol=0)
    got = loss_fn(emb, LABELS, ref_emb=ref, ref_labels=ref_labels)
    mat = LpDistance()(emb, ref)
    trip = naive_triplets(LABELS.tolist(), ref_labels.tolist(), same=False)
    exp = avg_nonzero(naive_losses(mat, trip, 0.4))
    torch.testing.assert_close(got, exp, rtol=1e-10, atol=0)
    g = torch.autograd.grad(got, [emb, ref])
    ge = torch.autograd.grad(exp, [emb, ref])
    for a, b in zip(g, ge):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_pairs_without_labels():
    emb = data()
    pairs = mined_pairs(LABELS, emb)
    loss_fn = TripletMarginLoss(margin=0.4)
    torch.testing.assert_close(loss_fn(emb, None, pairs), loss_fn(emb, LABELS, pairs))


def test_unreduced_losses_in_reference_order():
    emb = data()
    out = TripletMarginLoss(margin=0.2, reducer=DoNothingReducer())(emb, LABELS)["loss"]
    trip = naive_triplets(LABELS.tolist())
    assert out["reduction_type"] == "triplet"
    assert list(zip(*(t.tolist() for t in out["indices"]))) == trip
    torch.testing.assert_close(out["losses"], naive_losses(LpDistance()(emb), trip, 0.2))
    pairs = mined_pairs(LABELS, emb)
    out = TripletMarginLoss(reducer=DoNothingReducer())(emb, LABELS, pairs)["loss"]
    assert list(zip(*(t.tolist() for t in out["indices"]))) == naive_pair_triplets(pairs)


@pytest.mark.parametrize(
    "reducer", [ClassWeightedReducer(weights=[1.0, 2, 3, 4, 5]), ThresholdReducer(0.05, 0.4)]
)
def test_per_triplet_reducers_get_every_triplet(reducer):
    emb = data()
    got = TripletMarginLoss(margin=0.3, reducer=reducer)(emb, LABELS)
    out = TripletMarginLoss(margin=0.3, reducer=DoNothingReducer())(emb, LABELS)
    torch.testing.assert_close(got, type(reducer)(**_reducer_args(reducer))(out, emb, LABELS))


def _reducer_args(reducer):
    if isinstance(reducer, ClassWeightedReducer):
        return {"weights": reducer.weights}
    return {"low": reducer.low, "high": reducer.high}


def test_random_triplets_are_rng_exact():
    emb = data()
    torch.manual_seed(7)
    got = TripletMarginLoss(margin=0.5, triplets_per_anchor=3)(emb, LABELS)
    torch.manual_seed(7)
    a, p, n = get_random_triplet_indices(LABELS, t_per_anchor=3)
    exp = avg_nonzero(
        naive_losses(LpDistance()(emb), list(zip(a.tolist(), p.tolist(), n.tolist())), 0.5)
    )
    torch.testing.assert_close(got, exp, rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    ("reducer", "stats"),
    [
        (AvgNonZeroReducer(collect_stats=True), ("num_past_filter", "num_above_low")),
        (ThresholdReducer(low=0.1, collect_stats=True), ("num_past_filter", "num_above_low")),
        (MeanReducer(collect_stats=True), ()),
    ],
)
@pytest.mark.parametrize("source", ["labels", "pairs", "triplets"])
def test_reducer_stats_on_fast_path(reducer, stats, source):
    emb = data()
    it = None
    if source == "pairs":
        it = mined_pairs(LABELS, emb)
    if source == "triplets":
        it = tuple(torch.tensor(x) for x in zip(*naive_triplets(LABELS.tolist())[::3]))
    fast = TripletMarginLoss(margin=0.3, reducer=reducer)
    fast(emb, LABELS, it)
    slow = TripletMarginLoss(margin=0.3, reducer=DoNothingReducer())
    losses = slow(emb, LABELS, it)["loss"]["losses"]
    assert fast.reducer.losses_size == len(losses)
    for name in stats:
        assert getattr(fast.reducer, name) == int((losses > reducer.low).sum()), name
    if stats:  # the recipe's "fraction of non-zero triplets"
        assert 0 < fast.reducer.num_past_filter / fast.reducer.losses_size <= 1


def test_embedding_regularizer_keeps_fast_path_and_stats():
    emb = data()
    reg = LpRegularizer()
    loss_fn = TripletMarginLoss(
        margin=0.3, reducer=AvgNonZeroReducer(collect_stats=True), embedding_regularizer=reg
    )
    got = loss_fn(emb, LABELS)
    losses = naive_losses(LpDistance()(emb), naive_triplets(LABELS.tolist()), 0.3)
    torch.testing.assert_close(got, avg_nonzero(losses) + reg(emb), rtol=1e-10, atol=0)
    sub = loss_fn.reducer.reducers["loss"]
    assert sub.losses_size == len(losses) and sub.num_past_filter == int((losses > 0).sum())


def test_swap_with_ref_emb_uses_reference_distances():
    # fix: the reference indexed the (N, M) matrix with reference rows (IndexError for M < N)
    emb, ref = data(12), data(5, seed=4)
    ref_labels = torch.tensor([0, 1, 2, 3, 4])
    for reducer in (AvgNonZeroReducer(), DoNothingReducer()):
        out = TripletMarginLoss(swap=True, margin=0.5, reducer=reducer)(
            emb, LABELS, ref_emb=ref, ref_labels=ref_labels
        )
        mat, mat_pn = LpDistance()(emb, ref), LpDistance()(ref)
        trip = naive_triplets(LABELS.tolist(), ref_labels.tolist(), same=False)
        losses = naive_losses(mat, trip, 0.5, mat_pn=mat_pn)
        if isinstance(out, dict):
            torch.testing.assert_close(out["loss"]["losses"], losses)
        else:
            torch.testing.assert_close(out, avg_nonzero(losses))


def test_identity_rule_copy_of_labels_keeps_self_pairs():
    emb = data()
    loss_fn = TripletMarginLoss(margin=0.3, reducer=SumReducer())
    same = loss_fn(emb, LABELS, ref_emb=emb, ref_labels=LABELS)
    copy = loss_fn(emb, LABELS, ref_emb=emb, ref_labels=LABELS.clone())
    mat = LpDistance()(emb)
    torch.testing.assert_close(same, naive_losses(mat, naive_triplets(LABELS.tolist()), 0.3).sum())
    trip = naive_triplets(LABELS.tolist(), LABELS.tolist(), same=False)
    torch.testing.assert_close(copy, naive_losses(mat, trip, 0.3).sum())


@pytest.mark.parametrize(
    ("labels", "indices_tuple"),
    [
        (torch.arange(6), None),  # no positives
        (torch.zeros(6, dtype=torch.long), None),  # one class: no negatives
        (torch.tensor([3]), None),  # one sample
        (torch.tensor([0, 0, 1, 1, 2, 2]), (torch.tensor([], dtype=torch.long),) * 3),
        (
            torch.tensor([0, 0, 1, 1, 2, 2]),
            (torch.tensor([0]), torch.tensor([1]), torch.tensor([3]), torch.tensor([2])),
        ),
    ],
)
@pytest.mark.parametrize(
    "kwargs", [{}, {"smooth_loss": True}, {"swap": True}, {"reducer": MeanReducer()}]
)
def test_no_triplets_gives_graph_connected_zero(labels, indices_tuple, kwargs):
    emb = data(len(labels)).requires_grad_()
    loss = TripletMarginLoss(**kwargs)(emb, labels, indices_tuple)
    assert loss.item() == 0 and loss.dtype == emb.dtype
    loss.backward()
    assert emb.grad is not None and not emb.grad.any()


def test_nan_embeddings_give_nan():
    emb = data()
    emb[4, 0] = float("nan")
    assert torch.isnan(TripletMarginLoss()(emb, LABELS))
    assert torch.isnan(TripletMarginLoss(smooth_loss=True)(emb, LABELS))
    assert torch.isnan(TripletMarginLoss()(emb, LABELS, mined_pairs(LABELS, emb)))
    trip = tuple(torch.tensor(x) for x in zip(*naive_triplets(LABELS.tolist())))
    assert torch.isnan(TripletMarginLoss()(emb, LABELS, trip))


def test_dtype_and_device(dtype, device):
    emb = data(dtype=torch.float32).to(device, dtype)
    labels = LABELS.to(device)
    for kwargs in ({"smooth_loss": True}, {"smooth_loss": True, "swap": True}):
        loss_fn = TripletMarginLoss(**kwargs)
        loss = loss_fn(emb, labels)
        assert loss.dtype == dtype and loss.device == emb.device
        assert_close(loss, loss_fn(emb.double(), labels).to(dtype))
    emb = emb.requires_grad_()
    pairs = tuple(t.to(device) for t in mined_pairs(LABELS, emb))
    loss = TripletMarginLoss(margin=0.5)(emb, labels, pairs)
    loss.backward()
    assert loss.dtype == dtype and emb.grad.dtype == dtype and torch.isfinite(emb.grad).all()


def test_constructor_and_records():
    loss_fn = TripletMarginLoss()
    assert isinstance(loss_fn, BaseMetricLossFunction)
    assert (loss_fn.margin, loss_fn.swap, loss_fn.smooth_loss) == (0.05, False, False)
    assert loss_fn.triplets_per_anchor == "all"
    assert type(loss_fn.reducer) is AvgNonZeroReducer
    assert type(loss_fn.distance) is LpDistance
    assert "margin" in loss_fn._record_these
    assert loss_fn.sub_loss_names() == ["loss"]


def test_bad_input():
    with pytest.raises(ValueError, match="triplets_per_anchor"):
        TripletMarginLoss(triplets_per_anchor="some")
    with pytest.raises(ValueError, match="triplets_per_anchor"):
        TripletMarginLoss(triplets_per_anchor=-1)
    with pytest.raises(ValueError, match="labels"):
        TripletMarginLoss()(data())
    with pytest.raises(ValueError, match="labels"):
        TripletMarginLoss()(data(), LABELS[:5])


def test_nan_embedding_with_no_other_violating_triplet_gives_nan():
    # every finite triplet has loss 0, so no loss passes AvgNonZero's filter: a NaN row must
    # still give NaN, not the zero loss (unlisted sums, a miner's pairs and listed triplets)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    emb = torch.tensor(
        [[1.0, 0], [1, 0.01], [-0.5, 0.86], [-0.5, 0.87], [-0.5, -0.86], [-0.5, -0.87]]
    )
    assert TripletMarginLoss(margin=0.1)(emb, labels) == 0
    emb = emb.double()
    emb[5, 0] = float("nan")
    pairs = get_all_pairs_indices(labels)
    triplets = tuple(torch.tensor(x) for x in zip(*naive_triplets(labels.tolist())))
    for it in (None, pairs, triplets):
        assert torch.isnan(TripletMarginLoss(margin=0.1)(emb, labels, it))


class _UserReducer(torch.nn.Module):
    """A plain module reducer (accepted like the reference): it has no sums plan."""

    def forward(self, loss_dict, embeddings, labels):
        return sum(v["losses"].mean() for v in loss_dict.values())


def test_a_user_module_reducer_gets_every_triplet():
    emb = data()
    got = TripletMarginLoss(margin=0.3, reducer=_UserReducer())(emb, LABELS)
    losses = naive_losses(LpDistance()(emb), naive_triplets(LABELS.tolist()), 0.3)
    torch.testing.assert_close(got, losses.mean())


@pytest.mark.parametrize("source", ["labels", "pairs", "triplets"])
def test_threshold_reducer_with_both_bounds_matches_naive(source):
    emb = data()
    it = None
    if source == "pairs":
        it = mined_pairs(LABELS, emb)
        trip = naive_pair_triplets(it)
    else:
        trip = naive_triplets(LABELS.tolist())
        if source == "triplets":
            trip = trip[::2]
            it = tuple(torch.tensor(x) for x in zip(*trip))
    reducer = ThresholdReducer(low=0.05, high=0.6)
    got = TripletMarginLoss(margin=0.5, reducer=reducer)(emb, LABELS, it)
    losses = naive_losses(LpDistance()(emb), trip, 0.5)
    torch.testing.assert_close(got, losses[(losses > 0.05) & (losses < 0.6)].mean())
