"""DistributedLossWrapper, without and with a real two-process gloo group.

The two-process tests run two forked CPU processes (:func:`pml.core.testing.run_in_processes`);
each rank returns its loss values and gradients, and the test compares them with a single
process computing the same loss on the concatenated batch (naive pair loops).
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from pml.core.testing import assert_close, run_in_processes
from pml.losses import (
    CrossBatchMemory,
    DistributedLossWrapper,
    GenericPairLoss,
    MultiSupConLoss,
)
from pml.losses._base import loss_entry, zero_loss_entry

MARGIN = 1.0
WORLD = 2
D = 5


class _PairLoss(GenericPairLoss):
    """pos: d(a, p); neg: relu(1 - d(a, n)); each averaged (MeanReducer)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(mat_based_loss=False, **kwargs)

    def _sub_loss_names(self) -> list[str]:
        return ["pos_loss", "neg_loss"]

    def _compute_loss(self, pos_pair, neg_pair, indices_tuple):  # type: ignore[no-untyped-def]
        a1, p, a2, n = indices_tuple
        pos = loss_entry(pos_pair, (a1, p), "pos_pair") if len(a1) else zero_loss_entry()
        neg = (
            loss_entry(torch.relu(MARGIN - neg_pair), (a2, n), "neg_pair")
            if len(a2)
            else zero_loss_entry()
        )
        return {"pos_loss": pos, "neg_loss": neg}


def contrastive() -> _PairLoss:
    return type("ContrastiveLoss", (_PairLoss,), {})()


def _dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(F.normalize(x, dim=0) - F.normalize(y, dim=0))


def naive_pair_loss(queries, q_labels, refs, r_labels, skip_self: bool) -> torch.Tensor:  # type: ignore[no-untyped-def]
    pos, neg = [], []
    for i in range(len(queries)):
        for j in range(len(refs)):
            if skip_self and i == j:
                continue
            d = _dist(queries[i], refs[j])
            if int(q_labels[i]) == int(r_labels[j]):
                pos.append(d)
            else:
                neg.append(torch.relu(MARGIN - d))
    return torch.stack(pos).mean() + torch.stack(neg).mean()


def rank_data(rank: int, n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed * 100 + rank)
    return torch.randn(n, D, generator=g, dtype=torch.float64), torch.randint(
        0, 3, (n,), generator=g
    )


