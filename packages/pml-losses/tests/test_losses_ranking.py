"""FastAPLoss, PNPLoss, SmoothAPLoss, RankedListLoss: naive N³ formulas from the spec, chunking,
dtypes, gradients, edge cases, argument checks and the fixes of reference defects."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

import pml.losses as ranking_losses
import pml.losses.functional._ranking as ranking
from pml.core.testing import TOLERANCES, assert_close, gradcheck
from pml.core.validation import InvalidArgumentError
from pml.distances import CosineSimilarity, LpDistance
from pml.losses import FastAPLoss, PNPLoss, RankedListLoss, SmoothAPLoss
from pml.losses.functional import fast_ap_loss, pnp_loss, ranked_list_loss, smooth_ap_loss
from pml.reducers import DoNothingReducer, SumReducer
from pml.regularizers import LpRegularizer

VARIANTS = ["O", "Ds", "Dq", "Iu", "Ib"]
#: mixed class sizes (3, 4, 2, 1, 2): PNP's ragged route, a singleton row
MIXED = torch.tensor([0, 1, 0, 1, 2, 0, 1, 2, 3, 1, 4, 4])
#: 3 samples of each of 4 classes, shuffled: PNP's dense route
EQUAL = torch.tensor([2, 0, 3, 1, 0, 2, 1, 3, 3, 0, 1, 2])
#: grouped by label with as many samples per class as classes (Smooth-AP's blocks = classes)
GROUPED = torch.arange(3).repeat_interleave(3)


def data(n: int = 12, d: int = 6, seed: int = 0, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype)


# --------------------------------------------------------------------------------------------
# naive references, written from the spec (N x N x N tensors and loops on purpose)


def naive_fast_ap(emb, labels, num_bins=10, power=2, weights=None):
    x = F.normalize(emb.double())
    sq = (x[:, None] - x[None]).square().sum(-1)
    dist = sq if power == 2 else sq.clamp_min(1e-300).sqrt()
    n = len(labels)
    hmax = 2.0**power
    delta = hmax / num_bins
    centres = torch.arange(num_bins + 1, dtype=torch.float64) * delta
    pulses = F.relu(1 - (dist[..., None] - centres).abs() / delta)  # (N, N, B + 1)
    same = labels[:, None] == labels[None]
    eye = torch.eye(n, dtype=torch.bool)
    pos, neg = (same & ~eye).double(), (~same).double()
    h_pos = (pulses * pos[..., None]).sum(1)
    h_neg = (pulses * neg[..., None]).sum(1)
    cum_pos, cum_all = h_pos.cumsum(1), (h_pos + h_neg).cumsum(1)
    counts = (h_pos * cum_pos > 0) & (cum_all > 0)
    num_pos = pos.sum(1)
    w = torch.ones(n, dtype=torch.float64) if weights is None else weights
    losses = []
    for i in range(n):
        if num_pos[i] == 0:
            continue
        ap = sum(
            h_pos[i, b] * cum_pos[i, b] / cum_all[i, b] for b in range(num_bins + 1) if counts[i, b]
        )
        losses.append((1 - ap / num_pos[i]) * w[i])
    if not losses or not counts.any():
        return torch.zeros((), dtype=torch.float64)
    return torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in losses]).mean()


def pnp_sigma(x, anneal):
    return 1 / (1 + torch.exp(torch.clamp(-x / anneal, -50, 50)))


def naive_pnp(emb, labels, b=2, alpha=1, anneal=0.01, variant="O"):
    s = F.normalize(emb.double()) @ F.normalize(emb.double()).T
    n = len(labels)
    same = labels[:, None] == labels[None]
    eye = torch.eye(n, dtype=torch.bool)
    rows = []
    for i in range(n):
        others = (same[i] & ~eye[i]).nonzero().flatten().tolist()
        if not others:
            continue
        negatives = (~same[i]).nonzero().flatten()
        terms = []
        for j in [*others, i]:
            r = pnp_sigma(s[i, negatives] - s[i, j], anneal).sum()
            terms.append(
                {
                    "O": r,
                    "Ds": torch.log(1 + r),
                    "Dq": (1 + r) ** (-alpha),
                    "Iu": (1 + r) * torch.log(1 + r),
                    "Ib": (b * r - torch.log(1 + b * r)) / b**2,
                }[variant]
            )
        rows.append(torch.stack(terms).sum() / len(terms))
    if not rows:
        return torch.zeros((), dtype=torch.float64)
    loss = torch.stack(rows).mean()
    return 1 - loss if variant == "Dq" else loss


def naive_smooth_ap(emb, labels, temperature=0.01, weights=None):
    s = F.normalize(emb.double()) @ F.normalize(emb.double()).T
    n = len(labels)
    num_labels = len(torch.unique(labels))
    g = n // (n // num_labels)
    w = torch.ones(n, dtype=torch.float64) if weights is None else weights
    losses = []
    for q in range(n):
        block = list(range(q - q % g, q - q % g + g))
        ratios = []
        for pivot in block:
            sig = torch.sigmoid((s[q] - s[q, pivot]) / temperature)
            others = [k for k in range(n) if k != pivot]
            all_rank = 1 + sig[others].sum()
            pos_rank = 1 + sig[[k for k in block if k != pivot]].sum()
            ratios.append(pos_rank / all_rank)
        losses.append((1 - torch.stack(ratios).mean()) * w[q])
    return torch.stack(losses).mean()


def naive_ranked_list(emb, labels, margin, Tn, imbalance=0.5, alpha=None, Tp=0):
    alpha = 1 + margin / 2 if alpha is None else alpha
    x = F.normalize(emb.double())
    dist = (x[:, None] - x[None]).square().sum(-1).clamp_min(1e-300).sqrt()
    n = len(labels)
    dz = dist * (1 - torch.eye(n, dtype=torch.float64))
    losses = []
    for i in range(n):
        num_p = den_p = num_n = den_n = torch.zeros((), dtype=torch.float64)
        for j in range(n):
            p_star = (
                dz[i, j] if labels[i] == labels[j] and i != j and dz[i, j] > alpha - margin else 0
            )
            n_star = dz[i, j] if labels[i] != labels[j] and dz[i, j] < alpha else 0
            w_p = torch.exp(Tp * (p_star - (alpha - margin))) if p_star > 0 else 0
            w_n = torch.exp(Tn * (alpha - n_star)) if n_star > 0 else 0
            num_p = num_p + w_p * (p_star - (alpha - margin))
            den_p = den_p + w_p + 1e-5
            num_n = num_n + w_n * (alpha - n_star)
            den_n = den_n + w_n + 1e-5
        losses.append((1 - imbalance) * num_p / den_p + imbalance * num_n / den_n)
    return torch.stack(losses).mean()


def assert_value_and_grad(loss_fn, naive_fn, emb, labels, *args, rtol=1e-9, **kwargs):
    e1 = emb.clone().requires_grad_()
    e2 = emb.clone().requires_grad_()
    got = loss_fn(e1, labels, *args)
    exp = naive_fn(e2, labels, **kwargs)
    torch.testing.assert_close(got, exp, rtol=rtol, atol=1e-12)
    (g1,) = torch.autograd.grad(got, e1)
    if exp.requires_grad:
        (g2,) = torch.autograd.grad(exp, e2)
    else:
        g2 = torch.zeros_like(g1)
    torch.testing.assert_close(g1, g2, rtol=1e-7, atol=1e-10)


# --------------------------------------------------------------------------------------------
# FastAPLoss


@pytest.mark.parametrize("labels", [MIXED, EQUAL], ids=["mixed", "equal"])
@pytest.mark.parametrize("num_bins", [10, 5, 1])
def test_fast_ap_matches_naive(labels, num_bins):
    emb = data(len(labels))
    assert_value_and_grad(
        FastAPLoss(num_bins=num_bins), naive_fast_ap, emb, labels, num_bins=num_bins
    )


def test_fast_ap_power_one_distance():
    emb = data()
    loss_fn = FastAPLoss(distance=LpDistance(power=1))
    assert_value_and_grad(loss_fn, naive_fast_ap, emb, MIXED, power=1)


def test_fast_ap_miner_weights():
    emb = data()
    a, p, n = torch.tensor([0, 0, 4, 6]), torch.tensor([2, 2, 9, 1]), torch.tensor([1, 3, 3, 2])
    counts = torch.bincount(torch.cat([a, p, n]), minlength=12).double()
    weights = counts / counts.max()
    assert_value_and_grad(FastAPLoss(), naive_fast_ap, emb, MIXED, (a, p, n), weights=weights)


def test_fast_ap_loss_dict_lists_rows_with_positives():
    out = FastAPLoss(reducer=DoNothingReducer())(data(), MIXED)
    assert out["loss"]["reduction_type"] == "element"
    assert out["loss"]["indices"].tolist() == [i for i in range(12) if i != 8]  # 8: a singleton
    assert out["loss"]["losses"].shape == (11,)


def test_fast_ap_functional_pulses_outside_the_range():
    # distances beyond [0, hist_max] (rounding) add nothing past the last centre
    d = torch.tensor([[0.0, 4.3, -0.2], [4.3, 0.0, 1.0], [-0.2, 1.0, 0.0]], dtype=torch.float64)
    losses, valid = fast_ap_loss(d, torch.tensor([0, 0, 1]), num_bins=4)
    assert valid.tolist() == [True, True, False]
    assert torch.isfinite(losses).all()


@pytest.mark.parametrize(
    "labels", [torch.arange(8), torch.tensor([0]), torch.zeros(0, dtype=torch.long)]
)
def test_fast_ap_no_positive_rows_gives_zero_loss_on_graph(labels):
    emb = data(len(labels)).requires_grad_()
    loss = FastAPLoss()(emb, labels)
    assert loss.item() == 0 and loss.requires_grad
    loss.backward()
    assert not emb.grad.any()


def test_fast_ap_checks_arguments():
    with pytest.raises(InvalidArgumentError, match="distance"):
        FastAPLoss(distance=CosineSimilarity())
    with pytest.raises(InvalidArgumentError, match="normalize_embeddings"):
        FastAPLoss(distance=LpDistance(normalize_embeddings=False))
    with pytest.raises(InvalidArgumentError, match="p"):
        FastAPLoss(distance=LpDistance(p=1))
    with pytest.raises(ValueError, match="labels"):
        FastAPLoss()(data())
    with pytest.raises(ValueError, match="ref_emb"):
        FastAPLoss()(data(), MIXED, ref_emb=data(seed=1), ref_labels=MIXED)


def test_fast_ap_zero_bins_is_rejected():
    # fix: the reference divided by zero at the first forward
    with pytest.raises(ValueError, match="num_bins"):
        FastAPLoss(num_bins=0)


def test_fast_ap_fractional_num_bins_is_rejected():
    # fix: the reference truncated 2.5 bins to 2
    with pytest.raises(TypeError, match="num_bins"):
        FastAPLoss(num_bins=2.5)
    assert FastAPLoss(num_bins=7.0).num_bins == 7


def test_fast_ap_records_num_bins():
    loss_fn = FastAPLoss(num_bins=7)
    assert loss_fn.num_bins == 7 and loss_fn.num_edges == 8
    assert "num_bins" in loss_fn._record_these


# --------------------------------------------------------------------------------------------
# PNPLoss


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("labels", [MIXED, EQUAL], ids=["ragged", "dense"])
def test_pnp_matches_naive(variant, labels):
    emb = data(len(labels))
    assert_value_and_grad(PNPLoss(variant=variant), naive_pnp, emb, labels, variant=variant)


@pytest.mark.parametrize("variant", VARIANTS)
def test_pnp_non_default_arguments(variant):
    emb = data(seed=3)
    kw = {"b": 3.0, "alpha": 0.5, "anneal": 0.2, "variant": variant}
    assert_value_and_grad(PNPLoss(**kw), naive_pnp, emb, MIXED, **kw)


def test_pnp_loss_dict_is_already_reduced_over_the_valid_rows():
    out = PNPLoss(reducer=DoNothingReducer())(data(), MIXED)
    entry = out["loss"]
    assert entry["reduction_type"] == "already_reduced" and entry["losses"].ndim == 0
    # compat: the reference lists the rows with a positive (8 is a singleton)
    assert entry["indices"].tolist() == [i for i in range(12) if i != 8]


@pytest.mark.parametrize(
    "labels", [torch.arange(8), torch.tensor([3]), torch.zeros(0, dtype=torch.long)]
)
@pytest.mark.parametrize("variant", ["O", "Dq"])
def test_pnp_no_valid_rows_gives_zero_loss_on_graph(labels, variant):
    emb = data(len(labels)).requires_grad_()
    loss = PNPLoss(variant=variant)(emb, labels)
    assert loss.item() == 0 and loss.requires_grad
    loss.backward()
    assert not emb.grad.any()


def test_pnp_single_class_gives_zero():
    assert PNPLoss()(data(), torch.zeros(12, dtype=torch.long)).item() == 0


def test_pnp_unknown_variant_lists_the_options():
    with pytest.raises(ValueError, match=r"variant must be one of \['Ds', 'Dq', 'Iu', 'Ib', 'O'\]"):
        PNPLoss(variant="X")
    with pytest.raises(ValueError, match="variant"):
        pnp_loss(torch.eye(2), torch.tensor([0, 0]), variant="X")  # type: ignore[arg-type]


def test_pnp_checks_arguments():
    with pytest.raises(InvalidArgumentError, match="CosineSimilarity"):
        PNPLoss(distance=LpDistance())
    with pytest.raises(ValueError, match="indices_tuple"):
        PNPLoss()(data(), EQUAL, (torch.tensor([0]), torch.tensor([4]), torch.tensor([1])))
    with pytest.raises(ValueError, match="ref_emb"):
        PNPLoss()(data(), EQUAL, ref_emb=data(seed=1), ref_labels=EQUAL)
    with pytest.raises(TypeError, match="alpha"):
        PNPLoss(alpha="1")


def test_pnp_nonpositive_anneal_is_rejected():
    # fix: the reference returned NaN for anneal = 0
    with pytest.raises(ValueError, match="anneal"):
        PNPLoss(anneal=0)


def test_pnp_nonpositive_b_is_rejected():
    # fix: b = 0 divided by zero and b < 0 took the log of a negative number ("Ib")
    for b in (0, -1):
        with pytest.raises(ValueError, match="b must be"):
            PNPLoss(b=b)


# --------------------------------------------------------------------------------------------
# SmoothAPLoss


@pytest.mark.parametrize(
    "labels",
    [
        GROUPED,
        torch.tensor([0, 1, 2] * 3),
        torch.arange(2).repeat_interleave(3),
        torch.zeros(6, dtype=torch.long),
    ],
    ids=["grouped", "interleaved", "2x3_quirk", "one_class"],
)
@pytest.mark.parametrize("temperature", [0.01, 0.2])
def test_smooth_ap_matches_naive(labels, temperature):
    emb = data(len(labels))
    loss_fn = SmoothAPLoss(temperature=temperature)
    assert_value_and_grad(loss_fn, naive_smooth_ap, emb, labels, temperature=temperature)


def test_smooth_ap_miner_weights():
    emb = data(9)
    a, p, n = torch.tensor([0, 0, 4]), torch.tensor([1, 2, 5]), torch.tensor([3, 7, 8])
    counts = torch.bincount(torch.cat([a, p, n]), minlength=9).double()
    assert_value_and_grad(
        SmoothAPLoss(), naive_smooth_ap, emb, GROUPED, (a, p, n), weights=counts / counts.max()
    )


def test_smooth_ap_blocks_ignore_label_values():
    # compat: the positive sets are consecutive blocks of U rows, whatever the labels say
    emb = data(9)
    a = SmoothAPLoss()(emb, GROUPED)
    b = SmoothAPLoss()(emb, torch.tensor([5, 7, 9] * 3))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_smooth_ap_all_distinct_labels_gives_zero():
    emb = data(8).requires_grad_()
    loss = SmoothAPLoss()(emb, torch.arange(8))
    assert loss.item() == 0
    loss.backward()
    assert not emb.grad.any()


def test_smooth_ap_loss_dict_key_and_shape():
    out = SmoothAPLoss(reducer=DoNothingReducer())(data(9), GROUPED)
    assert list(out) == ["ap_loss"]
    assert out["ap_loss"]["indices"].tolist() == list(range(9))
    assert out["ap_loss"]["reduction_type"] == "element"


def test_smooth_ap_user_reducer_applies_with_embedding_regularizer():
    # fix: the reference named the sub-loss "loss" but returned "ap_loss", so with an
    # embedding regularizer MultipleReducers reduced the AP term with MeanReducer
    emb = data(9)
    per_row = SmoothAPLoss(reducer=DoNothingReducer())(emb, GROUPED)["ap_loss"]["losses"]
    reg = LpRegularizer()
    loss_fn = SmoothAPLoss(reducer=SumReducer(), embedding_regularizer=reg)
    expected = per_row.sum() + reg(emb).mean()
    torch.testing.assert_close(loss_fn(emb, GROUPED), expected, rtol=1e-12, atol=1e-12)
    assert loss_fn.sub_loss_names() == ["ap_loss", "embedding_reg_loss"]


def test_smooth_ap_float64_loss_is_float64():
    # fix: the reference returned float32 (its AP buffer) for float64 embeddings
    loss = SmoothAPLoss()(data(9), GROUPED)
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, naive_smooth_ap(data(9), GROUPED), rtol=1e-12, atol=1e-14)


def test_smooth_ap_negative_labels_are_accepted():
    # fix: the reference counted classes with bincount, which refused negative labels
    emb = data(9)
    torch.testing.assert_close(SmoothAPLoss()(emb, GROUPED - 1), SmoothAPLoss()(emb, GROUPED))


def test_smooth_ap_empty_batch_gives_zero_loss():
    # fix: the reference raised its "same number of elements" error for an empty batch
    emb = torch.zeros(0, 4, requires_grad=True)
    loss = SmoothAPLoss()(emb, torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0 and loss.requires_grad


def test_smooth_ap_unequal_class_counts_are_rejected():
    with pytest.raises(ValueError, match=r"labels.*counts \[4, 3, 3, 2\].*MPerClassSampler"):
        SmoothAPLoss()(data(), torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3]))


def test_smooth_ap_nonpositive_temperature_is_rejected():
    # fix: the reference returned NaN for a temperature of 0
    with pytest.raises(ValueError, match="temperature"):
        SmoothAPLoss(temperature=0)


def test_smooth_ap_checks_arguments():
    with pytest.raises(InvalidArgumentError, match="CosineSimilarity"):
        SmoothAPLoss(distance=LpDistance())
    with pytest.raises(ValueError, match="labels"):
        SmoothAPLoss()(data(9))
    with pytest.raises(ValueError, match="ref_emb"):
        SmoothAPLoss()(data(9), GROUPED, ref_emb=data(9, seed=1), ref_labels=GROUPED)
    with pytest.raises(ValueError, match="block_size"):
        smooth_ap_loss(torch.eye(6), 4)


# --------------------------------------------------------------------------------------------
# RankedListLoss


@pytest.mark.parametrize(
    "kwargs",
    [
        {"margin": 0.4, "Tn": 1.0},
        {"margin": 0.8, "Tn": 3.0, "Tp": 2.0, "imbalance": 0.3, "alpha": 1.1},
        {"margin": 0.5, "Tn": 0.0, "imbalance": 1.0},
        {"margin": -0.2, "Tn": 1.0, "imbalance": 0.0, "alpha": 0.9},
    ],
)
@pytest.mark.parametrize(
    "labels", [MIXED, EQUAL, torch.arange(12)], ids=["mixed", "equal", "distinct"]
)
def test_ranked_list_matches_naive(kwargs, labels):
    emb = data(len(labels))
    assert_value_and_grad(RankedListLoss(**kwargs), naive_ranked_list, emb, labels, **kwargs)


def test_ranked_list_defaults_and_records():
    loss_fn = RankedListLoss(margin=0.4, Tn=1.0)
    assert (loss_fn.alpha, loss_fn.imbalance, loss_fn.Tp) == (1.2, 0.5, 0)
    assert set(loss_fn._record_these) >= {"imbalance", "alpha", "margin", "Tp", "Tn"}


def test_ranked_list_loss_dict_lists_every_row():
    out = RankedListLoss(0.4, 1.0, reducer=DoNothingReducer())(data(), MIXED)
    assert out["loss"]["indices"].tolist() == list(range(12))


def test_ranked_list_single_sample_gives_zero():
    emb = data(1).requires_grad_()
    loss = RankedListLoss(0.4, 1.0)(emb, torch.tensor([0]))
    assert loss.item() == 0
    loss.backward()


def test_ranked_list_imbalance_outside_unit_interval_is_rejected():
    for bad in (-0.1, 1.5):
        with pytest.raises(InvalidArgumentError, match="imbalance"):
            RankedListLoss(0.4, 1.0, imbalance=bad)
    with pytest.raises(AssertionError):  # compat: the reference asserted
        RankedListLoss(0.4, 1.0, imbalance=2)


def test_ranked_list_high_temperatures_warn():
    with pytest.warns(UserWarning, match="too high"):
        RankedListLoss(0.4, 6.0)
    with pytest.warns(UserWarning, match="too high"):
        RankedListLoss(0.4, 1.0, Tp=5.5)


def test_ranked_list_checks_arguments():
    with pytest.raises(TypeError):
        RankedListLoss()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="margin"):
        RankedListLoss("0.4", 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="indices_tuple"):
        RankedListLoss(0.4, 1.0)(
            data(), MIXED, (torch.tensor([0]), torch.tensor([2]), torch.tensor([1]))
        )
    with pytest.raises(ValueError, match="ref_emb"):
        RankedListLoss(0.4, 1.0)(data(), MIXED, ref_emb=data(seed=1), ref_labels=MIXED)


def test_ranked_list_nan_embeddings_give_nan():
    # fix: a NaN row failed every selection and the reference returned a finite loss
    emb = data()
    emb[0, 0] = float("nan")
    assert torch.isnan(RankedListLoss(0.4, 1.0)(emb, MIXED))


# --------------------------------------------------------------------------------------------
# all four: NaN, dtypes, gradcheck, chunking, functional forms

CLASSES = {
    "FastAP": (lambda: FastAPLoss(), MIXED),
    "PNP": (lambda: PNPLoss(anneal=0.1), MIXED),
    "PNP_Dq": (lambda: PNPLoss(variant="Dq", anneal=0.1), EQUAL),
    "SmoothAP": (lambda: SmoothAPLoss(temperature=0.1), GROUPED),
    "RankedList": (lambda: RankedListLoss(0.4, 1.0), MIXED),
}


@pytest.mark.parametrize("name", list(CLASSES))
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_embeddings_give_nan(name, bad):
    make, labels = CLASSES[name]
    emb = data(len(labels))
    emb[1, 2] = bad
    assert torch.isnan(make()(emb, labels))


@pytest.mark.parametrize("name", list(CLASSES))
def test_dtypes(name, dtype, device):
    make, labels = CLASSES[name]
    emb = data(len(labels), dtype=dtype).to(device)
    got = make()(emb, labels.to(device))
    assert got.dtype == dtype and got.device == emb.device
    # statistics in at least float32: compare with float64 on the same (rounded) inputs
    expected = make()(emb.double().cpu(), labels)
    rtol, atol = TOLERANCES[dtype]
    assert_close(got.cpu(), expected, rtol=rtol * 2, atol=atol * 2)


@pytest.mark.parametrize("name", list(CLASSES))
def test_gradcheck(name):
    make, labels = CLASSES[name]
    loss_fn = make()
    assert gradcheck(lambda e: loss_fn(e, labels), data(len(labels), d=4))


@pytest.mark.parametrize("name", ["PNP", "PNP_Dq", "SmoothAP"])
def test_tiny_chunks_give_the_same_values_and_gradients(name, monkeypatch):
    make, labels = CLASSES[name]
    emb = data(len(labels)).requires_grad_()
    loss = make()(emb, labels)
    (grad,) = torch.autograd.grad(loss, emb)
    monkeypatch.setattr(ranking, "_CHUNK_CELLS", 7)  # one or two pairs per chunk
    emb2 = emb.detach().clone().requires_grad_()
    loss2 = make()(emb2, labels)
    (grad2,) = torch.autograd.grad(loss2, emb2)
    torch.testing.assert_close(loss2, loss, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(grad2, grad, rtol=1e-10, atol=1e-14)


def test_no_grad_forward_builds_no_jacobian():
    emb = data(len(GROUPED))
    with torch.no_grad():
        a = SmoothAPLoss()(emb, GROUPED)
    torch.testing.assert_close(a, SmoothAPLoss()(emb.requires_grad_(), GROUPED).detach())


def test_row_rank_values_counts_softly():
    logits = torch.tensor([[0.0, 2.0, -math.inf], [1.0, 0.0, 3.0]], dtype=torch.float64)
    pivots = torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64)
    rows = torch.tensor([0, 1, 1])

    def count(start, stop, all_sums, _):
        return all_sums, torch.ones_like(all_sums), None

    got = ranking.row_rank_values(logits, pivots, rows, count)
    sig = torch.sigmoid
    row1 = sum(
        sig(torch.tensor(v - p, dtype=torch.float64)) for p in (1.0, 0.0) for v in (1.0, 0.0, 3.0)
    )
    torch.testing.assert_close(got, torch.stack([sig(torch.tensor(-2.0)).double() + 0.5, row1]))
    assert gradcheck(
        lambda lg, pv: ranking.row_rank_values(lg, pv, rows, count), (logits.clamp_min(-5), pivots)
    )


def test_functional_forms_match_the_classes():
    emb = data()
    cos = F.normalize(emb) @ F.normalize(emb).T
    loss, valid = pnp_loss(cos, MIXED, variant="Ds")
    torch.testing.assert_close(loss, PNPLoss(variant="Ds")(emb, MIXED))
    assert valid.tolist() == [i != 8 for i in range(12)]
    dist = torch.cdist(F.normalize(emb), F.normalize(emb))
    losses = ranked_list_loss(dist, MIXED, margin=0.4, alpha=1.2, Tn=1.0)
    torch.testing.assert_close(losses.mean(), RankedListLoss(0.4, 1.0)(emb, MIXED))
    sq = dist.square()
    losses, valid = fast_ap_loss(sq, MIXED)
    torch.testing.assert_close(losses[valid].mean(), FastAPLoss()(emb, MIXED))
    cos9 = cos[:9, :9]
    torch.testing.assert_close(smooth_ap_loss(cos9, 3).mean(), SmoothAPLoss()(emb[:9], GROUPED))


@pytest.mark.parametrize("name", ["FastAPLoss", "PNPLoss", "SmoothAPLoss", "RankedListLoss"])
@pytest.mark.parametrize("amp", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_autocast_backward_of_ranking_losses_works(name, amp):
    # fix: the hand-written backwards failed under autocast ("expected m1 and m2 to have the
    # same dtype") for FastAP, PNP and Smooth-AP; seen on CUDA first, same on CPU
    labels = torch.arange(10).repeat_interleave(4)
    emb = torch.randn(40, 16, generator=torch.Generator().manual_seed(0), requires_grad=True)
    kwargs = {"margin": 0.4, "Tn": 1.0} if name == "RankedListLoss" else {}
    loss = getattr(ranking_losses, name)(**kwargs)
    expected = loss(emb, labels)
    (want,) = torch.autograd.grad(expected, emb)
    with torch.autocast("cpu", dtype=amp):
        got = loss(emb, labels)
    (grad,) = torch.autograd.grad(got.float(), emb)
    torch.testing.assert_close(got.float(), expected, rtol=2e-2, atol=1e-4)
    torch.testing.assert_close(grad, want, rtol=5e-2, atol=1e-3)


def test_ranked_list_empty_batch_gives_zero_loss_on_the_graph():
    # fix: an empty batch gave NaN (MeanReducer's mean of nothing)
    emb = torch.zeros(0, 4, requires_grad=True)
    loss = RankedListLoss(0.4, 1.0)(emb, torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0 and loss.requires_grad
    loss.backward()
    assert emb.grad is not None and emb.grad.shape == (0, 4)
