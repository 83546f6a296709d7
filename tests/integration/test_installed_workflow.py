"""The installed packages at work, as users get them from wheels.

* Every wheel installed together into one fresh virtual environment, and the whole job run
  through the installed ``pml`` command: train (interrupted after one epoch: a checkpoint
  and an incomplete run folder) -> resume -> eval -> embed -> search (saving the faiss
  index) -> search again from the saved index.
* pml-losses and pml-miners alone (with their declared dependencies) in another fresh
  environment, and a plain training loop written against them, as a user who needs only
  the pieces would.

The wheels come from the session fixture ``wheel_dir`` (tests/conftest.py), shared with
tests/packaging. Subprocesses may write bytecode (``PYTHONDONTWRITEBYTECODE`` is dropped for
them): the first ``pml`` call compiles what it imports, the following ones start faster.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.packaging, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TORCH = "torch==2.13.0"


def _version(name: str) -> str:
    about = next((ROOT / "packages" / name / "src" / "pml").glob("*/__about__.py"))
    return re.search(r'__version__ = "([^"]+)"', about.read_text()).group(1)  # type: ignore[union-attr]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for var in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH", "VIRTUAL_ENV"):
        env.pop(var, None)
    env["MPLBACKEND"] = "Agg"
    return env


def _venv(path: Path, wheel_dir: Path, *requirements: str) -> Path:
    """A fresh virtual environment at ``path`` holding ``requirements``; its bin folder."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is needed to build wheels and venvs")
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(path)], check=True)
    links = ["--find-links", str(wheel_dir)]
    for var in ("UV_FIND_LINKS", "PIP_FIND_LINKS"):
        if os.environ.get(var):
            links += ["--find-links", os.environ[var]]
            break
    python = path / "bin" / "python"
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--python", str(python), *links, *requirements],
        check=True,
    )
    return path / "bin"