def label_set_data(rank: int, n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(emb (n, D) float64, label sets (n, 4) bool)``; some rows share no label."""
    g = torch.Generator().manual_seed(seed * 100 + rank + 50)
    emb = torch.randn(n, D, generator=g, dtype=torch.float64)
    return emb, torch.rand(n, 4, generator=g) < 0.4


def _naive_jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    sa, sb = set(torch.nonzero(a).flatten().tolist()), set(torch.nonzero(b).flatten().tolist())
    return 1.0 if not (sa or sb) else len(sa & sb) / len(sa | sb)


def naive_multi_supcon(queries, q_sets, refs, r_sets, skip_self: bool, threshold: float = 0.5):  # type: ignore[no-untyped-def]
    """MultiSupConLoss's formula row by row (cosine, temperature 0.1), AvgNonZero-reduced.

    ``q_sets``/``r_sets``: bool label sets, or class labels (singleton sets).
    """
    if q_sets.ndim == 1:
        q_sets, r_sets = F.one_hot(q_sets, 4).bool(), F.one_hot(r_sets, 4).bool()
    rows = []
    for i in range(len(queries)):
        others = [j for j in range(len(refs)) if not (skip_self and i == j)]
        jac = {j: _naive_jaccard(q_sets[i], r_sets[j]) for j in others}
        z = {j: F.normalize(queries[i], dim=0) @ F.normalize(refs[j], dim=0) / 0.1 for j in others}
        lse = torch.logsumexp(torch.stack([z[j] for j in others]), 0)
        pos = [j for j in others if jac[j] >= threshold]
        if pos:
            rows.append(-sum(jac[p] * (z[p] - lse) for p in pos) / len(pos))
    return torch.stack([r for r in rows if r > 0]).mean()


# ----------------------------------------------------------------------------- worker


def _grad(out: torch.Tensor, *xs: torch.Tensor) -> list[torch.Tensor]:
    return [g.detach() for g in torch.autograd.grad(out, xs)]


#: (name, memory_size, batch size of rank 0 and rank 1): the global batch is 12 (10 uneven);
#: 24 is a multiple of it, 20 and 18 are not (the queue wraps mid-batch), 16 with uneven ranks.
CBM_CASES = [("m24", 24, (6, 6)), ("m20", 20, (6, 6)), ("m18", 18, (6, 6)), ("uneven", 16, (6, 4))]
CBM_CALLS = 5


def cbm_mask(call: int, n: int) -> torch.Tensor | None:
    """The last call enqueues every third row and uses the others as queries."""
    return torch.arange(n) % 3 == 0 if call == CBM_CALLS - 1 else None


def _error(fn: Any) -> str:
    """``"ok"`` or ``"<ExceptionType>: <message>"``."""
    try:
        fn()
    except Exception as e:  # recorded for the parent process to assert on
        return f"{type(e).__name__}: {e}"
    return "ok"


def _result_or_error(fn: Any) -> Any:
    try:
        return fn()
    except Exception as e:  # recorded for the parent process to assert on
        return f"{type(e).__name__}: {e}"


def _multi_supcon_results(rank: int) -> dict[str, Any]:
    """MultiSupConLoss under the wrapper: label sets (own batch, separate reference set) and
    class labels with threshold 0; ``(loss, *grads)`` or the error."""
    emb, sets = label_set_data(rank)
    ref, ref_sets = label_set_data(rank, seed=1)
    labels = rank_data(rank)[1]
    res: dict[str, Any] = {}
    for efficient in (False, True):

        def own(loss: MultiSupConLoss, lab: torch.Tensor) -> Any:
            x = emb.clone().requires_grad_()
            out = DistributedLossWrapper(loss, efficient=efficient)(x, lab)  # noqa: B023
            return (out.detach(), *_grad(out, x))

        def separate() -> Any:
            x, r = emb.clone().requires_grad_(), ref.clone().requires_grad_()
            wrapper = DistributedLossWrapper(MultiSupConLoss(), efficient=efficient)  # noqa: B023
            out = wrapper(x, sets, ref_emb=r, ref_labels=ref_sets)
            return (out.detach(), *_grad(out, x, r))

        res[f"sets_eff{efficient}"] = _result_or_error(lambda: own(MultiSupConLoss(), sets))
        res[f"ref_eff{efficient}"] = _result_or_error(separate)
        zero = MultiSupConLoss(threshold=0.0)
        res[f"classes_eff{efficient}"] = _result_or_error(lambda: own(zero, labels))  # noqa: B023
    return res


def _bounds_errors(emb: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """indices_tuple bounds under the wrapper: gathered sizes (12), local anchors (6)."""
    z = torch.tensor([0])

    def t(a: int, p: int) -> tuple[torch.Tensor, ...]:
        return torch.tensor([a]), torch.tensor([p]), z

    plain = DistributedLossWrapper(contrastive())
    efficient = DistributedLossWrapper(contrastive(), efficient=True)
    cbm = CrossBatchMemory(contrastive(), embedding_size=D, memory_size=30).double()
    out = {
        "plain_ok": _error(lambda: plain(emb, labels, t(11, 11))),
        "plain_anchor": _error(lambda: plain(emb, labels, t(12, 0))),
        "plain_negative": _error(lambda: plain(emb, labels, t(0, -1))),
        "efficient_ok": _error(lambda: efficient(emb, labels, t(5, 11))),
        "efficient_anchor": _error(lambda: efficient(emb, labels, t(6, 0))),
        "efficient_ref": _error(lambda: efficient(emb, labels, t(0, 12))),
        "cbm_ok": _error(lambda: DistributedLossWrapper(cbm)(emb, labels, t(11, 11))),
        "cbm_anchor": _error(lambda: DistributedLossWrapper(cbm)(emb, labels, t(12, 0))),
        "cbm_ref": _error(lambda: DistributedLossWrapper(cbm)(emb, labels, t(0, 24))),
    }
    out["cbm_queue_idx"] = cbm.queue_idx  # only the valid call was enqueued
    return out


def _worker(rank: int, world_size: int) -> dict[str, Any]:
    res: dict[str, Any] = {}
    emb, labels = rank_data(rank)
    ref, ref_labels = rank_data(rank, seed=1)

    for efficient in (False, True):
        x = emb.clone().requires_grad_()
        out = DistributedLossWrapper(contrastive(), efficient=efficient)(x, labels)
        res[f"plain_eff{efficient}"] = (out.detach(), *_grad(out, x))

        x, r = emb.clone().requires_grad_(), ref.clone().requires_grad_()
        wrapper = DistributedLossWrapper(contrastive(), efficient=efficient)
        out = wrapper(x, labels, ref_emb=r, ref_labels=ref_labels)
        res[f"ref_eff{efficient}"] = (out.detach(), *_grad(out, x, r))

    # ranks with different batch sizes (the reference needs equal shapes)
    n = 6 if rank == 0 else 4
    x = emb[:n].clone().requires_grad_()
    out = DistributedLossWrapper(contrastive())(x, labels[:n])
    res["uneven"] = (out.detach(), *_grad(out, x))

    for name, memory_size, sizes in CBM_CASES:
        n = sizes[rank]
        cbm = CrossBatchMemory(contrastive(), embedding_size=D, memory_size=memory_size)
        wrapper = DistributedLossWrapper(cbm.double())
        for call in range(CBM_CALLS):
            e, lab = rank_data(rank, n=n, seed=10 + call)
            x = e.clone().requires_grad_()
            out = wrapper(x, lab, enqueue_mask=cbm_mask(call, n))
            res[f"cbm_{name}_{call}"] = (out.detach(), *_grad(out, x))
            res[f"cbm_{name}_{call}_state"] = (
                cbm.queue_idx,
                cbm.has_been_filled,
                cbm.embedding_memory.clone(),
                cbm.label_memory.clone(),
            )

    res["bounds"] = _bounds_errors(emb, labels)
    res["multi_supcon"] = _multi_supcon_results(rank)
    return res


@pytest.fixture(scope="module")
def gloo_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return run_in_processes(_worker, WORLD, tmp_path_factory.mktemp("gloo"))


def _other(rank: int) -> int:
    return 1 - rank


@pytest.mark.distributed
def test_gloo_plain_mode_equals_one_process_on_concatenated_batch(gloo_results) -> None:  # type: ignore[no-untyped-def]
    for rank in range(WORLD):
        (e0, l0), (e1, l1) = rank_data(rank), rank_data(_other(rank))
        own = e0.clone().requires_grad_()
        every = torch.cat([own, e1])
        labels = torch.cat([l0, l1])
        exp = naive_pair_loss(every, labels, every, labels, skip_self=True)
        (g_exp,) = _grad(exp, own)
        value, grad = gloo_results[rank]["plain_effFalse"]
        torch.testing.assert_close(value, exp.detach() * WORLD, rtol=1e-9, atol=1e-12)
        # x world_size: DDP averages the ranks' gradients back to one process's gradient
        torch.testing.assert_close(grad, g_exp * WORLD, rtol=1e-7, atol=1e-10)


@pytest.mark.distributed
def test_gloo_efficient_mode_local_queries_against_gathered_batch(gloo_results) -> None:  # type: ignore[no-untyped-def]
    for rank in range(WORLD):
        (e0, l0), (e1, l1) = rank_data(rank), rank_data(_other(rank))
        own = e0.clone().requires_grad_()
        ref = torch.cat([own, e1])  # the local block is live on the reference side too
        exp = naive_pair_loss(own, l0, ref, torch.cat([l0, l1]), skip_self=True)
        (g_exp,) = _grad(exp, own)
        value, grad = gloo_results[rank]["plain_effTrue"]
        torch.testing.assert_close(value, exp.detach() * WORLD, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(grad, g_exp * WORLD, rtol=1e-7, atol=1e-10)


@pytest.mark.distributed
@pytest.mark.parametrize("efficient", [False, True])
def test_gloo_separate_ref_emb(gloo_results, efficient: bool) -> None:  # type: ignore[no-untyped-def]
    # fix (efficient): no (i, i) removal when the reference set is a separate ref_emb.
    for rank in range(WORLD):
        (e0, l0), (e1, l1) = rank_data(rank), rank_data(_other(rank))
        (r0, rl0), (r1, rl1) = rank_data(rank, seed=1), rank_data(_other(rank), seed=1)
        own, own_ref = e0.clone().requires_grad_(), r0.clone().requires_grad_()
        refs, ref_labels = torch.cat([own_ref, r1]), torch.cat([rl0, rl1])
        if efficient:
            exp = naive_pair_loss(own, l0, refs, ref_labels, skip_self=False)
        else:
            queries, q_labels = torch.cat([own, e1]), torch.cat([l0, l1])
            exp = naive_pair_loss(queries, q_labels, refs, ref_labels, skip_self=False)
        g_exp = _grad(exp, own, own_ref)
        value, *grads = gloo_results[rank][f"ref_eff{efficient}"]
        torch.testing.assert_close(value, exp.detach() * WORLD, rtol=1e-9, atol=1e-12)
        for got, want in zip(grads, g_exp):
            torch.testing.assert_close(got, want * WORLD, rtol=1e-7, atol=1e-10)


@pytest.mark.distributed
def test_gloo_ranks_with_different_batch_sizes(gloo_results) -> None:  # type: ignore[no-untyped-def]
    sizes = [6, 4]
    for rank in range(WORLD):
        o = _other(rank)
        e0, l0 = (t[: sizes[rank]] for t in rank_data(rank))
        e1, l1 = (t[: sizes[o]] for t in rank_data(o))
        own = e0.clone().requires_grad_()
        every, labels = torch.cat([own, e1]), torch.cat([l0, l1])
        exp = naive_pair_loss(every, labels, every, labels, skip_self=True)
        value, grad = gloo_results[rank]["uneven"]
        torch.testing.assert_close(value, exp.detach() * WORLD, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(grad, _grad(exp, own)[0] * WORLD, rtol=1e-7, atol=1e-10)


@pytest.mark.distributed
@pytest.mark.parametrize(("name", "memory_size", "sizes"), CBM_CASES)
def test_gloo_cross_batch_memory_ranks_hold_the_memory_of_one_process(  # type: ignore[no-untyped-def]
    gloo_results, name: str, memory_size: int, sizes: tuple[int, int]
) -> None:
    # fix: every rank enqueued the gathered batch local-rank-first, so with a memory size
    # that is not a multiple of the global batch the ranks held different rows (and rank
    # 1's loss differed). Now every rank holds the memory of one process fed the
    # concatenated batch in rank order, and returns world_size x that process's loss.
    single = CrossBatchMemory(contrastive(), embedding_size=D, memory_size=memory_size).double()
    for call in range(CBM_CALLS):
        blocks = [rank_data(r, n=sizes[r], seed=10 + call) for r in range(WORLD)]
        live = [e.clone().requires_grad_() for e, _ in blocks]
        masks = [cbm_mask(call, sizes[r]) for r in range(WORLD)]
        mask = None if masks[0] is None else torch.cat(masks)  # type: ignore[arg-type]
        exp = single(torch.cat(live), torch.cat([lab for _, lab in blocks]), enqueue_mask=mask)
        grads = _grad(exp, *live)
        for rank in range(WORLD):
            value, grad = gloo_results[rank][f"cbm_{name}_{call}"]
            torch.testing.assert_close(value, exp.detach() * WORLD, rtol=1e-9, atol=1e-12)
            torch.testing.assert_close(grad, grads[rank] * WORLD, rtol=1e-7, atol=1e-10)
            q, filled, mem, mem_labels = gloo_results[rank][f"cbm_{name}_{call}_state"]
            assert (q, filled) == (single.queue_idx, single.has_been_filled)
            torch.testing.assert_close(mem, single.embedding_memory, rtol=0, atol=0)
            assert mem_labels.tolist() == single.label_memory.tolist()


@pytest.mark.distributed
def test_gloo_out_of_range_indices_tuple_is_rejected(gloo_results) -> None:  # type: ignore[no-untyped-def]
    # fix: indices_tuple bounds were never checked (-1 silently meant the last row).
    for rank in range(WORLD):
        got = gloo_results[rank]["bounds"]
        for key in ("plain_ok", "efficient_ok", "cbm_ok"):
            assert got[key] == "ok", (rank, key, got[key])
        for key in (
            "plain_anchor",
            "plain_negative",
            "efficient_anchor",
            "efficient_ref",
            "cbm_anchor",
            "cbm_ref",
        ):
            assert got[key].startswith("ValueError") and "indices_tuple" in got[key], (rank, key)
        assert got["cbm_queue_idx"] == 2 * 6


def _multi_supcon_got(gloo_results, rank: int, key: str) -> tuple[torch.Tensor, ...]:  # type: ignore[no-untyped-def]
    got = gloo_results[rank]["multi_supcon"][key]
    assert not isinstance(got, str), (rank, key, got)
    return got


@pytest.mark.distributed
def test_gloo_multi_supcon_label_sets_equal_one_process_on_concatenated_batch(gloo_results) -> None:  # type: ignore[no-untyped-def]
    for rank in range(WORLD):
        (e0, s0), (e1, s1) = label_set_data(rank), label_set_data(_other(rank))
        own = e0.clone().requires_grad_()
        every, sets = torch.cat([own, e1]), torch.cat([s0, s1])
        exp = naive_multi_supcon(every, sets, every, sets, skip_self=True)
        value, grad = _multi_supcon_got(gloo_results, rank, "sets_effFalse")
        torch.testing.assert_close(value, exp.detach() * WORLD, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(grad, _grad(exp, own)[0] * WORLD, rtol=1e-9, atol=1e-12)
        # the wrapped loss itself on the concatenated batch (rank order)
        blocks = [label_set_data(r) for r in range(WORLD)]
        live = [e.clone().requires_grad_() for e, _ in blocks]
        single = MultiSupConLoss()(torch.cat(live), torch.cat([s for _, s in blocks]))
        torch.testing.assert_close(value, single.detach() * WORLD, rtol=1e-9, atol=1e-12)
        g_single = _grad(single, *live)[rank]
        torch.testing.assert_close(grad, g_single * WORLD, rtol=1e-9, atol=1e-12)


@pytest.mark.distributed
@pytest.mark.parametrize("efficient", [False, True])
def test_gloo_multi_supcon_separate_reference_label_sets(gloo_results, efficient: bool) -> None:  # type: ignore[no-untyped-def]
    for rank in range(WORLD):
        (e0, s0), (e1, s1) = label_set_data(rank), label_set_data(_other(rank))
        (r0, rs0), (r1, rs1) = label_set_data(rank, seed=1), label_set_data(_other(rank), seed=1)
        own, own_ref = e0.clone().requires_grad_(), r0.clone().requires_grad_()
        refs, ref_sets = torch.cat([own_ref, r1]), torch.cat([rs0, rs1])
        if efficient:
            exp = naive_multi_supcon(own, s0, refs, ref_sets, skip_self=False)
        else:
            queries, q_sets = torch.cat([own, e1]), torch.cat([s0, s1])
            exp = naive_multi_supcon(queries, q_sets, refs, ref_sets, skip_self=False)
        value, *grads = _multi_supcon_got(gloo_results, rank, f"ref_eff{efficient}")
        torch.testing.assert_close(value, exp.detach() * WORLD, rtol=1e-9, atol=1e-12)
        for got, want in zip(grads, _grad(exp, own, own_ref), strict=True):
            torch.testing.assert_close(got, want * WORLD, rtol=1e-9, atol=1e-12)


@pytest.mark.distributed
def test_gloo_efficient_mode_pairs_label_sets_by_jaccard_not_as_class_labels(gloo_results) -> None:  # type: ignore[no-untyped-def]
    # fix: efficient mode built its pairs with get_all_pairs_indices, which cannot read
    # (N, C) label sets (ValueError: too many values to unpack); now a loss with
    # label_set_pairs (MultiSupConLoss) makes them: local rows against the gathered batch.
    for rank in range(WORLD):
        (e0, s0), (e1, s1) = label_set_data(rank), label_set_data(_other(rank))
        own = e0.clone().requires_grad_()
        exp = naive_multi_supcon(own, s0, torch.cat([own, e1]), torch.cat([s0, s1]), True)
        value, grad = _multi_supcon_got(gloo_results, rank, "sets_effTrue")
        torch.testing.assert_close(value, exp.detach() * WORLD, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(grad, _grad(exp, own)[0] * WORLD, rtol=1e-9, atol=1e-12)


@pytest.mark.distributed
@pytest.mark.parametrize("efficient", [False, True])
def test_gloo_efficient_mode_multi_supcon_threshold_0_counts_every_other_row_as_positive(  # type: ignore[no-untyped-def]
    gloo_results, efficient: bool
) -> None:
    # fix (efficient): with class labels and threshold 0 every other row is a positive (of
    # weight 0 or 1); pairs from get_all_pairs_indices made other-class rows negatives.
    for rank in range(WORLD):
        (e0, _), (e1, _) = label_set_data(rank), label_set_data(_other(rank))
        l0, l1 = rank_data(rank)[1], rank_data(_other(rank))[1]
        own = e0.clone().requires_grad_()
        every, labels = torch.cat([own, e1]), torch.cat([l0, l1])
        if efficient:
            exp = naive_multi_supcon(own, l0, every, labels, True, threshold=0.0)
        else:
            exp = naive_multi_supcon(every, labels, every, labels, True, threshold=0.0)
        value, grad = _multi_supcon_got(gloo_results, rank, f"classes_eff{efficient}")
        torch.testing.assert_close(value, exp.detach() * WORLD, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(grad, _grad(exp, own)[0] * WORLD, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------- no process group


def test_not_distributed_warns_and_calls_the_loss() -> None:
    emb, labels = rank_data(0)
    loss = contrastive()
    with pytest.warns(UserWarning, match="non-distributed"):
        out = DistributedLossWrapper(loss)(emb, labels)
    torch.testing.assert_close(out, loss(emb, labels), rtol=0, atol=0)
    ref, ref_labels = rank_data(0, seed=1)
    with pytest.warns(UserWarning, match="non-distributed"):
        out = DistributedLossWrapper(loss, efficient=True)(emb, labels, None, ref, ref_labels)
    torch.testing.assert_close(out, loss(emb, labels, None, ref, ref_labels), rtol=0, atol=0)


def test_not_distributed_cross_batch_memory() -> None:
    # fix: the reference raises TypeError here (ref_emb/ref_labels passed positionally).
    emb, labels = rank_data(0)
    wrapped = CrossBatchMemory(contrastive(), embedding_size=D, memory_size=16).double()
    plain = CrossBatchMemory(contrastive(), embedding_size=D, memory_size=16).double()
    wrapper = DistributedLossWrapper(wrapped)
    mask = torch.arange(6) % 2 == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        torch.testing.assert_close(wrapper(emb, labels), plain(emb, labels))
        torch.testing.assert_close(
            wrapper(emb, labels, enqueue_mask=mask), plain(emb, labels, enqueue_mask=mask)
        )
    assert wrapped.queue_idx == plain.queue_idx == 9


def test_out_of_range_indices_tuple_is_rejected_outside_a_process_group() -> None:
    # fix: -1 silently meant the last row; an index past the end raised deep inside.
    emb, labels = rank_data(0)  # 6 rows
    ref, ref_labels = rank_data(0, n=4, seed=1)
    z = torch.tensor([0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for efficient in (False, True):
            wrapper = DistributedLossWrapper(contrastive(), efficient=efficient)
            wrapper(emb, labels, (torch.tensor([5]), torch.tensor([5]), z))  # in range
            for bad in ((torch.tensor([-1]), z, z), (z, z, torch.tensor([6]))):
                with pytest.raises(ValueError, match="indices_tuple"):
                    wrapper(emb, labels, bad)
            with pytest.raises(ValueError, match="indices_tuple"):
                wrapper(emb, labels, (z, torch.tensor([4]), z), ref, ref_labels)
        cbm = CrossBatchMemory(contrastive(), embedding_size=D, memory_size=16).double()
        with pytest.raises(ValueError, match="indices_tuple"):
            DistributedLossWrapper(cbm)(emb, labels, (z, torch.tensor([-1]), z))
        assert cbm.queue_idx == 0


def test_gather_in_rank_order_without_process_group() -> None:
    from pml.core.distributed import gather_in_rank_order

    x = torch.randn(3, 2, requires_grad=True)
    got, offset = gather_in_rank_order(x)
    assert got is x and offset == 0


def test_dtype_and_device(dtype: torch.dtype, device: torch.device) -> None:
    emb, labels = rank_data(0)
    x = emb.to(device, dtype).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = DistributedLossWrapper(contrastive())(x, labels.to(device))
    out.backward()
    assert out.dtype == dtype and out.device.type == device.type and x.grad.dtype == dtype
    assert_close(out, contrastive()(emb.to(dtype).double(), labels).to(dtype))


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="BaseMetricLossFunction or CrossBatchMemory"):
        DistributedLossWrapper(torch.nn.MSELoss())
    cbm = CrossBatchMemory(contrastive(), embedding_size=D)
    with pytest.raises(ValueError, match="efficient"):
        DistributedLossWrapper(cbm, efficient=True)
    emb, labels = rank_data(0)
    with pytest.raises(ValueError, match="ref_emb"):
        DistributedLossWrapper(cbm)(emb.float(), labels, ref_emb=emb.float())
    with pytest.raises(ValueError, match="enqueue_mask"):
        DistributedLossWrapper(contrastive())(emb, labels, enqueue_mask=labels > 0)
