"""Wheels: each builds, ships no pml/__init__.py, declares what it imports, installs alone.

"Alone" means a fresh virtual environment holding only the wheel, its declared dependencies
(pml siblings from the freshly built wheels, third-party ones from the index or the local
wheel folder) and nothing else: proof that e.g. ``pip install pml-distances`` works without
losses, miners, faiss or scikit-learn.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = sorted(p.parent for p in (ROOT / "packages").glob("*/pyproject.toml"))
NAMES = [p.name for p in PACKAGE_DIRS]

#: import name -> distribution that provides it (third-party)
THIRD_PARTY = {
    "torch": "torch",
    "numpy": "numpy",
    "PIL": "pillow",
    "sklearn": "scikit-learn",
    "faiss": "faiss-cpu",
    "scipy": "scipy",
    "tqdm": "tqdm",
    "safetensors": "safetensors",
    "umap": "umap-learn",
    "matplotlib": "matplotlib",
    "yaml": "PyYAML",
}
#: heavy optional modules that must not be importable unless the package declares them
FORBIDDEN_UNLESS_DECLARED = {"faiss": "faiss-cpu", "sklearn": "scikit-learn"}

# SMOKE: the per-package smoke snippets, the ``smoke`` fixture of tests/conftest.py


def _project(pkg_dir: Path) -> dict:
    return tomllib.loads((pkg_dir / "pyproject.toml").read_text())["project"]


def _dep_names(pkg_dir: Path) -> set[str]:
    return {
        re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0].lower()
        for d in _project(pkg_dir)["dependencies"]
    }


def _pml_dist(module: str) -> str:
    """The distribution of a pml module (``pml.regularizers`` ships in pml-reducers)."""
    name = module.split(".")[1]
    return "pml-reducers" if name == "regularizers" else f"pml-{name}"


def _version(pkg_dir: Path) -> str:
    about = next((pkg_dir / "src" / "pml").glob("*/__about__.py"))
    return re.search(r'__version__ = "([^"]+)"', about.read_text()).group(1)  # type: ignore[union-attr]


def _pml_closure(name: str) -> set[str]:
    dirs = {p.name: p for p in PACKAGE_DIRS}
    seen, todo = set(), [name]
    while todo:
        cur = todo.pop()
        if cur in seen:
            continue
        seen.add(cur)
        todo += [d for d in _dep_names(dirs[cur]) if d.startswith("pml-")]
    return seen


def _imports(pkg_dir: Path) -> tuple[set[str], set[str]]:
    """(required, optional) top-level modules imported by the package's sources."""
    required: set[str] = set()
    optional: set[str] = set()
    for path in (pkg_dir / "src").rglob("*.py"):
        tree = ast.parse(path.read_text())
        guarded: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Try) and any(
                h.type is not None
                and any(n in ast.unparse(h.type) for n in ("ImportError", "ModuleNotFoundError"))
                for h in node.handlers
            ):
                guarded |= {id(n) for n in ast.walk(node)}
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for n in names:
                parts = n.split(".")
                mod = ".".join(parts[:2]) if parts[0] == "pml" else parts[0]
                (optional if id(node) in guarded else required).add(mod)
    return required, optional


# wheel_dir: the session fixture of tests/conftest.py (the wheels are built once and shared
# with tests/integration)


def _wheel(wheel_dir: Path, pkg_dir: Path) -> Path:
    name = pkg_dir.name.replace("-", "_")
    return next(wheel_dir.glob(f"{name}-{_version(pkg_dir)}-*.whl"))


@pytest.mark.parametrize("pkg_dir", PACKAGE_DIRS, ids=NAMES)
def test_wheel_contents(wheel_dir: Path, pkg_dir: Path) -> None:
    files = zipfile.ZipFile(_wheel(wheel_dir, pkg_dir)).namelist()
    assert "pml/__init__.py" not in files
    code = [f for f in files if not f.split("/")[0].endswith(".dist-info")]
    owned = {f.split("/")[1] for f in code}
    assert all(f.startswith("pml/") for f in code), code
    expected = {
        p.name
        for p in (pkg_dir / "src" / "pml").iterdir()
        if p.is_dir() and not p.name.startswith("__")
    }
    assert owned == expected
    for sub in owned:
        assert f"pml/{sub}/py.typed" in files and f"pml/{sub}/__init__.py" in files


