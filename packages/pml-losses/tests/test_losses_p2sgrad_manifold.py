"""P2SGradLoss and ManifoldLoss: naive loops from the spec, dtypes, fixes, input checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from pml.core.testing import assert_close, gradcheck
from pml.core.validation import InvalidArgumentError
from pml.distances import CosineSimilarity, LpDistance
from pml.losses import ManifoldLoss, P2SGradLoss
from pml.losses.functional import manifold_loss, manifold_ranking, p2sgrad_loss
from pml.regularizers import LpRegularizer

LABELS = torch.tensor([0, 0, 1, 1, 1, 3, 3, 2])
C, D = 4, 5


def data(n: int = 8, d: int = D, seed: int = 0, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype)


# --------------------------------------------------------------------------- P2SGradLoss


def naive_p2sgrad(emb, weight, labels):
    """Spec P2SGradLoss with loops over every (sample, class) entry."""
    n, c = emb.shape[0], weight.shape[1]
    total = 0.0
    for i in range(n):
        for j in range(c):
            cos = (emb[i] @ weight[:, j] / emb[i].norm()).clamp(-1, 1)
            total = total + (cos - (1.0 if labels[i] == j else 0.0)) ** 2
    return total / (n * c)


def unit_columns(d: int = D, c: int = C, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(d, c, generator=g, dtype=torch.float64), dim=0)


def test_p2sgrad_matches_naive_loop():
    emb = data()
    loss_fn = P2SGradLoss(D, C)
    loss_fn.weight.data = unit_columns()
    torch.testing.assert_close(loss_fn(emb, LABELS), naive_p2sgrad(emb, unit_columns(), LABELS))


def test_p2sgrad_renormalizes_the_columns_in_place_every_forward():
    loss_fn = P2SGradLoss(D, C)
    param = loss_fn.weight
    param.data = unit_columns() * torch.tensor([3.0, 0.5, 1.0, 7.0], dtype=torch.float64)
    emb = data()
    got = loss_fn(emb, LABELS)
    assert loss_fn.weight is param
    torch.testing.assert_close(param.detach(), unit_columns())
    torch.testing.assert_close(got, naive_p2sgrad(emb, unit_columns(), LABELS))


def test_p2sgrad_init_has_unit_columns():
    torch.manual_seed(3)
    w = P2SGradLoss(7, 9).weight.detach()
    torch.manual_seed(3)
    raw = torch.empty(7, 9).uniform_(-1, 1)
    torch.testing.assert_close(w, F.normalize(raw, dim=0))
    torch.testing.assert_close(w.norm(dim=0), torch.ones(9))


def test_p2sgrad_missing_labels_raise_a_value_error_naming_labels():
    """The reference raised AttributeError ('NoneType' object has no attribute 'view')."""
    with pytest.raises(ValueError, match="labels"):
        P2SGradLoss(D, C)(data())


def test_p2sgrad_zero_column_gives_a_clear_error():
    """The reference asserted without a message."""
    loss_fn = P2SGradLoss(D, C)
    with torch.no_grad():
        loss_fn.weight[:, 2] = 0
    with pytest.raises(InvalidArgumentError, match="column 2 has norm 0"):
        loss_fn(data(), LABELS)
    with torch.no_grad():
        loss_fn.weight[:, 2] = float("nan")
    with pytest.raises(InvalidArgumentError, match="P2SGradLoss.weight.*column 2"):
        loss_fn(data(), LABELS)


def test_p2sgrad_unsupported_inputs():
    loss_fn = P2SGradLoss(D, C)
    emb = data()
    with pytest.raises(ValueError, match="indices_tuple"):
        loss_fn(emb, LABELS, (torch.tensor([0]), torch.tensor([1]), torch.tensor([2])))
    with pytest.raises(ValueError, match="ref_emb"):
        loss_fn(emb, LABELS, ref_emb=emb.clone(), ref_labels=LABELS)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        loss_fn(emb, LABELS + 1)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"weight_regularizer": LpRegularizer()}, TypeError, "weight_regularizer"),
        ({"weight_reg_weight": 2}, TypeError, "weight_reg_weight"),
        ({"weight_init_func": torch.nn.init.zeros_}, TypeError, "weight_init_func"),
        ({"num_classes": 0}, ValueError, "num_classes"),
        ({"descriptors_dim": 1.5}, TypeError, "descriptors_dim"),
    ],
)
def test_p2sgrad_bad_constructor_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        P2SGradLoss(**{"descriptors_dim": D, "num_classes": C, **kwargs})


def test_p2sgrad_functional_gradcheck():
    gradcheck(lambda e, w: p2sgrad_loss(e, w, LABELS), (data() * 0.3, unit_columns()))
    # longer columns: some cosines are clamped at ±1 (no gradient through those)
    w = unit_columns() * 2.5
    raw = data() @ w / data().norm(dim=1, keepdim=True)
    assert (raw.abs() > 1).any() and (raw.abs() < 1).any()
    gradcheck(lambda e, w: p2sgrad_loss(e, w, LABELS), (data(), w))


def test_p2sgrad_functional_matches_autograd_of_the_formula():
    e, w = data().requires_grad_(), (unit_columns() * 2).requires_grad_()
    got = p2sgrad_loss(e, w, LABELS)
    got_grads = torch.autograd.grad(got, (e, w))
    cos = (e @ w / e.norm(dim=1, keepdim=True)).clamp(-1, 1)
    expected = ((cos - F.one_hot(LABELS, C).double()) ** 2).mean()
    torch.testing.assert_close(got, expected)
    for a, b in zip(got_grads, torch.autograd.grad(expected, (e, w)), strict=True):
        torch.testing.assert_close(a, b)


def test_p2sgrad_dtypes_keep_a_float32_weight(dtype):
    torch.manual_seed(0)
    loss_fn = P2SGradLoss(D, C)
    emb = data(dtype=torch.float32).to(dtype).requires_grad_()
    loss = loss_fn(emb, LABELS)
    assert loss.dtype == dtype
    loss.backward()
    assert loss_fn.weight.dtype == torch.float32 and loss_fn.weight.grad.dtype == torch.float32
    expected = naive_p2sgrad(emb.detach().double(), loss_fn.weight.detach().double(), LABELS)
    assert_close(loss.detach(), expected)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = loss_fn(emb.detach().float(), LABELS)
    assert loss_fn.weight.dtype == torch.float32 and auto.dtype == torch.float32
    torch.testing.assert_close(auto, loss_fn(emb.detach().float(), LABELS))


def test_p2sgrad_empty_batch_gives_the_zero_loss():
    """The reference's mean over no entries was NaN."""
    emb = torch.zeros(0, D, requires_grad=True)
    loss = P2SGradLoss(D, C)(emb, torch.zeros(0, dtype=torch.long))
    assert loss == 0 and loss.requires_grad
    loss.backward()


