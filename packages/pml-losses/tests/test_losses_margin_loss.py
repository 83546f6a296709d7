"""MarginLoss: naive triplet loops from the spec, per-anchor fast path, beta handling."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

from pml.core.indices import get_all_pairs_indices
from pml.core.testing import assert_close, naive_pair_triplets, naive_triplets
from pml.distances import CosineSimilarity, LpDistance
from pml.losses import BaseMetricLossFunction, MarginLoss
from pml.losses.functional import margin_loss, margin_loss_sums
from pml.reducers import (
    AvgNonZeroReducer,
    DivisorReducer,
    DoNothingReducer,
    MeanReducer,
    MultipleReducers,
    SumReducer,
)

LABELS = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 0, 2])
REF_LABELS = torch.tensor([0, 1, 1, 2, 3, 3, 0, 2])


def data(n: int = 10, d: int = 5, seed: int = 0, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype)


def mined_pairs(labels, seed=1):
    a1, p, a2, n = get_all_pairs_indices(labels)
    g = torch.Generator().manual_seed(seed)
    k1, k2 = torch.rand(len(a1), generator=g) < 0.6, torch.rand(len(a2), generator=g) < 0.4
    a1, p, a2, n = a1[k1], p[k1], a2[k2], n[k2]
    return (
        torch.cat([a1, a1[:2]]),
        torch.cat([p, p[:2]]),
        torch.cat([a2, a2[:3]]),
        torch.cat([n, n[:3]]),
    )


def naive_margin(mat, triplets, beta_of_anchor, margin, inverted=False, nu=0.0, reg=None):
    """Spec MarginLoss: sum(pos + neg) / (#pos>0 + #neg>0) [+ beta regularization]."""
    total, divisor, reg_sum = 0.0, 0, 0.0
    for a, p, n in triplets:
        b = beta_of_anchor(a)
        pos = torch.relu((b - mat[a, p] if inverted else mat[a, p] - b) + margin)
        neg = torch.relu((mat[a, n] - b if inverted else b - mat[a, n]) + margin)
        total = total + pos + neg
        divisor += int(pos > 0) + int(neg > 0)
        reg_sum = reg_sum + b * nu
    value = total / divisor if divisor else mat.sum() * 0
    if reg == "scalar":
        value = value + beta_of_anchor(0) * nu
    elif reg == "per_class" and divisor:
        value = value + reg_sum / divisor
    return value


# --------------------------------------------------------------------------- functional


def test_functional_margin_loss_formula_and_gradcheck():
    ap, an = data(2, 20).unbind()
    pos, neg = margin_loss(ap, an, 0.4, 0.2)
    torch.testing.assert_close(pos, torch.relu(ap - 0.4 + 0.2), rtol=0, atol=0)
    torch.testing.assert_close(neg, torch.relu(0.4 - an + 0.2), rtol=0, atol=0)
    pos, neg = margin_loss(ap, an, 0.4, 0.2, is_inverted=True)
    torch.testing.assert_close(pos, torch.relu(0.4 - ap + 0.2), rtol=0, atol=0)
    torch.testing.assert_close(neg, torch.relu(an - 0.4 + 0.2), rtol=0, atol=0)
    beta = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
    assert gradcheck(
        lambda a, b, c: sum(t.sum() for t in margin_loss(a, b, c, 0.2)),
        (ap[:6].clone().requires_grad_(), an[:6].clone().requires_grad_(), beta),
    )


@pytest.mark.parametrize("source", ["labels", "ref", "pairs"])
@pytest.mark.parametrize("inverted", [False, True])
def test_margin_loss_sums_match_naive(source, inverted):
    emb, ref = data(), data(8, seed=2)
    dist = CosineSimilarity() if inverted else LpDistance()
    beta_row = torch.linspace(0.2, 1.3, 10, dtype=torch.float64)
    if source == "ref":
        mat, kw = dist(emb, ref), {"labels": LABELS, "ref_labels": REF_LABELS}
        trip = naive_triplets(LABELS.tolist(), REF_LABELS.tolist(), same=False)
    elif source == "labels":
        mat, kw, trip = dist(emb), {"labels": LABELS}, naive_triplets(LABELS.tolist())
    else:
        pairs = mined_pairs(LABELS)
        mat, kw, trip = dist(emb), {"pairs": pairs}, naive_pair_triplets(pairs)
    losses, divisor, num = margin_loss_sums(mat, beta_row, **kw, margin=0.2, is_inverted=inverted)
    total = sum(
        sum(margin_loss(mat[a, p], mat[a, n], beta_row[a], 0.2, is_inverted=inverted))
        for a, p, n in trip
    )
    torch.testing.assert_close(losses.sum(), total, rtol=1e-12, atol=0)
    exp_div = sum(
        int(x > 0)
        for a, p, n in trip
        for x in margin_loss(mat[a, p], mat[a, n], beta_row[a], 0.2, is_inverted=inverted)
    )
    assert divisor.item() == exp_div and num.sum().item() == len(trip)
    per_anchor = torch.bincount(torch.tensor([t[0] for t in trip]), minlength=10)
    assert num.tolist() == per_anchor.tolist()


# --------------------------------------------------------------------------- class


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"margin": 0.3, "beta": 0.9},
        {"distance": CosineSimilarity(), "beta": 0.5},
        {"learn_beta": True, "nu": 0.1},
        {"learn_beta": True, "nu": 0.1, "num_classes": 4},
        {"num_classes": 4, "beta": 1.0},
    ],
)
@pytest.mark.parametrize("source", ["labels", "ref", "pairs", "triplets"])
def test_class_matches_naive(kwargs, source):
    loss_fn = MarginLoss(**kwargs)
    if kwargs.get("num_classes"):
        with torch.no_grad():
            loss_fn.beta.copy_(torch.tensor([0.8, 1.0, 1.1, 1.3]))
    emb, ref = data().requires_grad_(), data(8, seed=2).requires_grad_()
    call = {"ref_emb": ref, "ref_labels": REF_LABELS} if source == "ref" else {}
    if source == "ref":
        trip = naive_triplets(LABELS.tolist(), REF_LABELS.tolist(), same=False)
    elif source == "pairs":
        call["indices_tuple"] = mined_pairs(LABELS)
        trip = naive_pair_triplets(call["indices_tuple"])
    elif source == "triplets":
        trip = naive_triplets(LABELS.tolist())[::4]
        call["indices_tuple"] = tuple(torch.tensor(x) for x in zip(*trip))
    else:
        trip = naive_triplets(LABELS.tolist())
    got = loss_fn(emb, LABELS, **call)
    beta = loss_fn.beta.to(torch.float64)
    per_class = kwargs.get("num_classes") is not None
    reg = None if not kwargs.get("learn_beta") else ("per_class" if per_class else "scalar")
    mat = loss_fn.distance(emb, ref if source == "ref" else None)
    exp = naive_margin(
        mat,
        trip,
        (lambda a: beta[LABELS[a]]) if per_class else (lambda a: beta[0]),
        loss_fn.margin,
        loss_fn.distance.is_inverted,
        loss_fn.nu,
        reg,
    )
    torch.testing.assert_close(got, exp.reshape(()), rtol=1e-10, atol=1e-12)
    wrt = [emb] + ([loss_fn.beta] if kwargs.get("learn_beta") else [])
    g = torch.autograd.grad(got, wrt, retain_graph=True)
    ge = torch.autograd.grad(exp.reshape(()), wrt)
    for a, b in zip(g, ge):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_fast_path_equals_per_triplet_reduction():
    emb = data()
    for kwargs in ({}, {"learn_beta": True, "nu": 0.2, "num_classes": 4}):
        fast = MarginLoss(**kwargs)(emb, LABELS)
        out = MarginLoss(**kwargs, reducer=DoNothingReducer())(emb, LABELS)
        assert out["margin_loss"]["reduction_type"] == "triplet"
        assert list(zip(*(t.tolist() for t in out["margin_loss"]["indices"]))) == naive_triplets(
            LABELS.tolist()
        )
        slow = MultipleReducers(
            {"margin_loss": DivisorReducer(), "beta_reg_loss": DivisorReducer()}
        )(out, emb, LABELS)
        torch.testing.assert_close(fast, slow, rtol=1e-12, atol=0)


