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


#: one smoke test per distribution (run by tests/packaging in installed environments; written
#: to work on the package's previous releases too: names that may not exist are looked up)
SMOKE = {
    "pml-core": "from pml.core import get_all_pairs_indices; import torch; "
    "assert get_all_pairs_indices(torch.tensor([0, 0, 1]))[0].tolist() == [0, 1]",
    "pml-distances": "import torch; from pml.distances import CosineSimilarity; "
    "assert CosineSimilarity()(torch.eye(2)).tolist() == [[1.0, 0.0], [0.0, 1.0]]",
    "pml-reducers": "import torch; from pml.reducers import AvgNonZeroReducer; "
    "from pml.regularizers import LpRegularizer; "
    "d = {'loss': {'losses': torch.tensor([0., 2., 4.]), 'indices': torch.arange(3), "
    "'reduction_type': 'element'}}; "
    "assert AvgNonZeroReducer()(d, torch.zeros(3, 1), None).item() == 3.0; "
    "assert LpRegularizer()(torch.tensor([[3., 4.]])).item() == 5.0",
    "pml-losses": "import torch, pml.losses as L; e = torch.randn(8, 4, requires_grad=True); "
    "y = torch.arange(4).repeat(2); "
    "f = getattr(L, 'TripletMarginLoss', None); "
    "f is None or f()(e, y).backward()",
    "pml-miners": "import torch, pml.miners as M; e = torch.randn(8, 4); y = torch.arange(4).repeat(2); "
    "m = getattr(M, 'MultiSimilarityMiner', None); assert m is None or len(m()(e, y)) == 4",
    "pml-samplers": "import torch, pml.samplers as S; "
    "c = getattr(S, 'MPerClassSampler', None); "
    "assert c is None or len(list(iter(c(torch.arange(4).repeat(4), m=2, length_before_new_iter=16)))) == 16",
    "pml-eval": "import numpy as np, torch, pml.eval as E; "
    "c = getattr(E, 'AccuracyCalculator', None); "
    "x = torch.randn(20, 4); y = torch.arange(4).repeat(5); "
    "r = c(include=('precision_at_1',), k=3).get_accuracy(x, y) if c else {'precision_at_1': 0}; "
    "assert 0 <= r['precision_at_1'] <= 1",
    "pml-trainers": "import torch, pml.trainers as T; "
    "d = T.DigitsDataset(split='test'); assert len(d) > 0 and d[0][0].shape == (64,)",
    "pml-all": "from pml.cli.__main__ import main; assert main(['train', '--loss', 'Nope']) == 2",
}


@pytest.fixture(scope="session")
def smoke() -> dict[str, str]:
    """``{distribution: python source}``: a few lines that exercise the installed package."""
    return SMOKE
