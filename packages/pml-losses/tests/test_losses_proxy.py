"""ProxyAnchorLoss, ProxyNCALoss, SoftTripleLoss: naive loops from the spec, dtypes, fixes."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from pml.core.indices import convert_to_weights
from pml.core.testing import assert_close, gradcheck
from pml.core.validation import InvalidArgumentError
from pml.distances import CosineSimilarity, DotProductSimilarity, LpDistance
from pml.losses import NCALoss, ProxyAnchorLoss, ProxyNCALoss, SoftTripleLoss
from pml.losses.functional import (
    nca_loss,
    proxy_anchor_loss,
    soft_triple_class_similarity,
    soft_triple_loss,
)
from pml.reducers import DoNothingReducer, MeanReducer
from pml.regularizers import LpRegularizer

LABELS = torch.tensor([0, 0, 1, 1, 1, 3, 3, 4])  # class 2 absent, class 5 absent
C, D = 6, 5
TRIPLETS = (torch.tensor([0, 0, 2, 5]), torch.tensor([1, 1, 3, 6]), torch.tensor([2, 3, 0, 7]))


def data(n: int = 8, d: int = D, seed: int = 0, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype)


def with_params(loss: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """``loss`` with its parameter set to seeded float64 values (any shape)."""
    for p in loss.parameters():
        g = torch.Generator().manual_seed(seed)
        p.data = torch.randn(p.shape, generator=g, dtype=torch.float64)
    return loss


def cos(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=1) @ F.normalize(y, dim=1).T


# --------------------------------------------------------------------------- naive references


def naive_proxy_anchor(mat, labels, num_classes, alpha=32.0, delta=0.1, w=None, inverted=True):
    """Spec ProxyAnchorLoss with loops: (sum pos / #present) + (sum neg / C)."""
    n = mat.shape[0]
    w = torch.ones(n, dtype=mat.dtype) if w is None else w
    pos_total = neg_total = 0.0
    for c in range(num_classes):
        pos, neg = 1.0, 1.0
        for i in range(n):
            s = mat[i, c]
            if labels[i] == c:
                x = alpha * ((delta - s) if inverted else (s - delta))
                pos = pos + torch.exp(x + w[i] - 1)
            else:
                x = alpha * ((s + delta) if inverted else (-delta - s))
                neg = neg + torch.exp(x + w[i] - 1)
        pos_total = pos_total + torch.log(torch.as_tensor(pos))
        neg_total = neg_total + torch.log(torch.as_tensor(neg))
    return pos_total / len(set(labels.tolist())) + neg_total / num_classes


def naive_proxy_nca(mat, labels, scale=1.0, w=None, inverted=False):
    n = mat.shape[0]
    w = torch.ones(n, dtype=mat.dtype) if w is None else w
    out = []
    for i in range(n):
        logits = (mat[i] if inverted else -mat[i]) * scale
        p = torch.softmax(logits, 0)[labels[i]]
        out.append(-torch.log(p) * w[i])
    return torch.stack(out).mean()


def naive_soft_triple(sim, labels, num_classes, k, la=20.0, gamma=10.0, delta=0.01, w=None):
    n = sim.shape[0]
    w = torch.ones(n, dtype=sim.dtype) if w is None else w
    out = []
    for i in range(n):
        classes = []
        for c in range(num_classes):
            s = sim[i, c * k : (c + 1) * k]
            p = torch.softmax(s * gamma, 0)
            classes.append((p * s).sum() - (delta if c == labels[i] else 0.0))
        logits = la * torch.stack(classes)
        out.append((torch.logsumexp(logits, 0) - logits[labels[i]]) * w[i])
    return torch.stack(out).mean()


# --------------------------------------------------------------------------- ProxyAnchorLoss


@pytest.mark.parametrize(("alpha", "margin"), [(32, 0.1), (4, 0.3), (16, -0.2)])
def test_proxy_anchor_matches_naive_loop(alpha, margin):
    emb = data()
    loss_fn = with_params(ProxyAnchorLoss(C, D, margin=margin, alpha=alpha))
    got = loss_fn(emb, LABELS)
    expected = naive_proxy_anchor(cos(emb, loss_fn.proxies), LABELS, C, alpha, margin)
    torch.testing.assert_close(got, expected)


def test_proxy_anchor_miner_weights_enter_the_exponent():
    emb = data()
    loss_fn = with_params(ProxyAnchorLoss(C, D))
    w = convert_to_weights(TRIPLETS, LABELS, torch.float64)
    assert (w == 0).any()  # samples absent from the tuple: shift -1
    expected = naive_proxy_anchor(cos(emb, loss_fn.proxies), LABELS, C, w=w)
    torch.testing.assert_close(loss_fn(emb, LABELS, TRIPLETS), expected)


def test_proxy_anchor_with_a_distance_flips_the_margins():
    emb = data()
    loss_fn = with_params(ProxyAnchorLoss(C, D, alpha=2, distance=LpDistance()))
    mat = LpDistance()(emb, loss_fn.proxies)
    expected = naive_proxy_anchor(mat, LABELS, C, 2.0, inverted=False)
    torch.testing.assert_close(loss_fn(emb, LABELS), expected)


def test_proxy_anchor_loss_dict_and_divisors():
    emb = data()
    loss_fn = with_params(ProxyAnchorLoss(C, D, reducer=DoNothingReducer()))
    out = loss_fn(emb, LABELS)
    assert list(out) == ["pos_loss", "neg_loss"]
    for entry in out.values():
        assert entry["losses"].shape == (C,) and entry["reduction_type"] == "element"
        assert torch.equal(entry["indices"], torch.arange(C))
    assert int(out["pos_loss"]["divisor"]) == 4  # classes 0, 1, 3, 4 are in the batch
    assert int(out["neg_loss"]["divisor"]) == C
    # absent classes have no positive term
    assert out["pos_loss"]["losses"][2] == 0 and out["pos_loss"]["losses"][5] == 0


def test_proxy_anchor_single_class_and_single_sample_have_a_value():
    loss_fn = with_params(ProxyAnchorLoss(C, D))
    emb = data(3)
    got = loss_fn(emb, torch.tensor([2, 2, 2]))
    expected = naive_proxy_anchor(cos(emb, loss_fn.proxies), torch.tensor([2, 2, 2]), C)
    torch.testing.assert_close(got, expected)
    one = loss_fn(emb[:1], torch.tensor([4]))
    assert torch.isfinite(one) and one > 0


def test_proxy_anchor_many_classes_without_per_class_work():
    """100,000 classes: only N x C tensors, no per-class loop (a small N keeps it cheap)."""
    num_classes = 100_000
    torch.manual_seed(0)
    loss_fn = ProxyAnchorLoss(num_classes, 4)
    emb = torch.randn(6, 4, requires_grad=True)
    labels = torch.tensor([0, 0, 99_999, 5, 5, 70_000])
    loss = loss_fn(emb, labels)
    loss.backward()
    pos, neg = proxy_anchor_loss(cos(emb.detach(), loss_fn.proxies.detach()), labels)
    torch.testing.assert_close(loss.detach(), pos.sum() / 4 + neg.sum() / num_classes)
    assert loss_fn.proxies.grad.shape == (num_classes, 4)


def test_proxy_anchor_init_is_kaiming_normal_fan_out():
    torch.manual_seed(5)
    got = ProxyAnchorLoss(7, 3).proxies.detach()
    torch.manual_seed(5)
    expected = torch.nn.init.kaiming_normal_(torch.empty(7, 3), mode="fan_out")
    assert torch.equal(got, expected)


def test_proxy_anchor_functional_gradcheck():
    mat = cos(data(5), data(3, seed=2))
    labels = torch.tensor([0, 0, 2, 2, 1])
    w = torch.tensor([1.0, 0.5, 0.0, 1.0, 0.25], dtype=torch.float64)
    gradcheck(lambda m: torch.cat(proxy_anchor_loss(m, labels, 4, 0.1, weights=w)), mat)
    gradcheck(
        lambda m: torch.cat(proxy_anchor_loss(m, labels, 2, 0.1, is_inverted=False)), mat.abs()
    )


def test_proxy_anchor_weight_regularizer_on_proxies():
    emb = data()
    plain = with_params(ProxyAnchorLoss(C, D))
    reg = with_params(
        ProxyAnchorLoss(C, D, weight_regularizer=LpRegularizer(), weight_reg_weight=0.5)
    )
    expected = plain(emb, LABELS) + 0.5 * LpRegularizer()(plain.proxies)
    torch.testing.assert_close(reg(emb, LABELS), expected)


def test_proxy_anchor_get_logits():
    emb = data()
    loss_fn = with_params(ProxyAnchorLoss(C, D))
    torch.testing.assert_close(loss_fn.get_logits(emb), cos(emb, loss_fn.proxies))


# --------------------------------------------------------------------------- ProxyNCALoss


@pytest.mark.parametrize("scale", [1, 3, 0.5])
def test_proxy_nca_matches_naive_loop(scale):
    emb = data()
    loss_fn = with_params(ProxyNCALoss(C, D, softmax_scale=scale))
    mat = LpDistance(power=2)(emb, loss_fn.proxies)
    torch.testing.assert_close(loss_fn(emb, LABELS), naive_proxy_nca(mat, LABELS, scale))


def test_proxy_nca_miner_weights_come_from_anchors_only():
    emb = data()
    loss_fn = with_params(ProxyNCALoss(C, D))
    w = convert_to_weights(TRIPLETS, LABELS, torch.float64, using_ref=True)
    mat = LpDistance(power=2)(emb, loss_fn.proxies)
    torch.testing.assert_close(loss_fn(emb, LABELS, TRIPLETS), naive_proxy_nca(mat, LABELS, w=w))


def test_proxy_nca_with_a_similarity():
    emb = data()
    loss_fn = with_params(ProxyNCALoss(C, D, softmax_scale=4, distance=CosineSimilarity()))
    expected = naive_proxy_nca(cos(emb, loss_fn.proxies), LABELS, 4, inverted=True)
    torch.testing.assert_close(loss_fn(emb, LABELS), expected)


def test_proxy_nca_is_an_nca_loss_without_the_small_batch_rule():
    loss_fn = with_params(ProxyNCALoss(C, D))
    assert isinstance(loss_fn, NCALoss)
    assert isinstance(loss_fn.get_default_reducer(), MeanReducer)
    emb = data(1)
    mat = LpDistance(power=2)(emb, loss_fn.proxies)
    got = loss_fn(emb, torch.tensor([3]))
    torch.testing.assert_close(got, naive_proxy_nca(mat, torch.tensor([3])))
    assert got > 0  # NCALoss gives the zero loss for a batch of one
    assert torch.equal(loss_fn.proxy_labels, torch.arange(C))


def test_proxy_nca_rows_whose_probability_underflows_are_not_dropped():
    """The reference dropped rows with p_i == 0 (NaN when all were): the exact -log p_i here."""
    emb = data()
    loss_fn = with_params(ProxyNCALoss(C, D, softmax_scale=2000, reducer=DoNothingReducer()))
    out = loss_fn(emb, LABELS)["loss"]
    assert torch.equal(out["indices"], torch.arange(len(LABELS)))
    logits = -2000 * LpDistance(power=2)(emb, loss_fn.proxies)
    expected = torch.logsumexp(logits, 1) - logits[torch.arange(len(LABELS)), LABELS]
    torch.testing.assert_close(out["losses"], expected)
    assert torch.isfinite(out["losses"]).all() and (out["losses"] > 700).any()


def test_proxy_nca_empty_batch_gives_the_zero_loss():
    emb = torch.zeros(0, D, dtype=torch.float64, requires_grad=True)
    loss = with_params(ProxyNCALoss(C, D))(emb, torch.zeros(0, dtype=torch.long))
    assert loss == 0 and loss.requires_grad


def test_proxy_nca_num_classes_attribute_is_assigned():
    """The reference never assigned num_classes (it read 0)."""
    loss_fn = ProxyNCALoss(C, D, collect_stats=True)
    assert loss_fn.num_classes == C and loss_fn.softmax_scale == 1


def test_proxy_nca_get_logits_are_the_distances():
    emb = data()
    loss_fn = with_params(ProxyNCALoss(C, D))
    torch.testing.assert_close(loss_fn.get_logits(emb), LpDistance(power=2)(emb, loss_fn.proxies))


def test_proxy_nca_weight_regularizer_on_proxies():
    emb = data()
    plain = with_params(ProxyNCALoss(C, D))
    reg = with_params(ProxyNCALoss(C, D, weight_regularizer=LpRegularizer()))
    torch.testing.assert_close(
        reg(emb, LABELS), plain(emb, LABELS) + LpRegularizer()(plain.proxies)
    )


# --------------------------------------------------------------------------- SoftTripleLoss


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"centers_per_class": 3, "la": 10, "gamma": 0.2, "margin": 0.05},
        {"centers_per_class": 1},
    ],
)
def test_soft_triple_matches_naive_loop(kwargs):
    emb = data()
    loss_fn = with_params(SoftTripleLoss(C, D, **kwargs))
    k = kwargs.get("centers_per_class", 10)
    sim = cos(emb, loss_fn.fc.t())
    expected = naive_soft_triple(
        sim,
        LABELS,
        C,
        k,
        la=kwargs.get("la", 20),
        gamma=1 / kwargs.get("gamma", 0.1),
        delta=kwargs.get("margin", 0.01),
    )
    torch.testing.assert_close(loss_fn(emb, LABELS), expected)


