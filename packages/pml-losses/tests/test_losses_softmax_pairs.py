"""NTXentLoss, TupletMarginLoss (and SupConLoss's routes): naive per-pair loops, edge cases, dtypes.

SupConLoss's values against naive loops: test_losses_pair_weighting.py.
"""

from __future__ import annotations

import math

import pytest
import torch

from pml.core.indices import get_all_pairs_indices
from pml.core.testing import assert_close, gradcheck
from pml.core.validation import InvalidArgumentError
from pml.distances import CosineSimilarity, LpDistance
from pml.losses import GenericPairLoss, NTXentLoss, SupConLoss, TupletMarginLoss
from pml.losses.functional import ntxent_loss, supcon_loss, tuplet_margin_loss
from pml.reducers import DoNothingReducer, SumReducer

LABELS = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 4, 4])


def data(n: int = 10, d: int = 6, seed: int = 0, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype)


def naive_ntxent(mat, pairs, temperature, is_inverted=True):
    """The reference's formula, one positive pair at a time (spec NTXentLoss)."""
    a1, p, a2, n = (t.tolist() for t in pairs)
    tiny = torch.finfo(mat.dtype).tiny
    z = mat / temperature if is_inverted else -mat / temperature
    out = []
    for a, pp in zip(a1, p, strict=True):
        negs = [z[a, nn] for aa, nn in zip(a2, n, strict=True) if aa == a]
        mx = max([z[a, pp], *negs])
        num = torch.exp(z[a, pp] - mx)
        den = num + sum(torch.exp(v - mx) for v in negs)
        out.append(-torch.log(num / den + tiny))
    return torch.stack(out)


def naive_tuplet(sim, pairs, margin, scale):
    a1, p, a2, n = (t.tolist() for t in pairs)
    out = []
    for a, pp in zip(a1, p, strict=True):
        c = torch.cos(torch.acos(sim[a, pp].clamp(-1, 1)) - margin)  # fix: clamped
        terms = [scale * (sim[a, nn] - c) for aa, nn in zip(a2, n, strict=True) if aa == a]
        out.append(torch.log(1 + sum(torch.exp(t) for t in terms)) if terms else sim.new_zeros(()))
    return torch.stack(out)


def cosine(x, y=None):
    return CosineSimilarity()(x, y)


# --------------------------------------------------------------------------- functional


@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_ntxent_functional_matches_naive_loop(temperature):
    mat = cosine(data())
    pairs = get_all_pairs_indices(LABELS)
    a1, p, a2, n = pairs
    expected = naive_ntxent(mat, pairs, temperature)
    neg_mask = torch.zeros_like(mat, dtype=torch.bool)
    neg_mask[a2, n] = True
    got_mask = ntxent_loss(mat, a1, p, neg_mask, temperature)
    got_list = ntxent_loss(mat, a1, p, (a2, n), temperature)
    torch.testing.assert_close(got_mask, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(got_list, expected, rtol=1e-12, atol=1e-14)


def test_ntxent_functional_counts_duplicate_negatives():
    mat = cosine(data())
    a1, p = torch.tensor([0, 0, 2]), torch.tensor([1, 1, 3])
    a2, n = torch.tensor([0, 0, 0, 2]), torch.tensor([5, 5, 7, 9])
    got = ntxent_loss(mat, a1, p, (a2, n), 0.1)
    torch.testing.assert_close(got, naive_ntxent(mat, (a1, p, a2, n), 0.1), rtol=1e-12, atol=0)


def test_ntxent_functional_distance_is_negated():
    mat = LpDistance()(data())
    pairs = get_all_pairs_indices(LABELS)
    got = ntxent_loss(mat, pairs[0], pairs[1], pairs[2:], 0.2, is_inverted=False)
    torch.testing.assert_close(got, naive_ntxent(mat, pairs, 0.2, is_inverted=False))


@pytest.mark.parametrize(("dtype", "cap"), [(torch.float32, 87.3365), (torch.float64, 708.3964)])
def test_ntxent_saturates_at_minus_log_tiny_with_zero_gradient(dtype, cap):
    # compat (spec NTXent pitfall): -log(ratio + tiny) caps the loss, gradient 0 there.
    emb = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]], dtype=dtype, requires_grad=True)
    labels = torch.tensor([0, 0, 1])
    loss_fn = NTXentLoss(temperature=0.001, reducer=DoNothingReducer())
    losses = loss_fn(emb, labels)["loss"]["losses"]
    assert losses.dtype == dtype
    assert losses[0].item() == pytest.approx(cap, abs=1e-4)
    losses[0].backward()
    assert (emb.grad == 0).all()


