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

from pml.core._processes import run_in_processes
from pml.core.indices import get_all_pairs_indices

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
    "run_in_processes",
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


# ---------------------------------------------------------------------------------------------
# Naive references for the loss and miner tests: written from the specs, loops on purpose.


def random_embeddings(
    n: int = 10, d: int = 6, seed: int = 0, dtype: torch.dtype = torch.float64
) -> Tensor:
    """``randn(n, d)`` from a generator seeded with ``seed`` (float64 by default)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype)


def naive_pairs(
    labels: Tensor, ref_labels: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """All ``(a1, p, a2, n)`` pairs from labels, row-major, one cell at a time.

    Without ``ref_labels`` the reference set is the batch and self pairs ``(i, i)`` are not
    positive pairs.
    """
    same = ref_labels is None
    ref = labels if ref_labels is None else ref_labels
    a1, p, a2, n = [], [], [], []
    for i, li in enumerate(labels.tolist()):
        for j, lj in enumerate(ref.tolist()):
            if li == lj and not (same and i == j):
                a1.append(i)
                p.append(j)
            elif li != lj:
                a2.append(i)
                n.append(j)
    return tuple(torch.tensor(t, dtype=torch.long) for t in (a1, p, a2, n))  # type: ignore[return-value]


def naive_triplets(
    labels: Tensor, ref_labels: Tensor | None = None, same: bool = True
) -> list[tuple[int, int, int]]:
    """All ``(a, p, n)`` in lexicographic order (``same``: no ``p == a``)."""
    ref = labels if ref_labels is None else ref_labels
    return [
        (a, p, n)
        for a in range(len(labels))
        for p in range(len(ref))
        if ref[p] == labels[a] and not (same and p == a)
        for n in range(len(ref))
        if ref[n] != labels[a]
    ]


def naive_pair_triplets(pairs: tuple[Tensor, ...]) -> list[tuple[int, int, int]]:
    """The triplets of a pairs tuple: each positive pair with each negative of its anchor."""
    a1, p, a2, n = (t.tolist() for t in pairs)
    return [(a, pp, nn) for a, pp in zip(a1, p) for aa, nn in zip(a2, n) if aa == a]


def mined_pairs(
    labels: Tensor, seed: int = 3, k: int = 25
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``k`` random positive and ``k`` random negative pairs of ``labels`` (duplicates likely).

    Like a miner's output on the batch itself: positives are distinct same-label rows.
    """
    g = torch.Generator().manual_seed(seed)
    size = len(labels)
    a1: list[int] = []
    p: list[int] = []
    a2: list[int] = []
    n: list[int] = []
    while len(a1) < k:
        i, j = torch.randint(0, size, (2,), generator=g).tolist()
        if i != j and labels[i] == labels[j]:
            a1.append(i)
            p.append(j)
    while len(a2) < k:
        i, j = torch.randint(0, size, (2,), generator=g).tolist()
        if labels[i] != labels[j]:
            a2.append(i)
            n.append(j)
    return tuple(torch.tensor(t) for t in (a1, p, a2, n))  # type: ignore[return-value]


def mined_triplets(labels: Tensor, seed: int = 9) -> tuple[Tensor, Tensor, Tensor]:
    """Triplets on the positive pairs of :func:`mined_pairs` with a random negative each."""
    g = torch.Generator().manual_seed(seed)
    a, p, _, _ = mined_pairs(labels)
    negs = []
    for ai in a.tolist():
        j = int(torch.randint(0, len(labels), (1,), generator=g))
        while labels[j] == labels[ai]:
            j = int(torch.randint(0, len(labels), (1,), generator=g))
        negs.append(j)
    return a, p, torch.tensor(negs)


def subsampled_pairs(
    labels: Tensor, seed: int = 1, extra: tuple[int, int] = (2, 3)
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A random subset of all pairs (60% of positives, 40% of negatives) plus duplicates.

    The first ``extra[0]`` positive and ``extra[1]`` negative pairs are listed twice.
    """
    a1, p, a2, n = get_all_pairs_indices(labels)
    g = torch.Generator().manual_seed(seed)
    k1, k2 = torch.rand(len(a1), generator=g) < 0.6, torch.rand(len(a2), generator=g) < 0.4
    a1, p, a2, n = a1[k1], p[k1], a2[k2], n[k2]
    dp, dn = extra
    return (
        torch.cat([a1, a1[:dp]]),
        torch.cat([p, p[:dp]]),
        torch.cat([a2, a2[:dn]]),
        torch.cat([n, n[:dn]]),
    )


__all__ += [
    "mined_pairs",
    "mined_triplets",
    "naive_pair_triplets",
    "naive_pairs",
    "naive_triplets",
    "random_embeddings",
    "subsampled_pairs",
]
