"""``pml eval`` under torch.distributed (2 gloo processes): each embeds its shard, rank 0 prints.

Rank workers run ``pml eval`` twice: launched like ``torchrun`` (``WORLD_SIZE``/``RANK``/
``MASTER_ADDR`` in the environment: the command makes its own gloo group) and inside a
process group the caller made. Rank 0 must print the numbers of one process; rank 1 nothing.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pml.core.testing import run_in_processes

WORLD = 2
METRICS = ["--metric", "p@1", "--metric", "map@r", "--metric", "r-precision", "--metric", "mrr"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _argv(run: str, data: dict[str, str], separate: bool) -> list[str]:
    extra = ["--data", data["queries"], "--reference", data["gallery"]] if separate else []
    return ["eval", run, *extra, *METRICS, "--json", "--device", "cpu"]


def _worker(
    rank: int, world_size: int, run: str, data: dict[str, str], port: int, out_dir: str
) -> dict[str, Any]:
    import torch.distributed as dist

    from pml.cli import _cmd_eval

    run_pml = _run_pml()
    res: dict[str, Any] = {}
    # 1. launched like torchrun: pml eval makes (and destroys) its own group
    env = {"WORLD_SIZE": str(world_size), "RANK": str(rank), "LOCAL_RANK": str(rank)}
    os.environ.update({**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    res["env"] = run_pml(_argv(run, data, False))
    res["env_group_left"] = dist.is_initialized()
    for key in (*env, "MASTER_ADDR", "MASTER_PORT"):
        del os.environ[key]
    # 2. inside the caller's process group
    init = f"file://{Path(out_dir) / 'init'}"
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world_size)
    try:
        res["group"] = run_pml(_argv(run, data, True))
        with _cmd_eval.process_group(torch.device("cpu")) as (r, w):
            res["rank_world"] = (r, w)
    finally:
        dist.destroy_process_group()
    return res


def _run_pml():  # type: ignore[no-untyped-def]
    import contextlib
    import io

    from pml.cli.__main__ import main

    def run(argv: list[str]) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
        return code, out.getvalue(), err.getvalue()

    return run


@pytest.fixture(scope="module")
def data_files(tmp_path_factory: pytest.TempPathFactory, helpers) -> dict[str, str]:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("eval_data")
    features, labels = helpers.clustered_features(seed=3)
    np.savez(tmp / "queries.npz", features=features[::2], labels=labels[::2])
    np.savez(tmp / "gallery.npz", features=features[1::2], labels=labels[1::2])
    return {"queries": str(tmp / "queries.npz"), "gallery": str(tmp / "gallery.npz")}


@pytest.fixture(scope="module")
def results(tmp_path_factory, fake_run, data_files) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("gloo_cli")
    args = (str(fake_run), data_files, _free_port(), str(tmp))
    # no group around the worker: it first runs pml eval as torchrun would, then makes one
    return run_in_processes(_worker, WORLD, tmp, *args, timeout=180, init_group=False)


@pytest.mark.distributed
def test_pml_eval_under_a_process_group_prints_the_single_process_numbers_on_rank_0(
    results, fake_run, data_files, pml
) -> None:  # type: ignore[no-untyped-def]
    for key, separate in (("env", False), ("group", True)):
        code, out, err = pml(*_argv(str(fake_run), data_files, separate))
        assert code == 0, err
        expected = json.loads(out.strip().splitlines()[-1])
        code0, out0, err0 = results[0][key]
        assert code0 == 0, err0
        got = json.loads(out0.strip().splitlines()[-1])
        assert list(got) == list(expected)
        for name, value in expected.items():
            assert got[name] == pytest.approx(value, abs=1e-6), (key, name)
        assert results[1][key][:2] == (0, "")  # rank 1 prints nothing
    assert results[0]["env_group_left"] is False  # its own group is destroyed
    assert [r["rank_world"] for r in results] == [(0, 2), (1, 2)]


def test_process_group_without_torchrun_is_one_process(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from pml.cli._cmd_eval import process_group

    monkeypatch.setenv("WORLD_SIZE", "1")
    with process_group(torch.device("cpu")) as rank_world:
        assert rank_world == (0, 1)
