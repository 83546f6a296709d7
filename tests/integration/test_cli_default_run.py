"""The README's first command: `pml train` with no arguments, the whole default run.

Trains the default recipe (small MLP, TripletMarginLoss + MultiSimilarityMiner,
MPerClassSampler, 30 epochs) on the bundled digits in a fresh process, exactly as a newcomer
runs it, and checks the acceptance criteria: MAP@R >= 0.88 on the held-out samples, the
untrained baseline printed beside it, and every file of the run folder written. About 20-40
seconds on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

FILES = (
    "config.toml",
    "env.json",
    "metrics.csv",
    "metrics.jsonl",
    "checkpoints/last.pth",
    "checkpoints/best.pth",
    "report.md",
    "plots/loss.png",
    "plots/accuracy.png",
    "plots/embeddings_pca.png",
    "COMPLETE",
)


@pytest.mark.slow
def test_pml_train_default_run_reaches_map_at_r_088(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "pml.cli", "train"],
        cwd=tmp_path,  # the default runs folder: ./runs
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "settings: the defaults" in out
    assert "untrained model  P@1" in out and "raw inputs       P@1" in out
    (run,) = (tmp_path / "runs").iterdir()
    for name in FILES:
        assert (run / name).is_file(), name
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(31))
    untrained, final = rows[0], rows[-1]
    assert untrained["mean_average_precision_at_r"] < 0.6
    assert final["mean_average_precision_at_r"] >= 0.88, final
    assert f"MAP@R {final['mean_average_precision_at_r']:.4f}" in out
    assert f"(untrained: MAP@R {untrained['mean_average_precision_at_r']:.4f})" in out
    assert f"run folder: {run.relative_to(tmp_path)}" in out
