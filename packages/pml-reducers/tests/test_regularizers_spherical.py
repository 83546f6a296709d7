"""SphericalEmbeddingRegularizer (Zhang et al., 2020): formula, gradient, dtypes, use in a loss."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

from pml.core.testing import assert_close
from pml.reducers import SumReducer
from pml.regularizers import SphericalEmbeddingRegularizer
from pml.regularizers import functional as RGF


def rows(n=6, d=4, seed=0, scale=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    if scale is not None:
        x = x * scale[:, None]
    return x


def naive_sec(x: torch.Tensor) -> torch.Tensor:
    norms = [float(torch.sqrt(sum(v * v for v in row))) for row in x]
    mu = sum(norms) / len(norms)
    return torch.tensor(sum((n - mu) ** 2 for n in norms) / len(norms), dtype=torch.float64)


def test_hand_computed_value() -> None:
    # norms 5 and 1: mean 3, squared deviations 4 and 4
    x = torch.tensor([[3.0, 4.0], [0.0, 1.0]], dtype=torch.float64)
    assert_close(RGF.spherical_embedding_regularizer(x), torch.tensor([4.0, 4.0]))
    assert_close(SphericalEmbeddingRegularizer()(x), 4.0)
    assert_close(SphericalEmbeddingRegularizer(reducer=SumReducer())(x), 8.0)


def test_matches_naive_loop_and_is_norm_variance() -> None:
    x = rows(8, 5, scale=torch.linspace(0.5, 3.0, 8, dtype=torch.float64))
    got = SphericalEmbeddingRegularizer()(x)
    assert_close(got, naive_sec(x))
    assert_close(got, x.norm(dim=1).var(unbiased=False))


def test_equal_norms_give_zero() -> None:
    x = torch.nn.functional.normalize(rows(), dim=1) * 2.5
    assert_close(SphericalEmbeddingRegularizer()(x), 0.0, atol=1e-12, rtol=0)


def test_mean_norm_is_detached() -> None:
    # d/dx_i of 1/N sum (||x_j|| - mu)^2 with mu constant: 2/N (||x_i|| - mu) x_i / ||x_i||
    x = rows(5, 3, seed=1).requires_grad_()
    SphericalEmbeddingRegularizer()(x).backward()
    norms = x.detach().norm(dim=1, keepdim=True)
    want = 2 / 5 * (norms - norms.mean()) * x.detach() / norms
    assert_close(x.grad, want)


def test_mean_reduced_gradient_equals_that_of_the_papers_formula_with_mu_differentiated() -> None:
    # With the default mean over the batch, detaching mu changes nothing: the extra term of
    # d mu / d x_i is (2/N) * sum_j (||x_j|| - mu) * (1/N) x_i/||x_i||, and sum_j (||x_j|| - mu)
    # is 0. So the default regularizer's gradient is that of the paper's L_sec read either way.
    x = rows(7, 4, seed=3, scale=torch.linspace(0.3, 2.0, 7, dtype=torch.float64))
    x.requires_grad_()
    (got,) = torch.autograd.grad(SphericalEmbeddingRegularizer()(x), x)
    norms = x.norm(dim=1)
    (want,) = torch.autograd.grad(((norms - norms.mean()) ** 2).mean(), x)
    assert_close(got, want)
    assert got.abs().max() > 1e-3  # not a vacuous comparison of zeros


def test_gradient_equals_the_fixed_mean_formula() -> None:
    # the functional's gradient is that of (||t_i|| - mu)^2 with mu a constant (gradcheck)
    x = rows(4, 3).requires_grad_()
    mu = x.detach().norm(dim=1).mean()

    def fixed_mu(t: torch.Tensor) -> torch.Tensor:
        return (t.norm(dim=1) - mu) ** 2

    assert gradcheck(fixed_mu, (x,))
    (got,) = torch.autograd.grad(RGF.spherical_embedding_regularizer(x).sum(), x)
    (want,) = torch.autograd.grad(fixed_mu(x).sum(), x)
    assert_close(got, want)


def test_dtype_and_device(dtype: torch.dtype, device: torch.device) -> None:
    x = rows(8, 4, scale=torch.linspace(0.5, 2.0, 8, dtype=torch.float64)).to(dtype)
    want = naive_sec(x.double())
    got = SphericalEmbeddingRegularizer()(x.to(device))
    assert got.dtype == dtype
    assert_close(got, want)


def test_nan_row_gives_nan() -> None:
    x = rows()
    x[2, 1] = float("nan")
    assert torch.isnan(SphericalEmbeddingRegularizer()(x))


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="x must have shape"):
        SphericalEmbeddingRegularizer()(torch.zeros(3))
    with pytest.raises(TypeError, match="x must be a floating-point"):
        SphericalEmbeddingRegularizer()(torch.zeros(3, 2, dtype=torch.int64))
