"""ContrastiveLoss, SignalToNoiseRatioContrastiveLoss, IntraPairVarianceLoss.

Naive per-pair loops written from the spec, the fast (dense) path against the exact per-pair
path, reducers, edge cases, dtypes and devices, gradcheck of the functional code.
"""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

from pml.core.testing import (
    assert_close,
    mined_pairs,
    mined_triplets,
    naive_pairs,
    random_embeddings,
)
from pml.core.validation import InvalidArgumentError
from pml.distances import CosineSimilarity, LpDistance, SNRDistance
from pml.losses import (
    ContrastiveLoss,
    GenericPairLoss,
    IntraPairVarianceLoss,
    SignalToNoiseRatioContrastiveLoss,
)
from pml.losses.functional import contrastive_loss, intra_pair_variance_loss
from pml.losses.functional._pair_ops import Hinge, masked_hinge_sums
from pml.reducers import (
    AvgNonZeroReducer,
    DoNothingReducer,
    MeanReducer,
    MultipleReducers,
    PerAnchorReducer,
    SumReducer,
    ThresholdReducer,
)
from pml.regularizers import LpRegularizer

LABELS = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 4, 4])


def naive_contrastive(mat, pairs, pos_margin, neg_margin, is_inverted):
    a1, p, a2, n = (t.tolist() for t in pairs)
    pos, neg = [], []
    for a, b in zip(a1, p):
        v = mat[a, b].item()
        pos.append(max(pos_margin - v, 0.0) if is_inverted else max(v - pos_margin, 0.0))
    for a, b in zip(a2, n):
        v = mat[a, b].item()
        neg.append(max(v - neg_margin, 0.0) if is_inverted else max(neg_margin - v, 0.0))
    return torch.tensor(pos, dtype=torch.float64), torch.tensor(neg, dtype=torch.float64)


def naive_ipv(mat, pairs, pos_eps, neg_eps, is_inverted):
    a1, p, a2, n = (t.tolist() for t in pairs)
    pv = [mat[a, b].item() for a, b in zip(a1, p)]
    nv = [mat[a, b].item() for a, b in zip(a2, n)]
    mu_p, mu_n = sum(pv) / len(pv), sum(nv) / len(nv)
    if is_inverted:
        pos = [max((1 - pos_eps) * mu_p - v, 0.0) ** 2 for v in pv]
        neg = [max(v - (1 + neg_eps) * mu_n, 0.0) ** 2 for v in nv]
    else:
        pos = [max(v - (1 + pos_eps) * mu_p, 0.0) ** 2 for v in pv]
        neg = [max((1 - neg_eps) * mu_n - v, 0.0) ** 2 for v in nv]
    return torch.tensor(pos, dtype=torch.float64), torch.tensor(neg, dtype=torch.float64)


def avg_nonzero(x):
    nz = x[x > 0]
    return nz.mean() if len(nz) else torch.zeros((), dtype=x.dtype)


CASES = [
    (ContrastiveLoss, {}, LpDistance(), naive_contrastive, (0, 1)),
    (
        ContrastiveLoss,
        {"pos_margin": 0.3, "neg_margin": 1.2},
        LpDistance(),
        naive_contrastive,
        (0.3, 1.2),
    ),
    (
        ContrastiveLoss,
        {"pos_margin": 0.9, "neg_margin": 0.1, "distance": CosineSimilarity()},
        CosineSimilarity(),
        naive_contrastive,
        (0.9, 0.1),
    ),
    (
        SignalToNoiseRatioContrastiveLoss,
        {"neg_margin": 1.1},
        SNRDistance(),
        naive_contrastive,
        (0, 1.1),
    ),
    (IntraPairVarianceLoss, {}, CosineSimilarity(), naive_ipv, (0.01, 0.01)),
    (
        IntraPairVarianceLoss,
        {"pos_eps": 0.05, "neg_eps": 0.1, "distance": LpDistance()},
        LpDistance(),
        naive_ipv,
        (0.05, 0.1),
    ),
]
IDS = ["contrastive", "contrastive_margins", "contrastive_cos", "snr", "ipv", "ipv_lp"]


