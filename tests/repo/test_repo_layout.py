"""Static checks of the monorepo: namespace layout, package files, public API lists."""

from __future__ import annotations

import importlib
import json
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = sorted(p.parent for p in (ROOT / "packages").glob("*/pyproject.toml"))
PUBLIC_API = ROOT / "tests" / "repo" / "public_api.json"


def test_no_namespace_init_anywhere() -> None:
    assert not list((ROOT / "packages").glob("*/src/pml/__init__.py"))
    assert not (ROOT / "pml").exists()


@pytest.mark.parametrize("pkg", PACKAGES, ids=[p.name for p in PACKAGES])
def test_package_files(pkg: Path) -> None:
    for name in ("README.md", "CHANGELOG.md", "LICENSE", "pyproject.toml"):
        assert (pkg / name).is_file(), f"{pkg.name} lacks {name}"
    project = tomllib.loads((pkg / "pyproject.toml").read_text())["project"]
    assert project["name"] == pkg.name
    assert not any(d.startswith("torch==") for d in project["dependencies"]), (
        "pin torch only in envs"
    )
    assert not (pkg / "tests" / "__init__.py").exists()
    for sub in (pkg / "src" / "pml").iterdir():
        assert (sub / "py.typed").exists() and (sub / "__init__.py").exists()
    about = next((pkg / "src" / "pml").glob("*/__about__.py")).read_text()
    version = re.search(r'__version__ = "([^"]+)"', about).group(1)  # type: ignore[union-attr]
    assert f"## {version}" in (pkg / "CHANGELOG.md").read_text(), (
        f"{pkg.name}: CHANGELOG lacks {version}"
    )


def _public_modules() -> list[str]:
    mods = []
    for pkg in PACKAGES:
        for sub in sorted((pkg / "src" / "pml").iterdir()):
            mods.append(f"pml.{sub.name}")
            if (sub / "functional.py").exists() or (sub / "functional").is_dir():
                mods.append(f"pml.{sub.name}.functional")
    return mods


def _current_api() -> dict[str, list[str]]:
    return {m: list(importlib.import_module(m).__all__) for m in _public_modules()}


@pytest.mark.parametrize("module", _public_modules())
def test_all_is_sorted_and_importable(module: str) -> None:
    mod = importlib.import_module(module)
    names = list(mod.__all__)
    assert names == sorted(names), f"{module}.__all__ is not sorted"
    for name in names:
        assert hasattr(mod, name), f"{module}.__all__ lists missing {name}"


def test_public_api_matches_the_committed_list() -> None:
    """Adding or removing a public name is a decision: update tests/repo/public_api.json.

    Regenerate with ``python tests/repo/test_repo_layout.py``.
    """
    committed = json.loads(PUBLIC_API.read_text())
    assert _current_api() == committed


if __name__ == "__main__":
    PUBLIC_API.write_text(json.dumps(_current_api(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {PUBLIC_API}")
