"""Distributed evaluation: DistributedKNN, distributed_get_accuracy and the testers on 2 gloo ranks.

Two forked CPU processes (:func:`pml.core.testing.run_in_processes`) hold uneven shards of random
clustered data (and of integer-valued data, full of exact ties); every rank's metrics must
EQUAL, to the last bit, one process's ``get_accuracy`` on the concatenated data. The merge
of candidate lists (:func:`pml.eval.functional.merge_topk`) is also checked on its own.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch.utils.data import TensorDataset

from pml.core.testing import run_in_processes
from pml.eval import (
    AccuracyCalculator,
    DistributedKNN,
    GlobalEmbeddingSpaceTester,
    TorchKMeans,
    TorchKNN,
    WithSameParentLabelTester,
    distributed_get_accuracy,
)
from pml.eval import functional as EF

WORLD = 2
D = 6
KNN_METRICS = (
    "precision_at_1",
    "r_precision",
    "mean_average_precision_at_r",
    "mean_average_precision",
    "mean_reciprocal_rank",
)

# ----------------------------------------------------------------------------- data


def clustered(n: int, classes: int, seed: int, dtype: torch.dtype, ties: bool = False):  # type: ignore[no-untyped-def]
    """``(x (n, D), labels (n,))``: gaussian clusters, or small integers (exact ties)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    if ties:
        x = torch.randint(0, 3, (n, D), generator=g).to(dtype)
        x[:, 0] += 2 * labels.to(dtype)  # some structure, integer distances
        return x, labels
    centers = 2.0 * torch.randn(classes, D, generator=g, dtype=torch.float64)
    x = centers[labels] + torch.randn(n, D, generator=g, dtype=torch.float64)
    return x.to(dtype), labels


#: query / reference shard sizes of rank 0 and rank 1 (uneven; one empty query shard)
SPLITS = {
    "self": ((40, 110), None),
    "self_extra": ((30, 50), (25, 45)),  # query shards; extra reference rows per rank
    "separate": ((50, 30), (35, 95)),
    "empty_rank": ((80, 0), (60, 70)),
}


def case_data(mode: str, classes: int, seed: int, dtype: torch.dtype, ties: bool = False):  # type: ignore[no-untyped-def]
    """``(shards [per rank (q, ql, r, rl, ref_includes_query)], single (q, ql, r, rl, riq))``."""
    q_sizes, r_sizes = SPLITS[mode]
    n_q = sum(q_sizes)
    n_r = sum(r_sizes) if r_sizes else 0
    x, labels = clustered(n_q + n_r, classes, seed, dtype, ties)
    q, ql, extra, el = x[:n_q], labels[:n_q], x[n_q:], labels[n_q:]
    qo = [0, q_sizes[0], n_q]
    ro = [0, r_sizes[0], n_r] if r_sizes else None
    shards = []
    for rank in range(WORLD):
        qs, qls = q[qo[rank] : qo[rank + 1]], ql[qo[rank] : qo[rank + 1]]
        if mode == "self":
            shards.append((qs, qls, None, None, False))  # reference=None: ref_includes_query
        elif mode == "self_extra":
            assert ro is not None
            es, els = extra[ro[rank] : ro[rank + 1]], el[ro[rank] : ro[rank + 1]]
            shards.append((qs, qls, torch.cat([qs, es]), torch.cat([qls, els]), True))
        else:
            assert ro is not None
            shards.append(
                (qs, qls, extra[ro[rank] : ro[rank + 1]], el[ro[rank] : ro[rank + 1]], False)
            )
    if mode == "self":
        single = (q, ql, None, None, False)
    elif mode == "self_extra":
        single = (q, ql, torch.cat([q, extra]), torch.cat([ql, el]), True)
    else:
        single = (q, ql, extra, el, False)
    return shards, single


def calculator(config: str, k: Any, distributed_knn: bool) -> AccuracyCalculator:
    """The calculators under test (``distributed_knn``: knn_func=DistributedKNN(TorchKNN))."""
    knn = DistributedKNN(TorchKNN()) if distributed_knn else TorchKNN()
    if config == "clusters":  # every metric, NMI/AMI too (k-means on the gathered queries)
        return AccuracyCalculator(k=k, device="cpu", knn_func=knn, kmeans_func=TorchKMeans())
    if config == "knn":
        return AccuracyCalculator(k=k, device="cpu", knn_func=knn, exclude=("NMI", "AMI"))
    if config == "per_class":  # the neighbour-list route (a custom comparison)
        return AccuracyCalculator(
            k=k,
            device="cpu",
            knn_func=knn,
            exclude=("NMI", "AMI"),
            return_per_class=True,
            label_comparison_fn=lambda a, b: a == b,
        )
    return AccuracyCalculator(
        k=k, device="cpu", knn_func=knn, avg_of_avgs=True, exclude=("NMI", "AMI")
    )


