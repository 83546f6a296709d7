"""MultiSupConLoss and its functional math: hand-computed cases, naive loops, routes, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from pml.core.testing import assert_close, gradcheck
from pml.distances import CosineSimilarity, LpDistance
from pml.losses import MultiSupConLoss, SupConLoss
from pml.losses.functional import label_set_jaccard, multi_supcon_loss
from pml.reducers import DoNothingReducer, MeanReducer


def data(n: int = 8, d: int = 5, c: int = 4, seed: int = 0, p: float = 0.4):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(n, d, generator=g, dtype=torch.float64)
    sets = torch.rand(n, c, generator=g) < p
    return emb, sets


def naive_jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    sa = {k for k in range(len(a)) if a[k]}
    sb = {k for k in range(len(b)) if b[k]}
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


def naive_rows(emb, sets, temperature, threshold, ref_emb=None, ref_sets=None):
    """The paper's formula, one row and one cell at a time (cosine similarity)."""
    same = ref_emb is None
    ref_emb = emb if same else ref_emb
    ref_sets = sets if same else ref_sets
    sim = CosineSimilarity()(emb, ref_emb)
    out = []
    for i in range(len(emb)):
        others = [j for j in range(len(ref_emb)) if not (same and j == i)]
        jac = {j: naive_jaccard(sets[i], ref_sets[j]) for j in others}
        pos = [j for j in others if jac[j] >= threshold]
        if not pos:
            out.append(0.0)
            continue
        den = math.log(sum(math.exp(float(sim[i, a]) / temperature) for a in others))
        total = sum(jac[p] * (float(sim[i, p]) / temperature - den) for p in pos)
        out.append(-total / len(pos))
    return torch.tensor(out, dtype=torch.float64)


def row_losses(loss_fn, *args, **kwargs):
    return loss_fn(*args, **kwargs)["loss"]["losses"]


# --------------------------------------------------------------------------- functional


def test_label_set_jaccard_hand_computed_with_empty_sets():
    sets = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]).bool()
    jac = label_set_jaccard(sets)
    expected = torch.tensor(
        [
            [1.0, 1 / 3, 0.0, 0.0],
            [1 / 3, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 1.0],  # two empty sets are identical
            [0.0, 0.0, 1.0, 1.0],
        ]
    )
    torch.testing.assert_close(jac, expected)
    torch.testing.assert_close(label_set_jaccard(sets[:2], sets[1:]), expected[:2, 1:])