def _total(cls, pos, neg):
    if cls is IntraPairVarianceLoss:
        return pos.mean() + neg.mean()
    return avg_nonzero(pos) + avg_nonzero(neg)


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize(("cls", "kwargs", "dist", "naive", "args"), CASES, ids=IDS)
def test_matches_naive_loop_with_labels(cls, kwargs, dist, naive, args):
    emb = random_embeddings()
    pairs = naive_pairs(LABELS)
    pos, neg = naive(dist(emb), pairs, *args, dist.is_inverted)
    loss = cls(**kwargs)(emb, LABELS)
    torch.testing.assert_close(loss, _total(cls, pos, neg), rtol=1e-12, atol=1e-15)
    out = cls(**kwargs, reducer=DoNothingReducer())(emb, LABELS)
    assert list(out) == ["pos_loss", "neg_loss"]
    torch.testing.assert_close(out["pos_loss"]["losses"], pos, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(out["neg_loss"]["losses"], neg, rtol=1e-12, atol=1e-15)
    for got, want in zip((*out["pos_loss"]["indices"], *out["neg_loss"]["indices"]), pairs):
        assert torch.equal(got, want)
    assert out["pos_loss"]["reduction_type"] == "pos_pair"
    assert out["neg_loss"]["reduction_type"] == "neg_pair"


@pytest.mark.parametrize(("cls", "kwargs", "dist", "naive", "args"), CASES, ids=IDS)
def test_matches_naive_loop_with_mined_pairs_and_triplets(cls, kwargs, dist, naive, args):
    emb = random_embeddings()
    mat = dist(emb)
    pairs = mined_pairs(LABELS)
    pos, neg = naive(mat, pairs, *args, dist.is_inverted)
    torch.testing.assert_close(
        cls(**kwargs)(emb, LABELS, pairs), _total(cls, pos, neg), rtol=1e-12, atol=1e-15
    )
    # triplets become (a, p, a, n): duplicates count; labels are not needed
    trip = mined_triplets(LABELS)
    as_pairs = (trip[0], trip[1], trip[0], trip[2])
    pos, neg = naive(mat, as_pairs, *args, dist.is_inverted)
    torch.testing.assert_close(
        cls(**kwargs)(emb, None, trip), _total(cls, pos, neg), rtol=1e-12, atol=1e-15
    )


@pytest.mark.parametrize(("cls", "kwargs", "dist", "naive", "args"), CASES, ids=IDS)
def test_matches_naive_loop_with_ref_emb(cls, kwargs, dist, naive, args):
    emb, ref = random_embeddings(), random_embeddings(7, seed=1)
    ref_labels = torch.tensor([0, 1, 1, 2, 5, 4, 0])
    pairs = naive_pairs(LABELS, ref_labels)
    pos, neg = naive(dist(emb, ref), pairs, *args, dist.is_inverted)
    loss = cls(**kwargs)(emb, LABELS, None, ref, ref_labels)
    torch.testing.assert_close(loss, _total(cls, pos, neg), rtol=1e-12, atol=1e-15)


def test_copied_ref_labels_keep_self_pairs():
    """Identity rule: a copy of the labels is another set, so (i, i) is a positive pair."""
    emb = random_embeddings()
    out = ContrastiveLoss(reducer=DoNothingReducer())(emb, LABELS, None, emb, LABELS.clone())
    a1, p = out["pos_loss"]["indices"]
    assert bool((a1 == p).any())
    same = ContrastiveLoss(reducer=DoNothingReducer())(emb, LABELS, None, emb, LABELS)
    assert not bool((same["pos_loss"]["indices"][0] == same["pos_loss"]["indices"][1]).any())


# --------------------------------------------------------------------------- fast path


REDUCERS = [
    None,
    MeanReducer(),
    AvgNonZeroReducer(),
    ThresholdReducer(low=0.05, high=0.6),
    ThresholdReducer(high=0.5),
    ThresholdReducer(low=-1.0),
    SumReducer(),
    PerAnchorReducer(),
]


@pytest.mark.parametrize("reducer", REDUCERS, ids=lambda r: type(r).__name__)
@pytest.mark.parametrize("cls", [ContrastiveLoss, IntraPairVarianceLoss])
def test_every_reducer_sees_the_reference_per_pair_losses(cls, reducer):
    """Whatever path is taken, the result is the reducer applied to the per-pair losses."""
    emb = random_embeddings(12, 5, seed=4)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4])
    loss_fn = cls(reducer=reducer)
    per_pair = cls(reducer=DoNothingReducer())(emb, labels)
    expected = loss_fn.reducer(per_pair, emb, labels)
    torch.testing.assert_close(loss_fn(emb, labels), expected, rtol=1e-12, atol=1e-15)