def accuracy_cases():  # type: ignore[no-untyped-def]
    """``(name, mode, classes, seed, dtype, ties, config, k)`` of every compared call."""
    seed = 0
    for dtype in (torch.float32, torch.float64):
        for mode in SPLITS:
            # 12 classes: k=max_bin_count is the neighbour-list route; 3 classes: the ranking
            for classes in (12, 3):
                for k in ("max_bin_count", None, 7):
                    seed += 1
                    name = f"{mode}_{dtype}_{classes}_{k}"
                    yield name, mode, classes, seed, dtype, False, "knn", k
        seed += 1
        yield f"clusters_{dtype}", "separate", 5, seed, dtype, False, "clusters", None
        for mode in ("self", "separate", "self_extra"):
            for config in ("avg", "per_class"):
                seed += 1
                yield (
                    f"{mode}_{dtype}_{config}",
                    mode,
                    5,
                    seed,
                    dtype,
                    False,
                    config,
                    "max_bin_count",
                )
            for k in ("max_bin_count", None, 4):
                seed += 1
                yield f"{mode}_{dtype}_ties_{k}", mode, 4, seed, dtype, True, "avg", k


def shard_datasets(rank: int | None):  # type: ignore[no-untyped-def]
    """Per split ``TensorDataset(x, labels (n, 2))`` of ``rank`` (None: every rank's rows)."""
    out = {}
    for i, (name, sizes) in enumerate((("train", (50, 70)), ("val", (45, 15)))):
        x, labels = clustered(sum(sizes), 8, 100 + i, torch.float32)
        both = torch.stack([labels, labels // 3], 1)  # level 1: parent classes
        lo, hi = (0, sum(sizes)) if rank is None else ((0, sizes[0]), (sizes[0], sum(sizes)))[rank]
        out[name] = TensorDataset(x[lo:hi], both[lo:hi])
    return out


TESTER_SPLITS = [("val", ["val", "train"]), ("train", ["val"])]


def run_testers(rank: int | None) -> dict[str, Any]:
    """The testers' accuracies (``rank=None``: one process, TorchKNN)."""
    out = {}
    for cls in (GlobalEmbeddingSpaceTester, WithSameParentLabelTester):
        calc = AccuracyCalculator(
            k="max_bin_count",
            device="cpu",
            exclude=("NMI", "AMI"),
            knn_func=TorchKNN() if rank is None else DistributedKNN(),
        )
        tester = cls(
            accuracy_calculator=calc,
            dataloader_num_workers=0,
            data_device="cpu",
            batch_size=16,
            label_hierarchy_level=0,
        )
        for splits in (None, TESTER_SPLITS):
            res = tester.test(shard_datasets(rank), 1, torch.nn.Identity(), splits_to_eval=splits)
            out[f"{cls.__name__}_{splits is None}"] = {k: dict(v) for k, v in res.items()}
    return out


def _error(fn: Any) -> str:
    """``"ok"`` or ``"<ExceptionType>: <message>"``."""
    try:
        fn()
    except Exception as e:  # recorded for the parent process to assert on
        return f"{type(e).__name__}: {e}"
    return "ok"


# ----------------------------------------------------------------------------- worker


def _knn_results(rank: int) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for mode in ("self_extra", "separate", "empty_rank"):
        for ties in (False, True):
            shards, _ = case_data(mode, 4, 7, torch.float32, ties)
            q, _, r, _, riq = shards[rank]
            knn = DistributedKNN()
            res[f"{mode}_{ties}_local"] = knn.search(q, 9, r, riq)
            res[f"{mode}_{ties}_all"] = knn.search(q, 9, r, riq, all_queries=True)
    return res


def _result_or_error(fn: Any) -> Any:
    try:
        return fn()
    except Exception as e:  # recorded for the parent process to assert on
        return f"{type(e).__name__}: {e}"


def _error_results(rank: int) -> dict[str, Any]:
    calc = AccuracyCalculator(k="max_bin_count", device="cpu", exclude=("NMI", "AMI"))
    knn_calc = AccuracyCalculator(device="cpu", exclude=("NMI", "AMI"), knn_func=DistributedKNN())
    x, labels = clustered(20, 3, 5, torch.float32)
    wide = torch.randn(20, D + rank)  # rank 1: another embedding dim
    bad = x.clone()
    if rank == 1:
        bad[3, 2] = float("nan")
    out = {
        "dim": _error(lambda: distributed_get_accuracy(calc, wide, labels)),
        "nan": _error(lambda: distributed_get_accuracy(calc, bad, labels)),
        "knn_k": _error(lambda: DistributedKNN().search(x, 3 + rank, x, True)),
        "knn_call": _error(lambda: DistributedKNN()(x, 3, x, True)),
        # the calculator's own get_accuracy routes to distributed_get_accuracy
        "get_accuracy": _result_or_error(lambda: knn_calc.get_accuracy(x, labels)),
        "expected": distributed_get_accuracy(knn_calc, x, labels),
        "after_errors": _error(lambda: distributed_get_accuracy(calc, x, labels)),
    }
    return out


def _worker(rank: int, world_size: int) -> dict[str, Any]:
    res: dict[str, Any] = {"accuracy": {}}
    for name, mode, classes, seed, dtype, ties, config, k in accuracy_cases():
        shards, _ = case_data(mode, classes, seed, dtype, ties)
        q, ql, r, rl, riq = shards[rank]
        # half through distributed_get_accuracy with a TorchKNN calculator, half through a
        # calculator whose knn_func is a DistributedKNN (the testers' route)
        calc = calculator(config, k, distributed_knn=seed % 2 == 0)
        res["accuracy"][name] = distributed_get_accuracy(calc, q, ql, r, rl, riq)
    res["knn"] = _knn_results(rank)
    res["testers"] = run_testers(rank)
    res["errors"] = _error_results(rank)
    return res


@pytest.fixture(scope="module")
def gloo_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    import sklearn.metrics  # noqa: F401  (NMI/AMI: imported once here, not in both children)

    return run_in_processes(_worker, WORLD, tmp_path_factory.mktemp("gloo"))


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """One torch thread, like the ranks (and quick on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _same(a: Any, b: Any) -> bool:
    """Exact equality, NaN equal to NaN, lists element-wise."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


# ----------------------------------------------------------------------------- tests


@pytest.mark.distributed
def test_every_rank_gets_the_single_process_metrics_exactly(
    gloo_results: list[dict[str, Any]],
) -> None:
    checked = 0
    for name, mode, classes, seed, dtype, ties, config, k in accuracy_cases():
        _, (q, ql, r, rl, riq) = case_data(mode, classes, seed, dtype, ties)
        with single_thread():
            calc = calculator(config, k, distributed_knn=False)
            expected = calc.get_accuracy(q, ql, r, rl, riq)
        for rank in range(WORLD):
            got = gloo_results[rank]["accuracy"][name]
            assert list(got) == list(expected), (name, rank)
            for metric, value in expected.items():
                assert _same(got[metric], value), (name, rank, metric, got[metric], value)
                checked += 1
    assert checked > 500


@pytest.mark.distributed
def test_the_compared_cases_cover_both_single_process_routes() -> None:
    """k=None and few classes take the exact ranking, many classes with max_bin_count the lists."""
    shards_many, (q, ql, *_) = case_data("self", 12, 1, torch.float32)
    counts = torch.bincount(ql)
    assert 4 * int(counts.max() - 1) < q.shape[0]  # the neighbour-list route
    _, (q, ql, *_) = case_data("self", 3, 1, torch.float32)
    assert 4 * int(torch.bincount(ql).max() - 1) >= q.shape[0]  # the ranking route


@pytest.mark.distributed
def test_distributed_knn_returns_the_single_process_neighbours(
    gloo_results: list[dict[str, Any]],
) -> None:
    for mode in ("self_extra", "separate", "empty_rank"):
        for ties in (False, True):
            shards, (q, _, r, _, riq) = case_data(mode, 4, 7, torch.float32, ties)
            full_d, full_i = TorchKNN()(q, 9, r, riq)
            offset = 0
            for rank in range(WORLD):
                n = shards[rank][0].shape[0]
                d, i = gloo_results[rank]["knn"][f"{mode}_{ties}_local"]
                assert torch.equal(i, full_i[offset : offset + n]), (mode, ties, rank)
                assert torch.equal(d, full_d[offset : offset + n]), (mode, ties, rank)
                d_all, i_all = gloo_results[rank]["knn"][f"{mode}_{ties}_all"]
                assert torch.equal(i_all, full_i) and torch.equal(d_all, full_d)
                offset += n


@pytest.mark.distributed
def test_testers_with_a_distributed_knn_give_the_single_process_accuracies(
    gloo_results: list[dict[str, Any]],
) -> None:
    with single_thread():
        expected = run_testers(None)
    for rank in range(WORLD):
        got = gloo_results[rank]["testers"]
        assert list(got) == list(expected)
        for key, splits in expected.items():
            for split, values in splits.items():
                assert list(got[key][split]) == list(values), (key, split)
                for metric, value in values.items():
                    assert _same(float(got[key][split][metric]), float(value)), (key, metric)


@pytest.mark.distributed
def test_a_failing_rank_makes_every_rank_raise_instead_of_hanging(
    gloo_results: list[dict[str, Any]],
) -> None:
    e0, e1 = gloo_results[0]["errors"], gloo_results[1]["errors"]
    for errors in (e0, e1):
        assert errors["dim"].startswith("ValueError: every rank must pass the same embedding dim")
        assert errors["knn_k"].startswith("ValueError: every rank must pass the same k")
        assert errors["after_errors"] == "ok"  # the group still works
        assert errors["knn_call"].startswith("RuntimeError: DistributedKNN is called as a plain")
        assert errors["get_accuracy"] == errors["expected"]
    assert e1["nan"].startswith("ValueError") and "query" in e1["nan"]
    assert e0["nan"].startswith("RuntimeError") and "rank(s) [1] failed" in e0["nan"]


# ----------------------------------------------------------------------------- one process


def test_merge_topk_equals_one_search_of_the_whole_reference() -> None:
    g = torch.Generator().manual_seed(3)
    for inverted in (False, True):
        q = torch.randint(0, 3, (30, 4), generator=g).float()  # many exact ties
        r = torch.randint(0, 3, (50, 4), generator=g).float()
        distance = None
        if inverted:
            from pml.distances import DotProductSimilarity

            distance = DotProductSimilarity(normalize_embeddings=False)  # exact on integers
        knn = TorchKNN(distance)
        full_d, full_i = knn(q, 12, r)
        parts = ((0, 17), (17, 20), (20, 50))  # uneven, one smaller than k
        cand_d, cand_i = [], []
        for lo, hi in reversed(parts):  # column order of the parts must not matter
            d, i = knn(q, min(12, hi - lo), r[lo:hi])
            d, i = EF.pad_candidates(d, i + lo, 12, is_inverted=inverted)
            cand_d.append(d)
            cand_i.append(i)
        d, i = EF.merge_topk(torch.cat(cand_d, 1), torch.cat(cand_i, 1), 12, is_inverted=inverted)
        assert torch.equal(i, full_i) and torch.equal(d, full_d)


def test_merge_topk_ranks_nan_last_and_padding_after_everything() -> None:
    d = torch.tensor([[float("nan"), 1.0, float("inf"), float("inf")]])
    i = torch.tensor([[0, 5, 3, EF.PAD_INDEX]])
    out_d, out_i = EF.merge_topk(d, i, 4)
    assert out_i.tolist() == [[5, 0, 3, EF.PAD_INDEX]]
    assert math.isnan(out_d[0, 1])


def test_merge_topk_rejects_k_beyond_the_candidates() -> None:
    with pytest.raises(ValueError, match="k must be in"):
        EF.merge_topk(torch.zeros(1, 2), torch.zeros(1, 2, dtype=torch.long), 3)


def test_without_a_process_group_it_is_the_local_calculator() -> None:
    x, labels = clustered(60, 4, 9, torch.float32)
    expected = AccuracyCalculator(device="cpu", k=None).get_accuracy(x, labels)
    calc = AccuracyCalculator(device="cpu", k=None, knn_func=DistributedKNN())
    got = distributed_get_accuracy(calc, x, labels)
    assert all(_same(got[m], expected[m]) for m in expected)
    assert isinstance(calc.knn_func, DistributedKNN)  # restored after the call
    d, i = DistributedKNN()(x, 5, x, True)
    full_d, full_i = TorchKNN()(x, 5, x, True)
    assert torch.equal(d, full_d) and torch.equal(i, full_i)


def test_distributed_knn_rejects_a_bad_local_knn() -> None:
    with pytest.raises(TypeError, match="local_knn"):
        DistributedKNN(local_knn="faiss")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="local_knn"):
        DistributedKNN(local_knn=DistributedKNN())
    with pytest.raises(TypeError, match="is_inverted"):
        DistributedKNN(is_inverted=1)  # type: ignore[arg-type]
