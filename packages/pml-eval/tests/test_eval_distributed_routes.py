"""get_accuracy's distributed route, custom metrics and distributed_test on 2 gloo ranks.

Two forked CPU processes (:func:`pml.core.testing.run_in_processes`) each pass their contiguous shard of one data
set; every rank's results must EQUAL one process's on the whole data: through
``calc.get_accuracy`` itself (a DistributedKNN knn_func, or ``distributed=True``), with
custom metrics, and through :func:`pml.eval.distributed_test` (every rank given the whole
splits, each embedding its shard).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import pytest
import torch
from torch.utils.data import TensorDataset

from pml.core.testing import run_in_processes
from pml.eval import (
    AccuracyCalculator,
    DistributedKNN,
    GlobalEmbeddingSpaceTester,
    QueryNeighbors,
    WithSameParentLabelTester,
    distributed_test,
    shard_dataset,
)

WORLD = 2


def clustered(n: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    centers = 2.0 * torch.randn(classes, 5, generator=g)
    return centers[labels] + torch.randn(n, 5, generator=g), labels


def p_at_2(nb: QueryNeighbors) -> torch.Tensor:
    return nb.is_match[:, :2].double().mean(1)


def mean_distance(nb: QueryNeighbors) -> torch.Tensor:
    """Mean distance to the neighbours, NaN for odd queries (checks query_indices too)."""
    v = nb.knn_distances.double().mean(1)
    return torch.where(nb.query_indices % 2 == 1, float("nan"), v)


CUSTOM = {"p_at_2": p_at_2, "mean_distance": mean_distance}


def cases():  # type: ignore[no-untyped-def]
    """``(name, classes, k, separate, options)``: both built-in routes, both k-NN routes."""
    for classes in (3, 12):  # 3: the exact ranking for k=None/max_bin_count; 12: lists
        for k in (None, "max_bin_count", 5):
            for separate in (False, True):
                yield f"{classes}_{k}_{separate}", classes, k, separate, {}
    yield "per_class", 5, "max_bin_count", False, {"return_per_class": True}
    yield "avg", 5, None, True, {"avg_of_avgs": True}


def data(classes: int, separate: bool, rank: int | None):  # type: ignore[no-untyped-def]
    """``(args of get_accuracy)`` of ``rank``'s shard (None: the whole data)."""
    x, y = clustered(90, classes, classes)
    cut = (0, 40, 90)  # uneven shards
    if separate:
        r, ry = clustered(70, classes, classes + 100)
        rcut = (0, 45, 70)
        if rank is None:
            return (x, y, r, ry, False)
        lo, hi, rlo, rhi = cut[rank], cut[rank + 1], rcut[rank], rcut[rank + 1]
        return (x[lo:hi], y[lo:hi], r[rlo:rhi], ry[rlo:rhi], False)
    if rank is None:
        return (x, y)
    return (x[cut[rank] : cut[rank + 1]], y[cut[rank] : cut[rank + 1]])


def calculator(k: Any, how: str, options: dict[str, Any]) -> AccuracyCalculator:
    extra: dict[str, Any] = {}
    if how == "dknn":
        extra["knn_func"] = DistributedKNN()
    elif how == "flag":
        extra["distributed"] = True
    return AccuracyCalculator(
        k=k, device="cpu", exclude=("NMI", "AMI"), custom_metrics=CUSTOM, **extra, **options
    )


