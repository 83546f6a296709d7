"""Run every ```python block of docs/recipes.md and of pml-losses' README.

Blocks of one file run in order in one namespace (later recipes reuse the batch built by the
first), each as its own test: the recipe's own ``assert``s are the checks, and a block that
prints must print something. A block that imports a pml package that is not installed is
skipped (the test says which), as are the blocks after a failed one.
"""

from __future__ import annotations

import contextlib
import io
import re
import traceback
from pathlib import Path
from typing import Any

import pytest

import pml.losses

ROOT = Path(__file__).resolve().parents[2]
DOCS = {
    "recipes": ROOT / "docs" / "recipes.md",
    "losses_readme": ROOT / "packages" / "pml-losses" / "README.md",
}
#: pml distributions a block may need beyond those every test environment has
OPTIONAL = {"pml.miners", "pml.samplers"}

_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """``(line number, code)`` of every ```python block."""
    text = path.read_text()
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in _BLOCK.finditer(text)]


class _Runner:
    """Runs one file's blocks in order, once, remembering each block's outcome."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.blocks = python_blocks(path)
        self.namespace: dict[str, Any] = {"__name__": f"recipes_{path.stem}"}
        self.outcomes: list[tuple[str, str]] = []  # ("ok" | "skip" | "fail", detail)

    def run_through(self, index: int) -> tuple[str, str]:
        while len(self.outcomes) <= index:
            self.outcomes.append(self._run(len(self.outcomes)))
        return self.outcomes[index]

    def _run(self, i: int) -> tuple[str, str]:
        failed = [k for k, (status, _) in enumerate(self.outcomes) if status == "fail"]
        if failed:
            return "skip", f"block {failed[0]} failed before this one"
        line, code = self.blocks[i]
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                exec(compile(code, f"{self.path}:{line}", "exec"), self.namespace)
        except ModuleNotFoundError as e:
            if e.name in OPTIONAL:
                return "skip", f"{e.name} is not installed"
            return "fail", repr(e)
        except Exception:
            return "fail", traceback.format_exc(limit=-3)
        if "print(" in code and not out.getvalue().strip():
            return "fail", "the block prints but printed nothing"
        return "ok", out.getvalue()


_RUNNERS: dict[str, _Runner] = {}


def _runner(key: str) -> _Runner:
    if key not in _RUNNERS:
        _RUNNERS[key] = _Runner(DOCS[key])
    return _RUNNERS[key]


CASES = [
    pytest.param(key, i, id=f"{key}-block{i}-line{line}")
    for key, path in DOCS.items()
    for i, (line, _) in enumerate(python_blocks(path))
]


@pytest.mark.parametrize(("key", "index"), CASES)
def test_block_runs(key: str, index: int) -> None:
    status, detail = _runner(key).run_through(index)
    if status == "skip":
        pytest.skip(detail)
    assert status == "ok", f"{DOCS[key].name} block {index}: {detail}"


def test_files_have_blocks() -> None:
    assert len(python_blocks(DOCS["recipes"])) >= 8
    assert len(python_blocks(DOCS["losses_readme"])) >= 5


def test_seeds_examples_are_in_the_readme() -> None:
    text = DOCS["losses_readme"].read_text()
    for snippet in (
        "loss_func = TripletMarginLoss()",
        "loss = loss_func(embeddings, labels)",
        "miner = MultiSimilarityMiner()",
        "hard_pairs = miner(embeddings, labels)",
        "loss = loss_func(embeddings, labels, hard_pairs)",
        "distance=CosineSimilarity(),",
        "reducer=ThresholdReducer(high=0.3),",
        "embedding_regularizer=LpRegularizer(),",
        "loss_func = SelfSupervisedLoss(TripletMarginLoss())",
        "loss = loss_func(embeddings, augmented)",
        "docs/compatibility.md",
    ):
        assert snippet in text, snippet


def test_readme_table_lists_every_exported_loss() -> None:
    text = DOCS["losses_readme"].read_text()
    listed = set(re.findall(r"^\| `(\w+)` \|", text, re.MULTILINE))
    exported = {
        n
        for n in pml.losses.__all__
        if n.endswith("Loss") and not n.startswith(("Base", "Generic"))
    } | {"CrossBatchMemory", "DistributedLossWrapper", "MultipleLosses"}
    assert exported <= listed, sorted(exported - listed)
