"""ThresholdConsistentMarginLoss: naive pair loops from the spec, ref_emb fix, edge cases."""

from __future__ import annotations

import functools

import pytest
import torch
from torch.autograd import gradcheck
from torch.nn import functional as F

from pml.core.indices import get_all_pairs_indices
from pml.core.testing import assert_close, random_embeddings
from pml.core.validation import InvalidArgumentError
from pml.distances import CosineSimilarity, LpDistance
from pml.losses import BaseMetricLossFunction, ThresholdConsistentMarginLoss
from pml.losses.functional import threshold_consistent_margin_loss

LABELS = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 0, 2])
data = functools.partial(random_embeddings, d=5)


def naive_tcm(emb, ref, pairs, lp=1.0, lm=1.0, mp=0.9, mm=0.5):
    """Spec TCM, one listed pair at a time (torch's pairwise cosine similarity)."""
    a1, p, a2, n = (t.tolist() for t in pairs)
    pos = [F.cosine_similarity(emb[a], ref[b], dim=0) for a, b in zip(a1, p)]
    neg = [F.cosine_similarity(emb[a], ref[b], dim=0) for a, b in zip(a2, n)]
    pos_t = [mp - s for s in pos if s <= mp]
    neg_t = [s - mm for s in neg if s >= mm]
    pos_v = torch.stack(pos_t).mean() if pos_t else 0.0
    neg_v = torch.stack(neg_t).mean() if neg_t else 0.0
    return lp * pos_v + lm * neg_v


def test_functional_formula_and_gradcheck():
    g = torch.Generator().manual_seed(1)
    pos = torch.rand(15, generator=g, dtype=torch.float64) * 2 - 1
    neg = torch.rand(25, generator=g, dtype=torch.float64) * 2 - 1
    got = threshold_consistent_margin_loss(pos, neg, 0.5, 2.0, 0.7, 0.1)
    exp = 0.5 * (0.7 - pos[pos <= 0.7]).mean() + 2.0 * (neg[neg >= 0.1] - 0.1).mean()
    torch.testing.assert_close(got, exp, rtol=1e-12, atol=0)
    assert gradcheck(
        lambda a, b: threshold_consistent_margin_loss(a, b),
        (pos.requires_grad_(), neg.requires_grad_()),
    )


def test_functional_nothing_qualifies_stays_on_graph():
    pos = torch.tensor([0.95, 0.99], requires_grad=True)
    neg = torch.tensor([0.1, -0.3], requires_grad=True)
    loss = threshold_consistent_margin_loss(pos, neg)
    assert loss.item() == 0
    loss.backward()
    assert pos.grad is not None and not pos.grad.any()
    assert torch.isnan(threshold_consistent_margin_loss(torch.tensor([float("nan"), 0.3]), neg))


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"lambda_plus": 0.5, "lambda_minus": 2.0, "margin_plus": 0.7, "margin_minus": 0.1}],
)
@pytest.mark.parametrize("source", ["labels", "pairs", "triplets"])
def test_class_matches_naive(kwargs, source):
    emb = data().requires_grad_()
    if source == "labels":
        it, pairs = None, get_all_pairs_indices(LABELS)
    elif source == "pairs":
        a1, p, a2, n = get_all_pairs_indices(LABELS)
        it = pairs = (a1[::2], p[::2], a2[::3], n[::3])
    else:  # triplets become (a, p, a, n): duplicated pairs count
        a, p, n = torch.tensor([0, 0, 2, 3]), torch.tensor([1, 1, 3, 4]), torch.tensor([2, 5, 0, 7])
        it, pairs = (a, p, n), (a, p, a, n)
    got = ThresholdConsistentMarginLoss(**kwargs)(emb, LABELS, it)
    names = ["lp", "lm", "mp", "mm"]
    exp = naive_tcm(emb, emb, pairs, **dict(zip(names, kwargs.values())))
    torch.testing.assert_close(got, exp, rtol=1e-12, atol=1e-15)
    (g,) = torch.autograd.grad(got, emb)
    (ge,) = torch.autograd.grad(exp, emb)
    torch.testing.assert_close(g, ge, rtol=1e-9, atol=1e-12)


def test_ref_emb_provides_the_pair_partners():
    # fix: the reference read both members of every pair from `embeddings`
    emb, ref = data().requires_grad_(), data(7, seed=3).requires_grad_()
    ref_labels = torch.tensor([0, 1, 1, 2, 3, 0, 2])
    got = ThresholdConsistentMarginLoss()(emb, LABELS, ref_emb=ref, ref_labels=ref_labels)
    exp = naive_tcm(emb, ref, get_all_pairs_indices(LABELS, ref_labels))
    torch.testing.assert_close(got, exp, rtol=1e-12, atol=1e-15)
    g = torch.autograd.grad(got, [emb, ref])
    ge = torch.autograd.grad(exp, [emb, ref])
    for a, b in zip(g, ge):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    ("labels", "expect_zero"),
    [
        (torch.tensor([4]), True),
        (torch.zeros(5, dtype=torch.long), False),
        (torch.arange(5), False),
    ],
)
def test_edge_cases(labels, expect_zero):
    emb = data(len(labels)).requires_grad_()
    loss = ThresholdConsistentMarginLoss()(emb, labels)
    exp = naive_tcm(emb, emb, get_all_pairs_indices(labels))
    if expect_zero:
        assert loss.item() == 0
    torch.testing.assert_close(loss, torch.as_tensor(exp, dtype=loss.dtype), rtol=1e-12, atol=0)
    loss.backward()
    assert torch.isfinite(emb.grad).all()


def test_construction_and_bad_input():
    loss_fn = ThresholdConsistentMarginLoss()
    assert isinstance(loss_fn, BaseMetricLossFunction)
    assert type(loss_fn.distance) is CosineSimilarity
    assert (loss_fn.lambda_plus, loss_fn.lambda_minus) == (1.0, 1.0)
    assert (loss_fn.margin_plus, loss_fn.margin_minus) == (0.9, 0.5)
    with pytest.raises(InvalidArgumentError, match="CosineSimilarity"):
        ThresholdConsistentMarginLoss(distance=LpDistance())
    with pytest.raises(ValueError, match="labels"):
        loss_fn(data())
    emb = data()
    emb[3, 2] = float("nan")
    assert torch.isnan(loss_fn(emb, LABELS))


def test_dtype_and_device(dtype, device):
    emb = data(dtype=torch.float32).to(device, dtype)
    loss = ThresholdConsistentMarginLoss()(emb, LABELS.to(device))
    assert loss.dtype == dtype and loss.device == emb.device
    assert_close(loss, ThresholdConsistentMarginLoss()(emb.double(), LABELS.to(device)).to(dtype))