def test_ntxent_half_precision_uses_float32_cap():
    # fix: float16 inputs are computed in float32, so the cap is -log(float32 tiny), not 9.70.
    emb = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]], dtype=torch.float16)
    loss_fn = NTXentLoss(temperature=0.001, reducer=DoNothingReducer())
    losses = loss_fn(emb, torch.tensor([0, 0, 1]))["loss"]["losses"]
    assert losses.dtype == torch.float16 and losses[0].item() == pytest.approx(87.3365, abs=0.1)


def test_ntxent_functional_gradcheck():
    mat = cosine(data(6, 4))
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    a1, p, a2, n = get_all_pairs_indices(labels)
    neg_mask = labels.unsqueeze(1) != labels.unsqueeze(0)
    assert gradcheck(lambda m: ntxent_loss(m, a1, p, neg_mask, 0.3), mat)
    assert gradcheck(lambda m: ntxent_loss(m, a1, p, (a2, n), 0.3), mat)


def test_tuplet_functional_matches_naive_loop():
    sim = cosine(data())
    pairs = get_all_pairs_indices(LABELS)
    a1, p, a2, n = pairs
    m = math.radians(10)
    expected = naive_tuplet(sim, pairs, m, 16.0)
    neg_mask = LABELS.unsqueeze(1) != LABELS.unsqueeze(0)
    torch.testing.assert_close(tuplet_margin_loss(sim, a1, p, neg_mask, m, 16.0), expected)
    torch.testing.assert_close(tuplet_margin_loss(sim, a1, p, (a2, n), m, 16.0), expected)


def test_tuplet_functional_anchor_without_negatives_gives_zero():
    sim = cosine(data(4, 3))
    a1, p = torch.tensor([0, 2]), torch.tensor([1, 3])
    got = tuplet_margin_loss(sim, a1, p, (torch.tensor([0]), torch.tensor([2])))
    assert got[1] == 0 and got[0] > 0


def test_tuplet_functional_gradcheck():
    emb = data(6, 4)
    sim = cosine(emb) * 0.9  # away from |s| = 1
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    a1, p, a2, n = get_all_pairs_indices(labels)
    assert gradcheck(lambda s: tuplet_margin_loss(s, a1, p, (a2, n), 0.1, 8.0), sim)


# --------------------------------------------------------------------------- classes

CLASSES = [
    (NTXentLoss, {"temperature": 0.1}, naive_ntxent, (0.1,)),
    (TupletMarginLoss, {"margin": 10, "scale": 16}, naive_tuplet, (math.radians(10), 16.0)),
]


@pytest.mark.parametrize(("cls", "kwargs", "naive", "args"), CLASSES)
def test_class_matches_naive_with_labels(cls, kwargs, naive, args):
    emb = data()
    out = cls(reducer=DoNothingReducer(), **kwargs)(emb, LABELS)["loss"]
    pairs = get_all_pairs_indices(LABELS)
    expected = naive(cosine(emb), pairs, *args)
    torch.testing.assert_close(out["losses"].reshape(-1), expected)
    assert out["reduction_type"] == "pos_pair"
    assert all(torch.equal(x, y) for x, y in zip(out["indices"], pairs[:2], strict=True))
    shape = (len(pairs[0]), 1) if cls is TupletMarginLoss else (len(pairs[0]),)
    assert tuple(out["losses"].shape) == shape
    mean = cls(**kwargs)(emb, LABELS)
    torch.testing.assert_close(mean, expected.mean())