def test_other_reducers_get_every_triplet():
    emb = data()
    got = MarginLoss(reducer=MeanReducer())(emb, LABELS)
    losses = MarginLoss(reducer=DoNothingReducer())(emb, LABELS)["margin_loss"]["losses"]
    torch.testing.assert_close(got, losses.mean())


def test_beta_is_float32_and_not_state_unless_learnt():
    loss_fn = MarginLoss().double()
    assert loss_fn.beta.dtype == torch.float32 and loss_fn.beta.shape == (1,)
    assert "beta" not in loss_fn.state_dict() and not list(loss_fn.parameters())
    emb = data()
    got = loss_fn(emb, LABELS)
    b = float(torch.tensor(1.2, dtype=torch.float32))  # 1.2000000476837158
    exp = naive_margin(LpDistance()(emb), naive_triplets(LABELS.tolist()), lambda a: b, 0.2)
    torch.testing.assert_close(got, exp, rtol=1e-13, atol=0)
    learnt = MarginLoss(learn_beta=True, num_classes=3, beta=0.7)
    assert isinstance(learnt.beta, torch.nn.Parameter) and learnt.beta.shape == (3,)
    assert [n for n, _ in learnt.named_parameters()] == ["beta"]


def test_stats_and_records():
    loss_fn = MarginLoss(reducer=DivisorReducer(collect_stats=True))
    emb = data()
    loss_fn(emb, LABELS)
    out = MarginLoss(reducer=DoNothingReducer())(emb, LABELS)["margin_loss"]
    sub = loss_fn.reducer.reducers["margin_loss"]
    assert sub.losses_size == len(out["losses"])
    assert sub.divisor == out["divisor"].item()
    assert {"margin", "nu", "beta"} <= set(loss_fn._record_these)
    assert isinstance(loss_fn, BaseMetricLossFunction)
    assert loss_fn.sub_loss_names() == ["margin_loss", "beta_reg_loss"]