def test_fast_path_gradients_match_exact_path():
    emb = random_embeddings(12, 5, seed=5).requires_grad_()
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4])
    for cls in (ContrastiveLoss, IntraPairVarianceLoss):
        fast = cls()
        exact = cls(reducer=DoNothingReducer())
        g_fast = torch.autograd.grad(fast(emb, labels), emb)[0]
        g_exact = torch.autograd.grad(fast.reducer(exact(emb, labels), emb, labels), emb)[0]
        torch.testing.assert_close(g_fast, g_exact, rtol=1e-10, atol=1e-14)


def test_collect_stats_reducer_sees_every_pair():
    """With stats on, the reducers get every per-pair loss: losses_size and counts are exact."""
    emb = random_embeddings()
    reducer = MultipleReducers(
        {
            "pos_loss": AvgNonZeroReducer(collect_stats=True),
            "neg_loss": AvgNonZeroReducer(collect_stats=True),
        }
    )
    loss_fn = ContrastiveLoss(reducer=reducer)
    value = loss_fn(emb, LABELS)
    pairs = naive_pairs(LABELS)
    pos, neg = naive_contrastive(LpDistance()(emb), pairs, 0, 1, False)
    torch.testing.assert_close(value, avg_nonzero(pos) + avg_nonzero(neg), rtol=1e-12, atol=0)
    assert loss_fn.reducer.reducers["pos_loss"].losses_size == len(pairs[0])
    assert loss_fn.reducer.reducers["neg_loss"].losses_size == len(pairs[2])
    assert loss_fn.reducer.reducers["neg_loss"].num_past_filter == int((neg > 0).sum())


# --------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize(
    "cls", [ContrastiveLoss, SignalToNoiseRatioContrastiveLoss, IntraPairVarianceLoss]
)
def test_no_positives_gives_negative_part_only(cls):
    emb = random_embeddings(6, 5).requires_grad_()
    labels = torch.arange(6)
    out = cls(reducer=DoNothingReducer())(emb, labels)
    assert out["pos_loss"]["losses"] == 0 and len(out["pos_loss"]["indices"][0]) == 0
    assert out["neg_loss"]["losses"].shape == (30,)
    loss = cls()(emb, labels)
    expected = cls().reducer({"neg_loss": out["neg_loss"]}, emb, labels)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-15)
    loss.backward()
    assert torch.isfinite(emb.grad).all()


@pytest.mark.parametrize(
    "cls", [ContrastiveLoss, SignalToNoiseRatioContrastiveLoss, IntraPairVarianceLoss]
)
def test_single_class_gives_positive_part_only(cls):
    emb = random_embeddings(6, 5).requires_grad_()
    labels = torch.zeros(6, dtype=torch.long)
    out = cls(reducer=DoNothingReducer())(emb, labels)
    assert out["neg_loss"]["losses"] == 0 and out["pos_loss"]["losses"].shape == (30,)
    loss = cls()(emb, labels)
    loss.backward()
    assert torch.isfinite(emb.grad).all() and loss > 0