@pytest.mark.parametrize(("cls", "kwargs", "naive", "args"), CLASSES)
def test_class_with_miner_pairs_and_triplets(cls, kwargs, naive, args):
    emb = data()
    sim = cosine(emb)
    pairs = (
        torch.tensor([0, 2, 2, 5]),
        torch.tensor([1, 3, 4, 6]),
        torch.tensor([0, 0, 2, 5, 5]),
        torch.tensor([2, 2, 7, 0, 9]),
    )
    got = cls(**kwargs)(emb, None, pairs)
    torch.testing.assert_close(got, naive(sim, pairs, *args).mean())
    # triplets become (a, p, a, n): duplicated pairs count once per triplet
    a, p, n = torch.tensor([0, 0, 2, 2]), torch.tensor([1, 1, 3, 4]), torch.tensor([2, 5, 0, 0])
    got = cls(**kwargs)(emb, LABELS, (a, p, n))
    torch.testing.assert_close(got, naive(sim, (a, p, a, n), *args).mean())


@pytest.mark.parametrize(("cls", "kwargs", "naive", "args"), CLASSES)
def test_class_with_ref_emb(cls, kwargs, naive, args):
    emb, ref = data(), data(7, seed=1)
    ref_labels = torch.tensor([0, 1, 1, 2, 4, 4, 5])
    got = cls(**kwargs)(emb, LABELS, ref_emb=ref, ref_labels=ref_labels)
    pairs = get_all_pairs_indices(LABELS, ref_labels)
    torch.testing.assert_close(got, naive(cosine(emb, ref), pairs, *args).mean())


@pytest.mark.parametrize(("cls", "kwargs", "naive", "args"), CLASSES)
def test_copied_ref_labels_keep_self_pairs(cls, kwargs, naive, args):
    # compat (spec losses.md §1): same set decided by object identity
    emb = data()
    same = cls(**kwargs)(emb, LABELS, ref_emb=emb, ref_labels=LABELS)
    copied = cls(**kwargs)(emb, LABELS, ref_emb=emb, ref_labels=LABELS.clone())
    torch.testing.assert_close(same, cls(**kwargs)(emb, LABELS))
    pairs = get_all_pairs_indices(LABELS, LABELS.clone())
    torch.testing.assert_close(copied, naive(cosine(emb), pairs, *args).mean())


@pytest.mark.parametrize("cls", [NTXentLoss, TupletMarginLoss])
@pytest.mark.parametrize(
    ("labels", "tuple_"),
    [
        (torch.arange(10), None),  # no positives
        (torch.zeros(10, dtype=torch.long), None),  # single class: no negatives
        (torch.tensor([0, 0, 1]), None),  # 2 positive pairs, 4 negatives: computed
        (torch.tensor([0]), None),  # single sample
        (None, (torch.tensor([0]), torch.tensor([1]), torch.tensor([0]), torch.tensor([2]))),
        (None, tuple(torch.empty(0, dtype=torch.long) for _ in range(3))),
    ],
)
def test_zero_loss_cases_stay_on_the_graph(cls, labels, tuple_):
    n = 3 if labels is None else len(labels)
    emb = data(n).requires_grad_()
    loss = cls()(emb, labels, tuple_)
    loss.backward()
    if labels is not None and len(labels) == 3:
        assert loss.item() != 0  # not a zero case: guards the parametrisation
        return
    assert loss.item() == 0 and emb.grad is not None and (emb.grad == 0).all()