@pytest.mark.parametrize("pkg_dir", PACKAGE_DIRS, ids=NAMES)
def test_declares_exactly_what_it_imports(pkg_dir: Path) -> None:
    declared = _dep_names(pkg_dir)
    own = {f"pml.{p.name}" for p in (pkg_dir / "src" / "pml").iterdir() if p.is_dir()}
    required, optional = _imports(pkg_dir)
    stdlib = set(sys.stdlib_module_names)
    for mod in sorted(required - own - stdlib):
        dist = _pml_dist(mod) if mod.startswith("pml.") else THIRD_PARTY.get(mod)
        assert dist is not None, f"{pkg_dir.name} imports unknown module {mod}"
        assert dist in declared, f"{pkg_dir.name} imports {mod} but does not declare {dist}"
    for mod in sorted(optional - own - stdlib):
        if mod.startswith("pml."):
            assert _pml_dist(mod) in declared, f"{pkg_dir.name}: optional sibling {mod}"
    used_pml = {_pml_dist(m) for m in required | optional if m.startswith("pml.")} - {pkg_dir.name}
    unused = {d for d in declared if d.startswith("pml-")} - used_pml
    assert not unused, f"{pkg_dir.name} declares siblings it never imports: {unused}"


def test_sibling_ranges_admit_the_repo_versions() -> None:
    versions = {p.name: tuple(int(x) for x in _version(p).split(".")[:2]) for p in PACKAGE_DIRS}
    for pkg in PACKAGE_DIRS:
        for dep in _project(pkg)["dependencies"]:
            m = re.fullmatch(
                r"(pml-[a-z]+)>=(\d+)\.(\d+)(?:\.\d+)?,<(\d+)\.(\d+)", dep.replace(" ", "")
            )
            if dep.startswith("pml-"):
                assert m, f"{pkg.name}: sibling dependency {dep!r} must be a range >=X.Y,<X.Y+1"
                lo, hi = (int(m[2]), int(m[3])), (int(m[4]), int(m[5]))
                assert lo <= versions[m[1]] < hi, (
                    f"{pkg.name}: {dep} excludes {m[1]} {versions[m[1]]}"
                )


@pytest.mark.parametrize("pkg_dir", PACKAGE_DIRS, ids=NAMES)
def test_installs_and_works_alone(
    wheel_dir: Path, pkg_dir: Path, tmp_path: Path, smoke: dict[str, str]
) -> None:
    uv = shutil.which("uv")
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    python = venv / "bin" / "python"
    links = ["--find-links", str(wheel_dir)]
    for var in ("UV_FIND_LINKS", "PIP_FIND_LINKS"):
        if os.environ.get(var):
            links += ["--find-links", os.environ[var]]
            break
    pins = [
        f"{p.name}=={_version(p)}" for p in PACKAGE_DIRS if p.name in _pml_closure(pkg_dir.name)
    ]
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--python", str(python), *links, "torch==2.13.0", *pins],
        check=True,
    )
    listed = json.loads(
        subprocess.run(
            [uv, "pip", "list", "--python", str(python), "--format", "json"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    installed = {d["name"].lower() for d in listed}
    assert {d for d in installed if d.startswith("pml-")} == _pml_closure(pkg_dir.name)
    declared = set().union(
        *(_dep_names(p) for p in PACKAGE_DIRS if p.name in _pml_closure(pkg_dir.name))
    )
    modules = [p.name for p in (pkg_dir / "src" / "pml").iterdir() if p.is_dir()]
    script = "\n".join(
        [
            "import importlib, importlib.util, pkgutil",
            f"for sub in {modules!r}:",
            "    pkg = importlib.import_module('pml.' + sub)",
            "    for info in pkgutil.walk_packages(pkg.__path__, 'pml.' + sub + '.'):",
            "        if not info.name.endswith('.testing'):",
            "            importlib.import_module(info.name)",
            *[
                f"assert importlib.util.find_spec({mod!r}) is None, 'unexpected {mod}'"
                for mod, dist in FORBIDDEN_UNLESS_DECLARED.items()
                if dist not in declared
            ],
            smoke.get(pkg_dir.name, "pass"),
            "print('ok')",
        ]
    )
    proc = subprocess.run([str(python), "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
