"""The softmax losses' engine (functional/_softmax_ops.py): per-anchor and segment LSE, targets."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from pml.core.functional import masked_logsumexp
from pml.core.testing import gradcheck
from pml.losses.functional import _softmax_ops
from pml.losses.functional._softmax_ops import negative_logsumexp, segment_logsumexp


def data(n: int, d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64)


def test_negative_logsumexp_mask_and_list_routes_agree():
    x = data(5, 7)
    mask = torch.rand(5, 7, generator=torch.Generator().manual_seed(1)) > 0.5
    mask[2] = False
    rows, cols = torch.where(mask)
    dense = negative_logsumexp(x, mask)
    seg = segment_logsumexp(x[rows, cols], rows, 5)
    torch.testing.assert_close(dense, seg, rtol=1e-12, atol=0)
    assert torch.equal(negative_logsumexp(x, (rows, cols)), seg)
    assert dense[2] == -math.inf
    ref = torch.stack([torch.logsumexp(x[i][mask[i]], 0) for i in (0, 1, 3, 4)])
    torch.testing.assert_close(dense[[0, 1, 3, 4]], ref, rtol=1e-12, atol=0)


def test_logsumexp_helpers_pass_zero_gradient_to_empty_rows():
    x = data(3, 4).requires_grad_()
    mask = torch.tensor([[True, False, True, False], [False] * 4, [True] * 4])
    out = F.softplus(masked_logsumexp(x, mask, empty=-math.inf)).sum()
    out.backward()
    assert torch.isfinite(x.grad).all() and (x.grad[1] == 0).all()
    y = data(6, 1).squeeze(1).requires_grad_()
    seg = F.softplus(segment_logsumexp(y, torch.tensor([0, 0, 2, 2, 2, 0]), 4)).sum()
    seg.backward()
    assert torch.isfinite(y.grad).all()


def test_segment_logsumexp_propagates_nan_and_gradchecks():
    out = segment_logsumexp(torch.tensor([0.0, float("nan"), 1.0]), torch.tensor([0, 0, 1]), 2)
    assert out[0].isnan() and out[1] == 1.0
    ids = torch.tensor([0, 0, 2, 2, 2, 0])
    assert gradcheck(lambda v: segment_logsumexp(v, ids, 3)[[0, 2]], data(6, 1).squeeze(1))


@pytest.mark.parametrize("dense", [True, False], ids=["mask", "cells"])
def test_neg_log_target_mass_is_exact_and_differentiable(dense):
    g = torch.Generator().manual_seed(2)
    logits = (torch.randn(5, 7, generator=g, dtype=torch.float64) * 300).requires_grad_()
    mask = torch.rand(5, 7, generator=g) < 0.4
    mask[1] = False  # a row without a target
    mask[2] = logits[2].detach() == logits[2].detach().min()  # the target is the minimum
    targets = mask if dense else torch.where(mask)
    losses, has = _softmax_ops.neg_log_target_mass(logits, targets)
    assert has.tolist() == mask.any(1).tolist() and losses[1] == 0
    ref = torch.logsumexp(logits, 1) - torch.logsumexp(logits.masked_fill(~mask, -torch.inf), 1)
    torch.testing.assert_close(losses[has], ref[has], rtol=1e-12, atol=1e-9)
    assert losses[2] > 300  # exp(-loss) is 0 in float64: nothing underflowed
    # gradcheck on moderate logits; the saved tensors survive a second backward
    small = (logits.detach() / 300).requires_grad_()
    assert gradcheck(lambda x: _softmax_ops.neg_log_target_mass(x, targets)[0], small)
    out = _softmax_ops.neg_log_target_mass(small, targets)[0].sum()
    (first,) = torch.autograd.grad(out, small, retain_graph=True)
    (second,) = torch.autograd.grad(out, small)
    assert torch.equal(first, second) and first[1].abs().sum() == 0