@pytest.mark.parametrize("cls", [NTXentLoss, TupletMarginLoss])
def test_generic_pair_hook_matches_compute_loss(cls):
    loss_fn = cls(reducer=DoNothingReducer())
    emb = data()
    pairs = get_all_pairs_indices(LABELS)
    via_hook = loss_fn.pair_based_loss(cosine(emb), pairs)["loss"]["losses"]
    torch.testing.assert_close(via_hook, loss_fn(emb, LABELS)["loss"]["losses"])
    assert isinstance(loss_fn, GenericPairLoss) and loss_fn.mat_based_loss is False


def test_ntxent_with_a_distance():
    emb = data()
    got = NTXentLoss(temperature=0.3, distance=LpDistance())(emb, LABELS)
    mat = LpDistance()(emb)
    expected = naive_ntxent(mat, get_all_pairs_indices(LABELS), 0.3, is_inverted=False).mean()
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("cls", [NTXentLoss, TupletMarginLoss])
def test_dtype_and_device(cls, dtype, device):
    emb = data(12, 5, dtype=torch.float32).to(device=device, dtype=dtype)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]).to(device)
    loss_fn = cls(temperature=0.5) if cls is NTXentLoss else cls(scale=8)
    loss = loss_fn(emb, labels)
    assert loss.dtype == dtype and loss.device == emb.device
    assert_close(loss, loss_fn(emb.double(), labels).to(dtype))


@pytest.mark.parametrize("cls", [NTXentLoss, TupletMarginLoss])
def test_nonfinite_embeddings_give_nan(cls):
    emb = data()
    emb[8] = float("nan")  # row 8 takes part in pairs only as a negative of some anchors
    assert cls()(emb, LABELS).isnan()
    pairs = (torch.tensor([0]), torch.tensor([1]), torch.tensor([0, 0]), torch.tensor([2, 3]))
    emb2 = data()
    emb2[9] = float("inf")  # not in the mined pairs at all
    assert cls()(emb2, None, pairs).isnan()


@pytest.mark.parametrize("cls", [NTXentLoss, TupletMarginLoss])
def test_bad_input_raises(cls):
    emb = data()
    with pytest.raises(ValueError, match="labels"):
        cls()(emb)
    with pytest.raises(ValueError, match="labels"):
        cls()(emb, LABELS[:5])
    with pytest.raises(ValueError, match="ref_labels"):
        cls()(emb, LABELS, ref_emb=data(4))
    with pytest.raises(TypeError, match="indices_tuple"):
        cls()(emb, LABELS, (torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([2.0])))


def test_records_and_hierarchy():
    nt = NTXentLoss()
    assert nt.temperature == 0.07 and nt._record_these == ["temperature"]
    assert isinstance(nt.distance, CosineSimilarity)
    tu = TupletMarginLoss(collect_stats=True)
    assert tu.margin == pytest.approx(0.10000736613927509, rel=1e-15) and tu.scale == 64
    assert tu._record_these == ["margin", "scale"]
    assert tu._record_these_stats == ["avg_pos_angle", "avg_neg_angle"]
    assert isinstance(tu, GenericPairLoss)


def test_tuplet_requires_cosine_similarity():
    with pytest.raises(InvalidArgumentError, match="CosineSimilarity"):
        TupletMarginLoss(distance=LpDistance())
    with pytest.raises(AssertionError):
        TupletMarginLoss(distance=LpDistance())


@pytest.mark.parametrize("with_tuple", [False, True])
def test_tuplet_angle_stats(with_tuple):
    emb = data()
    loss_fn = TupletMarginLoss(collect_stats=True)
    pairs = get_all_pairs_indices(LABELS)
    if with_tuple:
        pairs = (
            pairs[0],
            pairs[1],
            torch.cat([pairs[2], pairs[2][:5]]),
            torch.cat([pairs[3], pairs[3][:5]]),
        )
        loss_fn(emb, None, pairs)
    else:
        loss_fn(emb, LABELS)
    sim = cosine(emb)
    pos = torch.rad2deg(torch.acos(sim[pairs[0], pairs[1]])).mean()
    neg = torch.rad2deg(torch.acos(sim[pairs[2], pairs[3]])).mean()
    assert loss_fn.avg_pos_angle == pytest.approx(pos.item(), rel=1e-10)
    assert loss_fn.avg_neg_angle == pytest.approx(neg.item(), rel=1e-10)
    TupletMarginLoss(collect_stats=False)(emb, LABELS)  # no stats registered: no error