def test_p2sgrad_nan_embeddings_give_nan():
    emb = data()
    emb[1, 1] = float("nan")
    assert torch.isnan(P2SGradLoss(D, C)(emb, LABELS))


# --------------------------------------------------------------------------- ManifoldLoss

N, K, L = 10, 4, 5
META = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 1, 1])


def naive_manifold(emb, proxies, meta, alpha=0.8, margin=5e-4, lambda_c=1.0, distance=None):
    """Spec ManifoldLoss: dense matrices, the broadcast cosine, loops over the hinge terms."""
    distance = CosineSimilarity() if distance is None else distance
    n, k = emb.shape[0], proxies.shape[0]
    nodes = torch.cat([emb, proxies])
    s = torch.exp(distance(nodes, nodes).clamp(min=0) / 0.5) * (1 - torch.eye(n + k))
    d = torch.diag(s.sum(1) ** -0.5)
    s_bar = d @ s @ d
    f = (1 - alpha) * torch.linalg.inv((torch.eye(n + k) - alpha * s_bar).float()).to(s.dtype)
    intrinsic = f[:n, n:]
    context = F.cosine_similarity(f[:n].unsqueeze(1), f[n:].unsqueeze(0), dim=2, eps=1e-8)

    def term(x):
        rows = []
        for i in range(n):
            total = 1.0
            for j in range(k):
                t = x[i, j] - x[i, meta[i]] + margin
                if j != meta[i] and t >= 0:
                    total = total + torch.exp(t)
            rows.append(torch.log(torch.as_tensor(total, dtype=x.dtype)))
        return torch.stack(rows).mean()

    if math.isinf(lambda_c):
        return term(context)
    return term(intrinsic) + lambda_c * term(context)


