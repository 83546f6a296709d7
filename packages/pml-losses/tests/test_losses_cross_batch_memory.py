"""CrossBatchMemory: queue state, pairs against the memory, self-comparison removal, errors.

Values are checked against a naive simulation (Python lists for the queue, one pair at a
time) using small losses defined here, so the wrapper is tested independently of the real
losses (their vector cases cover CrossBatchMemory with ContrastiveLoss/NTXent/Triplet).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import pml.losses
from pml.core.indices import convert_to_triplets
from pml.core.testing import assert_close
from pml.core.validation import InvalidArgumentError, UnsupportedLossError
from pml.losses import BaseMetricLossFunction, CrossBatchMemory, GenericPairLoss
from pml.losses._base import loss_entry, zero_loss_entry
from pml.reducers import DoNothingReducer

MARGIN = 1.0


class _PairLoss(GenericPairLoss):
    """pos: d(a, p); neg: relu(1 - d(a, n)); each averaged (MeanReducer). Records its inputs."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(mat_based_loss=False, **kwargs)
        self.seen: dict[str, Any] = {}

    def _sub_loss_names(self) -> list[str]:
        return ["pos_loss", "neg_loss"]

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):  # type: ignore[no-untyped-def]
        self.seen = {
            "embeddings": embeddings,
            "labels": labels,
            "indices_tuple": indices_tuple,
            "ref_emb": ref_emb,
            "ref_labels": ref_labels,
        }
        return super().compute_loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)

    def _compute_loss(self, pos_pair, neg_pair, indices_tuple):  # type: ignore[no-untyped-def]
        a1, p, a2, n = indices_tuple
        pos = loss_entry(pos_pair, (a1, p), "pos_pair") if len(a1) else zero_loss_entry()
        neg = (
            loss_entry(torch.relu(MARGIN - neg_pair), (a2, n), "neg_pair")
            if len(a2)
            else zero_loss_entry()
        )
        return {"pos_loss": pos, "neg_loss": neg}


class _TripletLoss(BaseMetricLossFunction):
    """relu(d_ap - d_an + 0.5) per triplet, averaged."""

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):  # type: ignore[no-untyped-def]
        self.seen = {"indices_tuple": indices_tuple}
        a, p, n = convert_to_triplets(indices_tuple, labels, ref_labels, "all")
        if len(a) == 0:
            return self.zero_losses()
        mat = self.distance(embeddings, ref_emb)
        return {"loss": loss_entry(torch.relu(mat[a, p] - mat[a, n] + 0.5), (a, p, n), "triplet")}


def contrastive(**kwargs: Any) -> _PairLoss:
    """A _PairLoss whose class is *named* ContrastiveLoss (support is checked by name)."""
    return type("ContrastiveLoss", (_PairLoss,), {})(**kwargs)


def triplet(**kwargs: Any) -> _TripletLoss:
    return type("TripletMarginLoss", (_TripletLoss,), {})(**kwargs)


class _AllTripletsMiner(torch.nn.Module):
    """Every (a, p, n) between queries and the reference set, recording its inputs."""

    def forward(self, embeddings, labels, ref_emb, ref_labels):  # type: ignore[no-untyped-def]
        self.seen = (embeddings, labels, ref_emb, ref_labels)
        return convert_to_triplets(None, labels, ref_labels, "all")


def _dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(F.normalize(x, dim=0) - F.normalize(y, dim=0))


class NaiveMemory:
    """The spec's queue, one Python list entry per slot, and the pair loss one pair at a time."""

    def __init__(self, memory_size: int) -> None:
        self.size = memory_size
        self.slots: list[tuple[torch.Tensor, int] | None] = [None] * memory_size
        self.queue_idx, self.filled = 0, False

    def enqueue(self, emb: torch.Tensor, labels: torch.Tensor) -> list[int]:
        own = [(self.queue_idx + i) % self.size for i in range(len(emb))]
        for i, s in enumerate(own):
            self.slots[s] = (emb[i].detach(), int(labels[i]))
        self.filled = self.filled or self.queue_idx + len(emb) >= self.size
        self.queue_idx = (self.queue_idx + len(emb)) % self.size
        return own

    def reference(self) -> list[int]:
        return list(range(self.size if self.filled else self.queue_idx))

    def pair_loss(self, queries, labels, own_slots) -> torch.Tensor:  # type: ignore[no-untyped-def]
        pos, neg = [], []
        for i in range(len(queries)):
            for j in self.reference():
                e, lab = self.slots[j]  # type: ignore[misc]
                d = _dist(queries[i], e)
                if lab == int(labels[i]):
                    if own_slots is None or own_slots[i] != j:
                        pos.append(d)
                else:
                    neg.append(torch.relu(MARGIN - d))
        total = queries.sum() * 0
        if pos:
            total = total + torch.stack(pos).mean()
        if neg:
            total = total + torch.stack(neg).mean()
        return total