def test_tuplet_duplicate_embeddings_give_finite_loss_and_gradient():
    # fix: the reference's acos of cosines rounding above 1 gave NaN (docs/compatibility.md)
    base = data(4, 5, dtype=torch.float32)
    emb = torch.cat([base, base]).requires_grad_()  # rows i and i + 4 are identical
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    loss_fn = TupletMarginLoss(collect_stats=True)
    loss = loss_fn(emb, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(emb.grad).all()
    assert math.isfinite(loss_fn.avg_pos_angle) and loss_fn.avg_pos_angle < 0.1
    # its value is the limit at angle 0: cos(0 - margin) replaces cos(acos(s) - margin)
    sim = cosine(emb.detach().double())
    pairs = get_all_pairs_indices(labels)
    expected = naive_tuplet(sim, pairs, math.radians(5.73), 64.0).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)


def test_sum_reducer_is_used_as_given():
    emb = data()
    got = NTXentLoss(reducer=SumReducer())(emb, LABELS)
    expected = naive_ntxent(cosine(emb), get_all_pairs_indices(LABELS), 0.07).sum()
    torch.testing.assert_close(got, expected)


# --------------------------------------------------------------------------- SupConLoss routes


def supcon_via_masks(emb, pairs, temperature=0.1, n=None):
    """GenericPairLoss's reference route: float masks from the pair lists, per-row losses."""
    mat = cosine(emb)
    pos, neg = torch.zeros_like(mat), torch.zeros_like(mat)
    pos[pairs[0], pairs[1]] = 1
    neg[pairs[2], pairs[3]] = 1
    return supcon_loss(mat, pos, neg, temperature)


def test_supcon_label_and_tuple_routes_match_the_mask_route():
    emb = data()
    pairs = get_all_pairs_indices(LABELS)
    expected = supcon_via_masks(emb, pairs)
    by_labels = SupConLoss(reducer=DoNothingReducer())(emb, LABELS)["loss"]
    by_tuple = SupConLoss(reducer=DoNothingReducer())(emb, None, pairs)["loss"]
    for out in (by_labels, by_tuple):
        torch.testing.assert_close(out["losses"], expected, rtol=1e-12, atol=1e-14)
        assert torch.equal(out["indices"], torch.arange(10)) and out["reduction_type"] == "element"
    # a miner's duplicated pairs collapse into one cell
    doubled = tuple(torch.cat([t, t[:7]]) for t in pairs)
    got = SupConLoss(reducer=DoNothingReducer())(emb, None, doubled)["loss"]["losses"]
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)


def test_supcon_one_positive_and_one_negative_pair_gives_zero():
    # compat: the reference's rule (every index list of length <= 1) on a ref set of two rows
    emb = data(1).requires_grad_()
    loss = SupConLoss()(
        emb, torch.tensor([0]), ref_emb=data(2, seed=1), ref_labels=torch.tensor([0, 1])
    )
    loss.backward()
    assert loss.item() == 0 and (emb.grad == 0).all()


def test_supcon_half_precision_is_computed_in_float32(dtype):
    emb = data(12, 5, dtype=torch.float32).to(dtype)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    got = SupConLoss(reducer=DoNothingReducer())(emb, labels)["loss"]["losses"]
    expected = SupConLoss(reducer=DoNothingReducer())(emb.double(), labels)["loss"]["losses"]
    assert got.dtype == dtype
    assert_close(got, expected.to(dtype))
