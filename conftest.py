"""Root fixtures shared by every package's tests: ``dtype`` and ``device``.

Data is drawn on CPU with a seeded generator and then moved, so results do not depend on
the device. CUDA is added to ``device`` only when it is available; no test needs a GPU.
"""

from __future__ import annotations

import pytest
import torch

from pml.core.testing import DTYPES

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DTYPES, ids=lambda d: str(d).removeprefix("torch."))
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    return request.param


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _doctest_torch(doctest_namespace: dict) -> None:
    doctest_namespace["torch"] = torch