def _installed(bin_dir: Path) -> dict[str, str]:
    listed = subprocess.run(
        [shutil.which("uv") or "uv", "pip", "list", "--python", str(bin_dir / "python"),
         "--format", "json"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return {d["name"].lower(): d["version"] for d in json.loads(listed)}


def _pml(bin_dir: Path, cwd: Path, *args: str) -> str:
    """``pml <args>`` through the installed console script; its stdout (exit 0 asserted)."""
    proc = subprocess.run(
        [str(bin_dir / "pml"), *args], cwd=cwd, env=_env(), capture_output=True, text=True
    )
    assert proc.returncode == 0, f"pml {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_all_wheels_installed_together_run_the_whole_workflow(wheel_dir, tmp_path) -> None:
    bin_dir = _venv(tmp_path / "venv", wheel_dir, TORCH, f"pml-all=={_version('pml-all')}")
    installed = _installed(bin_dir)
    for pkg in sorted(p.name for p in (ROOT / "packages").iterdir() if p.is_dir()):
        assert installed.get(pkg) == _version(pkg), pkg
    assert "faiss-cpu" in installed  # pml-eval's dependency: search uses the faiss index
    work = tmp_path / "work"
    work.mkdir()

    # train, interrupted after epoch 1: a checkpoint, and a run folder not marked complete
    out = _pml(
        bin_dir, work, "train", "--epochs", "2", "--stop-after-epoch", "1", "--device", "cpu",
        "--runs-dir", "runs", "--name", "workflow",
    )  # fmt: skip
    (run,) = (work / "runs").iterdir()
    assert "pml train --resume" in out
    assert (run / "checkpoints" / "last.pth").is_file() and not (run / "COMPLETE").exists()
    state = torch.load(run / "checkpoints" / "last.pth", weights_only=True)
    assert state["epoch"] == 1 and set(state["models"]) >= {"trunk", "embedder"}

    # resume: finishes the run
    _pml(bin_dir, work, "train", "--resume", str(run))
    assert (run / "COMPLETE").is_file() and (run / "report.md").is_file()
    rows = _rows(run / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    best = torch.load(run / "checkpoints" / "best.pth", weights_only=True)["cli"]["best_epoch"]
    (best_row,) = [r for r in rows if r["epoch"] == best]

    # evaluate: the run's own protocol repeats its best epoch's numbers
    values = json.loads(_pml(bin_dir, work, "eval", str(run), "--json", "--device", "cpu"))
    for name in ("precision_at_1", "r_precision", "mean_average_precision_at_r"):
        assert values[name] == pytest.approx(best_row[name], abs=1e-6), name
    assert values["mean_average_precision_at_r"] > rows[0]["mean_average_precision_at_r"]

    # embed the held-out split
    _pml(bin_dir, work, "embed", str(run), "--out", "test_emb.npy", "--device", "cpu")
    emb = np.load(work / "test_emb.npy", allow_pickle=False)
    labels = np.load(work / "test_emb_labels.npy", allow_pickle=False)
    assert emb.shape == (len(labels), 64) and emb.dtype == np.float32
    assert np.isfinite(emb).all() and len(set(labels.tolist())) == 10

    # search the training digits for the held-out ones, saving the faiss index
    _pml(
        bin_dir, work, "search", str(run), "--query", "digits:test", "--reference",
        "digits:train", "--k", "3", "--save-index", "train.index", "--out", "first.csv",
        "--device", "cpu",
    )  # fmt: skip
    assert (work / "train.index").read_bytes()[:4] == b"IxF2"  # faiss's format, not a pickle
    with open(work / "first.csv", newline="") as fh:
        first = list(csv.DictReader(fh))
    assert len(first) == len(labels) * 3
    top1 = [r for r in first if r["rank"] == "1"]
    hits = sum(r["query_label"] == r["reference_label"] for r in top1) / len(top1)
    assert hits > 0.9  # nearest training digit has the query's class

    # search again from the saved index (no reference embedding): the same neighbours
    _pml(
        bin_dir, work, "search", str(run), "--query", "digits:test", "--index", "train.index",
        "--reference", "digits:train", "--k", "3", "--out", "second.jsonl", "--device", "cpu",
    )  # fmt: skip
    second = _rows(work / "second.jsonl")
    assert [int(r["reference"]) for r in first] == [r["reference"] for r in second]


_LOOP = textwrap.dedent(
    """
    import json
    import torch
    from pml.losses import TripletMarginLoss
    from pml.miners import MultiSimilarityMiner

    torch.manual_seed(0)
    centres = torch.randn(8, 16) * 2
    labels = torch.arange(8).repeat_interleave(8)
    x = centres[labels] + torch.randn(len(labels), 16) * 1.5
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    loss_func = TripletMarginLoss(margin=0.2)
    miner = MultiSimilarityMiner(epsilon=0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def full_loss():
        with torch.no_grad():
            return float(loss_func(model(x), labels))

    before = full_loss()
    mined = []
    for step in range(40):
        idx = torch.randperm(len(labels))[:32]
        emb = model(x[idx])
        pairs = miner(emb, labels[idx])
        mined.append(int(pairs[0].numel()))
        loss = loss_func(emb, labels[idx], pairs)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(json.dumps({"before": before, "after": full_loss(), "mined": mined}))
    """
)


def test_losses_and_miners_alone_train_a_model(wheel_dir, tmp_path) -> None:
    pins = [f"{name}=={_version(name)}" for name in ("pml-losses", "pml-miners")]
    bin_dir = _venv(tmp_path / "venv", wheel_dir, TORCH, *pins)
    pml_installed = {k for k in _installed(bin_dir) if k.startswith("pml-")}
    assert pml_installed == {
        "pml-core",
        "pml-distances",
        "pml-reducers",
        "pml-losses",
        "pml-miners",
    }
    assert not (bin_dir / "pml").exists()
    script = tmp_path / "loop.py"
    script.write_text(_LOOP)
    proc = subprocess.run(
        [str(bin_dir / "python"), str(script)], cwd=tmp_path, env=_env(), capture_output=True,
        text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["after"] < 0.5 * result["before"], result
    assert all(n > 0 for n in result["mined"][:5])  # the miner found pairs to train on