@pytest.mark.parametrize(
    "labels", [torch.arange(5), torch.zeros(5, dtype=torch.long), torch.tensor([1])]
)
@pytest.mark.parametrize("kwargs", [{}, {"learn_beta": True, "nu": 0.5}])
def test_no_triplets_gives_zero(labels, kwargs):
    emb = data(len(labels)).requires_grad_()
    loss = MarginLoss(**kwargs)(emb, labels)
    assert loss.item() == 0  # no beta regularization either
    loss.backward()
    assert not emb.grad.any()


def test_nan_embeddings_give_nan():
    emb = data()
    emb[2, 1] = float("nan")
    assert torch.isnan(MarginLoss()(emb, LABELS))
    assert torch.isnan(MarginLoss()(emb, LABELS, mined_pairs(LABELS)))


def test_dtype_and_device(dtype, device):
    emb = data(dtype=torch.float32).to(device, dtype).requires_grad_()
    labels = LABELS.to(device)
    loss_fn = MarginLoss(margin=0.5, learn_beta=True, nu=0.1, num_classes=4).to(device)
    loss = loss_fn(emb, labels)
    assert loss.dtype == dtype and loss.device == emb.device
    loss.backward()
    assert emb.grad.dtype == dtype and loss_fn.beta.grad is not None
    if dtype != torch.float64:
        exp = MarginLoss(margin=0.5, learn_beta=True, nu=0.1, num_classes=4)(
            emb.detach().double().cpu(), LABELS
        )
        assert_close(loss.detach().cpu(), exp.to(dtype), rtol=0.1, atol=0.1)


def test_bad_input():
    with pytest.raises(TypeError, match="labels"):
        MarginLoss(num_classes=3)(data(), None, mined_pairs(LABELS))
    with pytest.raises(ValueError, match="num_classes"):
        MarginLoss(num_classes=0)
    with pytest.raises(ValueError, match="triplets_per_anchor"):
        MarginLoss(triplets_per_anchor="x")
    with pytest.raises(ValueError, match="labels"):
        MarginLoss()(data())


def test_per_class_beta_labels_out_of_range():
    emb = data(5)
    # anchors without triplets may carry any label
    loss = MarginLoss(num_classes=2)(emb, torch.tensor([0, 0, 1, 1, 7]))
    assert torch.isfinite(loss)
    for fast in (True, False):
        reducer = None if fast else DoNothingReducer()
        with pytest.raises(ValueError, match="num_classes"):
            MarginLoss(num_classes=2, reducer=reducer)(emb, torch.tensor([0, 0, 1, 7, 7]))


@pytest.mark.parametrize("kwargs", [{}, {"learn_beta": True, "nu": 0.2, "num_classes": 4}])
@pytest.mark.parametrize("reducer", [MeanReducer, SumReducer, AvgNonZeroReducer])
def test_other_reducers_match_reducing_every_triplet(kwargs, reducer):
    emb = data()
    out = MarginLoss(**kwargs, reducer=DoNothingReducer())(emb, LABELS)
    got_fn = MarginLoss(**kwargs, reducer=reducer(collect_stats=True))
    got = got_fn(emb, LABELS)
    want = MultipleReducers({}, default_reducer=reducer())(out, emb, LABELS)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15)
    sub = got_fn.reducer.reducers["margin_loss"]
    assert sub.losses_size == len(out["margin_loss"]["losses"])
