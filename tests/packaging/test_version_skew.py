"""Version skew: each package's previous release beside today's siblings, and the reverse.

Users pin each package on its own, so the sibling ranges must be honest. For every package
``P`` with a previous release tag (``pml-<name>-v<version>``, older than today's version):

* **old P, new siblings**: ``P`` built from its tag (``git archive`` of the tag's package
  folder), installed beside today's wheels of the packages it depends on;
* **new P, old siblings**: today's ``P`` beside the previous releases of its dependencies
  (today's wheel where a dependency has no previous release).

When every declared sibling range of the installed wheels admits the installed versions, the
combination is allowed, so it must work: every module of ``P`` imports and ``P``'s smoke test
(the one of ``test_wheels.py``) passes. A combination that the ranges exclude is skipped
with the range that excludes it. The wheels go into one folder on ``PYTHONPATH`` of a shared
virtual environment that holds only the third-party dependencies (torch, numpy, ...).
"""

from __future__ import annotations

import email.parser
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = sorted(p.parent for p in (ROOT / "packages").glob("*/pyproject.toml"))
NAMES = [p.name for p in PACKAGE_DIRS]
THIRD_PARTY = [
    "torch==2.13.0",
    "numpy",
    "scikit-learn",
    "faiss-cpu",
    "pillow",
    "matplotlib",
    "PyYAML",
]


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True
    ).stdout


def _current_version(name: str) -> Version:
    about = next((ROOT / "packages" / name / "src" / "pml").glob("*/__about__.py"))
    return Version(re.search(r'__version__ = "([^"]+)"', about.read_text())[1])  # type: ignore[index]


def _releases() -> dict[str, dict[Version, str]]:
    """``{package: {version: commit}}`` from ``releases.toml`` (tags may not be fetched)."""
    with (ROOT / "releases.toml").open("rb") as f:
        data = tomllib.load(f)
    return {name: {Version(v): c for v, c in rows.items()} for name, rows in data.items()}


def _has_commit(commit: str) -> bool:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        return False
    probe = subprocess.run(
        ["git", "-C", str(ROOT), "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True
    )
    return probe.returncode == 0


def _previous_releases() -> dict[str, tuple[str, Version]]:
    """``{package: (commit, version)}``: the newest release older than today's version."""
    out: dict[str, tuple[str, Version]] = {}
    for name, rows in _releases().items():
        if name not in NAMES:
            continue
        older = [v for v in rows if v < _current_version(name)]
        if older:
            out[name] = (rows[max(older)], max(older))
    return out


PREVIOUS = _previous_releases()


def _metadata(wheel: Path) -> tuple[str, Version, list[Requirement]]:
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(z.read(name).decode())
    reqs = [Requirement(r) for r in meta.get_all("Requires-Dist") or []]
    return meta["Name"], Version(meta["Version"]), reqs


def _pml_deps(wheel: Path) -> list[str]:
    return [r.name for r in _metadata(wheel)[2] if r.name.startswith("pml-") and not r.marker]


@pytest.fixture(scope="session")
def old_wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each package's previous release, built from its release commit."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is needed to build the previous releases")
    absent = sorted({c[:12] for c, _ in PREVIOUS.values() if not _has_commit(c)})
    if absent:
        pytest.skip(f"release commits {absent} are not in this clone (shallow clone?)")
    out = tmp_path_factory.mktemp("old_wheels")
    wheels = {}
    for name, (commit, _) in sorted(PREVIOUS.items()):
        src = tmp_path_factory.mktemp(f"src-{name}")
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", commit, f"packages/{name}"],
            check=True,
            capture_output=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(src, filter="data")
        subprocess.run(
            [
                uv,
                "build",
                "--wheel",
                "--quiet",
                "--out-dir",
                str(out),
                str(src / "packages" / name),
            ],
            check=True,
        )
        wheels[name] = next(out.glob(f"{name.replace('-', '_')}-{PREVIOUS[name][1]}-*.whl"))
    return wheels


@pytest.fixture(scope="session")
def third_party_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with the third-party dependencies only (no pml package)."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is needed to build venvs")
    venv = tmp_path_factory.mktemp("skew") / "venv"
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    python = venv / "bin" / "python"
    links = []
    for var in ("UV_FIND_LINKS", "PIP_FIND_LINKS"):
        if os.environ.get(var):
            links = ["--find-links", os.environ[var]]
            break
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--python", str(python), *links, *THIRD_PARTY],
        check=True,
    )
    return python


def _current_wheel(wheel_dir: Path, name: str) -> Path:
    version = _current_version(name)
    return next(wheel_dir.glob(f"{name.replace('-', '_')}-{version}-*.whl"))


def _closure(first: Path, pick: dict[str, Path]) -> dict[str, Path]:
    """``first`` and the pml packages it needs, each taken from ``pick``."""
    chosen = {_metadata(first)[0]: first}
    todo = _pml_deps(first)
    while todo:
        name = todo.pop()
        if name not in chosen:
            chosen[name] = pick[name]
            todo += _pml_deps(pick[name])
    return chosen