@pytest.mark.parametrize("cls", [ContrastiveLoss, IntraPairVarianceLoss])
def test_single_sample_and_one_pair_each_give_graph_connected_zero(cls):
    emb = random_embeddings(1, 5).requires_grad_()
    loss = cls()(emb, torch.tensor([3]))
    assert loss == 0 and loss.requires_grad
    loss.backward()
    assert torch.equal(emb.grad, torch.zeros_like(emb))
    # compat: one positive pair and one negative pair (every list has length <= 1) is no loss
    emb2 = random_embeddings(4, 5).requires_grad_()
    tup = (torch.tensor([0]), torch.tensor([1]), torch.tensor([0]), torch.tensor([2]))
    assert cls()(emb2, None, tup) == 0
    out = cls(reducer=DoNothingReducer())(emb2, None, tup)
    assert all(v["losses"] == 0 and v["reduction_type"] == "already_reduced" for v in out.values())
    # labels [0, 0, 1]: 2 positive and 4 negative pairs -> a real loss
    assert cls()(random_embeddings(3, 5), torch.tensor([0, 0, 1])) > 0


def test_empty_indices_tuple_gives_zero():
    emb = random_embeddings().requires_grad_()
    empty = torch.empty(0, dtype=torch.long)
    for tup in ((empty, empty, empty), (empty, empty, empty, empty)):
        loss = ContrastiveLoss()(emb, LABELS, tup)
        assert loss == 0 and loss.requires_grad


@pytest.mark.parametrize(
    "cls", [ContrastiveLoss, SignalToNoiseRatioContrastiveLoss, IntraPairVarianceLoss]
)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_embeddings_give_nan(cls, bad):
    emb = random_embeddings()
    emb[3, 2] = bad
    assert torch.isnan(cls()(emb, LABELS))
    assert torch.isnan(cls()(emb, LABELS, mined_pairs(LABELS)))
    assert torch.isnan(cls()(random_embeddings(), LABELS, None, emb, LABELS.clone()))


@pytest.mark.parametrize("cls", [ContrastiveLoss, IntraPairVarianceLoss])
def test_non_finite_embeddings_give_nan_when_the_reducer_keeps_no_negative(cls):
    # the negatives reach the reducer as sums: "none kept" must not turn NaN into the zero
    # loss (finite here: the NaN is in the reference set, not in the query embeddings)
    ref = random_embeddings(seed=1)
    ref[3, 2] = float("nan")
    pos = ThresholdReducer(high=-1.0)  # keeps no positive pair either
    reducer = MultipleReducers({"pos_loss": pos, "neg_loss": ThresholdReducer(low=1e6)})
    loss = cls(reducer=reducer)(random_embeddings(), LABELS, None, ref, LABELS.clone())
    assert torch.isnan(loss)


def test_too_few_pairs_rules():
    from pml.losses._pairs import too_few_pairs

    # the reference's rule: at most one pair of each kind
    assert too_few_pairs(1, 1, need_both=False) and not too_few_pairs(2, 0, need_both=False)
    assert not too_few_pairs(0, 2, need_both=False)
    # losses that need both kinds
    assert too_few_pairs(0, 5) and too_few_pairs(5, 0) and not too_few_pairs(2, 1)


def test_regularizer_and_reducer_composition():
    emb = random_embeddings()
    base = ContrastiveLoss()(emb, LABELS)
    with_reg = ContrastiveLoss(embedding_regularizer=LpRegularizer(), embedding_reg_weight=0.5)
    expected = base + 0.5 * emb.norm(dim=1).mean()
    torch.testing.assert_close(with_reg(emb, LABELS), expected, rtol=1e-12, atol=0)
    assert with_reg.sub_loss_names() == ["pos_loss", "neg_loss", "embedding_reg_loss"]


# --------------------------------------------------------------------------- API


