"""DecoupledContrastiveLoss (DCL, DCLW) and its functional math: hand-computed cases, naive
loops, routes, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from pml.core.indices import get_all_pairs_indices
from pml.core.testing import assert_close, gradcheck
from pml.distances import CosineSimilarity, LpDistance
from pml.losses import DecoupledContrastiveLoss, NTXentLoss
from pml.losses.functional import decoupled_contrastive_loss, von_mises_weights
from pml.reducers import DoNothingReducer

LABELS = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 4, 4])


def data(n: int = 10, d: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def naive_dcl(emb, labels, temperature, sigma=None, ref_emb=None, ref_labels=None):
    """The paper's formula pair by pair; pairs whose anchor has no negative are left out."""
    same = ref_emb is None
    ref_emb, ref_labels = (emb, labels) if same else (ref_emb, ref_labels)
    sim = CosineSimilarity()(emb, ref_emb)
    pairs = []
    for a in range(len(emb)):
        negs = [n for n in range(len(ref_emb)) if ref_labels[n] != labels[a]]
        for p in range(len(ref_emb)):
            if ref_labels[p] == labels[a] and not (same and p == a) and negs:
                pairs.append((a, p, negs))
    pos_sim = torch.stack([sim[a, p] for a, p, _ in pairs])
    weights = [1.0] * len(pairs)
    if sigma is not None:
        e = [math.exp(float(s) / sigma) for s in pos_sim]
        weights = [2 - v / (sum(e) / len(e)) for v in e]
    out = []
    for (a, p, negs), w in zip(pairs, weights, strict=True):
        lse = math.log(sum(math.exp(float(sim[a, n]) / temperature) for n in negs))
        out.append(-w * float(sim[a, p]) / temperature + lse)
    return torch.tensor(out, dtype=torch.float64)


# --------------------------------------------------------------------------- functional


def test_decoupled_contrastive_functional_hand_computed():
    mat = torch.tensor([[1.0, 0.8, 0.1, -0.2], [0.8, 1.0, 0.3, 0.5]], dtype=torch.float64)
    neg = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1]]).bool()
    a1, p = torch.tensor([0, 1]), torch.tensor([1, 0])
    got = decoupled_contrastive_loss(mat, a1, p, neg, 0.5)
    expected = torch.tensor(
        [-1.6 + math.log(math.exp(0.2) + math.exp(-0.4)), -1.6 + math.log(math.exp(0.6) + math.e)],
        dtype=torch.float64,
    )
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
    # the same negatives as a list; a duplicated negative counts twice
    listed = decoupled_contrastive_loss(mat, a1, p, torch.where(neg), 0.5)
    torch.testing.assert_close(listed, expected, rtol=1e-12, atol=0)
    dup = (torch.tensor([0, 0, 0, 1, 1]), torch.tensor([2, 2, 3, 2, 3]))
    twice = decoupled_contrastive_loss(mat, a1, p, dup, 0.5)
    assert twice[0] == pytest.approx(-1.6 + math.log(2 * math.exp(0.2) + math.exp(-0.4)))


def test_decoupled_contrastive_functional_weights_scale_the_positive_term():
    mat = torch.tensor([[1.0, 0.8, 0.1]], dtype=torch.float64)
    neg = torch.tensor([[0, 0, 1]]).bool()
    w = torch.tensor([0.25], dtype=torch.float64)
    got = decoupled_contrastive_loss(mat, torch.tensor([0]), torch.tensor([1]), neg, 0.1, weights=w)
    assert float(got) == pytest.approx(-0.25 * 8 + 1)


def test_von_mises_weights_hand_computed():
    s = torch.tensor([0.9, 0.1, 0.5], dtype=torch.float64)
    e = [math.exp(v / 0.5) for v in (0.9, 0.1, 0.5)]
    expected = torch.tensor([2 - v / (sum(e) / 3) for v in e], dtype=torch.float64)
    got = von_mises_weights(s, 0.5)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
    assert float(got.mean()) == pytest.approx(1.0)
    assert von_mises_weights(s[:0]).shape == (0,)


def test_decoupled_contrastive_functional_gradcheck():
    mat = CosineSimilarity()(data(6), data(6, seed=1)).detach().requires_grad_(True)
    a1, p, a2, n = get_all_pairs_indices(LABELS[:6])
    neg = torch.zeros(6, 6, dtype=torch.bool)
    neg[a2, n] = True

    def f(m):
        w = von_mises_weights(m[a1, p], 0.5)
        return decoupled_contrastive_loss(m, a1, p, neg, 0.3, weights=w)

    gradcheck(f, (mat,))


# --------------------------------------------------------------------------- the loss


@pytest.mark.parametrize("sigma", [None, 0.5, 2.0])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_decoupled_contrastive_loss_matches_naive_loop(temperature, sigma):
    emb = data()
    weight_fn = None if sigma is None else "von_mises"
    kwargs = {} if sigma is None else {"sigma": sigma}
    loss_fn = DecoupledContrastiveLoss(temperature, weight_fn, reducer=DoNothingReducer(), **kwargs)
    got = loss_fn(emb, LABELS)["loss"]["losses"]
    expected = naive_dcl(emb, LABELS, temperature, sigma)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    mean = DecoupledContrastiveLoss(temperature, weight_fn, **kwargs)(emb, LABELS)
    assert_close(mean, expected.mean())