def _batch(
    seed: int, n: int = 6, d: int = 4, classes: int = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(n, d, generator=g, dtype=torch.float64)
    labels = torch.randint(0, classes, (n,), generator=g)
    return emb, labels


def test_matches_naive_queue_over_calls_with_wrap_around() -> None:
    cbm = CrossBatchMemory(contrastive(), embedding_size=4, memory_size=10).double()
    naive = NaiveMemory(10)
    for call in range(5):  # 6 rows a call into 10 slots: wraps on calls 2 and 4
        emb, labels = _batch(call)
        emb.requires_grad_()
        got = cbm(emb, labels)
        (g_got,) = torch.autograd.grad(got, emb)
        own = naive.enqueue(emb, labels)
        exp = naive.pair_loss(emb, labels, own)
        (g_exp,) = torch.autograd.grad(exp, emb)
        torch.testing.assert_close(got, exp, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(g_got, g_exp, rtol=1e-7, atol=1e-10)
        assert cbm.queue_idx == naive.queue_idx
        assert cbm.has_been_filled == naive.filled


def test_queue_state_and_state_dict() -> None:
    cbm = CrossBatchMemory(contrastive(), embedding_size=4, memory_size=8)
    assert cbm.embedding_memory.shape == (8, 4) and cbm.embedding_memory.dtype == torch.float32
    assert cbm.label_memory.shape == (8,) and cbm.label_memory.dtype == torch.int64
    assert (cbm.queue_idx, cbm.has_been_filled) == (0, False)
    assert set(cbm.state_dict()) == {"embedding_memory", "label_memory", "queue_state"}
    emb, labels = _batch(0, n=5)
    cbm(emb.float(), labels)
    assert (cbm.queue_idx, cbm.has_been_filled) == (5, False)
    torch.testing.assert_close(cbm.embedding_memory[:5], emb.float())
    assert cbm.label_memory[:5].tolist() == labels.tolist()
    assert cbm.embedding_memory[5:].abs().sum() == 0
    cbm(emb.float()[:3], labels[:3])  # exactly fills the memory
    assert (cbm.queue_idx, cbm.has_been_filled) == (0, True)
    state = cbm.state_dict()
    other = CrossBatchMemory(contrastive(), embedding_size=4, memory_size=8)
    other.load_state_dict(state)
    torch.testing.assert_close(other.embedding_memory, cbm.embedding_memory)
    cbm.reset_queue()
    assert (cbm.queue_idx, cbm.has_been_filled) == (0, False)
    assert cbm.embedding_memory.abs().sum() == 0 and cbm.label_memory.abs().sum() == 0
    assert cbm.embedding_memory.dtype == torch.float32


def test_memory_holds_detached_copies_and_only_queries_get_gradients() -> None:
    cbm = CrossBatchMemory(contrastive(), embedding_size=4, memory_size=20).double()
    first, l1 = _batch(0)
    first.requires_grad_()
    cbm(first, l1).backward()
    assert not cbm.embedding_memory.requires_grad
    second, l2 = _batch(1)
    second.requires_grad_()
    first.grad = None
    cbm(second, l2).backward()
    assert first.grad is None  # the memory copy of the first batch carries no graph
    assert second.grad is not None and torch.isfinite(second.grad).all()


def test_two_forwards_then_one_backward() -> None:
    # fix: memory writes are out of place, so the first graph is still valid.
    cbm = CrossBatchMemory(contrastive(), embedding_size=4, memory_size=8).double()
    a, la = _batch(0)
    b, lb = _batch(1)
    a.requires_grad_(), b.requires_grad_()
    (cbm(a, la) + cbm(b, lb)).backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


def test_internal_pairs_skip_own_slot_only() -> None:
    loss = contrastive()
    cbm = CrossBatchMemory(loss, embedding_size=4, memory_size=10).double()
    labels = torch.tensor([0, 0, 1, 1, 0, 1])
    cbm(_batch(0)[0], labels)
    cbm(_batch(1)[0], labels)  # slots 6..9, 0, 1 (wraps)
    a1, p, a2, n = loss.seen["indices_tuple"]
    own = [6, 7, 8, 9, 0, 1]
    mem_labels = loss.seen["ref_labels"].tolist()
    exp_pos = [
        (i, j) for i in range(6) for j in range(10) if mem_labels[j] == labels[i] and j != own[i]
    ]
    exp_neg = [(i, j) for i in range(6) for j in range(10) if mem_labels[j] != labels[i]]
    assert list(zip(a1.tolist(), p.tolist())) == exp_pos
    assert list(zip(a2.tolist(), n.tolist())) == exp_neg
    assert loss.seen["ref_labels"] is not loss.seen["labels"]  # a real reference set
    assert loss.seen["ref_emb"].shape == (10, 4)


def test_batch_of_one_self_pair_removed() -> None:
    # fix: the reference keeps the self pair for a batch of one (docs/compatibility.md).
    loss = contrastive()
    cbm = CrossBatchMemory(loss, embedding_size=4, memory_size=5).double()
    emb, _ = _batch(0, n=4)
    cbm(emb[:3], torch.tensor([0, 1, 0]))
    cbm(emb[3:], torch.tensor([0]))  # lands in slot 3; its own copy must not be a positive
    a1, p, _, _ = loss.seen["indices_tuple"]
    assert list(zip(a1.tolist(), p.tolist())) == [(0, 0), (0, 2)]


def test_miner_gets_queries_and_memory_and_triplets_lose_self_slot() -> None:
    miner = _AllTripletsMiner()
    loss = triplet()
    cbm = CrossBatchMemory(loss, embedding_size=4, memory_size=12, miner=miner).double()
    emb, labels = _batch(0, n=6, classes=2)
    cbm(emb, labels)
    q, ql, ref, rl = miner.seen
    assert q is emb and ql is labels
    torch.testing.assert_close(ref, emb)
    assert rl.tolist() == labels.tolist() and rl is not ql
    a, p, n = loss.seen["indices_tuple"]
    assert len(a) > 0
    assert not bool((a == p).any())  # slot i holds query i: self triplets removed
    all_a, all_p, _ = convert_to_triplets(None, labels, labels.clone(), "all")
    assert int((all_a == all_p).sum()) > 0 and len(a) == len(all_a) - int((all_a == all_p).sum())


def test_user_indices_tuple_appended_after_internal_and_converted() -> None:
    loss = contrastive()
    cbm = CrossBatchMemory(loss, embedding_size=4, memory_size=10).double()
    emb, labels = _batch(0)
    user = (torch.tensor([0, 1]), torch.tensor([3, 4]), torch.tensor([5, 2]))  # triplets
    cbm(emb, labels, indices_tuple=user)
    a1, p, a2, n = loss.seen["indices_tuple"]
    assert a1[-2:].tolist() == [0, 1] and p[-2:].tolist() == [3, 4]
    assert a2[-2:].tolist() == [0, 1] and n[-2:].tolist() == [5, 2]

    tloss = triplet()
    cbm = CrossBatchMemory(tloss, embedding_size=4, memory_size=10, miner=_AllTripletsMiner())
    cbm = cbm.double()
    pairs = (
        torch.tensor([0, 0]),
        torch.tensor([1, 2]),
        torch.tensor([0, 3, 0]),
        torch.tensor([4, 1, 5]),
    )
    cbm(emb, labels, indices_tuple=pairs)
    a, p, n = tloss.seen["indices_tuple"]
    # pairs -> triplets per anchor: positive order major, negative order minor
    assert [a[-4:].tolist(), p[-4:].tolist(), n[-4:].tolist()] == [
        [0, 0, 0, 0],
        [1, 1, 2, 2],
        [4, 5, 4, 5],
    ]


def test_enqueue_mask_matches_naive_and_keeps_self_pairs() -> None:
    cbm = CrossBatchMemory(contrastive(), embedding_size=4, memory_size=7).double()
    naive = NaiveMemory(7)
    for call in range(3):
        emb, labels = _batch(call, n=8)
        mask = torch.tensor([True, False] * 4)
        emb.requires_grad_()
        got = cbm(emb, labels, enqueue_mask=mask)
        (g_got,) = torch.autograd.grad(got, emb)
        naive.enqueue(emb[mask], labels[mask])
        exp = naive.pair_loss(emb[~mask], labels[~mask], None)
        (g_exp,) = torch.autograd.grad(exp, emb)
        torch.testing.assert_close(got, exp, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(g_got, g_exp, rtol=1e-7, atol=1e-10)
        assert g_got[mask].abs().sum() == 0  # enqueued-only rows get no gradient
        assert cbm.queue_idx == naive.queue_idx and cbm.has_been_filled == naive.filled


def test_enqueue_mask_more_rows_than_memory_keeps_the_last_ones() -> None:
    # fix: the reference writes duplicate slots in an unspecified order.
    cbm = CrossBatchMemory(contrastive(), embedding_size=4, memory_size=3).double()
    emb, labels = _batch(0, n=6)
    mask = torch.tensor([True, True, True, True, True, False])
    cbm(emb, labels, enqueue_mask=mask)
    # rows 0..4 written to slots 0,1,2,0,1 in order: slots hold rows 3, 4, 2
    torch.testing.assert_close(cbm.embedding_memory, emb[[3, 4, 2]])
    assert (cbm.queue_idx, cbm.has_been_filled) == (2, True)


def test_enqueue_nothing_does_not_mark_memory_filled() -> None:
    # fix: the reference marks the memory filled and compares with never-written zero slots.
    loss = contrastive()
    cbm = CrossBatchMemory(loss, embedding_size=4, memory_size=5).double()
    emb, labels = _batch(0, n=4)
    emb.requires_grad_()
    out = cbm(emb, labels, enqueue_mask=torch.zeros(4, dtype=torch.bool))
    assert (cbm.queue_idx, cbm.has_been_filled) == (0, False)
    assert loss.seen["ref_emb"].shape == (0, 4)
    assert out.item() == 0 and out.requires_grad  # nothing to compare with: graph-connected zero


def test_unreduced_output_with_do_nothing_reducer() -> None:
    cbm = CrossBatchMemory(contrastive(reducer=DoNothingReducer()), embedding_size=4)
    out = cbm(*_batch(0))
    assert set(out) == {"pos_loss", "neg_loss"}


def test_dtype_and_device(dtype: torch.dtype, device: torch.device) -> None:
    emb, labels = _batch(0, n=8)
    cbm = CrossBatchMemory(contrastive(), embedding_size=4, memory_size=16)
    ref = CrossBatchMemory(contrastive(), embedding_size=4, memory_size=16).double()
    for call in range(2):
        emb, labels = _batch(call, n=8)
        x = emb.to(device, dtype).requires_grad_()
        out = cbm(x, labels.to(device))
        out.backward()
        assert out.dtype == dtype and out.device.type == device.type
        # the float32 memory is never narrowed: half-precision batches are computed in float32
        mem_dtype = torch.promote_types(torch.float32, dtype)
        assert cbm.embedding_memory.dtype == mem_dtype and cbm.embedding_memory.device == x.device
        assert x.grad is not None and x.grad.dtype == dtype
        assert_close(out, ref(emb.to(dtype).double(), labels).to(dtype))


def test_records_and_collect_stats() -> None:
    cbm = CrossBatchMemory(contrastive(), embedding_size=4, memory_size=8, collect_stats=True)
    assert cbm.collect_stats is True
    assert {"embedding_size", "memory_size", "queue_idx"} <= set(cbm._record_these)
    cbm(*_batch(0))
    assert cbm.queue_idx == 6


def test_supported_losses_by_class_name() -> None:
    names = CrossBatchMemory.supported_losses()
    assert "MarginLoss" in names and "NCALoss" in names and len(names) == 14
    with pytest.raises(UnsupportedLossError, match="CrossBatchMemory does not support"):
        CrossBatchMemory(_PairLoss(), embedding_size=4)
    # a subclass of a supported loss with another class name is rejected too (compat)
    sub = type("MyContrastive", (type(contrastive()),), {})()
    with pytest.raises(Exception, match="MyContrastive"):
        CrossBatchMemory(sub, embedding_size=4)


@pytest.mark.parametrize("name", sorted(CrossBatchMemory.supported_losses()))
def test_every_exported_supported_loss_is_accepted(name: str) -> None:
    if not hasattr(pml.losses, name):
        pytest.skip(f"{name} not in pml.losses yet")
    cls = getattr(pml.losses, name)
    cbm = CrossBatchMemory(cls(), embedding_size=4, memory_size=16)
    emb, labels = _batch(0, n=8, classes=2)
    out = cbm(emb.float().requires_grad_(), labels)
    assert out.ndim == 0 and torch.isfinite(out)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="memory_size"):
        CrossBatchMemory(contrastive(), embedding_size=4, memory_size=0)
    with pytest.raises(ValueError, match="embedding_size"):
        CrossBatchMemory(contrastive(), embedding_size=0)
    with pytest.raises(TypeError, match="memory_size"):
        CrossBatchMemory(contrastive(), embedding_size=4, memory_size=2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        CrossBatchMemory(contrastive(), embedding_size=4, margin=0.1)  # type: ignore[call-arg]
    cbm = CrossBatchMemory(contrastive(), embedding_size=4, memory_size=5)
    emb, labels = _batch(0, n=6)
    emb = emb.float()
    with pytest.raises(InvalidArgumentError, match="memory_size"):
        cbm(emb, labels)  # 6 rows > 5 slots
    with pytest.raises(ValueError, match="embedding_size"):
        cbm(emb[:4, :3], labels[:4])
    with pytest.raises(ValueError, match="labels"):
        cbm(emb[:4], None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="labels"):
        cbm(emb[:4], labels[:3])
    mask = torch.ones(4, dtype=torch.bool)
    with pytest.raises(ValueError, match="enqueue_mask"):
        cbm(
            emb[:4],
            labels[:4],
            indices_tuple=(labels[:1], labels[:1], labels[:1]),
            enqueue_mask=mask,
        )
    with pytest.raises(AssertionError, match="enqueue_mask"):
        cbm(emb[:4], labels[:4], enqueue_mask=mask[:3])
    with pytest.raises(TypeError, match="enqueue_mask"):
        cbm(emb[:4], labels[:4], enqueue_mask=mask.long())
    with pytest.raises(TypeError, match="indices_tuple"):
        cbm(emb[:4], labels[:4], indices_tuple=(labels[:1], labels[:1]))  # type: ignore[arg-type]
    assert cbm.queue_idx == 0  # nothing was enqueued by the rejected calls


def test_nan_embeddings_give_nan() -> None:
    cbm = CrossBatchMemory(contrastive(), embedding_size=4, memory_size=8)
    emb, labels = _batch(0)
    emb = emb.float()
    emb[0, 0] = float("nan")
    assert torch.isnan(cbm(emb, labels))


# ----------------------------------------------------------------------------- issue 9 regressions


def _state(cbm: CrossBatchMemory) -> tuple[Any, ...]:
    return (
        cbm.queue_idx,
        cbm.has_been_filled,
        cbm.embedding_memory.clone(),
        cbm.label_memory.clone(),
    )


def _assert_same_state(got: tuple[Any, ...], exp: tuple[Any, ...]) -> None:
    assert got[:2] == exp[:2]
    torch.testing.assert_close(got[2], exp[2], rtol=0, atol=0)
    assert got[3].tolist() == exp[3].tolist()


@pytest.mark.parametrize("position", [0, 1, 2])
def test_negative_index_in_indices_tuple_is_rejected(position: int) -> None:
    # fix: index -1 silently meant the last query / the last memory slot.
    cbm = CrossBatchMemory(contrastive(), embedding_size=4, memory_size=10).double()
    emb, labels = _batch(0)
    triplet_ = [torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5])]
    triplet_[position] = torch.tensor([0, -1])
    before = _state(cbm)
    with pytest.raises(ValueError, match="indices_tuple"):
        cbm(emb, labels, indices_tuple=tuple(triplet_))
    _assert_same_state(_state(cbm), before)


def test_index_past_the_reference_set_in_indices_tuple_is_rejected() -> None:
    # fix: p/n indices >= the reference-set size raised an IndexError inside the loss (after
    # the batch had been enqueued); anchors >= the batch size likewise.
    cbm = CrossBatchMemory(contrastive(), embedding_size=4, memory_size=10).double()
    emb, labels = _batch(0)  # 6 rows: the reference set after enqueueing has 6 slots
    z, last = torch.tensor([0]), torch.tensor([5])
    cbm(emb, labels, indices_tuple=(last, last, last))  # the largest valid indices
    cbm.reset_queue()
    bad = [
        (torch.tensor([6]), z, z),  # anchor == N
        (z, torch.tensor([6]), z),  # positive == reference size
        (z, z, torch.tensor([6])),  # negative == reference size
        (z, z, torch.tensor([0, 1]), torch.tensor([1, 6])),  # pairs
        (z, z, torch.tensor([7]), z),  # pair anchor
    ]
    for t in bad:
        with pytest.raises(ValueError, match="indices_tuple"):
            cbm(emb, labels, indices_tuple=t)
        assert (cbm.queue_idx, cbm.has_been_filled) == (0, False)
    # once the memory is filled, the reference set is the whole memory
    cbm(emb, labels)
    cbm(emb[:4], labels[:4])  # 10 slots filled
    cbm(emb[:2], labels[:2], indices_tuple=(torch.tensor([1]), torch.tensor([9]), z))
    with pytest.raises(ValueError, match="indices_tuple"):
        cbm(emb[:2], labels[:2], indices_tuple=(z, torch.tensor([10]), z))


class _FailingMiner(torch.nn.Module):
    def forward(self, *args: Any) -> Any:
        raise RuntimeError("miner failed")


def test_failed_call_does_not_enqueue_the_batch() -> None:
    # fix: a call that raised after enqueueing left the batch in the memory and moved the queue.
    cbm = CrossBatchMemory(contrastive(), embedding_size=4, memory_size=10).double()
    emb, labels = _batch(0)
    cbm(emb, labels)
    before, before_idx = _state(cbm), cbm.curr_batch_idx.clone()
    cbm.miner = _FailingMiner()
    with pytest.raises(RuntimeError, match="miner failed"):
        cbm(_batch(1)[0], labels)
    _assert_same_state(_state(cbm), before)
    assert cbm.curr_batch_idx.tolist() == before_idx.tolist()
    with pytest.raises(ValueError, match="indices_tuple"):
        cbm(emb, labels, indices_tuple=(torch.tensor([6]),) * 3)
    _assert_same_state(_state(cbm), before)


@pytest.mark.parametrize("calls_before_save", [1, 2])
def test_state_dict_round_trips_the_queue_position(calls_before_save: int) -> None:
    # fix: queue_idx/has_been_filled were not saved, so a resumed run hid the restored memory
    # (1 call: 6 of 10 slots, not filled; 2 calls: wrapped, filled).
    run = CrossBatchMemory(contrastive(), embedding_size=4, memory_size=10).double()
    for call in range(calls_before_save):
        run(*_batch(call))
    state = run.state_dict()
    resumed = CrossBatchMemory(contrastive(), embedding_size=4, memory_size=10).double()
    resumed.load_state_dict(state)
    _assert_same_state(_state(resumed), _state(run))
    nxt = _batch(7)
    exp = run(*nxt)
    assert exp.item() > 0
    torch.testing.assert_close(resumed(*nxt), exp, rtol=0, atol=0)
    _assert_same_state(_state(resumed), _state(run))


def test_queue_state_is_in_the_state_dict() -> None:
    cbm = CrossBatchMemory(contrastive(), embedding_size=4, memory_size=8)
    assert set(cbm.state_dict()) == {"embedding_memory", "label_memory", "queue_state"}
    cbm(*_batch(0, n=5))
    assert cbm.state_dict()["queue_state"].tolist() == [5, 0]
    cbm(*_batch(1, n=5))
    assert cbm.state_dict()["queue_state"].tolist() == [2, 1]
    cbm.reset_queue()
    assert cbm.state_dict()["queue_state"].tolist() == [0, 0]


def test_reference_state_dict_without_queue_state_still_loads() -> None:
    # A state_dict of pytorch-metric-learning (or of pml before the fix) has only the two
    # memories; it loads with strict=True and the queue position is inferred from the memory.
    run = CrossBatchMemory(contrastive(), embedding_size=4, memory_size=10).double()
    run(*_batch(0))
    old = {k: v for k, v in run.state_dict().items() if k != "queue_state"}
    resumed = CrossBatchMemory(contrastive(), embedding_size=4, memory_size=10).double()
    resumed.load_state_dict(old)  # strict
    _assert_same_state(_state(resumed), _state(run))  # 6 slots written: exact

    run(*_batch(1))  # wraps: the memory is full, the position cannot be known
    old = {k: v for k, v in run.state_dict().items() if k != "queue_state"}
    resumed = CrossBatchMemory(contrastive(), embedding_size=4, memory_size=10).double()
    with pytest.warns(UserWarning, match="queue_state"):
        resumed.load_state_dict(old)
    assert (resumed.queue_idx, resumed.has_been_filled) == (0, True)
    nxt = _batch(7)
    assert resumed(*nxt).item() > 0  # the restored memory takes part

    empty = CrossBatchMemory(contrastive(), embedding_size=4, memory_size=10)
    fresh = CrossBatchMemory(contrastive(), embedding_size=4, memory_size=10)
    empty.load_state_dict({k: v for k, v in fresh.state_dict().items() if k != "queue_state"})
    assert (empty.queue_idx, empty.has_been_filled) == (0, False)


def test_state_dict_with_an_invalid_queue_state_is_rejected() -> None:
    cbm = CrossBatchMemory(contrastive(), embedding_size=4, memory_size=10)
    state = cbm.state_dict()
    state["queue_state"] = torch.tensor([10, 0])
    with pytest.raises(ValueError, match="queue_state"):
        cbm.load_state_dict(state)
    assert (cbm.queue_idx, cbm.has_been_filled) == (0, False)


def test_stored_labels_are_not_narrowed_to_a_later_batch_dtype() -> None:
    # fix: the label memory was cast to each batch's dtype: int64 label 300 became uint8 44
    # and collided with a real label 44.
    loss = contrastive()
    cbm = CrossBatchMemory(loss, embedding_size=4, memory_size=10).double()
    emb, _ = _batch(0, n=4)
    cbm(emb[:2], torch.tensor([300, 1]))
    cbm(emb[2:], torch.tensor([44, 2], dtype=torch.uint8))
    assert cbm.label_memory.dtype == torch.int64
    assert cbm.label_memory[:4].tolist() == [300, 1, 44, 2]
    a1, p, _, _ = loss.seen["indices_tuple"]
    assert len(a1) == 0  # query 44 has no positive: slot 0 holds 300, not 44


def test_float64_memory_is_not_narrowed_by_a_float16_batch() -> None:
    # fix: a float64 memory was cast to the dtype of a float16 batch, truncating stored rows.
    cbm = CrossBatchMemory(contrastive(), embedding_size=4, memory_size=10).double()
    first, l1 = _batch(0, n=4)
    cbm(first, l1)
    second, l2 = _batch(1, n=4)
    x = second.half().requires_grad_()
    out = cbm(x, l2)
    assert out.dtype == torch.float16
    assert cbm.embedding_memory.dtype == torch.float64
    torch.testing.assert_close(cbm.embedding_memory[:4], first, rtol=0, atol=0)
    torch.testing.assert_close(cbm.embedding_memory[4:8], x.detach().double(), rtol=0, atol=0)
    naive = NaiveMemory(10)
    naive.enqueue(first, l1)
    q = x.detach().double()
    exp = naive.pair_loss(q, l2, naive.enqueue(q, l2))
    torch.testing.assert_close(out, exp.half())  # computed in float64, returned in float16
    out.backward()
    assert x.grad is not None and x.grad.dtype == torch.float16


def test_float32_memory_computes_in_float32_for_bfloat16_batches() -> None:
    cbm = CrossBatchMemory(contrastive(), embedding_size=4, memory_size=10)
    emb, labels = _batch(0, n=4)
    x = emb.bfloat16()
    out = cbm(x, labels)
    assert out.dtype == torch.bfloat16 and cbm.embedding_memory.dtype == torch.float32
    ref = CrossBatchMemory(contrastive(), embedding_size=4, memory_size=10)
    torch.testing.assert_close(out, ref(x.float(), labels).bfloat16(), rtol=0, atol=0)


# ----------------------------------------------------------------------------- reference API


def test_add_to_memory_writes_slots_and_sets_curr_batch_idx() -> None:
    cbm = CrossBatchMemory(contrastive(), embedding_size=2, memory_size=5)
    assert cbm.curr_batch_idx is None
    e = torch.arange(8.0).view(4, 2)
    labels = torch.tensor([1, 2, 3, 4])
    assert cbm.add_to_memory(e, labels, 4) is None
    assert cbm.curr_batch_idx.tolist() == [0, 1, 2, 3]
    assert (cbm.queue_idx, cbm.has_been_filled) == (4, False)
    cbm.add_to_memory(e[:3] + 100, labels[:3] + 10, 3)
    assert cbm.curr_batch_idx.tolist() == [4, 0, 1]
    assert (cbm.queue_idx, cbm.has_been_filled) == (2, True)
    assert cbm.label_memory.tolist() == [12, 13, 3, 4, 11]
    torch.testing.assert_close(cbm.embedding_memory[[4, 0, 1]], e[:3] + 100)
    x = e.clone().requires_grad_()
    cbm.add_to_memory(x, labels, 4)
    assert not cbm.embedding_memory.requires_grad
    assert cbm.state_dict()["queue_state"].tolist() == [1, 1]


def test_add_to_memory_validates_its_arguments() -> None:
    cbm = CrossBatchMemory(contrastive(), embedding_size=2, memory_size=5)
    e, labels = torch.zeros(4, 2), torch.arange(4)
    with pytest.raises(ValueError, match="batch_size"):
        cbm.add_to_memory(e, labels, 3)
    with pytest.raises(ValueError, match="labels"):
        cbm.add_to_memory(e, labels[:3], 4)
    with pytest.raises(ValueError, match="embedding_size"):
        cbm.add_to_memory(torch.zeros(4, 3), labels, 4)
    assert (cbm.queue_idx, cbm.curr_batch_idx) == (0, None)


def test_add_to_memory_more_rows_than_slots_keeps_the_last_ones() -> None:
    cbm = CrossBatchMemory(contrastive(), embedding_size=2, memory_size=3)
    e = torch.arange(8.0).view(4, 2)
    cbm.add_to_memory(e, torch.tensor([1, 2, 3, 4]), 4)
    assert cbm.curr_batch_idx.tolist() == [0, 1, 2, 0]
    torch.testing.assert_close(cbm.embedding_memory, e[[3, 1, 2]])
    assert cbm.label_memory.tolist() == [4, 2, 3]
    assert (cbm.queue_idx, cbm.has_been_filled) == (1, True)


def test_create_indices_tuple_matches_forward() -> None:
    loss = contrastive()
    cbm = CrossBatchMemory(loss, embedding_size=4, memory_size=10).double()
    emb, labels = _batch(0)
    cbm(emb, labels)
    emb, labels = _batch(1)
    user = (torch.tensor([0, 1]), torch.tensor([3, 4]), torch.tensor([5, 2]))
    cbm(emb, labels, indices_tuple=user)
    seen = loss.seen["indices_tuple"]
    mem, mem_labels = cbm.embedding_memory, cbm.label_memory
    got = cbm.create_indices_tuple(emb, labels, mem, mem_labels, user, True)
    assert [t.tolist() for t in got] == [t.tolist() for t in seen]
    own = cbm.curr_batch_idx.tolist()
    assert own == [6, 7, 8, 9, 0, 1]
    no_removal = cbm.create_indices_tuple(emb, labels, mem, mem_labels, None, False)
    a1, p = no_removal[0].tolist(), no_removal[1].tolist()
    assert all((i, own[i]) in set(zip(a1, p)) for i in range(6))
    with pytest.raises(ValueError, match="indices_tuple"):
        cbm.create_indices_tuple(emb, labels, mem, mem_labels, (torch.tensor([-1]),) * 3, True)
    fresh = CrossBatchMemory(contrastive(), embedding_size=4, memory_size=10)
    with pytest.raises(ValueError, match="curr_batch_idx"):
        fresh.create_indices_tuple(emb, labels, mem, mem_labels, None, True)


def test_module_built_under_inference_mode_trains_outside_it() -> None:
    # the queue_state buffer is written in place: an inference tensor is replaced first
    with torch.inference_mode():
        cbm = CrossBatchMemory(contrastive(), embedding_size=4, memory_size=10).double()
        cbm(*_batch(0))
    emb, labels = _batch(1)
    out = cbm(emb.requires_grad_(), labels)
    out.backward()
    assert emb.grad is not None
    assert cbm.state_dict()["queue_state"].tolist() == [2, 1]


def test_numpy_and_tensor_integer_sizes_are_accepted() -> None:
    cbm = CrossBatchMemory(contrastive(), embedding_size=np.int64(4), memory_size=torch.tensor(8))
    assert (cbm.embedding_size, cbm.memory_size) == (4, 8)
    assert type(cbm.memory_size) is int
    with pytest.raises(TypeError, match="memory_size"):
        CrossBatchMemory(contrastive(), embedding_size=4, memory_size=True)
    with pytest.raises(TypeError, match="batch_size"):
        cbm.add_to_memory(torch.zeros(2, 4), torch.arange(2), 2.0)  # type: ignore[arg-type]