def test_defaults_hierarchy_and_records():
    c = ContrastiveLoss()
    assert isinstance(c, GenericPairLoss) and not c.mat_based_loss
    assert (c.pos_margin, c.neg_margin) == (0, 1)
    assert isinstance(c.distance, LpDistance) and c.distance.p == 2 and c.distance.power == 1
    assert isinstance(c.reducer, MultipleReducers)
    assert all(type(r) is AvgNonZeroReducer for r in c.reducer.reducers.values())
    assert {"pos_margin", "neg_margin"} <= set(c._record_these)
    s = SignalToNoiseRatioContrastiveLoss(pos_margin=0.2)
    assert isinstance(s, ContrastiveLoss) and isinstance(s.distance, SNRDistance)
    assert s.pos_margin == 0.2 and s.neg_margin == 1
    ipv = IntraPairVarianceLoss()
    assert isinstance(ipv.distance, CosineSimilarity)
    assert all(type(r) is MeanReducer for r in ipv.reducer.reducers.values())
    assert (ipv.pos_eps, ipv.neg_eps) == (0.01, 0.01)
    assert {"pos_eps", "neg_eps"} <= set(ipv._record_these)


def test_bad_arguments():
    with pytest.raises(InvalidArgumentError, match="SNRDistance"):
        SignalToNoiseRatioContrastiveLoss(distance=LpDistance())
    with pytest.raises(AssertionError):  # code written against the reference keeps working
        SignalToNoiseRatioContrastiveLoss(distance=CosineSimilarity())
    with pytest.raises(TypeError, match="pos_margin"):
        ContrastiveLoss(pos_margin="0.5")
    with pytest.raises(TypeError, match="neg_eps"):
        IntraPairVarianceLoss(neg_eps=None)
    with pytest.raises(ValueError, match="labels"):
        ContrastiveLoss()(random_embeddings())
    with pytest.raises(ValueError, match="labels"):
        ContrastiveLoss()(random_embeddings(), LABELS[:5])
    with pytest.raises(TypeError, match="indices_tuple"):
        ContrastiveLoss()(random_embeddings(), LABELS, (torch.tensor([0.0]),) * 4)


# --------------------------------------------------------------------------- functional


def test_functional_matches_formulas_and_class():
    v = torch.tensor([0.0, 0.4, 1.3], dtype=torch.float64)
    pos, neg = contrastive_loss(v, v, 0.2, 1.0)
    assert pos.tolist() == pytest.approx([0.0, 0.2, 1.1])
    assert neg.tolist() == pytest.approx([1.0, 0.6, 0.0])
    pos, neg = contrastive_loss(v, v, 0.9, 0.3, is_inverted=True)
    assert pos.tolist() == pytest.approx([0.9, 0.5, 0.0])
    assert neg.tolist() == pytest.approx([0.0, 0.1, 1.0])
    p, n = intra_pair_variance_loss(v, v, 0.1, 0.1, is_inverted=False)
    mu = v.mean().item()
    assert p.tolist() == pytest.approx([max(x - 1.1 * mu, 0) ** 2 for x in v.tolist()])
    assert n.tolist() == pytest.approx([max(0.9 * mu - x, 0) ** 2 for x in v.tolist()])


def test_functional_gradcheck():
    g = torch.Generator().manual_seed(0)
    pos = torch.rand(7, generator=g, dtype=torch.float64).requires_grad_()
    neg = torch.rand(9, generator=g, dtype=torch.float64).requires_grad_()
    assert gradcheck(lambda a, b: contrastive_loss(a, b, 0.3, 0.6), (pos, neg))
    assert gradcheck(lambda a, b: contrastive_loss(a, b, 0.6, 0.3, is_inverted=True), (pos, neg))
    assert gradcheck(lambda a, b: intra_pair_variance_loss(a, b, 0.05, 0.1), (pos, neg))
    assert gradcheck(
        lambda a, b: intra_pair_variance_loss(a, b, 0.05, 0.1, is_inverted=False), (pos, neg)
    )