def _excluded_by(chosen: dict[str, Path]) -> str | None:
    """The first declared sibling range the chosen versions break, or None."""
    versions = {name: _metadata(w)[1] for name, w in chosen.items()}
    for name, wheel in sorted(chosen.items()):
        for req in _metadata(wheel)[2]:
            if req.name in versions and versions[req.name] not in req.specifier:
                return f"{name} {versions[name]} requires {req}, got {versions[req.name]}"
    return None


def _run_smoke(
    python: Path, chosen: dict[str, Path], package: str, tmp_path: Path, smoke: dict[str, str]
) -> None:
    site = tmp_path / "site"
    for wheel in chosen.values():
        with zipfile.ZipFile(wheel) as z:
            z.extractall(site)
    assert not (site / "pml" / "__init__.py").exists()
    names = zipfile.ZipFile(chosen[package]).namelist()
    modules = sorted({n.split("/")[1] for n in names if n.startswith("pml/") and n.count("/") > 1})
    script = "\n".join(
        [
            "import importlib, pkgutil",
            f"for sub in {modules!r}:",
            "    pkg = importlib.import_module('pml.' + sub)",
            f"    assert pkg.__file__.startswith({str(site)!r}), pkg.__file__",
            "    for info in pkgutil.walk_packages(pkg.__path__, 'pml.' + sub + '.'):",
            "        if not info.name.endswith('.testing'):",
            "            importlib.import_module(info.name)",
            smoke.get(package, "pass"),
            "print('ok')",
        ]
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONPATH"] = str(site)
    proc = subprocess.run(
        [str(python), "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    versions = {n: str(_metadata(w)[1]) for n, w in chosen.items()}
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), (
        f"{package} fails beside {versions} although the ranges allow it:\n{proc.stderr[-3000:]}"
    )


SKEWED = sorted(PREVIOUS)


def test_every_released_version_is_listed_in_releases_toml() -> None:
    """Each released CHANGELOG section has its commit in ``releases.toml``, and only those."""
    releases = _releases()
    assert set(releases) <= set(NAMES), f"unknown packages: {set(releases) - set(NAMES)}"
    for pkg in PACKAGE_DIRS:
        text = (pkg / "CHANGELOG.md").read_text()
        released = {
            Version(v) for v in re.findall(r"^## (\d+\.\d+\.\d+) — (?!unreleased)", text, re.M)
        }
        listed = set(releases.get(pkg.name, {}))
        assert released == listed, (
            f"{pkg.name}: released in CHANGELOG {sorted(map(str, released))}, "
            f"listed in releases.toml {sorted(map(str, listed))}"
        )
        for version, commit in releases.get(pkg.name, {}).items():
            assert re.fullmatch(r"[0-9a-f]{40}", commit), f"{pkg.name} {version}: {commit!r}"


def test_release_commits_hold_their_versions_and_agree_with_tags() -> None:
    """Where this clone has a release commit, its ``__about__`` says that version; where it has
    the release tag, the tag points at that commit."""
    checked = 0
    for name, rows in _releases().items():
        for version, commit in rows.items():
            if not _has_commit(commit):
                continue
            files = _git("ls-tree", "-r", "--name-only", commit, f"packages/{name}/src").split()
            about = next(f for f in files if f.endswith("__about__.py"))
            text = _git("show", f"{commit}:{about}")
            found = re.search(r'__version__ = "([^"]+)"', text)
            assert found and Version(found[1]) == version, f"{name} at {commit[:12]}: {found}"
            tag = f"{name}-v{version}"
            if _git("tag", "--list", tag).strip():
                assert _git("rev-list", "-n", "1", tag).strip() == commit, tag
            checked += 1
    if not checked:
        pytest.skip("no release commit in this clone (shallow clone?)")


@pytest.mark.parametrize("name", SKEWED or [pytest.param("none", marks=pytest.mark.skip)])
def test_previous_release_works_beside_current_siblings(
    name: str,
    old_wheels: dict[str, Path],
    wheel_dir: Path,
    third_party_python: Path,
    tmp_path: Path,
    smoke: dict[str, str],
) -> None:
    current = {n: _current_wheel(wheel_dir, n) for n in NAMES}
    chosen = _closure(old_wheels[name], current)
    reason = _excluded_by(chosen)
    if reason is not None:
        pytest.skip(f"the ranges exclude this combination: {reason}")
    _run_smoke(third_party_python, chosen, name, tmp_path, smoke)


@pytest.mark.parametrize("name", NAMES)
def test_current_release_works_beside_previous_siblings(
    name: str,
    old_wheels: dict[str, Path],
    wheel_dir: Path,
    third_party_python: Path,
    tmp_path: Path,
    smoke: dict[str, str],
) -> None:
    current = {n: _current_wheel(wheel_dir, n) for n in NAMES}
    older = {**current, **old_wheels}
    older[name] = current[name]
    chosen = _closure(current[name], older)
    if all(chosen[n] == current[n] for n in chosen):
        pytest.skip(f"no dependency of {name} has a previous release")
    reason = _excluded_by(chosen)
    if reason is not None:
        pytest.skip(f"the ranges exclude this combination: {reason}")
    _run_smoke(third_party_python, chosen, name, tmp_path, smoke)
