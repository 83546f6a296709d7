"""pml.core.testing.run_in_processes: forked gloo workers, their results, their failures."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from pml.core.testing import run_in_processes


def _all_reduce(rank: int, world_size: int, scale: float) -> dict[str, Any]:
    x = torch.tensor([rank + 1.0], dtype=torch.float64) * scale
    dist.all_reduce(x)
    return {
        "sum": x,
        "rank": dist.get_rank(),
        "world": (world_size, dist.get_world_size()),
        "threads": torch.get_num_threads(),
    }


@pytest.mark.distributed
def test_two_processes_all_reduce_and_return_their_results_by_rank(tmp_path: Path) -> None:
    got = run_in_processes(_all_reduce, 2, tmp_path, 10.0)
    assert [r["rank"] for r in got] == [0, 1]
    for r in got:
        torch.testing.assert_close(r["sum"], torch.tensor([30.0], dtype=torch.float64))
        assert r["world"] == (2, 2)
        assert r["threads"] == 1
    # a second run in the same folder gets its own rendezvous file
    assert [r["rank"] for r in run_in_processes(_all_reduce, 2, tmp_path, 1.0)] == [0, 1]


def _fails_on_rank_1(rank: int, world_size: int) -> int:
    if rank == 1:
        raise ValueError("rank one went wrong")
    return rank


@pytest.mark.distributed
def test_a_failing_worker_is_reported_with_its_rank_exit_code_and_traceback(
    tmp_path: Path,
) -> None:
    with pytest.raises(AssertionError, match="1 of 2 worker processes failed") as info:
        run_in_processes(_fails_on_rank_1, 2, tmp_path)
    message = str(info.value)
    assert "rank 1 failed (exit code 1)" in message
    assert "ValueError: rank one went wrong" in message
    assert "rank 0" not in message


def _sleeps_on_rank_1(rank: int, world_size: int) -> int:
    if rank == 1:
        time.sleep(60)
    return rank


@pytest.mark.distributed
def test_a_hanging_worker_is_killed_and_named(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(AssertionError, match=r"rank 1 did not finish within 1 s \(killed"):
        run_in_processes(_sleeps_on_rank_1, 2, tmp_path, timeout=1)
    assert time.monotonic() - start < 30  # not the 60 s of the sleep


def _fails_then_waits(rank: int, world_size: int) -> None:
    if rank == 1:
        raise RuntimeError("rank 1 gives up")
    dist.barrier()  # waits for rank 1, which never comes


@pytest.mark.distributed
def test_ranks_waiting_for_a_failed_rank_do_not_hang_the_test(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="rank 1 failed") as info:
        run_in_processes(_fails_then_waits, 2, tmp_path, timeout=60)
    assert "RuntimeError: rank 1 gives up" in str(info.value)
    # rank 0's barrier either raised (peer gone) or was killed after the grace period
    assert "rank 0 " in str(info.value)


class _NotPlainData:
    pass


def _returns_an_object(rank: int, world_size: int) -> Any:
    return {"x": _NotPlainData()}


@pytest.mark.distributed
def test_a_result_that_is_not_weights_only_loadable_is_named(tmp_path: Path) -> None:
    with pytest.raises(
        AssertionError, match="rank 0's result is not weights-only loadable"
    ) as info:
        run_in_processes(_returns_an_object, 2, tmp_path)
    assert "_NotPlainData" in str(info.value)


def _returns_numpy_scalars(rank: int, world_size: int) -> Any:
    import numpy as np

    return [np.float64(rank + 0.5), np.float32(2.0), np.int64(rank), np.bool_(True)]


@pytest.mark.distributed
def test_numpy_scalars_come_back_as_numpy_scalars(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    got = run_in_processes(_returns_numpy_scalars, 2, tmp_path)
    assert got == [[0.5, 2.0, 0, True], [1.5, 2.0, 1, True]]
    assert [type(v) for v in got[1]] == [np.float64, np.float32, np.int64, np.bool_]


def _group_state(rank: int, world_size: int) -> tuple[bool, int]:
    return dist.is_initialized(), rank


@pytest.mark.distributed
def test_without_init_group_the_worker_runs_outside_a_process_group(tmp_path: Path) -> None:
    assert run_in_processes(_group_state, 3, tmp_path, init_group=False) == [
        (False, 0),
        (False, 1),
        (False, 2),
    ]


def test_skips_when_gloo_is_not_available(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dist, "is_gloo_available", lambda: False)
    with pytest.raises(pytest.skip.Exception, match="gloo"):
        run_in_processes(_all_reduce, 2, tmp_path, 1.0)


def test_importing_pml_core_testing_does_not_import_pytest() -> None:
    code = "import sys, pml.core.testing; sys.exit('pytest' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def _fails_while_rank_0_sleeps(rank: int, world_size: int) -> int:
    if rank == 1:
        raise RuntimeError("rank 1 gives up")
    time.sleep(60)  # busy elsewhere: never notices
    return rank


@pytest.mark.distributed
def test_ranks_still_running_after_a_failure_are_killed_after_a_grace_period(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pml.core._processes as T

    monkeypatch.setattr(T, "_GRACE_AFTER_FAILURE", 0.5)
    with pytest.raises(AssertionError, match="2 of 2 worker processes failed") as info:
        run_in_processes(_fails_while_rank_0_sleeps, 2, tmp_path, timeout=60)
    message = str(info.value)
    assert "rank 0 was still running 0.5 s after rank 1 failed (killed; exit code -9)" in message
    assert "rank 1 failed (exit code 1)" in message
