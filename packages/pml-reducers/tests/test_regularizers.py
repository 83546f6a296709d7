"""pml.regularizers: formulas, distance restrictions, dtypes."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

from pml.core.testing import assert_close
from pml.distances import CosineSimilarity, DotProductSimilarity, LpDistance
from pml.reducers import DivisorReducer, SumReducer
from pml.regularizers import (
    CenterInvariantRegularizer,
    LpRegularizer,
    RegularFaceRegularizer,
    SparseCentersRegularizer,
    ZeroMeanRegularizer,
)
from pml.regularizers import functional as RGF


def rows(n=6, d=4, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_lp_and_zero_mean() -> None:
    x = rows()
    assert_close(LpRegularizer()(x), x.norm(dim=1).mean())
    assert_close(LpRegularizer(p=1, power=2)(x), (x.abs().sum(1) ** 2).mean())
    assert_close(ZeroMeanRegularizer()(x), x.sum(1).abs().mean())
    assert_close(LpRegularizer(reducer=SumReducer())(x), x.norm(dim=1).sum())
    r = LpRegularizer(p=3, power=2)
    assert r._record_these == ["p", "power"]


def test_center_invariant() -> None:
    x = rows()
    s = x.norm(dim=1) ** 2
    assert_close(CenterInvariantRegularizer()(x), ((s - s.mean()) ** 2 / 4).mean())
    with pytest.raises(AssertionError, match="normalize_embeddings"):
        CenterInvariantRegularizer(distance=LpDistance())
    CenterInvariantRegularizer(distance=LpDistance(p=1, normalize_embeddings=False))


def test_regular_face_naive_loop() -> None:
    x = rows()
    sim = torch.nn.functional.normalize(x) @ torch.nn.functional.normalize(x).T
    want = torch.stack([max(sim[i, j] for j in range(6) if j != i) for i in range(6)]).mean()
    assert_close(RegularFaceRegularizer()(x), want)
    with pytest.raises(AssertionError, match="similarity"):
        RegularFaceRegularizer(distance=LpDistance())
    RegularFaceRegularizer(distance=DotProductSimilarity(normalize_embeddings=False))


def test_sparse_centers_matches_dense_formula() -> None:
    classes, c = 3, 4
    x = rows(classes * c, 5)
    reg = SparseCentersRegularizer(classes, c, collect_stats=True)
    sim = CosineSimilarity()(x)
    same = torch.zeros(12, 12, dtype=torch.bool)
    for k in range(classes):
        same[k * c : (k + 1) * c, k * c : (k + 1) * c] = torch.triu(
            torch.ones(c, c, dtype=torch.bool), 1
        )
    v = torch.clamp(2 * sim[same], max=2)
    want = torch.sqrt(2 + torch.finfo(torch.float64).tiny - v).sum() / (classes * c * (c - 1))
    assert_close(reg(x), want)
    assert isinstance(reg.reducer, DivisorReducer)
    assert reg.same_class_center_sim == pytest.approx(sim[same].mean().item())
    block = torch.block_diag(*[torch.ones(c, c, dtype=torch.bool)] * classes)
    assert reg.diff_class_center_sim == pytest.approx(sim[~block].mean().item())
    with pytest.raises(AssertionError, match="centers_per_class"):
        SparseCentersRegularizer(3, 1)
    with pytest.raises(ValueError, match="12 rows"):
        reg(rows(10, 5))
    with pytest.raises(AssertionError, match="CosineSimilarity"):
        SparseCentersRegularizer(3, 2, distance=LpDistance())


def test_functional_gradcheck() -> None:
    x = rows(4, 3).requires_grad_()
    assert gradcheck(lambda t: RGF.lp_regularizer(t, 2, 2), (x,))
    assert gradcheck(RGF.zero_mean_regularizer, (x,))
    assert gradcheck(lambda t: RGF.center_invariant_regularizer((t**2).sum(1)), (x,))


@pytest.mark.parametrize(
    "cls", [LpRegularizer, ZeroMeanRegularizer, CenterInvariantRegularizer, RegularFaceRegularizer]
)
def test_dtype_and_device(cls, dtype: torch.dtype, device: torch.device) -> None:
    x = rows()
    want = cls()(x)
    got = cls()(x.to(device, dtype))
    assert got.dtype == dtype
    assert_close(got, want)


def test_regularizer_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="x must have shape"):
        LpRegularizer()(torch.zeros(3))


@pytest.mark.parametrize(
    ("make", "error", "name"),
    [
        (lambda: LpRegularizer(p="x"), TypeError, "p"),
        (lambda: LpRegularizer(p=float("nan")), ValueError, "p"),
        (lambda: LpRegularizer(power="2"), TypeError, "power"),
        (lambda: LpRegularizer(power=float("nan")), ValueError, "power"),
        (lambda: SparseCentersRegularizer("4", 2), TypeError, "num_classes"),
        (lambda: SparseCentersRegularizer(0, 2), ValueError, "num_classes"),
        (lambda: SparseCentersRegularizer(4, "2"), TypeError, "centers_per_class"),
        (lambda: SparseCentersRegularizer(4, 2.5), TypeError, "centers_per_class"),
    ],
)
def test_regularizer_hyper_parameters_are_checked_at_construction(make, error, name) -> None:
    # these were accepted (or failed with "'<=' not supported between 'str' and 'int'")
    with pytest.raises(error, match=rf"^{name} must"):
        make()


def test_lp_regularizer_takes_an_infinite_order() -> None:
    x = torch.tensor([[3.0, -4.0], [1.0, 0.5]])
    assert_close(LpRegularizer(p=float("inf"))(x), torch.tensor(2.5))