def test_class_gradcheck_through_fast_path():
    emb = random_embeddings(8, 4, seed=7).requires_grad_()
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3])
    assert gradcheck(lambda e: IntraPairVarianceLoss()(e, labels), (emb,))
    assert gradcheck(lambda e: ContrastiveLoss(neg_margin=1.5)(e, labels), (emb,))


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize(
    "cls", [ContrastiveLoss, SignalToNoiseRatioContrastiveLoss, IntraPairVarianceLoss]
)
def test_dtype_and_device(cls, dtype, device):
    emb64 = random_embeddings(16, 8, seed=2)
    labels = torch.arange(4).repeat_interleave(4)
    loss_fn = cls(neg_margin=0.5) if cls is not IntraPairVarianceLoss else cls()
    emb = emb64.to(device=device, dtype=dtype).requires_grad_()
    loss = loss_fn(emb, labels.to(device))
    assert loss.dtype == dtype and loss.device == emb.device
    expected = loss_fn(emb.detach().double(), labels.to(device))
    assert_close(loss.detach(), expected)  # tolerance keyed by dtype
    loss.backward()
    assert emb.grad.dtype == dtype and torch.isfinite(emb.grad).all()


# --------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    "case",
    ["same", "copy", "ref", "int32", "mixed", "bool", "float", "one", "empty_ref", "distinct"],
)
def test_pair_inputs_positives_equal_mask_scan(case):
    from pml.core.indices import get_all_pairs_indices
    from pml.losses._pairs import pair_inputs

    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 50, (400,), generator=g)  # 400 x 400 cells: the sorting path
    ref_labels = {
        "same": None,
        "copy": labels.clone(),
        "ref": torch.randint(0, 70, (370,), generator=g),
        "int32": None,
        "mixed": torch.randint(0, 70, (370,), generator=g).int(),
        "bool": None,
        "float": None,
        "one": None,
        "empty_ref": torch.empty(0, dtype=torch.long),
        "distinct": None,
    }[case]
    if case == "int32":
        labels = labels.int()
    if case == "bool":
        labels = labels > 20
    if case == "float":
        labels = labels.double()
        labels[3] = float("nan")
    if case == "one":
        labels = labels[:1]
    if case == "distinct":
        labels = torch.randperm(400, generator=g)
    pairs = pair_inputs(None, labels, ref_labels, labels.device)
    want = get_all_pairs_indices(labels, ref_labels)
    assert all(torch.equal(a, b) for a, b in zip((pairs.a1, pairs.p), want[:2]))
    assert pairs.num_neg == len(want[2])


MASKED_HINGE_ARGS = [
    ({"offset": 1.0, "sign": -1}, {"low": 0}),  # AvgNonZero of relu(1 - d)
    ({"offset": 0.3, "sign": 1}, {}),  # Mean of relu(s - 0.3)
    ({"offset": 0.5, "sign": -1}, {"low": 0.05, "high": 0.6}),  # ThresholdReducer
    ({"offset": 1.0, "sign": -1}, {"low": -0.5}),
    ({"sign": 1, "power": 2, "center_coef": 1.01}, {}),  # intra-pair variance, similarity
    ({"sign": -1, "power": 2, "center_coef": 0.99}, {}),  # intra-pair variance, distance
    ({"sign": 1, "power": 2, "center_coef": 1.1}, {"low": 0.01, "high": 0.3}),
    ({"offset": 5.0, "sign": 1}, {"low": 0}),  # nothing kept: 0 with zero gradient
]


@pytest.mark.parametrize(("hinge", "bounds"), MASKED_HINGE_ARGS)
def test_masked_hinge_sums_match_formula_and_gradcheck(hinge, bounds):
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(7, 6, generator=g, dtype=torch.float64) * 2).requires_grad_()
    mask = torch.rand(7, 6, generator=g) > 0.3
    center = hinge.get("offset", 0.0)
    if "center_coef" in hinge:
        center = hinge["center_coef"] * x[mask].mean()
    losses = (torch.relu(hinge["sign"] * (x - center)) ** hinge.get("power", 1))[mask]
    keep = torch.ones_like(losses, dtype=torch.bool)
    if bounds.get("low") is not None:
        keep &= losses > bounds["low"]
    if bounds.get("high") is not None:
        keep &= losses < bounds["high"]
    got = masked_hinge_sums(x, mask, Hinge(**hinge), **bounds)
    assert got.count == keep.sum() and got.num == mask.sum()
    torch.testing.assert_close(got.total, losses[keep].sum(), rtol=1e-12, atol=1e-15)
    g_got, g_want = (torch.autograd.grad(v, x)[0] for v in (got.total, losses[keep].sum()))
    torch.testing.assert_close(g_got, g_want, rtol=1e-12, atol=1e-15)
    assert gradcheck(lambda t: masked_hinge_sums(t, mask, Hinge(**hinge), **bounds).total, (x,))


