"""The README's library tour: its Python blocks run in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _tour_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Library tour", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_library_tour_runs(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    blocks = _tour_blocks()
    assert len(blocks) >= 4
    namespace: dict = {"__name__": "readme_tour"}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["loss"].ndim == 0
    assert 0.0 <= namespace["accuracy"]["precision_at_1"] <= 1.0
    assert namespace["trainer"].epoch == 2