def manifold(**kwargs) -> ManifoldLoss:
    torch.manual_seed(2)
    return ManifoldLoss(L, K=K, **kwargs).double()


@pytest.mark.parametrize(
    "kwargs", [{}, {"alpha": 0.5, "margin": 0.05, "lambdaC": 0.3}, {"lambdaC": 0.0}]
)
def test_manifold_matches_naive_formulas(kwargs):
    emb = data(N, L)
    loss_fn = manifold(**kwargs)
    expected = naive_manifold(
        emb,
        loss_fn.proxies.detach(),
        META,
        kwargs.get("alpha", 0.8),
        kwargs.get("margin", 5e-4),
        kwargs.get("lambdaC", 1.0),
    )
    torch.testing.assert_close(loss_fn(emb, indices_tuple=META), expected, rtol=1e-6, atol=1e-9)


def test_manifold_with_a_distance():
    emb = data(N, L)
    dist = LpDistance(normalize_embeddings=False)
    loss_fn = manifold(distance=dist)
    expected = naive_manifold(emb, loss_fn.proxies.detach(), META, distance=dist)
    torch.testing.assert_close(loss_fn(emb, indices_tuple=META), expected, rtol=1e-6, atol=1e-9)


def test_manifold_lambda_c_inf_gives_the_context_term_only():
    """The reference skipped the intrinsic term and returned inf (docs: context only)."""
    emb = data(N, L)
    got = manifold(lambdaC=math.inf)(emb, indices_tuple=META)
    assert torch.isfinite(got)
    context = manifold(lambdaC=1.0)(emb, indices_tuple=META) - manifold(lambdaC=0.0)(
        emb, indices_tuple=META
    )
    torch.testing.assert_close(got, context)
    torch.testing.assert_close(
        got,
        naive_manifold(emb, manifold().proxies.detach(), META, 0.8, 5e-4, math.inf),
        rtol=1e-6,
        atol=1e-9,
    )


def test_manifold_float16_does_not_overflow():
    """The reference computed exp(S/0.5) and the row sums in half: NaN with larger values."""
    emb = data(N, L, dtype=torch.float32) * 3
    dist = LpDistance(normalize_embeddings=False)  # distances up to ~15: exp(30) > 65504
    loss_fn = manifold(distance=dist).float()
    expected = loss_fn(emb.half().float(), indices_tuple=META)
    for module_dtype in (torch.float32, torch.float16):
        got = loss_fn.to(module_dtype)(emb.half(), indices_tuple=META)
        assert got.dtype == torch.float16 and torch.isfinite(got)
        assert_close(got, expected)
    half_exp = torch.exp(dist(emb.half(), emb.half()) / 0.5)
    assert not torch.isfinite(half_exp).all()  # what a half computation runs into


