"""Loss wrappers vs the reference: SelfSupervisedLoss, MultipleLosses, CrossBatchMemory,
DistributedLossWrapper (outside a process group; the gloo test is in pml-losses' tests).

Each test builds the same object in both libraries from the same arguments, feeds identical
inputs (stateful wrappers: the same sequence of calls) and compares values and gradients.
Miners inside the wrappers are the reference's own (a miner is just a callable), so these
tests exercise our wrappers, not our miners.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

ref_losses = pytest.importorskip("pytorch_metric_learning.losses")
ref_miners = pytest.importorskip("pytorch_metric_learning.miners")
ref_dist = pytest.importorskip("pytorch_metric_learning.utils.distributed")
import pml.losses as ours  # noqa: E402

pytestmark = pytest.mark.compat

RTOL, ATOL = 1e-9, 1e-12
GRAD_RTOL, GRAD_ATOL = 1e-7, 1e-10

SELF_SUPERVISED = [
    ("ContrastiveLoss", {}),
    ("ContrastiveLoss", {"pos_margin": 0.1, "neg_margin": 0.8}),
    ("NTXentLoss", {"temperature": 0.1}),
    ("TripletMarginLoss", {}),
    ("TripletMarginLoss", {"margin": 0.3, "smooth_loss": True}),
    ("MultiSimilarityLoss", {}),
    ("SupConLoss", {}),
    ("CircleLoss", {}),
    ("AngularLoss", {}),
    ("NCALoss", {}),
    ("TupletMarginLoss", {}),
    ("LiftedStructureLoss", {}),
    ("GeneralizedLiftedStructureLoss", {}),
    ("IntraPairVarianceLoss", {}),
    ("SignalToNoiseRatioContrastiveLoss", {}),
]

CROSS_BATCH = [
    ("ContrastiveLoss", {}),
    ("NTXentLoss", {"temperature": 0.1}),
    ("TripletMarginLoss", {"margin": 0.1}),
    ("MultiSimilarityLoss", {}),
    ("SupConLoss", {}),
    ("CircleLoss", {}),
    ("MarginLoss", {}),
    ("TupletMarginLoss", {}),
    ("LiftedStructureLoss", {}),
    ("GeneralizedLiftedStructureLoss", {}),
    ("IntraPairVarianceLoss", {}),
    ("SignalToNoiseRatioContrastiveLoss", {}),
    ("NCALoss", {}),
    ("AngularLoss", {}),
]


#: losses whose own numbers differ from the reference on purpose (docs/compatibility.md) in
#: the ways these wrappers use them; there the reference *wrapper* gets a copy of *our* loss
#: (same class name, so it accepts it), which still compares the wrapper logic.
DEVIATING = {
    "AngularLoss": "normalized negatives",
    "LiftedStructureLoss": "ref_emb negatives",
}


def both_losses(name: str, kwargs: dict) -> tuple[Any, Any]:
    if not hasattr(ours, name):
        pytest.skip(f"{name} not in pml.losses yet")
    other = ours if name in DEVIATING else ref_losses
    return getattr(ours, name)(**kwargs).double(), getattr(other, name)(**kwargs).double()


def data(n: int, seed: int, classes: int = 4, d: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    centers = torch.randn(classes, d, generator=g, dtype=torch.float64)
    return centers[labels] + 0.7 * torch.randn(n, d, generator=g, dtype=torch.float64), labels


def compare(fa, fb, *inputs: torch.Tensor, **kw: Any) -> None:  # type: ignore[no-untyped-def]
    """Call both with copies of ``inputs`` (grad enabled) and compare values and gradients."""
    xa = [x.clone().requires_grad_() for x in inputs]
    xb = [x.clone().requires_grad_() for x in inputs]
    va, vb = fa(*xa, **kw), fb(*xb, **kw)
    torch.testing.assert_close(va, vb, rtol=RTOL, atol=ATOL)
    ga = torch.autograd.grad(va, xa, allow_unused=True)
    gb = torch.autograd.grad(vb, xb, allow_unused=True)
    for a, b, x in zip(ga, gb, inputs):
        a = torch.zeros_like(x) if a is None else a
        b = torch.zeros_like(x) if b is None else b
        torch.testing.assert_close(a, b, rtol=GRAD_RTOL, atol=GRAD_ATOL)


# ----------------------------------------------------------------------------- SelfSupervisedLoss


@pytest.mark.parametrize(("name", "kwargs"), SELF_SUPERVISED)
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("n", [1, 2, 10])
def test_self_supervised(name: str, kwargs: dict, symmetric: bool, n: int) -> None:
    a, b = both_losses(name, kwargs)
    fa = ours.SelfSupervisedLoss(a, symmetric=symmetric)
    fb = ref_losses.SelfSupervisedLoss(b, symmetric=symmetric)
    emb, _ = data(n, seed=n)
    aug = emb + 0.2 * data(n, seed=n + 100)[0]
    compare(fa, fb, emb, aug)


def test_self_supervised_rejections_match() -> None:
    a, b = both_losses("ContrastiveLoss", {})
    assert (
        ours.SelfSupervisedLoss.supported_losses()
        == ref_losses.SelfSupervisedLoss.supported_losses()
    )
    for cls in (ours.SelfSupervisedLoss, ref_losses.SelfSupervisedLoss):
        with pytest.raises(Exception, match="SelfSupervisedLoss"):
            cls(torch.nn.MSELoss())


# ----------------------------------------------------------------------------- MultipleLosses


def test_multiple_losses_list_with_weights() -> None:
    names = [("TripletMarginLoss", {"margin": 0.1}), ("ContrastiveLoss", {}), ("NTXentLoss", {})]
    pairs = [both_losses(n, k) for n, k in names]
    fa = ours.MultipleLosses([p[0] for p in pairs], weights=[1.0, 0.5, 0.25])
    fb = ref_losses.MultipleLosses([p[1] for p in pairs], weights=[1.0, 0.5, 0.25])
    emb, labels = data(16, seed=1)
    compare(lambda e: fa(e, labels), lambda e: fb(e, labels), emb)


def test_multiple_losses_given_indices_tuple() -> None:
    pairs = [both_losses("ContrastiveLoss", {}), both_losses("MultiSimilarityLoss", {})]
    fa = ours.MultipleLosses([p[0] for p in pairs])
    fb = ref_losses.MultipleLosses([p[1] for p in pairs])
    emb, labels = data(16, seed=2)
    t = ref_miners.MultiSimilarityMiner(epsilon=0.2)(emb, labels)
    compare(lambda e: fa(e, labels, t), lambda e: fb(e, labels, t), emb)


def test_multiple_losses_dict_with_miners() -> None:
    la, lb = both_losses("TripletMarginLoss", {})
    ca, cb = both_losses("ContrastiveLoss", {})
    na, nb = both_losses("NTXentLoss", {})
    miner = ref_miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")
    pair_miner = ref_miners.PairMarginMiner(pos_margin=0.2, neg_margin=0.8)
    weights = {"triplet": 1.0, "contrastive": 0.3, "ntxent": 2.0}
    fa = ours.MultipleLosses(
        {"triplet": la, "contrastive": ca, "ntxent": na},
        miners={"triplet": miner, "contrastive": pair_miner},
        weights=weights,
    )
    fb = ref_losses.MultipleLosses(
        {"triplet": lb, "contrastive": cb, "ntxent": nb},
        miners={"triplet": miner, "contrastive": pair_miner},
        weights=weights,
    )
    emb, labels = data(20, seed=3)
    compare(lambda e: fa(e, labels), lambda e: fb(e, labels), emb)


def test_multiple_losses_list_miners_with_none() -> None:
    la, lb = both_losses("TripletMarginLoss", {})
    ca, cb = both_losses("ContrastiveLoss", {})
    miner = ref_miners.BatchHardMiner()
    fa = ours.MultipleLosses([la, ca], miners=[miner, None], weights=[0.5, 1.5])
    fb = ref_losses.MultipleLosses([lb, cb], miners=[miner, None], weights=[0.5, 1.5])
    emb, labels = data(16, seed=4)
    compare(lambda e: fa(e, labels), lambda e: fb(e, labels), emb)


# ----------------------------------------------------------------------------- CrossBatchMemory


def _cbm_pair(name: str, kwargs: dict, memory_size: int, miner: Any = None) -> tuple[Any, Any]:
    a, b = both_losses(name, kwargs)
    fa = ours.CrossBatchMemory(a, embedding_size=6, memory_size=memory_size, miner=miner)
    fb = ref_losses.CrossBatchMemory(b, embedding_size=6, memory_size=memory_size, miner=miner)
    return fa, fb


def _assert_same_state(fa: Any, fb: Any) -> None:
    assert (fa.queue_idx, fa.has_been_filled) == (fb.queue_idx, fb.has_been_filled)
    torch.testing.assert_close(fa.embedding_memory, fb.embedding_memory, rtol=0, atol=0)
    assert fa.label_memory.tolist() == fb.label_memory.tolist()


@pytest.mark.parametrize(("name", "kwargs"), CROSS_BATCH)
def test_cross_batch_memory_sequence(name: str, kwargs: dict) -> None:
    fa, fb = _cbm_pair(name, kwargs, memory_size=32)
    # 12 + 12 + 12 (wraps) + 12 + 5; the first batch has only distinct labels (no positives)
    sizes_classes = [(12, 100), (12, 4), (12, 4), (12, 1), (5, 4)]
    for call, (n, classes) in enumerate(sizes_classes):
        emb, labels = data(n, seed=10 + call, classes=min(classes, n))
        if classes == 100:
            labels = torch.arange(n)
        compare(
            lambda e, labels=labels, f=fa: f(e, labels),
            lambda e, labels=labels, f=fb: f(e, labels),
            emb,
        )
        _assert_same_state(fa, fb)


@pytest.mark.parametrize(("name", "kwargs"), [c for c in CROSS_BATCH if c[0] != "NCALoss"])
def test_cross_batch_memory_with_miner(name: str, kwargs: dict) -> None:
    for miner in (
        ref_miners.TripletMarginMiner(margin=0.3, type_of_triplets="all"),
        ref_miners.MultiSimilarityMiner(epsilon=0.3),
    ):
        fa, fb = _cbm_pair(name, kwargs, memory_size=20, miner=miner)
        for call in range(3):
            emb, labels = data(8, seed=20 + call, classes=3)
            compare(
                lambda e, labels=labels, f=fa: f(e, labels),
                lambda e, labels=labels, f=fb: f(e, labels),
                emb,
            )
            _assert_same_state(fa, fb)


@pytest.mark.parametrize(("name", "kwargs"), CROSS_BATCH)
def test_cross_batch_memory_enqueue_mask(name: str, kwargs: dict) -> None:
    fa, fb = _cbm_pair(name, kwargs, memory_size=10)
    for call in range(4):
        emb, labels = data(8, seed=30 + call, classes=3)
        mask = torch.arange(8) % 2 == (call % 2)
        compare(
            lambda e, labels=labels, mask=mask: fa(e, labels, enqueue_mask=mask),
            lambda e, labels=labels, mask=mask: fb(e, labels, enqueue_mask=mask),
            emb,
        )
        _assert_same_state(fa, fb)


@pytest.mark.parametrize("name", ["ContrastiveLoss", "TripletMarginLoss", "MultiSimilarityLoss"])
def test_cross_batch_memory_user_indices_tuple(name: str) -> None:
    fa, fb = _cbm_pair(name, {}, memory_size=24)
    for call in range(3):
        emb, labels = data(8, seed=40 + call, classes=3)
        # user tuples index the memory; a miner on (batch, memory) gives valid ones
        mem_emb = (
            torch.cat([fb.embedding_memory[: fb.queue_idx], emb])
            if not fb.has_been_filled
            else None
        )
        mem_labels = (
            torch.cat([fb.label_memory[: fb.queue_idx], labels]) if mem_emb is not None else None
        )
        if mem_emb is None:
            pytest.fail("memory should not be full in this test")
        miner = (
            ref_miners.TripletMarginMiner(margin=0.5) if call % 2 else ref_miners.PairMarginMiner()
        )
        t = miner(emb, labels, mem_emb, mem_labels)
        compare(
            lambda e, labels=labels, t=t: fa(e, labels, t),
            lambda e, labels=labels, t=t: fb(e, labels, t),
            emb,
        )
        _assert_same_state(fa, fb)


def test_cross_batch_memory_batch_of_one_differs_by_the_self_pair() -> None:
    # fix (docs/compatibility.md, pml-core): the reference keeps the self pair of a batch of one.
    fa, fb = _cbm_pair("ContrastiveLoss", {"pos_margin": 0.5}, memory_size=8)
    emb, labels = data(4, seed=50, classes=2)
    compare(lambda e: fa(e, labels), lambda e: fb(e, labels), emb)
    one, one_label = data(1, seed=51)
    one_label = labels[:1].clone()
    from pytorch_metric_learning.reducers import DoNothingReducer

    from pml.reducers import DoNothingReducer as OurDoNothingReducer

    spy_a = ours.CrossBatchMemory(
        ours.ContrastiveLoss(reducer=OurDoNothingReducer()), embedding_size=6, memory_size=8
    )
    spy_b = ref_losses.CrossBatchMemory(
        ref_losses.ContrastiveLoss(reducer=DoNothingReducer()), embedding_size=6, memory_size=8
    )
    for f in (spy_a, spy_b):
        f(emb, labels)
    da, db = spy_a(one, one_label), spy_b(one, one_label)
    pa = set(zip(*(t.tolist() for t in da["pos_loss"]["indices"])))
    pb = set(zip(*(t.tolist() for t in db["pos_loss"]["indices"])))
    assert (0, 4) in pb and (0, 4) not in pa  # slot 4 holds the query itself
    assert pb - pa == {(0, 4)}


def test_cross_batch_memory_rejections_match() -> None:
    assert sorted(ours.CrossBatchMemory.supported_losses()) == sorted(
        ref_losses.CrossBatchMemory.supported_losses()
    )
    for cls in (ours.CrossBatchMemory, ref_losses.CrossBatchMemory):
        with pytest.raises(Exception, match="CrossBatchMemory"):
            cls(torch.nn.MSELoss(), embedding_size=4)
    fa, fb = _cbm_pair("ContrastiveLoss", {}, memory_size=4)
    emb, labels = data(6, seed=1)
    for f in (fa, fb):
        with pytest.raises(AssertionError):
            f(emb, labels)  # more rows than memory slots
        with pytest.raises((AssertionError, ValueError)):
            f(emb, labels, enqueue_mask=torch.ones(5, dtype=torch.bool))


def test_cross_batch_memory_state_dict_interchange() -> None:
    # ours has one more buffer, queue_state (fix: the queue position is saved); a reference
    # state_dict loads into ours with strict=True, ours into the reference with strict=False.
    fa, fb = _cbm_pair("ContrastiveLoss", {}, memory_size=16)
    emb, labels = data(10, seed=5)
    fb(emb, labels)
    fa.load_state_dict(fb.state_dict())
    torch.testing.assert_close(fa.embedding_memory, fb.embedding_memory, rtol=0, atol=0)
    fb2 = ref_losses.CrossBatchMemory(
        ref_losses.ContrastiveLoss(), embedding_size=6, memory_size=16
    )
    result = fb2.load_state_dict(fa.state_dict(), strict=False)
    assert list(result.unexpected_keys) == ["queue_state"] and not result.missing_keys
    assert set(fa.state_dict()) == set(fb.state_dict()) | {"queue_state"}


def _cbm_state(f: Any) -> tuple[Any, ...]:
    return (
        f.queue_idx,
        f.has_been_filled,
        f.curr_batch_idx.tolist(),
        f.embedding_memory.tolist(),
        f.label_memory.tolist(),
    )


def test_cross_batch_memory_add_to_memory_matches() -> None:
    fa, fb = _cbm_pair("ContrastiveLoss", {}, memory_size=10)
    fa, fb = fa.float(), fb.float()
    # 4, 4, 4 (wraps), 2 (exactly fills), then forward calls interleaved
    for step, n in enumerate([4, 4, 4, 2, 3, 7]):
        emb, labels = data(n, seed=70 + step)
        emb = emb.float()
        if step < 4:
            assert fa.add_to_memory(emb, labels, n) is None
            fb.add_to_memory(emb, labels, n)
        else:
            torch.testing.assert_close(fa(emb, labels), fb(emb, labels), rtol=1e-6, atol=1e-7)
        assert _cbm_state(fa) == _cbm_state(fb)


@pytest.mark.parametrize("with_miner", [False, True])
def test_cross_batch_memory_create_indices_tuple_matches(with_miner: bool) -> None:
    miner = (
        ref_miners.TripletMarginMiner(margin=0.5, type_of_triplets="all") if with_miner else None
    )
    fa, fb = _cbm_pair("ContrastiveLoss", {}, memory_size=12, miner=miner)
    fa, fb = fa.float(), fb.float()
    for step, n in enumerate([8, 8]):  # the second batch wraps around
        emb, labels = data(n, seed=80 + step, classes=3)
        emb = emb.float()
        fa.add_to_memory(emb, labels, n)
        fb.add_to_memory(emb, labels, n)
        mem_a = (fa.embedding_memory, fa.label_memory)
        mem_b = (fb.embedding_memory, fb.label_memory)
        if not fb.has_been_filled:
            mem_a = tuple(t[: fa.queue_idx] for t in mem_a)
            mem_b = tuple(t[: fb.queue_idx] for t in mem_b)
        m = len(mem_b[1])
        triplets = (torch.tensor([0, 1, 7]), torch.tensor([2, m - 1, 0]), torch.tensor([3, 0, 1]))
        pairs = (
            torch.tensor([0, 0, 5]),
            torch.tensor([1, 2, 3]),
            torch.tensor([0, 5, 0]),
            torch.tensor([m - 1, 4, 6]),
        )
        for user in (None, triplets, pairs):
            for remove in (True, False):
                got = fa.create_indices_tuple(emb, labels, *mem_a, user, remove)
                exp = fb.create_indices_tuple(emb, labels, *mem_b, user, remove)
                assert [t.tolist() for t in got] == [t.tolist() for t in exp], (step, remove)


# ----------------------------------------------------------------------------- Distributed


@pytest.mark.parametrize("efficient", [False, True])
@pytest.mark.parametrize("with_ref", [False, True])
def test_distributed_wrapper_outside_a_process_group(efficient: bool, with_ref: bool) -> None:
    a, b = both_losses("ContrastiveLoss", {})
    fa = ours.DistributedLossWrapper(a, efficient=efficient)
    fb = ref_dist.DistributedLossWrapper(b, efficient=efficient)
    emb, labels = data(10, seed=6)
    ref, ref_labels = data(7, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if with_ref:
            compare(
                lambda e, r: fa(e, labels, None, r, ref_labels),
                lambda e, r: fb(e, labels, None, r, ref_labels),
                emb,
                ref,
            )
        else:
            compare(lambda e: fa(e, labels), lambda e: fb(e, labels), emb)
    for f in (fa, fb):
        with pytest.warns(UserWarning, match="non-distributed"):
            f(emb, labels)


def test_distributed_wrapper_cross_batch_memory_outside_a_process_group() -> None:
    # fix: the reference raises TypeError here; ours calls the memory like the plain module.
    fa, fb = _cbm_pair("ContrastiveLoss", {}, memory_size=16)
    emb, labels = data(6, seed=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(TypeError):
            ref_dist.DistributedLossWrapper(fb)(emb, labels)
        plain = ref_losses.CrossBatchMemory(
            ref_losses.ContrastiveLoss(), embedding_size=6, memory_size=16
        )
        torch.testing.assert_close(
            ours.DistributedLossWrapper(fa)(emb, labels), plain(emb, labels), rtol=RTOL, atol=ATOL
        )


def test_distributed_wrapper_constructor_rejections_match() -> None:
    fa, fb = _cbm_pair("ContrastiveLoss", {}, memory_size=16)
    for cls, cbm in ((ours.DistributedLossWrapper, fa), (ref_dist.DistributedLossWrapper, fb)):
        with pytest.raises(TypeError):
            cls(torch.nn.MSELoss())
        with pytest.raises(ValueError):
            cls(cbm, efficient=True)


# ----------------------------------------------------------------------------- fixed differences


def test_cross_batch_memory_enqueue_nothing_differs() -> None:
    # fix: the reference marks the memory filled and compares with never-written zero slots.
    fa, fb = _cbm_pair("ContrastiveLoss", {}, memory_size=8)
    emb, labels = data(4, seed=60, classes=2)
    nothing = torch.zeros(4, dtype=torch.bool)
    va, vb = fa(emb, labels, enqueue_mask=nothing), fb(emb, labels, enqueue_mask=nothing)
    assert fb.has_been_filled and not fa.has_been_filled
    assert vb.item() > 0 and va.item() == 0  # ours: an empty memory, nothing to compare with


def test_cross_batch_memory_more_rows_than_slots_differs_only_in_the_filled_flag() -> None:
    fa, fb = _cbm_pair("ContrastiveLoss", {}, memory_size=3)
    emb, labels = data(6, seed=61, classes=2)
    mask = torch.tensor([True, True, True, True, True, False])
    fa(emb, labels, enqueue_mask=mask), fb(emb, labels, enqueue_mask=mask)
    torch.testing.assert_close(fa.embedding_memory, fb.embedding_memory, rtol=0, atol=0)
    assert fa.queue_idx == fb.queue_idx == 2
    assert fa.has_been_filled and not fb.has_been_filled  # every slot was written


def test_cross_batch_memory_integer_mask_differs() -> None:
    fa, fb = _cbm_pair("ContrastiveLoss", {}, memory_size=8)
    emb, labels = data(4, seed=62, classes=2)
    int_mask = torch.tensor([1, 0, 1, 0])
    fb(emb, labels, enqueue_mask=int_mask)  # the reference indexes rows 1, 0, 1, 0 with it
    with pytest.raises(TypeError, match="enqueue_mask"):
        fa(emb, labels, enqueue_mask=int_mask)


def test_multiple_losses_without_losses_differs() -> None:
    emb, labels = data(4, seed=63)
    assert ref_losses.MultipleLosses([])(emb, labels) == 0
    out = ours.MultipleLosses([])(emb.requires_grad_(), labels)
    assert isinstance(out, torch.Tensor) and out.requires_grad and out.item() == 0


def test_distributed_wrapper_enqueue_mask_with_a_plain_loss_differs() -> None:
    a, b = both_losses("ContrastiveLoss", {})
    emb, labels = data(6, seed=64)
    mask = torch.ones(6, dtype=torch.bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ref_dist.DistributedLossWrapper(b)(emb, labels, enqueue_mask=mask)  # silently ignored
        with pytest.raises(ValueError, match="enqueue_mask"):
            ours.DistributedLossWrapper(a)(emb, labels, enqueue_mask=mask)


def test_cross_batch_memory_state_dict_restores_the_queue_position_differs() -> None:
    # fix: the reference saves no queue position, so a resumed run hides the restored memory
    # (loss 0 here); ours saves queue_state, and infers it from a reference state_dict.
    fa, fb = _cbm_pair("ContrastiveLoss", {}, memory_size=16)
    emb, labels = data(10, seed=90, classes=2)
    nxt, nxt_labels = data(4, seed=91, classes=2)
    fa(emb, labels), fb(emb, labels)
    ra, rb = _cbm_pair("ContrastiveLoss", {}, memory_size=16)
    ra.load_state_dict(fa.state_dict())
    rb.load_state_dict(fb.state_dict())
    assert (rb.queue_idx, ra.queue_idx) == (0, 10)
    uninterrupted = fa(nxt, nxt_labels)
    torch.testing.assert_close(ra(nxt, nxt_labels), uninterrupted, rtol=0, atol=0)
    assert rb(nxt, nxt_labels).item() != pytest.approx(uninterrupted.item())
    from_reference = _cbm_pair("ContrastiveLoss", {}, memory_size=16)[0]
    from_reference.load_state_dict(fb.state_dict())  # strict; no queue_state: inferred
    assert (from_reference.queue_idx, from_reference.has_been_filled) == (10, False)


def test_cross_batch_memory_out_of_range_indices_tuple_differs() -> None:
    # fix: the reference reads index -1 as the last row, and enqueues the batch before an
    # out-of-range index fails with an IndexError; ours raises ValueError before enqueueing.
    fa, fb = _cbm_pair("ContrastiveLoss", {}, memory_size=8)
    emb, labels = data(4, seed=92, classes=2)
    z = torch.tensor([0])
    negative = (torch.tensor([-1]), torch.tensor([1]), z)
    assert torch.isfinite(fb(emb, labels, negative))
    with pytest.raises(ValueError, match="indices_tuple"):
        fa(emb, labels, negative)
    past_end = (z, torch.tensor([8]), z)  # the reference set has 8 rows after this batch
    with pytest.raises(IndexError):
        fb(emb, labels, past_end)
    with pytest.raises(ValueError, match="indices_tuple"):
        fa(emb, labels, past_end)
    assert (fb.queue_idx, fb.has_been_filled, fa.queue_idx) == (0, True, 0)


def test_cross_batch_memory_narrowing_dtypes_differs() -> None:
    # fix: the reference casts the memories to each batch's dtypes: int64 label 300 becomes
    # uint8 44 (and pairs with a real 44); a float64 memory is truncated to float16.
    fa, fb = _cbm_pair("ContrastiveLoss", {}, memory_size=8)
    emb, _ = data(4, seed=93)
    for f in (fa, fb):
        f(emb[:2], torch.tensor([300, 1]))
    va = fa(emb[2:], torch.tensor([44, 2], dtype=torch.uint8))
    vb = fb(emb[2:], torch.tensor([44, 2], dtype=torch.uint8))
    assert fb.label_memory[:4].tolist() == [44, 1, 44, 2]
    assert fa.label_memory[:4].tolist() == [300, 1, 44, 2]
    assert va.item() != pytest.approx(vb.item())
    fa, fb = _cbm_pair("ContrastiveLoss", {}, memory_size=8)
    for f in (fa, fb):
        f(emb[:2], torch.tensor([0, 1]))
        out = f(emb[2:].half(), torch.tensor([0, 1]))
        assert out.dtype == torch.float16
    assert fb.embedding_memory.dtype == torch.float16
    assert fa.embedding_memory.dtype == torch.float64
    torch.testing.assert_close(fa.embedding_memory[:2], emb[:2], rtol=0, atol=0)


def test_cross_batch_memory_add_to_memory_differences() -> None:
    # ours promotes dtypes (the reference raises on a float64 batch into its float32 memory),
    # rejects a batch_size that is not len(embeddings) with a ValueError (the reference: a
    # RuntimeError), and marks a memory filled once every slot was written (also with more
    # rows than slots; the reference does not).
    fa, fb = _cbm_pair("ContrastiveLoss", {}, memory_size=3)
    fa, fb = fa.float(), fb.float()
    emb, labels = data(4, seed=94)
    with pytest.raises(RuntimeError):
        fb.add_to_memory(emb, labels, 4)
    with pytest.raises(RuntimeError):
        fb.add_to_memory(emb.float(), labels, 2)
    with pytest.raises(ValueError, match="batch_size"):
        fa.add_to_memory(emb, labels, 2)
    fa.add_to_memory(emb, labels, 4)
    fb.add_to_memory(emb.float(), labels, 4)
    assert fa.curr_batch_idx.tolist() == fb.curr_batch_idx.tolist() == [0, 1, 2, 0]
    assert fa.queue_idx == fb.queue_idx == 1
    assert fa.has_been_filled and not fb.has_been_filled
    assert fa.embedding_memory.dtype == torch.float64
    torch.testing.assert_close(fa.embedding_memory.float(), fb.embedding_memory, rtol=0, atol=0)
