"""Test helpers shared by every pml package: tolerances, vector files, data makers.

Not used by library code. Importing it does not import any other pml package; objects named
in vector files are imported lazily from ``pml.<module>`` when a case is built.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "DTYPES",
    "MODULE_MAP",
    "TOLERANCES",
    "assert_close",
    "build_from_spec",
    "clustered_embeddings",
    "find_vectors_dir",
    "gradcheck",
    "load_vectors",
]

DTYPES: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

#: (rtol, atol) per dtype for comparisons against float64 results cast down.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float16: (2e-2, 2e-2),
    torch.bfloat16: (8e-2, 8e-2),
    torch.float32: (1e-4, 1e-5),
    torch.float64: (1e-9, 1e-12),
}

#: module names used by the reference (and the vector files) -> pml modules.
MODULE_MAP: dict[str, str] = {
    "distances": "pml.distances",
    "reducers": "pml.reducers",
    "regularizers": "pml.regularizers",
    "losses": "pml.losses",
    "miners": "pml.miners",
    "samplers": "pml.samplers",
    "utils.accuracy_calculator": "pml.eval",
    "utils.inference": "pml.eval",
    "testers": "pml.eval",
}


def assert_close(
    actual: Tensor,
    expected: Tensor | float,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    msg: str | None = None,
) -> None:
    """``torch.testing.assert_close`` with tolerances looked up by ``actual``'s dtype.

    ``expected`` is cast to ``actual``'s dtype and device first.
    """
    if not isinstance(expected, Tensor):
        expected = torch.tensor(expected, dtype=torch.float64)
    expected = expected.to(device=actual.device, dtype=actual.dtype)
    d_rtol, d_atol = TOLERANCES.get(actual.dtype, (1e-6, 1e-8))
    torch.testing.assert_close(
        actual,
        expected,
        rtol=d_rtol if rtol is None else rtol,
        atol=d_atol if atol is None else atol,
        equal_nan=True,
        msg=msg,
    )


def find_vectors_dir() -> Path:
    """The folder holding the reference vector files.

    ``$PML_VECTORS_DIR`` if set, else the first ``tests/vectors`` found walking up from the
    current directory.
    """
    env = os.environ.get("PML_VECTORS_DIR")
    if env:
        return Path(env)
    here = Path.cwd().resolve()
    for d in (here, *here.parents):
        cand = d / "tests" / "vectors"
        if (cand / "README.md").exists():
            return cand
    raise FileNotFoundError(
        "tests/vectors not found above the current directory; set PML_VECTORS_DIR"
    )


def load_vectors(name: str) -> list[dict[str, Any]]:
    """Cases of ``<name>.json`` (e.g. ``"distances"``)."""
    with open(find_vectors_dir() / f"{name}.json") as f:
        return json.load(f)["cases"]


def _resolve_class(module: str, cls: str) -> Any:
    target = MODULE_MAP.get(module, f"pml.{module}")
    return getattr(importlib.import_module(target), cls)


def build_from_spec(spec: Any, dtype: torch.dtype = torch.float64) -> Any:
    """Recursively build objects and tensors from a vector file's ``kwargs`` tree.

    ``{"class", "module", "kwargs"}`` -> an instance; ``{"tensor", "dtype"}`` -> a tensor;
    lists and dicts are walked; anything else is returned as is.
    """
    if isinstance(spec, dict):
        if "class" in spec and "module" in spec:
            kwargs = {k: build_from_spec(v, dtype) for k, v in spec.get("kwargs", {}).items()}
            return _resolve_class(spec["module"], spec["class"])(**kwargs)
        if "tensor" in spec:
            return torch.tensor(spec["tensor"], dtype=getattr(torch, spec.get("dtype", "float64")))
        return {k: build_from_spec(v, dtype) for k, v in spec.items()}
    if isinstance(spec, list):
        return [build_from_spec(v, dtype) for v in spec]
    return spec


def clustered_embeddings(
    num_classes: int,
    per_class: int,
    dim: int,
    *,
    seed: int = 0,
    spread: float = 0.5,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    shuffle: bool = True,
) -> tuple[Tensor, Tensor]:
    """Class-clustered random points, drawn on CPU with a seeded generator, then moved.

    Returns:
        ``(embeddings (C*m, D), labels (C*m,) int64)``.
    """
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_classes, dim, generator=g, dtype=torch.float64)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    emb = centers[labels] + spread * torch.randn(len(labels), dim, generator=g, dtype=torch.float64)
    if shuffle:
        perm = torch.randperm(len(labels), generator=g)
        emb, labels = emb[perm], labels[perm]
    return emb.to(device=device, dtype=dtype), labels.to(device)


def gradcheck(fn: Any, inputs: Tensor | tuple[Any, ...], **kwargs: Any) -> bool:
    """``torch.autograd.gradcheck`` of ``fn`` at float64 copies of ``inputs``.

    Every floating-point tensor in ``inputs`` (one tensor or a tuple) is detached, cast to
    float64 and made to require grad; other entries (masks, indices, numbers) are passed as
    they are. Keyword arguments go to ``torch.autograd.gradcheck`` (``atol``, ``eps``, ...).

    Returns:
        True (a mismatch raises ``torch.autograd.gradcheck.GradcheckError``).

    Example:
        >>> gradcheck(lambda x, m: (x * m).sum(), (torch.ones(3), torch.tensor([1, 0, 1])))
        True
    """
    args = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    prepared = tuple(
        a.detach().to(torch.float64).requires_grad_()
        if isinstance(a, Tensor) and a.dtype.is_floating_point
        else a
        for a in args
    )
    return torch.autograd.gradcheck(fn, prepared, **kwargs)
