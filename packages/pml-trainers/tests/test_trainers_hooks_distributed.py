"""HookContainer's tester hook under torch.distributed (2 gloo ranks).

Every rank runs the epoch hook with the whole validation data; each must embed only its
shard, get the accuracies of one process on the whole data (so the same best epoch and the
same early stop), and only rank 0 may write records and checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from pml.core.testing import run_in_processes
from pml.eval import AccuracyCalculator, GlobalEmbeddingSpaceTester
from pml.trainers import HookContainer, get_record_keeper

WORLD = 2
TABLE = "accuracies_normalized_GlobalEmbeddingSpaceTester_level_0_VAL_vs_self"


class Counting(nn.Module):
    """A fixed linear map that counts the rows it embeds."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(4, 4)
        self.rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        return self.linear(x)


def val_data() -> dict[str, TensorDataset]:
    g = torch.Generator().manual_seed(3)
    y = torch.arange(45) % 5
    return {"val": TensorDataset(torch.randn(45, 4, generator=g) + y[:, None], y)}


def run(folder: Path) -> dict[str, Any]:
    """Two epochs of the epoch hook (patience 0); what it decided and wrote."""
    keeper, _, _ = get_record_keeper(folder / "logs")
    hooks = HookContainer(keeper, primary_metric="precision_at_1")
    calc = AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r"), k="max_bin_count", device="cpu"
    )
    tester = GlobalEmbeddingSpaceTester(
        end_of_testing_hook=hooks.end_of_testing_hook,
        accuracy_calculator=calc,
        dataloader_num_workers=0,
        data_device="cpu",
        batch_size=8,
    )
    trunk = Counting()
    trainer = SimpleNamespace(epoch=0, models={"trunk": trunk, "embedder": nn.Identity()})
    hook = hooks.end_of_epoch_hook(tester, val_data(), folder / "models", patience=0)
    carry_on = []
    for epoch in (1, 2):
        trainer.epoch = epoch
        carry_on.append(hook(trainer))
    return {
        "accuracies": {k: dict(v) for k, v in tester.all_accuracies.items()},
        "rows": keeper_rows(hooks),
        "carry_on": carry_on,
        "best": hooks.get_best_epoch_and_accuracy(tester, "val"),
        "embedded": trunk.rows,
        "files": sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()),
    }


def keeper_rows(hooks: HookContainer) -> list[dict[str, Any]]:
    return [dict(r) for r in hooks._rows(TABLE)]


def _worker(rank: int, world_size: int, out_dir: str) -> dict[str, Any]:
    return run(Path(out_dir) / f"rank{rank}")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("gloo_hooks")
    return run_in_processes(_worker, WORLD, tmp, str(tmp))


@pytest.mark.distributed
def test_the_tester_hook_evaluates_shards_and_only_rank_0_writes(
    results: list[dict[str, Any]], tmp_path: Path
) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = run(tmp_path)
    finally:
        torch.set_num_threads(threads)
    assert single["embedded"] == 2 * 45 and len(single["rows"]) == 2
    assert [r["embedded"] for r in results] == [2 * 22, 2 * 23]  # each rank its shard
    for r in results:
        assert r["accuracies"] == single["accuracies"]
        assert r["rows"] == single["rows"]
        assert r["carry_on"] == single["carry_on"]
        assert r["best"] == single["best"]
    assert results[0]["files"] == single["files"]
    assert any(f.startswith("models/") for f in single["files"])
    assert results[1]["files"] == []  # rank 1 writes nothing
