"""Test helpers shared by every pml package: tolerances, vector files, data makers.

Not used by library code. Importing it does not import any other pml package; objects named
in vector files are imported lazily from ``pml.<module>`` when a case is built.
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

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
# Multi-process tests: forked workers in a torch.distributed process group.

#: seconds the other ranks may still run after one failed (they may wait in a collective)
_GRACE_AFTER_FAILURE = 10.0


def _process_main(
    worker: Callable[..., Any],
    rank: int,
    world_size: int,
    folder: Path,
    args: tuple[Any, ...],
    backend: str,
    init_group: bool,
) -> None:
    """A child's body: the group, the worker, its result saved (or its traceback)."""
    import torch.distributed as dist

    # a forked child must not enter the parent's OpenMP thread pool (it can hang)
    torch.set_num_threads(1)
    try:
        if init_group:
            dist.init_process_group(
                backend,
                init_method=f"file://{folder / 'rendezvous'}",
                rank=rank,
                world_size=world_size,
            )
            # every rank connected before any worker runs: a rank whose worker returns at
            # once would otherwise close its connections while a peer is still connecting
            dist.barrier()
        try:
            result = worker(rank, world_size, *args)
        finally:
            if init_group and dist.is_initialized():
                dist.destroy_process_group()
        torch.save(result, folder / f"rank{rank}.pt")
    except BaseException:
        (folder / f"rank{rank}.err").write_text(traceback.format_exc())
        raise


def run_in_processes(
    worker: Callable[..., Any],
    world_size: int,
    tmp_dir: str | os.PathLike[str],
    *args: Any,
    timeout: float = 120,
    backend: str = "gloo",
    init_group: bool = True,
) -> list[Any]:
    """Run ``worker(rank, world_size, *args)`` in ``world_size`` forked processes.

    Each child uses one torch thread and, with ``init_group``, runs the worker inside a
    ``backend`` process group (``file://`` rendezvous in a fresh folder under ``tmp_dir``,
    destroyed afterwards; without it the worker makes its own group, if any). Its return
    value is saved with ``torch.save`` and loaded back with ``weights_only=True``, so it must
    be made of tensors, dicts, lists, tuples, strings, numbers (NumPy scalars too), bools and
    None. Children are
    forked (they reuse the caller's imports; a spawned child would re-import torch), so
    ``worker`` and ``args`` need not be picklable. A test calls it from a (module-scoped)
    fixture and asserts on the results in the parent.

    Args:
        worker: ``worker(rank, world_size, *args) -> result``.
        world_size: number of processes (>= 1).
        tmp_dir: an existing folder for the rendezvous file and the results.
        *args: passed to every rank's worker after ``(rank, world_size)``.
        timeout: seconds all ranks together may take; then the stragglers are killed.
        backend: the process group's backend.
        init_group: False: no process group is made for the worker.

    Returns:
        The workers' results, indexed by rank.

    Raises:
        AssertionError: a rank raised (its traceback is in the message), exited with another
            code than 0, or was still running after ``timeout`` seconds (or some seconds after
            another rank failed); the message names each such rank and its exit code.
        pytest.skip.Exception: torch.distributed or ``backend`` or the fork start method is
            not available (pytest is imported only then; without pytest:
            ``unittest.SkipTest``).

    Example:
        >>> def worker(rank, world_size):  # doctest: +SKIP
        ...     x = torch.tensor([rank + 1.0])
        ...     torch.distributed.all_reduce(x)
        ...     return x
        >>> run_in_processes(worker, 2, tmp_path)  # doctest: +SKIP
        [tensor([3.]), tensor([3.])]
    """
    import multiprocessing as mp
    from multiprocessing.connection import wait

    import torch.distributed as dist

    backend_ok = dist.is_available() and (
        dist.is_gloo_available() if backend == "gloo" else dist.is_backend_available(backend)
    )
    if not backend_ok or "fork" not in mp.get_all_start_methods():
        reason = f"torch.distributed with {backend} (forked processes) is not available"
        try:
            import pytest
        except ImportError:  # pytest is no dependency of pml-core; unittest skips too
            import unittest

            raise unittest.SkipTest(reason) from None
        pytest.skip(reason)
    folder = Path(tempfile.mkdtemp(prefix="processes-", dir=tmp_dir))
    ctx = mp.get_context("fork")
    procs = [
        ctx.Process(
            target=_process_main,
            args=(worker, rank, world_size, folder, args, backend, init_group),
            name=f"rank{rank}",
        )
        for rank in range(world_size)
    ]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout
    first_failure: int | None = None
    while True:
        alive = [p for p in procs if p.exitcode is None]
        if first_failure is None:
            failed = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0)]
            if failed:  # the others may wait for it in a collective: give them a moment
                first_failure = failed[0]
                deadline = min(deadline, time.monotonic() + _GRACE_AFTER_FAILURE)
        left = deadline - time.monotonic()
        if not alive or left <= 0:
            break
        wait([p.sentinel for p in alive], timeout=left)
    problems = []
    for rank, p in enumerate(procs):
        if p.exitcode is None:
            p.kill()
            p.join()
            why = (
                f"was still running {_GRACE_AFTER_FAILURE:g} s after rank {first_failure} failed"
                if first_failure is not None
                else f"did not finish within {timeout:g} s"
            )
            problems.append(f"rank {rank} {why} (killed; exit code {p.exitcode})")
        elif p.exitcode != 0:
            err = folder / f"rank{rank}.err"
            tb = err.read_text() if err.exists() else "(no Python traceback; see its stderr)\n"
            problems.append(f"rank {rank} failed (exit code {p.exitcode}):\n{tb}")
    if problems:
        raise AssertionError(
            f"{len(problems)} of {world_size} worker processes failed:\n" + "\n".join(problems)
        )
    results = []
    with torch.serialization.safe_globals(_numpy_scalar_globals()):
        for rank in range(world_size):
            path = folder / f"rank{rank}.pt"
            try:
                results.append(torch.load(path, weights_only=True))
            except pickle.UnpicklingError:
                unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
                raise AssertionError(
                    f"rank {rank}'s result is not weights-only loadable: return tensors, dicts, "
                    f"lists, tuples, strings, numbers, bools or None; it holds {unsafe}"
                ) from None
    return results


def _numpy_scalar_globals() -> list[Any]:
    """What unpickling NumPy scalars (e.g. ``np.float64`` metrics) needs; [] without NumPy."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is optional for pml-core
        return []
    core = getattr(np, "_core", None) or np.core  # NumPy 2 / 1
    kinds = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32)
    kinds += (np.uint64, np.float16, np.float32, np.float64, np.complex64, np.complex128)
    return [core.multiarray.scalar, np.dtype, *(type(np.dtype(k)) for k in kinds)]


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
