"""CrossBatchMemory with label sets (``label_shape=(C,)``, MultiSupConLoss) and with the losses
pml added (DecoupledContrastiveLoss, SelectivelyContrastiveTripletLoss)."""

from __future__ import annotations

import math

import pytest
import torch

from pml.distances import CosineSimilarity
from pml.losses import (
    ContrastiveLoss,
    CrossBatchMemory,
    DecoupledContrastiveLoss,
    MultiSupConLoss,
    SelectivelyContrastiveTripletLoss,
)
from pml.losses.functional import label_set_jaccard
from pml.miners import MultiSimilarityMiner


def batch(n: int, seed: int, c: int = 4, d: int = 3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.rand(n, c, generator=g) < 0.5


def naive_memory_rows(emb, sets, mem, mem_sets, own_slots, temperature, threshold):
    """Each query against the memory, its own slot left out of the positives and the softmax."""
    sim = CosineSimilarity()(emb, mem)
    jac = label_set_jaccard(sets, mem_sets, dtype=torch.float64)
    out = []
    for i in range(len(emb)):
        others = [j for j in range(len(mem)) if j != own_slots[i]]
        pos = [j for j in others if jac[i, j] >= threshold]
        if not pos:
            out.append(0.0)
            continue
        den = math.log(sum(math.exp(float(sim[i, a]) / temperature) for a in others))
        total = sum(float(jac[i, p]) * (float(sim[i, p]) / temperature - den) for p in pos)
        out.append(-total / len(pos))
    return torch.tensor(out, dtype=torch.float64)


def test_cross_batch_memory_with_label_sets_matches_naive_loop():
    cbm = CrossBatchMemory(MultiSupConLoss(0.5, 0.3), 3, memory_size=16, label_shape=(4,))
    assert cbm.label_memory.shape == (16, 4) and cbm.label_memory.dtype == torch.bool
    e1, s1 = batch(5, 0)
    e2, s2 = batch(6, 1)
    cbm(e1, s1.long())  # 0/1 numbers are stored as label sets
    got = cbm(e2, s2)
    mem, mem_sets = torch.cat([e1, e2]), torch.cat([s1, s2])
    rows = naive_memory_rows(e2, s2, mem, mem_sets, list(range(5, 11)), 0.5, 0.3)
    torch.testing.assert_close(got, rows[rows > 0].mean())
    assert torch.equal(cbm.label_memory[:11], mem_sets)
    assert cbm.label_memory.dtype == torch.bool
    assert cbm.queue_idx == 11


def test_cross_batch_memory_with_label_sets_state_dict_round_trip():
    cbm = CrossBatchMemory(MultiSupConLoss(), 3, memory_size=8, label_shape=(4,))
    e, s = batch(5, 2)
    cbm(e.float(), s)
    state = cbm.state_dict()
    other = CrossBatchMemory(MultiSupConLoss(), 3, memory_size=8, label_shape=(4,))
    other.load_state_dict(state)
    assert torch.equal(other.label_memory, cbm.label_memory) and other.queue_idx == 5
    del state["queue_state"]  # a saved memory without its position: inferred from the rows
    third = CrossBatchMemory(MultiSupConLoss(), 3, memory_size=8, label_shape=(4,))
    third.load_state_dict(state)
    assert third.queue_idx == 5 and not third.has_been_filled


def test_cross_batch_memory_with_label_sets_and_a_miner():
    class SetMiner(MultiSimilarityMiner):  # a user miner that understands label sets
        def forward(self, embeddings, labels, ref_emb=None, ref_labels=None):
            return MultiSupConLoss().label_set_pairs(labels, ref_labels)

    miner = SetMiner()
    cbm = CrossBatchMemory(MultiSupConLoss(), 3, memory_size=8, miner=miner, label_shape=(4,))
    plain = CrossBatchMemory(MultiSupConLoss(), 3, memory_size=8, label_shape=(4,))
    e, s = batch(5, 3)
    torch.testing.assert_close(cbm(e, s), plain(e, s))


def test_cross_batch_memory_with_label_sets_rejects_bad_input():
    with pytest.raises(ValueError, match="label_shape"):
        CrossBatchMemory(ContrastiveLoss(), 3, label_shape=(4,))  # takes no label sets
    with pytest.raises(ValueError, match="label_shape"):
        CrossBatchMemory(ContrastiveLoss(), 3, miner=MultiSimilarityMiner(), label_shape=(4,))
    with pytest.raises(ValueError, match="label_shape"):
        CrossBatchMemory(MultiSupConLoss(), 3, label_shape=(2, 2))
    with pytest.raises(ValueError, match="label_shape"):
        CrossBatchMemory(MultiSupConLoss(), 3, label_shape=(0,))
    with pytest.raises(TypeError, match="label_shape"):
        CrossBatchMemory(MultiSupConLoss(), 3, label_shape=4)
    cbm = CrossBatchMemory(MultiSupConLoss(), 3, memory_size=8, label_shape=(4,))
    e, s = batch(5, 4)
    with pytest.raises(ValueError, match="labels"):
        cbm(e.float(), s[:, :3])
    with pytest.raises(ValueError, match="labels"):
        cbm(e.float(), torch.arange(5))
    with pytest.raises(ValueError, match="only 0 and 1"):
        cbm(e.float(), s.long() * 3)
    assert cbm.queue_idx == 0  # nothing was enqueued
    with pytest.raises(ValueError, match="labels"):  # a one-label memory with label sets
        CrossBatchMemory(DecoupledContrastiveLoss(), 3)(e.float(), s)


@pytest.mark.parametrize("loss", [DecoupledContrastiveLoss(), SelectivelyContrastiveTripletLoss()])
def test_cross_batch_memory_accepts_the_added_pair_and_triplet_losses(loss):
    assert type(loss).__name__ not in CrossBatchMemory.supported_losses()  # the reference's list
    cbm = CrossBatchMemory(loss, 3, memory_size=12)
    labels = torch.tensor([0, 0, 1, 1, 2])
    e1, _ = batch(5, 5)
    e2, _ = batch(5, 6)
    cbm(e1, labels)
    got = cbm(e2, labels)
    mem, mem_labels = torch.cat([e1, e2]), torch.cat([labels, labels])
    # the same pairs as the loss against the memory with each query's own slot removed
    a1, p = torch.where(labels.unsqueeze(1) == mem_labels.unsqueeze(0))
    keep = p != a1 + 5
    a2, n = torch.where(labels.unsqueeze(1) != mem_labels.unsqueeze(0))
    expected = loss(e2, labels, (a1[keep], p[keep], a2, n), mem, mem_labels)
    torch.testing.assert_close(got, expected)