def test_multi_supcon_functional_hand_computed_two_rows():
    # row 0: z = [10, 8, 1], A = {1, 2}, N = {1} (J = 0.5): -0.5·(8 - log(e^8 + e^1))
    mat = torch.tensor([[1.0, 0.8, 0.1], [0.8, 1.0, 0.6]], dtype=torch.float64)
    jac = torch.tensor([[1.0, 0.5, 0.0], [0.5, 1.0, 0.0]], dtype=torch.float64)
    pos = torch.tensor([[0, 1, 0], [1, 0, 0]]).bool()
    den = torch.tensor([[0, 1, 1], [1, 0, 1]]).bool()
    got = multi_supcon_loss(mat, jac, pos, den, 0.1)
    expected = torch.tensor(
        [
            -0.5 * (8 - math.log(math.exp(8) + math.exp(1))),
            -0.5 * (8 - math.log(math.exp(8) + math.exp(6))),
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)


def test_multi_supcon_functional_gradcheck():
    emb, sets = data(n=5)
    mat = CosineSimilarity()(emb, emb).detach().requires_grad_(True)
    jac = label_set_jaccard(sets, dtype=torch.float64)
    den = ~torch.eye(5, dtype=torch.bool)
    pos = den & (jac >= 0.3)
    gradcheck(lambda m: multi_supcon_loss(m, jac, pos, den, 0.5), (mat,))


# --------------------------------------------------------------------------- the loss


def test_multi_supcon_loss_hand_computed_three_samples():
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    sets = torch.tensor([[1, 1], [0, 1], [1, 1]]).bool()
    # J: (0,1) = 1/2, (0,2) = 1, (1,2) = 1/2; threshold 0.5: every pair positive
    s = 1 / math.sqrt(2)
    z = {(0, 1): 0.0, (0, 2): s, (1, 2): s}
    z.update({(j, i): v for (i, j), v in list(z.items())})
    t = 0.5
    rows = []
    for i, weights in ((0, {1: 0.5, 2: 1.0}), (1, {0: 0.5, 2: 0.5}), (2, {0: 1.0, 1: 0.5})):
        den = math.log(sum(math.exp(z[i, a] / t) for a in weights))
        rows.append(-sum(w * (z[i, p] / t - den) for p, w in weights.items()) / 2)
    loss_fn = MultiSupConLoss(temperature=t, reducer=DoNothingReducer())
    torch.testing.assert_close(
        row_losses(loss_fn, emb, sets), torch.tensor(rows, dtype=torch.float64)
    )
    assert_close(MultiSupConLoss(temperature=t)(emb, sets), sum(rows) / 3)


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("temperature", [0.1, 0.7])
def test_multi_supcon_loss_matches_naive_loop(threshold, temperature):
    emb, sets = data(n=9, seed=1)
    loss_fn = MultiSupConLoss(temperature, threshold, reducer=DoNothingReducer())
    expected = naive_rows(emb, sets, temperature, threshold)
    torch.testing.assert_close(row_losses(loss_fn, emb, sets), expected, rtol=1e-10, atol=1e-12)


def test_multi_supcon_loss_with_ref_emb_matches_naive_loop():
    emb, sets = data(n=6, seed=2)
    ref, ref_sets = data(n=7, seed=3)
    loss_fn = MultiSupConLoss(0.2, 0.4, reducer=DoNothingReducer())
    got = row_losses(loss_fn, emb, sets, ref_emb=ref, ref_labels=ref_sets)
    expected = naive_rows(emb, sets, 0.2, 0.4, ref, ref_sets)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_multi_supcon_loss_default_reducer_averages_non_zero_rows():
    emb, sets = data(n=9, seed=4)
    rows = naive_rows(emb, sets, 0.1, 0.5)
    assert (rows == 0).any() and (rows > 0).any()
    assert_close(MultiSupConLoss()(emb, sets), rows[rows > 0].mean())


def test_multi_supcon_loss_zero_one_numbers_equal_booleans():
    emb, sets = data(seed=5)
    loss_fn = MultiSupConLoss()
    expected = loss_fn(emb, sets)
    for labels in (sets.long(), sets.to(torch.uint8), sets.float(), sets.double()):
        torch.testing.assert_close(loss_fn(emb, labels), expected)


def test_multi_supcon_loss_class_labels_are_singleton_sets_and_give_supcon():
    emb = data(n=10, seed=11)[0]
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 4, 4])
    one_hot = torch.nn.functional.one_hot(labels).bool()
    expected = SupConLoss(temperature=0.2)(emb, labels)
    torch.testing.assert_close(MultiSupConLoss(0.2)(emb, labels), expected)
    torch.testing.assert_close(MultiSupConLoss(0.2)(emb, one_hot), expected)
    ref, ref_labels = data(n=7, seed=12)[0], torch.tensor([0, 1, 1, 2, 5, 4, 0])
    torch.testing.assert_close(
        MultiSupConLoss(0.2)(emb, labels, ref_emb=ref, ref_labels=ref_labels),
        SupConLoss(temperature=0.2)(emb, labels, ref_emb=ref, ref_labels=ref_labels),
    )


def test_multi_supcon_loss_pairs_tuple_matches_naive_loop():
    emb, sets = data(n=6, seed=6)
    a1, p = torch.tensor([0, 0, 1, 3, 0]), torch.tensor([1, 2, 0, 4, 1])  # (0, 1) twice
    a2, n = torch.tensor([0, 1, 1, 3]), torch.tensor([5, 4, 5, 2])
    loss_fn = MultiSupConLoss(0.3, reducer=DoNothingReducer())
    got = row_losses(loss_fn, emb, sets, (a1, p, a2, n))
    sim = CosineSimilarity()(emb, emb)
    jac = label_set_jaccard(sets, dtype=torch.float64)
    expected = torch.zeros(6, dtype=torch.float64)
    for i in range(6):
        pos = sorted({int(q) for a, q in zip(a1, p, strict=True) if a == i})
        negs = sorted({int(q) for a, q in zip(a2, n, strict=True) if a == i})
        if not pos:
            continue
        den = math.log(sum(math.exp(float(sim[i, j]) / 0.3) for j in pos + negs))
        expected[i] = -sum(float(jac[i, j]) * (float(sim[i, j]) / 0.3 - den) for j in pos) / len(
            pos
        )
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_multi_supcon_loss_triplets_tuple_is_read_as_pairs():
    emb, sets = data(n=6, seed=7)
    a, p, n = torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5])
    loss_fn = MultiSupConLoss(reducer=DoNothingReducer())
    torch.testing.assert_close(
        row_losses(loss_fn, emb, sets, (a, p, n)),
        row_losses(loss_fn, emb, sets, (a, p, a, n)),
    )


