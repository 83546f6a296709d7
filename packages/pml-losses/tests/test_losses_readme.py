"""The pml-losses README lists only classes that ship in ``pml.losses``."""

from __future__ import annotations

import re
from pathlib import Path

import pml.losses

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_lists_losses_that_do_not_exist() -> None:
    text = README.read_text(encoding="utf-8")
    named = set(re.findall(r"`([A-Z][A-Za-z0-9]*(?:Loss|Memory|Wrapper|Mixin|Function))`", text))
    assert named, "the README names no classes: the pattern is stale"
    missing = sorted(named - set(pml.losses.__all__))
    assert not missing, f"README names classes that pml.losses does not export: {missing}"


def test_readme_table_covers_every_exported_loss() -> None:
    text = README.read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `([A-Za-z0-9]+)` \|", text, flags=re.MULTILINE))
    losses = {n for n in pml.losses.__all__ if n.endswith("Loss") and "Base" not in n}
    losses -= {"GenericPairLoss"}
    assert sorted(losses - rows) == []