def test_soft_triple_miner_weights():
    emb = data()
    loss_fn = with_params(SoftTripleLoss(C, D, centers_per_class=2))
    w = convert_to_weights(TRIPLETS, LABELS, torch.float64)
    expected = naive_soft_triple(cos(emb, loss_fn.fc.t()), LABELS, C, 2, w=w)
    torch.testing.assert_close(loss_fn(emb, LABELS, TRIPLETS), expected)


def test_soft_triple_gamma_is_stored_as_its_reciprocal():
    loss_fn = SoftTripleLoss(C, D, gamma=0.25, collect_stats=True)
    assert loss_fn.gamma == 4.0
    assert (loss_fn.num_classes, loss_fn.embedding_size, loss_fn.centers_per_class) == (C, D, 10)
    assert loss_fn.fc.shape == (D, C * 10)


def test_soft_triple_distance_must_be_a_similarity():
    """The reference raised a bare AssertionError."""
    with pytest.raises(InvalidArgumentError, match="similarity.*LpDistance"):
        SoftTripleLoss(C, D, distance=LpDistance())
    SoftTripleLoss(C, D, distance=DotProductSimilarity())  # any similarity


def test_soft_triple_init_is_kaiming_uniform():
    torch.manual_seed(5)
    got = SoftTripleLoss(3, 4, centers_per_class=2).fc.detach()
    torch.manual_seed(5)
    expected = torch.nn.init.kaiming_uniform_(torch.empty(4, 6), a=math.sqrt(5))
    assert torch.equal(got, expected)
    assert got.abs().max() <= 1 / math.sqrt(6)