def test_multi_supcon_loss_without_positive_pairs_is_zero_on_the_graph():
    emb = torch.randn(4, 3, requires_grad=True)
    sets = torch.eye(4, dtype=torch.bool)  # disjoint non-empty sets: J = 0 everywhere
    loss = MultiSupConLoss()(emb, sets)
    assert loss.item() == 0 and loss.requires_grad
    loss.backward()
    assert torch.equal(emb.grad, torch.zeros_like(emb))


def test_multi_supcon_loss_gradients_are_finite_with_duplicate_embeddings():
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], requires_grad=True)
    sets = torch.tensor([[1, 0], [1, 0], [0, 1], [1, 1]]).bool()
    MultiSupConLoss(reducer=MeanReducer())(emb, sets).backward()
    assert torch.isfinite(emb.grad).all()


def test_multi_supcon_loss_nan_embedding_gives_nan():
    emb, sets = data(seed=8)
    emb[3, 0] = math.nan
    assert MultiSupConLoss()(emb, sets).isnan()


def test_multi_supcon_loss_with_a_distance_negates_it():
    emb, sets = data(seed=9)
    loss_fn = MultiSupConLoss(0.5, reducer=DoNothingReducer(), distance=LpDistance())
    d = LpDistance()(emb, emb)
    jac = label_set_jaccard(sets, dtype=torch.float64)
    den = ~torch.eye(len(emb), dtype=torch.bool)
    expected = multi_supcon_loss(-d, jac, den & (jac >= 0.5), den, 0.5)
    torch.testing.assert_close(row_losses(loss_fn, emb, sets), expected)


def test_multi_supcon_loss_dtypes(dtype, device):
    emb, sets = data(n=10, seed=10)
    expected = MultiSupConLoss()(emb, sets)
    x = emb.to(device=device, dtype=dtype).requires_grad_(True)
    loss = MultiSupConLoss()(x, sets.to(device))
    assert loss.dtype == dtype
    assert_close(loss, expected)
    loss.backward()
    assert torch.isfinite(x.grad).all()


# --------------------------------------------------------------------------- bad input


def test_multi_supcon_loss_rejects_bad_arguments():
    with pytest.raises(ValueError, match="temperature"):
        MultiSupConLoss(temperature=0)
    with pytest.raises(ValueError, match="threshold"):
        MultiSupConLoss(threshold=1.5)
    with pytest.raises(TypeError, match="threshold"):
        MultiSupConLoss(threshold="0.5")


def test_multi_supcon_loss_rejects_bad_labels():
    emb, sets = data(n=4)
    loss_fn = MultiSupConLoss()
    with pytest.raises(ValueError, match="labels"):
        loss_fn(emb)
    with pytest.raises(ValueError, match="labels"):
        loss_fn(emb, torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match="ref_labels"):
        loss_fn(emb, sets, ref_emb=emb, ref_labels=torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="labels"):
        loss_fn(emb, sets.unsqueeze(2))
    with pytest.raises(ValueError, match="labels"):
        loss_fn(emb, sets[:3])
    with pytest.raises(ValueError, match="only 0 and 1"):
        loss_fn(emb, sets.long() * 2)
    with pytest.raises(TypeError, match="labels"):
        loss_fn(emb, sets.tolist())
    with pytest.raises(ValueError, match="ref_labels"):
        loss_fn(emb, sets, ref_emb=emb)
    with pytest.raises(ValueError, match="ref_labels"):
        loss_fn(emb, sets, ref_emb=emb, ref_labels=sets[:, :2])
    with pytest.raises(ValueError, match="indices_tuple"):
        loss_fn(emb, sets, (torch.tensor([0]), torch.tensor([9]), torch.tensor([1])))