def test_manifold_dtypes_keep_float32_proxies(dtype):
    torch.manual_seed(0)
    loss_fn = ManifoldLoss(L, K=K)
    emb = data(N, L, dtype=torch.float32).to(dtype).requires_grad_()
    loss = loss_fn(emb, indices_tuple=META)
    assert loss.dtype == dtype
    loss.backward()
    assert loss_fn.proxies.dtype == torch.float32 and loss_fn.proxies.grad.dtype == torch.float32
    expected = naive_manifold(emb.detach().double(), loss_fn.proxies.detach().double(), META)
    assert_close(loss.detach(), expected, rtol=max(1e-5, assert_tol(dtype)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = loss_fn(emb.detach().float(), indices_tuple=META)
    assert auto.dtype == torch.float32 and loss_fn.proxies.dtype == torch.float32
    torch.testing.assert_close(auto, loss_fn(emb.detach().float(), indices_tuple=META))


def assert_tol(dtype: torch.dtype) -> float:
    return {torch.float16: 2e-2, torch.bfloat16: 8e-2}.get(dtype, 1e-5)


def test_manifold_random_meta_classes_follow_the_reference_draws():
    emb = data(N, L)
    loss_fn = manifold()
    torch.manual_seed(11)
    got = loss_fn(emb)
    torch.manual_seed(11)
    drawn = torch.randint(0, K, (N - K,))
    meta = torch.cat([torch.arange(K), drawn])[torch.randperm(N)]
    torch.testing.assert_close(got, loss_fn(emb, indices_tuple=meta))
    assert sorted(set(meta.tolist())) == list(range(K))


def test_manifold_random_meta_classes_need_n_at_least_k():
    """The reference failed inside torch (negative dimension)."""
    with pytest.raises(ValueError, match="at least K = 4 embeddings; got 3"):
        manifold()(data(3, L))


@pytest.mark.parametrize(
    ("indices", "error", "match"),
    [
        ((META, META, META), TypeError, "not a miner's tuple"),
        (META.float(), TypeError, "int64/int32"),
        (META[:5], ValueError, r"shape \(10,\)"),
        (torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 1, 4]), ValueError, r"\[0, 4\)"),
        (META - 1, ValueError, r"\[0, 4\)"),
    ],
)
def test_manifold_bad_meta_classes(indices, error, match):
    """The reference raised IndexError deep inside (or wrapped -1 to the last proxy)."""
    with pytest.raises(error, match=match):
        manifold()(data(N, L), indices_tuple=indices)


def test_manifold_unsupported_inputs():
    emb = data(N, L)
    loss_fn = manifold()
    with pytest.raises(ValueError, match="labels must be None"):
        loss_fn(emb, torch.zeros(N, dtype=torch.long), META)
    with pytest.raises(ValueError, match="ref_emb"):
        loss_fn(emb, None, META, ref_emb=emb.clone())
    with pytest.raises(InvalidArgumentError, match=r"embeddings must have shape \(N, l=5\)"):
        loss_fn(data(N, 6), indices_tuple=META)
    loss_fn(emb, None, META, ref_emb=emb)  # the same object is accepted, like the reference


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"lambdaC": -1}, ValueError, "lambdaC"),
        ({"alpha": 1.0}, ValueError, "alpha"),
        ({"alpha": -0.1}, ValueError, "alpha"),
        ({"K": 0}, ValueError, "K"),
        ({"l": "5"}, TypeError, "l"),
        ({"margin": None}, TypeError, "margin"),
        ({"weight_regularizer": LpRegularizer()}, TypeError, "weight_regularizer"),
    ],
)
def test_manifold_bad_constructor_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        ManifoldLoss(**{"l": L, **kwargs})


def test_manifold_nan_embeddings_give_nan():
    emb = data(N, L)
    emb[4, 2] = float("nan")
    assert torch.isnan(manifold()(emb, indices_tuple=META))


def test_manifold_state_dict_and_records():
    loss_fn = ManifoldLoss(L, K=K)
    assert list(loss_fn.state_dict()) == ["proxies"] and loss_fn.proxies.shape == (K, L)
    assert (loss_fn.K, loss_fn.l, loss_fn.lambdaC, loss_fn.alpha, loss_fn.margin) == (
        K,
        L,
        1.0,
        0.8,
        5e-4,
    )


def test_manifold_functional_gradients():
    """float64 everywhere but the float32 inverse: gradcheck with float32-sized tolerances."""
    nodes = F.normalize(data(N + K, L), dim=1)
    gradcheck(
        lambda x: manifold_loss(x @ x.T, META, 0.8, 0.05),
        nodes,
        eps=1e-3,
        atol=1e-3,
        rtol=1e-2,
    )
    ranking = manifold_ranking(nodes @ nodes.T, 0.0)
    torch.testing.assert_close(ranking, torch.eye(N + K, dtype=torch.float64))
