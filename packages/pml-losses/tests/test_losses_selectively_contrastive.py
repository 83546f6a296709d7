"""SelectivelyContrastiveTripletLoss and its functional math: hand-computed cases, naive loops,
routes, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from pml.core.indices import get_all_triplets_indices
from pml.core.testing import assert_close, gradcheck
from pml.distances import CosineSimilarity, LpDistance
from pml.losses import SelectivelyContrastiveTripletLoss
from pml.losses.functional import selectively_contrastive_triplet_loss
from pml.miners import BatchHardMiner
from pml.reducers import DoNothingReducer

LABELS = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3])


def data(n: int = 8, d: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def naive(sim, triplets, temperature, hard_weight):
    out = []
    for a, p, n in zip(*(t.tolist() for t in triplets), strict=True):
        s_ap, s_an = float(sim[a, p]), float(sim[a, n])
        if s_an > s_ap:
            out.append(hard_weight * s_an)
        else:
            e_p, e_n = math.exp(s_ap / temperature), math.exp(s_an / temperature)
            out.append(-math.log(e_p / (e_p + e_n)))
    return torch.tensor(out, dtype=torch.float64)


def test_selectively_contrastive_functional_hand_computed():
    sim = torch.tensor([[1.0, 0.8, 0.2, 0.9], [0.8, 1.0, -0.3, 0.1]], dtype=torch.float64)
    a, p, n = torch.tensor([0, 0, 1]), torch.tensor([1, 1, 0]), torch.tensor([2, 3, 2])
    got = selectively_contrastive_triplet_loss(sim, a, p, n, temperature=0.5, hard_weight=2.0)
    expected = torch.tensor(
        [
            math.log(1 + math.exp((0.2 - 0.8) / 0.5)),  # easy: NCA
            2.0 * 0.9,  # hard (0.9 > 0.8): λ·s_an
            math.log(1 + math.exp((-0.3 - 0.8) / 0.5)),
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)


def test_selectively_contrastive_hard_triplet_gradient_only_pushes_the_negative():
    emb = torch.tensor(
        [[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]], dtype=torch.float64, requires_grad=True
    )
    loss = SelectivelyContrastiveTripletLoss()(
        emb, indices_tuple=(torch.tensor([0]), torch.tensor([1]), torch.tensor([2]))
    )
    sim = CosineSimilarity()(emb.detach(), emb.detach())
    assert float(loss.detach()) == pytest.approx(float(sim[0, 2]))
    loss.backward()
    assert torch.equal(emb.grad[1], torch.zeros(2, dtype=torch.float64))  # the positive


def test_selectively_contrastive_functional_gradcheck():
    mat = CosineSimilarity()(data(), data(seed=1)).detach().requires_grad_(True)
    a, p, n = get_all_triplets_indices(LABELS)
    gradcheck(lambda m: selectively_contrastive_triplet_loss(m, a, p, n, 0.3, 0.7), (mat,))


@pytest.mark.parametrize(("temperature", "hard_weight"), [(0.1, 1.0), (0.5, 0.3), (1.0, 0.0)])
def test_selectively_contrastive_loss_matches_naive_loop(temperature, hard_weight):
    emb = data()
    loss_fn = SelectivelyContrastiveTripletLoss(
        temperature, hard_weight, reducer=DoNothingReducer()
    )
    out = loss_fn(emb, LABELS)["loss"]
    triplets = get_all_triplets_indices(LABELS)
    assert all(torch.equal(x, y) for x, y in zip(out["indices"], triplets, strict=True))
    sim = CosineSimilarity()(emb, emb)
    expected = naive(sim, triplets, temperature, hard_weight)
    a, p, n = triplets
    hard = sim[a, n] > sim[a, p]
    assert hard.any() and not hard.all()  # both branches are tested
    torch.testing.assert_close(out["losses"], expected, rtol=1e-10, atol=1e-12)
    assert_close(
        SelectivelyContrastiveTripletLoss(temperature, hard_weight)(emb, LABELS), expected.mean()
    )


def test_selectively_contrastive_loss_with_ref_emb_and_a_miner():
    emb, ref = data(5), data(6, seed=3)
    labels, ref_labels = torch.tensor([0, 1, 2, 0, 1]), torch.tensor([0, 0, 1, 2, 2, 1])
    loss_fn = SelectivelyContrastiveTripletLoss(reducer=DoNothingReducer())
    got = loss_fn(emb, labels, ref_emb=ref, ref_labels=ref_labels)["loss"]["losses"]
    triplets = get_all_triplets_indices(labels, ref_labels)
    torch.testing.assert_close(got, naive(CosineSimilarity()(emb, ref), triplets, 0.1, 1.0))
    emb = data()
    mined = BatchHardMiner()(emb, LABELS)
    got = loss_fn(emb, LABELS, mined)["loss"]["losses"]
    torch.testing.assert_close(got, naive(CosineSimilarity()(emb, emb), mined, 0.1, 1.0))


def test_selectively_contrastive_loss_with_a_distance_negates_it():
    emb = data()
    loss_fn = SelectivelyContrastiveTripletLoss(distance=LpDistance(), reducer=DoNothingReducer())
    got = loss_fn(emb, LABELS)["loss"]["losses"]
    expected = naive(-LpDistance()(emb, emb), get_all_triplets_indices(LABELS), 0.1, 1.0)
    torch.testing.assert_close(got, expected)


def test_selectively_contrastive_loss_counts_hard_triplets_when_collecting_stats():
    emb = data()
    loss_fn = SelectivelyContrastiveTripletLoss(collect_stats=True)
    loss_fn(emb, LABELS)
    sim = CosineSimilarity()(emb, emb)
    a, p, n = get_all_triplets_indices(LABELS)
    assert int(loss_fn.num_hard_triplets) == int((sim[a, n] > sim[a, p]).sum())


def test_selectively_contrastive_loss_without_triplets_is_zero_on_the_graph():
    emb = torch.randn(4, 3, requires_grad=True)
    for labels in (torch.arange(4), torch.zeros(4, dtype=torch.long)):
        loss = SelectivelyContrastiveTripletLoss()(emb, labels)
        assert loss.item() == 0 and loss.requires_grad
    loss.backward()
    assert torch.equal(emb.grad, torch.zeros_like(emb))


def test_selectively_contrastive_loss_nan_embedding_gives_nan():
    emb = data()
    emb[7, 1] = math.inf
    assert SelectivelyContrastiveTripletLoss()(emb, LABELS).isnan()


def test_selectively_contrastive_loss_dtypes(dtype, device):
    emb = data()
    expected = SelectivelyContrastiveTripletLoss()(emb, LABELS)
    x = emb.to(device=device, dtype=dtype).requires_grad_(True)
    loss = SelectivelyContrastiveTripletLoss()(x, LABELS.to(device))
    assert loss.dtype == dtype
    assert_close(loss, expected)
    loss.backward()
    assert torch.isfinite(x.grad).all()


def test_selectively_contrastive_loss_rejects_bad_arguments():
    with pytest.raises(ValueError, match="temperature"):
        SelectivelyContrastiveTripletLoss(temperature=0)
    with pytest.raises(ValueError, match="hard_weight"):
        SelectivelyContrastiveTripletLoss(hard_weight=-1)
    with pytest.raises(TypeError, match="hard_weight"):
        SelectivelyContrastiveTripletLoss(hard_weight="1")
    with pytest.raises(ValueError, match="labels"):
        SelectivelyContrastiveTripletLoss()(data())
    with pytest.raises(ValueError, match="indices_tuple"):
        SelectivelyContrastiveTripletLoss()(
            data(), LABELS, (torch.tensor([0]),) * 2 + (torch.tensor([8]),)
        )
