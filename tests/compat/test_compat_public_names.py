"""Every public class the reference exports exists in the matching pml module (drop-in imports)."""

from __future__ import annotations

import importlib
import inspect

import pytest

pytest.importorskip("pytorch_metric_learning")

#: reference module -> pml module
MODULES = {
    "pytorch_metric_learning.losses": "pml.losses",
    "pytorch_metric_learning.miners": "pml.miners",
    "pytorch_metric_learning.distances": "pml.distances",
    "pytorch_metric_learning.reducers": "pml.reducers",
    "pytorch_metric_learning.regularizers": "pml.regularizers",
    "pytorch_metric_learning.samplers": "pml.samplers",
}


@pytest.mark.parametrize("ref_name", sorted(MODULES))
def test_every_reference_class_is_exported(ref_name: str) -> None:
    ref = importlib.import_module(ref_name)
    ours = importlib.import_module(MODULES[ref_name])
    classes = {n for n in dir(ref) if not n.startswith("_") and inspect.isclass(getattr(ref, n))}
    # torch classes the reference re-exports by accident are not part of its API
    classes = {
        n for n in classes if getattr(ref, n).__module__.startswith("pytorch_metric_learning")
    }
    missing = sorted(n for n in classes if not hasattr(ours, n))
    assert not missing, f"{MODULES[ref_name]} lacks {missing}"
    assert all(n in ours.__all__ for n in classes if hasattr(ours, n))
