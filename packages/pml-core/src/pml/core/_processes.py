"""Multi-process tests: forked workers in a ``torch.distributed`` process group.

Re-exported by :mod:`pml.core.testing` (use :func:`pml.core.testing.run_in_processes`).
"""

from __future__ import annotations

import os
import pickle
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["run_in_processes"]


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
