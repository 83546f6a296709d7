"""Fixtures shared by the repository-level tests (packaging and integration)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def wheel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every package under ``packages/`` built once per session into one wheel folder.

    Shared by ``tests/packaging`` (each wheel alone) and ``tests/integration`` (the wheels
    installed together), so a whole-suite run builds them once.
    """
    out = tmp_path_factory.mktemp("wheels")
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is needed to build wheels and venvs")
    for pkg in sorted(p.parent for p in (ROOT / "packages").glob("*/pyproject.toml")):
        subprocess.run(
            [uv, "build", "--wheel", "--quiet", "--out-dir", str(out), str(pkg)], check=True
        )
    return out
