"""The README's main job (examples/quickstart.py) trains and improves retrieval accuracy."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_training_improves_precision_at_1() -> None:
    spec = importlib.util.spec_from_file_location("quickstart", ROOT / "examples" / "quickstart.py")
    quickstart = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(quickstart)  # type: ignore[union-attr]
    before, after = quickstart.run(epochs=3, seed=0)
    assert set(before) == {"precision_at_1", "mean_average_precision_at_r"}
    assert before["precision_at_1"] < 0.2  # raw features are dominated by nuisance noise
    assert after["precision_at_1"] > before["precision_at_1"] + 0.3
    assert after["mean_average_precision_at_r"] > before["mean_average_precision_at_r"]