def test_soft_triple_get_logits_and_regularizer():
    emb = data()
    loss_fn = with_params(SoftTripleLoss(C, D, centers_per_class=2))
    sim = cos(emb, loss_fn.fc.t())
    expected = soft_triple_class_similarity(sim, C, 2, 10.0)
    torch.testing.assert_close(loss_fn.get_logits(emb), expected)
    reg = with_params(SoftTripleLoss(C, D, centers_per_class=2, weight_regularizer=LpRegularizer()))
    torch.testing.assert_close(
        reg(emb, LABELS), loss_fn(emb, LABELS) + LpRegularizer()(loss_fn.fc.t())
    )


def test_soft_triple_functional_gradcheck():
    sim = cos(data(4), data(6, seed=3))
    labels = torch.tensor([0, 2, 1, 1])
    gradcheck(lambda s: soft_triple_loss(s, labels, 3, 2, la=5, gamma=2, margin=0.1), sim)


# --------------------------------------------------------------------------- all three

BUILDERS = {
    "ProxyAnchorLoss": lambda: ProxyAnchorLoss(C, D),
    "ProxyNCALoss": lambda: ProxyNCALoss(C, D),
    "SoftTripleLoss": lambda: SoftTripleLoss(C, D, centers_per_class=3),
}
PARAM = {"ProxyAnchorLoss": "proxies", "ProxyNCALoss": "proxies", "SoftTripleLoss": "fc"}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_dtypes_keep_float32_parameters(name, dtype):
    torch.manual_seed(0)
    loss_fn = BUILDERS[name]()
    param = getattr(loss_fn, PARAM[name])
    emb = data(dtype=torch.float32).to(dtype).requires_grad_()
    loss = loss_fn(emb, LABELS)
    assert loss.dtype == dtype
    loss.backward()
    assert param.dtype == torch.float32 and param.grad.dtype == torch.float32
    assert torch.isfinite(emb.grad).all()
    # the same inputs (rounded to dtype) in float64
    ref_fn = BUILDERS[name]()
    ref_fn.load_state_dict(loss_fn.state_dict())
    expected = ref_fn(emb.detach().double(), LABELS)
    assert_close(loss.detach(), expected)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_autocast_keeps_float32_parameters(name):
    torch.manual_seed(0)
    loss_fn = BUILDERS[name]()
    emb = data(dtype=torch.float32)
    expected = loss_fn(emb, LABELS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = loss_fn(emb, LABELS)
    loss.backward()
    assert getattr(loss_fn, PARAM[name]).dtype == torch.float32
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_nan_embeddings_give_nan(name):
    emb = data()
    emb[3, 1] = float("nan")
    assert torch.isnan(with_params(BUILDERS[name]())(emb, LABELS))
    emb = data()
    emb[2, 0] = float("inf")
    assert not torch.isfinite(with_params(BUILDERS[name]())(emb, LABELS))


@pytest.mark.parametrize("name", list(BUILDERS))
def test_bad_labels_and_reference_sets_are_rejected(name):
    loss_fn = BUILDERS[name]()
    emb = data(dtype=torch.float32)
    with pytest.raises(ValueError, match="labels"):
        loss_fn(emb)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 6\)"):
        loss_fn(emb, torch.tensor([0, 1, 2, 3, 4, 5, 6, 0]))
    with pytest.raises(ValueError, match="labels"):
        loss_fn(emb, LABELS.float())
    with pytest.raises(ValueError, match="ref_emb"):
        loss_fn(emb, LABELS, ref_emb=emb.clone(), ref_labels=LABELS)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_gradients_reach_the_parameter(name):
    loss_fn = BUILDERS[name]()
    loss_fn(data(dtype=torch.float32), LABELS).backward()
    grad = getattr(loss_fn, PARAM[name]).grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("cls", "kwargs", "error", "match"),
    [
        (ProxyAnchorLoss, {"num_classes": 0}, ValueError, "num_classes"),
        (ProxyAnchorLoss, {"embedding_size": 2.5}, TypeError, "embedding_size"),
        (ProxyAnchorLoss, {"alpha": 0}, ValueError, "alpha"),
        (ProxyAnchorLoss, {"margin": "0.1"}, TypeError, "margin"),
        (ProxyNCALoss, {"softmax_scale": -1}, ValueError, "softmax_scale"),
        (ProxyNCALoss, {"weight_regularizer": LpRegularizer}, TypeError, "weight_regularizer"),
        (SoftTripleLoss, {"centers_per_class": 0}, ValueError, "centers_per_class"),
        (SoftTripleLoss, {"gamma": 0}, ValueError, "gamma"),
        (SoftTripleLoss, {"la": -1}, ValueError, "la"),
        (SoftTripleLoss, {"margin": None}, TypeError, "margin"),
    ],
)
def test_bad_constructor_arguments(cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        cls(**{"num_classes": C, "embedding_size": D, **kwargs})


@pytest.mark.parametrize("name", list(BUILDERS))
def test_state_dict_holds_only_the_parameter(name):
    assert list(BUILDERS[name]().state_dict()) == [PARAM[name]]


@pytest.mark.parametrize(("scale", "inverted"), [(1, False), (3, True), (2000, False), (0, False)])
def test_nca_loss_with_one_reference_per_class_equals_arange_reference_labels(scale, inverted):
    """nca_loss(ref_labels=None), ProxyNCA's route: the same numbers and gradients."""
    mat = data(9, C, seed=4).abs().requires_grad_()
    labels = torch.tensor([0, 5, 1, 1, 3, 3, 3, 4, 0])
    w = torch.rand(9, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    got, kept = nca_loss(mat, labels, None, scale, is_inverted=inverted, weights=w)
    (g_got,) = torch.autograd.grad(got.sum(), mat)
    expected, _ = nca_loss(mat, labels, torch.arange(C), scale, is_inverted=inverted, weights=w)
    (g_exp,) = torch.autograd.grad(expected.sum(), mat)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(g_got, g_exp)
    assert kept.all()
    with pytest.raises(ValueError, match="mask_diagonal"):
        nca_loss(mat, labels, None, mask_diagonal=True)


def test_soft_triple_class_similarity_gradcheck():
    sim = data(4, 6, seed=5)
    gradcheck(lambda s: soft_triple_class_similarity(s, 3, 2, 3.0), sim)
    gradcheck(lambda s: soft_triple_class_similarity(s, 2, 3, 0.5), sim)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_empty_batch_gives_the_zero_loss(name):
    """The reference's mean over no rows was NaN (SoftTriple)."""
    emb = torch.zeros(0, D, requires_grad=True)
    loss = BUILDERS[name]()(emb, torch.zeros(0, dtype=torch.long))
    assert loss == 0 and loss.requires_grad
    loss.backward()
