"""VICRegLoss: the spec's formulas term by term, reducers, dtypes, gradients, bad inputs."""

from __future__ import annotations

import pytest
import torch

from pml.core.testing import TOLERANCES, assert_close, gradcheck
from pml.distances import LpDistance
from pml.losses import VICRegLoss
from pml.losses.functional import vicreg_loss
from pml.reducers import DoNothingReducer, MeanReducer, MultipleReducers, SumReducer
from pml.regularizers import LpRegularizer


def views(n: int = 10, d: int = 6, seed: int = 0, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = x + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64)
    return x.to(dtype), y.to(dtype)


def naive_terms(e, r, lam=25.0, mu=25.0, nu=1.0, eps=1e-4):
    """The four sub-losses, one formula at a time (loops over dimension pairs)."""
    n, d = e.shape
    invariance = lam * ((e - r) ** 2).mean(1)

    def variance(z):
        return mu * torch.relu(1 - torch.sqrt(z.var(0, unbiased=True) + eps)) / 2

    def off_diagonal(z):
        c = z - z.mean(0)
        cov = c.T @ c / (n - 1)
        return sum(cov[i, j] ** 2 for i in range(d) for j in range(d) if i != j) / d

    return invariance, variance(e), variance(r), nu * (off_diagonal(e) + off_diagonal(r))


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"invariance_lambda": 10, "variance_mu": 5, "covariance_v": 2, "eps": 1e-3}],
)
def test_matches_the_formulas(kwargs):
    x, y = views()
    x1, y1 = x.clone().requires_grad_(), y.clone().requires_grad_()
    x2, y2 = x.clone().requires_grad_(), y.clone().requires_grad_()
    got = VICRegLoss(**kwargs)(x1, ref_emb=y1)
    names = ["lam", "mu", "nu", "eps"]
    inv, v1, v2, cov = naive_terms(x2, y2, **dict(zip(names, kwargs.values(), strict=False)))
    expected = inv.mean() + v1.mean() + v2.mean() + cov
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    grads = torch.autograd.grad(got, (x1, y1))
    exp_grads = torch.autograd.grad(expected, (x2, y2))
    for a, b in zip(grads, exp_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_loss_dict_entries():
    x, y = views()
    out = VICRegLoss(reducer=DoNothingReducer())(x, ref_emb=y)
    assert list(out) == ["invariance_loss", "variance_loss1", "variance_loss2", "covariance_loss"]
    inv, v1, v2, cov = naive_terms(x, y)
    for name, exp, size in (
        ("invariance_loss", inv, 10),
        ("variance_loss1", v1, 6),
        ("variance_loss2", v2, 6),
    ):
        entry = out[name]
        assert entry["reduction_type"] == "element"
        assert entry["indices"].tolist() == list(range(size))
        torch.testing.assert_close(entry["losses"], exp, rtol=1e-10, atol=1e-12)
    assert out["covariance_loss"]["reduction_type"] == "already_reduced"
    assert out["covariance_loss"]["indices"] is None
    torch.testing.assert_close(out["covariance_loss"]["losses"], cov, rtol=1e-10, atol=1e-12)


def test_default_reducers_and_a_user_reducer():
    loss_fn = VICRegLoss()
    assert isinstance(loss_fn.reducer, MultipleReducers)
    assert set(loss_fn.reducer.reducers) == {
        "invariance_loss",
        "variance_loss1",
        "variance_loss2",
        "covariance_loss",
    }
    assert all(isinstance(r, MeanReducer) for r in loss_fn.reducer.reducers.values())
    x, y = views()
    inv, v1, v2, cov = naive_terms(x, y)
    got = VICRegLoss(reducer=SumReducer())(x, ref_emb=y)
    torch.testing.assert_close(got, inv.sum() + v1.sum() + v2.sum() + cov, rtol=1e-10, atol=1e-12)


def test_without_ref_emb_the_batch_is_its_own_second_view():
    x, _ = views()
    got = VICRegLoss(reducer=DoNothingReducer())(x)
    assert not got["invariance_loss"]["losses"].any()
    torch.testing.assert_close(got["variance_loss1"]["losses"], got["variance_loss2"]["losses"])
    x1 = x.clone().requires_grad_()
    loss = VICRegLoss()(x1)
    _, v, _, cov = naive_terms(x, x)
    torch.testing.assert_close(loss, 2 * v.mean() + cov, rtol=1e-10, atol=1e-12)
    loss.backward()
    assert torch.isfinite(x1.grad).all()


def test_dtypes(dtype, device):
    x, y = views(n=32, d=8, dtype=dtype)
    x, y = x.to(device), y.to(device)
    got = VICRegLoss()(x, ref_emb=y)
    assert got.dtype == dtype and got.device == x.device
    # statistics in at least float32: compare with float64 on the same (rounded) inputs
    expected = VICRegLoss()(x.double().cpu(), ref_emb=y.double().cpu())
    rtol, atol = TOLERANCES[dtype]
    assert_close(got.cpu(), expected, rtol=rtol, atol=atol * 10)


def test_mixed_view_dtypes_are_promoted():
    x, y = views()
    got = VICRegLoss()(x.float(), ref_emb=y)
    assert got.dtype == torch.float32
    torch.testing.assert_close(
        got.double(), VICRegLoss()(x.float().double(), ref_emb=y), rtol=1e-6, atol=1e-6
    )


def test_gradcheck():
    x, y = views(n=6, d=3)
    assert gradcheck(lambda a, b: VICRegLoss()(a, ref_emb=b), (x, y))
    assert gradcheck(lambda a: VICRegLoss(eps=0.1)(a), x)
    assert gradcheck(lambda a, b: vicreg_loss(a, b, 2.0, 3.0, 4.0)[3], (x, y))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_embeddings_give_nan(bad):
    x, y = views()
    y[3, 2] = bad
    assert torch.isnan(VICRegLoss()(x, ref_emb=y))


def test_single_sample_is_rejected():
    # fix: the reference returned NaN (an unbiased variance of one sample)
    x, y = views()
    with pytest.raises(ValueError, match="embeddings must have at least 2 rows"):
        VICRegLoss()(x[:1], ref_emb=y[:1])
    with pytest.raises(ValueError, match="at least 2"):
        VICRegLoss()(x[:0], ref_emb=y[:0])


def test_ref_emb_with_another_row_count_is_rejected():
    # fix: the reference failed inside torch with a broadcasting error
    x, y = views()
    with pytest.raises(ValueError, match=r"ref_emb must have the shape of embeddings \(10, 6\)"):
        VICRegLoss()(x, ref_emb=y[:7])
    with pytest.raises(ValueError, match="ref_emb"):
        VICRegLoss()(x, ref_emb=y[:, :4])


def test_negative_eps_is_rejected():
    # fix: the reference returned NaN for dimensions of small variance
    with pytest.raises(ValueError, match="eps"):
        VICRegLoss(eps=-1e-3)


def test_forbidden_keywords():
    for kwargs in ({"distance": None}, {"distance": LpDistance()}):
        with pytest.raises(ValueError, match="distance"):
            VICRegLoss(**kwargs)
    for reg in (None, LpRegularizer()):
        with pytest.raises(ValueError, match="embedding_regularizer"):
            VICRegLoss(embedding_regularizer=reg)
    with pytest.raises(TypeError, match="variance_mu"):
        VICRegLoss(variance_mu="25")


def test_labels_and_indices_tuple_are_rejected():
    x, y = views()
    labels = torch.zeros(10, dtype=torch.long)
    with pytest.raises(ValueError, match="labels"):
        VICRegLoss()(x, labels, ref_emb=y)
    with pytest.raises(ValueError, match="labels"):
        VICRegLoss()(x, ref_emb=y, ref_labels=labels)
    with pytest.raises(ValueError, match="indices_tuple"):
        VICRegLoss()(x, None, (torch.tensor([0]),) * 3, ref_emb=y)


def test_functional_reuses_the_statistics_of_one_view():
    x, _ = views()
    inv, v1, v2, cov = vicreg_loss(x, x)
    assert v1 is v2 and not inv.any()
    _, _, _, cov_copy = vicreg_loss(x, x.clone())
    torch.testing.assert_close(cov, cov_copy)
