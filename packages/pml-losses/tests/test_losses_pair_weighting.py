"""MultiSimilarityLoss, CircleLoss and SupConLoss: naive per-row loops from the spec."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck

from pml.core.indices import get_all_pairs_indices, get_all_triplets_indices
from pml.core.testing import assert_close, mined_pairs, mined_triplets, random_embeddings
from pml.core.validation import InvalidArgumentError
from pml.distances import CosineSimilarity, DotProductSimilarity, LpDistance
from pml.losses import CircleLoss, GenericPairLoss, MultiSimilarityLoss, SupConLoss
from pml.losses.functional import circle_loss, multi_similarity_loss, supcon_loss
from pml.reducers import AvgNonZeroReducer, DoNothingReducer, MeanReducer

LABELS = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 4, 4])


def label_masks(labels, ref_labels=None):
    same = ref_labels is None
    ref = labels if same else ref_labels
    pos = labels[:, None] == ref[None, :]
    neg = ~pos
    if same:
        pos.fill_diagonal_(False)
    return pos, neg


def tuple_masks(tup, n, m):
    if len(tup) == 3:
        tup = (tup[0], tup[1], tup[0], tup[2])
    pos, neg = torch.zeros(n, m, dtype=torch.bool), torch.zeros(n, m, dtype=torch.bool)
    pos[tup[0], tup[1]] = True
    neg[tup[2], tup[3]] = True
    return pos, neg


def lse(values, add_one=False):
    values = list(values) + ([0.0] if add_one else [])
    if not values:
        return 0.0
    mx = max(values)
    return mx + math.log(sum(math.exp(v - mx) for v in values))


def rows(mat, mask, i):
    return [mat[i, j].item() for j in range(mat.shape[1]) if mask[i, j]]


def naive_ms(mat, pos, neg, alpha, beta, base, is_inverted):
    sign = -1 if is_inverted else 1  # margin(v, base) = sign * (v - base)
    out = []
    for i in range(mat.shape[0]):
        p = [alpha * sign * (v - base) for v in rows(mat, pos, i)]
        n = [beta * -sign * (v - base) for v in rows(mat, neg, i)]
        out.append(lse(p, True) / alpha + lse(n, True) / beta if (p or n) else 0.0)
    return torch.tensor(out, dtype=torch.float64).unsqueeze(1)


def naive_circle(sim, pos, neg, m, gamma):
    out = []
    for i in range(sim.shape[0]):
        p, n = rows(sim, pos, i), rows(sim, neg, i)
        if not p or not n:
            out.append(0.0)
            continue
        lp = lse([-gamma * max(1 + m - s, 0) * (s - (1 - m)) for s in p])
        ln = lse([gamma * max(s + m, 0) * (s - m) for s in n])
        x = lp + ln
        out.append(x if x > 20 else math.log1p(math.exp(x)))
    return torch.tensor(out, dtype=torch.float64).unsqueeze(1)


def naive_supcon(mat, pos, neg, temperature, is_inverted):
    z = mat / temperature if is_inverted else -mat / temperature
    out = []
    for i in range(mat.shape[0]):
        p = rows(z, pos, i)
        den = lse(rows(z, pos | neg, i))
        out.append(-sum(v - den for v in p) / (len(p) + torch.finfo(torch.float64).tiny))
    return torch.tensor(out, dtype=torch.float64)


def naive_for(cls, kwargs, mat, pos, neg, is_inverted):
    if cls is MultiSimilarityLoss:
        a = {"alpha": 2, "beta": 50, "base": 0.5} | {
            k: kwargs[k] for k in ("alpha", "beta", "base") if k in kwargs
        }
        return naive_ms(mat, pos, neg, a["alpha"], a["beta"], a["base"], is_inverted)
    if cls is CircleLoss:
        return naive_circle(mat, pos, neg, kwargs.get("m", 0.4), kwargs.get("gamma", 80))
    return naive_supcon(mat, pos, neg, kwargs.get("temperature", 0.1), is_inverted)


def reduce_like_default(cls, losses):
    if cls is MultiSimilarityLoss:
        return losses.mean()
    nz = losses[losses > 0]
    return nz.mean() if len(nz) else torch.zeros((), dtype=losses.dtype)


CASES = [
    (MultiSimilarityLoss, {}),
    (MultiSimilarityLoss, {"alpha": 1, "beta": 10, "base": 0.3}),
    (MultiSimilarityLoss, {"alpha": 1.5, "beta": 8, "base": 0.9, "distance": LpDistance()}),
    (CircleLoss, {}),
    (CircleLoss, {"m": 0.25, "gamma": 256}),
    (SupConLoss, {}),
    (SupConLoss, {"temperature": 0.5}),
    (SupConLoss, {"temperature": 0.2, "distance": LpDistance()}),
    (SupConLoss, {"distance": DotProductSimilarity(normalize_embeddings=False)}),
]
IDS = [
    "ms",
    "ms_args",
    "ms_lp",
    "circle",
    "circle_args",
    "supcon",
    "supcon_t",
    "supcon_lp",
    "supcon_dot",
]


def _inputs(kind, emb):
    ref, ref_labels = random_embeddings(7, seed=1), torch.tensor([0, 1, 1, 2, 5, 4, 0])
    if kind == "labels":
        return (emb, LABELS), label_masks(LABELS), None
    if kind == "pairs":
        return (emb, LABELS, mined_pairs(LABELS)), tuple_masks(mined_pairs(LABELS), 10, 10), None
    if kind == "triplets":
        return (
            (emb, None, mined_triplets(LABELS)),
            tuple_masks(mined_triplets(LABELS), 10, 10),
            None,
        )
    return (emb, LABELS, None, ref, ref_labels), label_masks(LABELS, ref_labels), ref


@pytest.mark.parametrize("kind", ["labels", "pairs", "triplets", "ref"])
@pytest.mark.parametrize(("cls", "kwargs"), CASES, ids=IDS)
def test_matches_naive_loop(cls, kwargs, kind):
    emb = random_embeddings()
    args, (pos, neg), ref = _inputs(kind, emb)
    loss_fn = cls(**kwargs)
    mat = loss_fn.distance(emb, ref)
    expected = naive_for(cls, kwargs, mat, pos, neg, loss_fn.distance.is_inverted)
    out = cls(**kwargs, reducer=DoNothingReducer())(*args)["loss"]
    torch.testing.assert_close(out["losses"], expected, rtol=1e-11, atol=1e-13)
    assert torch.equal(out["indices"], torch.arange(10)) and out["reduction_type"] == "element"
    torch.testing.assert_close(
        loss_fn(*args), reduce_like_default(cls, expected), rtol=1e-11, atol=1e-13
    )


def test_duplicates_collapse_in_masks():
    """Matrix losses see cells: on a balanced batch all pairs and all triplets agree."""
    emb = random_embeddings()
    labels = torch.arange(5).repeat_interleave(2)
    for cls in (MultiSimilarityLoss, CircleLoss, SupConLoss):
        a = cls()(emb, labels, get_all_pairs_indices(labels))
        b = cls()(emb, labels, get_all_triplets_indices(labels))
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
        torch.testing.assert_close(a, cls()(emb, labels), rtol=1e-12, atol=0)


# --------------------------------------------------------------------------- edge cases


def test_no_positives():
    emb = random_embeddings(6, 4).requires_grad_()
    labels = torch.arange(6)
    for cls in (CircleLoss, SupConLoss):
        loss = cls()(emb, labels)
        assert loss == 0 and loss.requires_grad
    assert SupConLoss(reducer=DoNothingReducer())(emb, labels)["loss"]["losses"] == 0
    circle_rows = CircleLoss(reducer=DoNothingReducer())(emb, labels)["loss"]["losses"]
    assert torch.equal(circle_rows, torch.zeros(6, 1, dtype=torch.float64))
    ms = MultiSimilarityLoss()(emb, labels)  # rows still carry the negative term
    pos, neg = label_masks(labels)
    expected = naive_ms(CosineSimilarity()(emb.detach()), pos, neg, 2, 50, 0.5, True).mean()
    torch.testing.assert_close(ms, expected, rtol=1e-12, atol=0)
    ms.backward()
    assert torch.isfinite(emb.grad).all()


def test_single_class_and_single_sample():
    emb = random_embeddings(6, 4).requires_grad_()
    labels = torch.zeros(6, dtype=torch.long)
    assert CircleLoss()(emb, labels) == 0
    assert SupConLoss()(emb, labels) == 0
    assert SupConLoss(reducer=DoNothingReducer())(emb, labels)["loss"]["losses"] == 0
    assert MultiSimilarityLoss()(emb, labels) > 0
    for cls in (MultiSimilarityLoss, CircleLoss, SupConLoss):
        one = random_embeddings(1, 4).requires_grad_()
        loss = cls()(one, torch.tensor([2]))
        assert loss == 0 and loss.requires_grad
        loss.backward()
        assert torch.equal(one.grad, torch.zeros_like(one))


def test_supcon_rows_without_positives_are_negative_zero():
    emb = random_embeddings()
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 4, 4])  # row 7 has no positive
    out = SupConLoss(reducer=DoNothingReducer())(emb, labels)["loss"]["losses"]
    assert out[7] == 0 and math.copysign(1.0, out[7].item()) == -1.0
    assert out.shape == (10,)


def test_overlapping_miner_tuple_is_rejected():
    bad = (torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([0, 2]), torch.tensor([1, 3]))
    for cls in (MultiSimilarityLoss, CircleLoss, SupConLoss):
        with pytest.raises(InvalidArgumentError, match="positive or negative"):
            cls()(random_embeddings(), LABELS, bad)


@pytest.mark.parametrize("cls", [MultiSimilarityLoss, CircleLoss, SupConLoss])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_embeddings_give_nan(cls, bad):
    emb = random_embeddings()
    emb[2, 1] = bad
    assert torch.isnan(cls()(emb, LABELS))
    assert torch.isnan(cls()(emb, LABELS, mined_pairs(LABELS)))


def test_extreme_scales_stay_finite():
    """Huge gamma / tiny temperature: masked log-sum-exp never produces inf or NaN grads."""
    emb = random_embeddings().requires_grad_()
    for loss_fn in (
        CircleLoss(gamma=4096),
        SupConLoss(temperature=1e-3),
        MultiSimilarityLoss(beta=2000),
    ):
        loss = loss_fn(emb, LABELS)
        (g,) = torch.autograd.grad(loss, emb)
        assert torch.isfinite(loss) and torch.isfinite(g).all()


# --------------------------------------------------------------------------- API


def test_defaults_hierarchy_records_and_errors():
    ms = MultiSimilarityLoss()
    assert (ms.alpha, ms.beta, ms.base) == (2, 50, 0.5)
    assert isinstance(ms.distance, CosineSimilarity) and type(ms.reducer) is MeanReducer
    assert {"alpha", "beta", "base"} <= set(ms._record_these)
    c = CircleLoss(m=0.25)
    assert (c.m, c.gamma, c.op, c.on, c.delta_p, c.delta_n) == (0.25, 80, 1.25, -0.25, 0.75, 0.25)
    assert isinstance(c.soft_plus, torch.nn.Softplus)
    assert {"m", "gamma", "op", "on", "delta_p", "delta_n"} <= set(c._record_these)
    assert type(c.reducer) is AvgNonZeroReducer
    s = SupConLoss()
    assert s.temperature == 0.1 and "temperature" in s._record_these
    assert isinstance(s.distance, CosineSimilarity) and type(s.reducer) is AvgNonZeroReducer
    for obj in (ms, c, s):
        assert isinstance(obj, GenericPairLoss) and obj.mat_based_loss
    with pytest.raises(InvalidArgumentError, match="CosineSimilarity"):
        CircleLoss(distance=LpDistance())
    with pytest.raises(TypeError, match="temperature"):
        SupConLoss(temperature="hot")
    with pytest.raises(TypeError, match="beta"):
        MultiSimilarityLoss(beta=[50])
    with pytest.raises(ValueError, match="labels"):
        SupConLoss()(random_embeddings())


# --------------------------------------------------------------------------- functional


def test_functional_gradcheck():
    g = torch.Generator().manual_seed(0)
    mat = (torch.rand(6, 5, generator=g, dtype=torch.float64) * 2 - 1).requires_grad_()
    pos = torch.rand(6, 5, generator=g) > 0.6
    neg = ~pos & (torch.rand(6, 5, generator=g) > 0.3)
    pos[4], neg[4] = False, False  # an empty row
    assert gradcheck(lambda x: multi_similarity_loss(x, pos, neg, 2.0, 10.0, 0.3), (mat,))
    assert gradcheck(
        lambda x: multi_similarity_loss(x, pos, neg, 2.0, 10.0, 0.3, is_inverted=False), (mat,)
    )
    # circle's weights are detached (no gradient through them), so compare with autograd of
    # the formula written one row at a time instead of finite differences
    (got,) = torch.autograd.grad(circle_loss(mat, pos, neg, 0.3, 4.0).sum(), mat)
    total = mat.new_zeros(())
    for i in range(6):
        if pos[i].any() and neg[i].any():
            sp, sn = mat[i][pos[i]], mat[i][neg[i]]
            lp = torch.logsumexp(-4.0 * torch.relu(1.3 - sp.detach()) * (sp - 0.7), 0)
            ln = torch.logsumexp(4.0 * torch.relu(sn.detach() + 0.3) * (sn - 0.3), 0)
            total = total + torch.nn.functional.softplus(lp + ln)
    (want,) = torch.autograd.grad(total, mat)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    assert gradcheck(lambda x: supcon_loss(x, pos, neg, 0.5), (mat,))
    assert gradcheck(lambda x: supcon_loss(x, pos, neg, 0.5, is_inverted=False), (mat,))


def test_functional_accepts_float_masks_like_bool():
    mat = random_embeddings(5, 5)
    pos = torch.eye(5, dtype=torch.bool).roll(1, 0)
    neg = ~pos & ~torch.eye(5, dtype=torch.bool)
    for fn in (multi_similarity_loss, circle_loss, supcon_loss):
        torch.testing.assert_close(fn(mat, pos, neg), fn(mat, pos.double(), neg.double()))


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("cls", [MultiSimilarityLoss, CircleLoss, SupConLoss])
def test_dtype_and_device(cls, dtype, device):
    emb64 = random_embeddings(16, 8, seed=2)
    labels = torch.arange(4).repeat_interleave(4)
    loss_fn = cls(gamma=8) if cls is CircleLoss else cls()  # a scale that half precision can carry
    emb = emb64.to(device=device, dtype=dtype).requires_grad_()
    loss = loss_fn(emb, labels.to(device))
    assert loss.dtype == dtype and loss.device == emb.device
    assert_close(loss.detach(), loss_fn(emb.detach().double(), labels.to(device)))
    loss.backward()
    assert emb.grad.dtype == dtype and torch.isfinite(emb.grad).all()