def test_decoupled_contrastive_loss_with_ref_emb_matches_naive_loop():
    emb, ref = data(5), data(7, seed=2)
    labels, ref_labels = torch.tensor([0, 1, 2, 0, 1]), torch.tensor([0, 0, 1, 2, 2, 1, 3])
    loss_fn = DecoupledContrastiveLoss(0.2, "von_mises", reducer=DoNothingReducer())
    got = loss_fn(emb, labels, ref_emb=ref, ref_labels=ref_labels)["loss"]["losses"]
    expected = naive_dcl(emb, labels, 0.2, 0.5, ref, ref_labels)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_decoupled_contrastive_loss_is_ntxent_without_the_positive_in_the_denominator():
    emb = data()
    dcl = DecoupledContrastiveLoss(0.1, reducer=DoNothingReducer())(emb, LABELS)["loss"]
    ntx = NTXentLoss(0.1, reducer=DoNothingReducer())(emb, LABELS)["loss"]
    a1, p = dcl["indices"]
    z = CosineSimilarity()(emb, emb)[a1, p] / 0.1
    # NT-Xent = log(1 + exp(DCL)) pair by pair: -z + log(e^z + S) = log(1 + S·e^-z)
    torch.testing.assert_close(ntx["losses"], torch.log1p(torch.exp(dcl["losses"])))
    assert z.shape == dcl["losses"].shape


def test_decoupled_contrastive_loss_drops_pairs_whose_anchor_has_no_negative():
    emb = data(6)
    # anchor 1 has a positive (0) but no negative: its pair is left out
    tup = (
        torch.tensor([0, 1, 2]),
        torch.tensor([1, 0, 3]),
        torch.tensor([0, 2]),
        torch.tensor([4, 5]),
    )
    out = DecoupledContrastiveLoss(reducer=DoNothingReducer())(emb, indices_tuple=tup)["loss"]
    assert out["indices"][0].tolist() == [0, 2] and out["indices"][1].tolist() == [1, 3]
    sim = CosineSimilarity()(emb, emb)
    expected = torch.stack([-sim[0, 1] / 0.1 + sim[0, 4] / 0.1, -sim[2, 3] / 0.1 + sim[2, 5] / 0.1])
    torch.testing.assert_close(out["losses"], expected)


def test_decoupled_contrastive_loss_without_valid_pairs_is_zero_on_the_graph():
    emb = torch.randn(4, 3, requires_grad=True)
    for labels in (torch.arange(4), torch.zeros(4, dtype=torch.long)):  # no positive / no negative
        loss = DecoupledContrastiveLoss()(emb, labels)
        assert loss.item() == 0 and loss.requires_grad
    ref, ref_labels = torch.randn(2, 3), torch.tensor([0, 0])
    loss = DecoupledContrastiveLoss()(
        emb, torch.tensor([0, 0, 1, 1]), ref_emb=ref, ref_labels=ref_labels
    )
    assert loss.item() == 0 and loss.requires_grad
    loss.backward()
    assert torch.equal(emb.grad, torch.zeros_like(emb))


def test_decoupled_contrastive_loss_custom_weight_fn():
    emb = data()
    doubled = DecoupledContrastiveLoss(
        0.1, lambda s: torch.full_like(s, 2.0), reducer=DoNothingReducer()
    )
    plain = DecoupledContrastiveLoss(0.1, reducer=DoNothingReducer())
    got = doubled(emb, LABELS)["loss"]
    ref = plain(emb, LABELS)["loss"]
    a1, p = ref["indices"]
    z = CosineSimilarity()(emb, emb)[a1, p] / 0.1
    torch.testing.assert_close(got["losses"], ref["losses"] - z)


def test_decoupled_contrastive_loss_with_a_distance_negates_it():
    emb = data()
    loss_fn = DecoupledContrastiveLoss(
        0.5, "von_mises", distance=LpDistance(), reducer=DoNothingReducer()
    )
    got = loss_fn(emb, LABELS)["loss"]
    a1, p = got["indices"]
    d = LpDistance()(emb, emb)
    neg = LABELS.unsqueeze(1) != LABELS.unsqueeze(0)
    w = von_mises_weights(-d[a1, p], 0.5)
    expected = decoupled_contrastive_loss(d, a1, p, neg, 0.5, weights=w, is_inverted=False)
    torch.testing.assert_close(got["losses"], expected)


def test_decoupled_contrastive_loss_nan_embedding_gives_nan():
    emb = data()
    emb[9, 0] = math.nan
    assert DecoupledContrastiveLoss()(emb, LABELS).isnan()


@pytest.mark.parametrize("weight_fn", [None, "von_mises"])
def test_decoupled_contrastive_loss_dtypes(dtype, device, weight_fn):
    emb = data()
    expected = DecoupledContrastiveLoss(weight_fn=weight_fn)(emb, LABELS)
    x = emb.to(device=device, dtype=dtype).requires_grad_(True)
    loss = DecoupledContrastiveLoss(weight_fn=weight_fn)(x, LABELS.to(device))
    assert loss.dtype == dtype
    assert_close(loss, expected, rtol=2e-2 if dtype == torch.bfloat16 else None)
    loss.backward()
    assert torch.isfinite(x.grad).all()


# --------------------------------------------------------------------------- bad input


def test_decoupled_contrastive_loss_rejects_bad_arguments():
    with pytest.raises(ValueError, match="temperature"):
        DecoupledContrastiveLoss(temperature=0)
    with pytest.raises(ValueError, match="sigma"):
        DecoupledContrastiveLoss(weight_fn="von_mises", sigma=-1)
    with pytest.raises(ValueError, match="weight_fn"):
        DecoupledContrastiveLoss(weight_fn="vmf")
    with pytest.raises(TypeError, match="weight_fn"):
        DecoupledContrastiveLoss(weight_fn=0.5)
    bad = DecoupledContrastiveLoss(weight_fn=lambda s: s.sum())
    with pytest.raises(ValueError, match="weight_fn"):
        bad(data(), LABELS)
    with pytest.raises(ValueError, match="labels"):
        DecoupledContrastiveLoss()(data())
