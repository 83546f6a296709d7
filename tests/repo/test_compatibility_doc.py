"""Every test that docs/compatibility.md names exists (a deviation must be shown by a test)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "compatibility.md"
REFS = sorted(
    set(re.findall(r"`((?:packages|tests)/[\w./-]+\.py)::(\w+)(?:\[[^`]*\])?`", DOC.read_text()))
)


def test_doc_names_tests() -> None:
    assert len(REFS) >= 10


@pytest.mark.parametrize(("path", "name"), REFS, ids=[f"{p}::{n}" for p, n in REFS])
def test_named_test_exists(path: str, name: str) -> None:
    source = (ROOT / path).read_text()
    assert re.search(rf"^\s*(async\s+)?def {name}\b", source, re.M), f"{path} has no test {name}"