def datasets() -> dict[str, TensorDataset]:
    out = {}
    for i, n in enumerate((63, 41)):
        x, y = clustered(n, 7, 50 + i)
        out[("train", "val")[i]] = TensorDataset(x, torch.stack([y, y // 3], 1))
    return out


SPLITS = [("val", ["val", "train"]), ("train", ["val"])]


class CountingIdentity(torch.nn.Module):
    """The identity, counting the rows it embeds."""

    def __init__(self) -> None:
        super().__init__()
        self.rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        return x


def run_testers(distributed: bool) -> dict[str, Any]:
    out = {}
    for cls in (GlobalEmbeddingSpaceTester, WithSameParentLabelTester):
        for splits in (None, SPLITS):
            calc = AccuracyCalculator(
                k="max_bin_count", device="cpu", exclude=("NMI", "AMI"), custom_metrics=CUSTOM
            )
            tester = cls(
                accuracy_calculator=calc, dataloader_num_workers=0, data_device="cpu", batch_size=8
            )
            trunk = CountingIdentity()
            args = (datasets(), 3, trunk, None, splits)
            res = distributed_test(tester, *args) if distributed else tester.test(*args)
            out[f"{cls.__name__}_{splits is None}"] = {k: dict(v) for k, v in res.items()}
            out[f"{cls.__name__}_{splits is None}"]["rows"] = trunk.rows
            assert calc.distributed is False  # restored
    return out


def _worker(rank: int, world_size: int) -> dict[str, Any]:
    res: dict[str, Any] = {"accuracy": {}}
    for name, classes, k, separate, options in cases():
        for how in ("dknn", "flag"):
            calc = calculator(k, how, options)
            got = calc.get_accuracy(*data(classes, separate, rank))
            res["accuracy"][f"{name}_{how}"] = got
    res["testers"] = run_testers(True)
    tiny = {"val": TensorDataset(torch.zeros(1, 5), torch.zeros(1, 1, dtype=torch.long))}
    tester = GlobalEmbeddingSpaceTester(dataloader_num_workers=0, data_device="cpu")
    try:
        distributed_test(tester, tiny, 1, torch.nn.Identity())
        res["tiny"] = "ok"
    except ValueError as e:
        res["tiny"] = str(e)
    return res


@pytest.fixture(scope="module")
def gloo_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return run_in_processes(_worker, WORLD, tmp_path_factory.mktemp("gloo_routes"))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _single(fn: Any) -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(threads)


@pytest.mark.distributed
def test_get_accuracy_routes_to_distributed_evaluation_with_custom_metrics(
    gloo_results: list[dict[str, Any]],
) -> None:
    checked = 0
    for name, classes, k, separate, options in cases():
        local = calculator(k, "local", options)
        expected = _single(functools.partial(local.get_accuracy, *data(classes, separate, None)))
        assert set(CUSTOM) <= set(expected)
        for how in ("dknn", "flag"):
            for rank in range(WORLD):
                got = gloo_results[rank]["accuracy"][f"{name}_{how}"]
                assert list(got) == list(expected), (name, how)
                for metric, value in expected.items():
                    if metric == "mean_distance":  # distances: the BLAS caveat, not bits
                        assert got[metric] == pytest.approx(value, rel=1e-5), (name, how)
                    else:
                        assert _same(got[metric], value), (name, how, rank, metric)
                    checked += 1
    assert checked > 200


@pytest.mark.distributed
def test_distributed_test_gives_every_rank_the_single_process_accuracies(
    gloo_results: list[dict[str, Any]],
) -> None:
    expected = _single(lambda: run_testers(False))
    for splits in expected.values():
        assert splits.pop("rows") == 63 + 41
    for rank in range(WORLD):
        got = gloo_results[rank]["testers"]
        assert list(got) == list(expected)
        for key, splits in expected.items():
            # every rank embedded its shard of both splits: train 31 + 32, val 20 + 21 rows
            assert got[key].pop("rows") == (31 + 20, 32 + 21)[rank]
            for split, values in splits.items():
                assert list(got[key][split]) == list(values), (key, split)
                for metric, value in values.items():
                    if "mean_distance" in metric:
                        assert float(got[key][split][metric]) == pytest.approx(float(value))
                    else:
                        assert _same(float(got[key][split][metric]), float(value)), metric


@pytest.mark.distributed
def test_a_split_smaller_than_the_world_is_an_error_on_every_rank(
    gloo_results: list[dict[str, Any]],
) -> None:
    for rank in range(WORLD):
        assert (
            "dataset_dict['val'] has 1 items, fewer than the 2 ranks" in gloo_results[rank]["tiny"]
        )


def test_shard_dataset_cuts_contiguous_parts_in_rank_order() -> None:
    items = list(range(7))
    parts = [list(shard_dataset(items, r, 3)) for r in range(3)]
    assert parts == [[0, 1], [2, 3], [4, 5, 6]]
    with pytest.raises(ValueError, match="rank"):
        shard_dataset(items, 3, 3)
    with pytest.raises(ValueError, match="world_size"):
        shard_dataset(items, 0, 0)
    with pytest.raises(TypeError, match="rank"):
        shard_dataset(items, 0.5, 2)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dataset must have a length"):
        shard_dataset(iter(items), 0, 2)  # type: ignore[arg-type]


def test_distributed_test_without_a_process_group_is_tester_test() -> None:
    calc = AccuracyCalculator(include=("precision_at_1",), device="cpu")
    tester = GlobalEmbeddingSpaceTester(
        accuracy_calculator=calc, dataloader_num_workers=0, data_device="cpu"
    )
    got = distributed_test(tester, datasets(), 1, torch.nn.Identity())
    expected = tester.test(datasets(), 1, torch.nn.Identity())
    assert {k: dict(v) for k, v in got.items()} == {k: dict(v) for k, v in expected.items()}