def test_masked_hinge_sums_half_precision_and_class_fallback_for_learnable_margins():
    x = torch.rand(6, 5, dtype=torch.float64)
    mask = torch.rand(6, 5) > 0.2
    want = masked_hinge_sums(x, mask, Hinge(-1, 1.0), low=0)
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        xd = x.to(dtype).requires_grad_()
        got = masked_hinge_sums(xd, mask, Hinge(-1, 1.0), low=0)
        assert got.total.dtype == torch.float32  # summed in the accumulation dtype
        assert_close(got.total.to(dtype), want.total)
        got.total.backward()
        assert xd.grad.dtype == dtype
    # a learnable margin takes the per-pair path, so its gradient exists
    margin = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    loss = ContrastiveLoss(neg_margin=margin)(random_embeddings(), LABELS)
    (g,) = torch.autograd.grad(loss, margin)
    assert g != 0


@pytest.mark.parametrize("cls", [ContrastiveLoss, IntraPairVarianceLoss])
@pytest.mark.parametrize("with_ref", [False, True])
def test_long_negative_list_dense_path_matches_pair_list_path(cls, with_ref, monkeypatch):
    # CrossBatchMemory-style input: every pair listed explicitly (minus a few), so the
    # negatives are scattered into a mask and reduced densely; must equal the list path.
    from pml.core.indices import get_all_pairs_indices
    from pml.losses import _contrastive

    g = torch.Generator().manual_seed(11)
    emb = torch.randn(12, 5, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (12,), generator=g)
    ref = torch.randn(20, 5, generator=g, dtype=torch.float64) if with_ref else emb
    ref_labels = torch.randint(0, 3, (20,), generator=g) if with_ref else labels
    a1, p, a2, n = get_all_pairs_indices(labels, ref_labels)
    tup = (a1[1:], p[1:], a2[2:], n[2:])  # not exactly the label cells
    results = []
    routes = []
    masked_negatives = _contrastive.masked_negatives

    def spy(pairs, *args):
        out = masked_negatives(pairs, *args)
        routes.append(isinstance(out.neg, torch.Tensor))
        return out

    monkeypatch.setattr(_contrastive, "masked_negatives", spy)
    for route in ("dense", "list"):
        if route == "list":
            monkeypatch.setattr(_contrastive, "masked_negatives", lambda pairs, *a: pairs)
        x = emb.clone().requires_grad_()
        r = ref.clone().requires_grad_() if with_ref else None
        loss_fn = cls(distance=LpDistance()) if cls is IntraPairVarianceLoss else cls()
        out = loss_fn(x, labels, tup, r, ref_labels if with_ref else None)
        out.backward()
        results.append((out.detach(), x.grad, None if r is None else r.grad))
    assert routes == [True]  # the first call took the mask route
    (d_loss, d_gx, d_gr), (l_loss, l_gx, l_gr) = results
    assert_close(d_loss, l_loss)
    assert_close(d_gx, l_gx)
    if with_ref:
        assert_close(d_gr, l_gr)


def test_long_negative_list_with_duplicates_keeps_every_pair():
    from pml.core.indices import get_all_pairs_indices

    g = torch.Generator().manual_seed(12)
    emb = torch.randn(10, 4, generator=g, dtype=torch.float64) * 0.2
    labels = torch.randint(0, 2, (10,), generator=g)
    a1, p, a2, n = get_all_pairs_indices(labels)
    dup = (a1, p, torch.cat([a2, a2[:3]]), torch.cat([n, n[:3]]))
    got = ContrastiveLoss(reducer=MeanReducer())(emb, labels, dup)
    mat = LpDistance()(emb)
    pos = torch.relu(mat[a1, p]).mean()
    neg = torch.relu(1 - mat[dup[2], dup[3]]).mean()
    assert_close(got, pos + neg)
