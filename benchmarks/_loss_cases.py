"""Shared pieces of the loss benchmark suites: data, one-thread steps, case entries.

Every loss suite feeds both libraries the same ``(n, d)`` embeddings with ``per_class``
samples per class (labels shuffled), runs forward + backward with
``torch.set_num_threads(1)`` (the benchmark machine is shared) and names its step
factories ``<prefix>_pml`` / ``<prefix>_ref``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def data(n: int, d: int, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n // per_class).repeat_interleave(per_class)
    labels = labels[torch.randperm(n, generator=g)]
    emb = torch.randn(n, d, generator=g).requires_grad_()
    return emb, labels


def libs(lib: str) -> tuple[Any, Any]:
    """``(losses, miners)`` modules of ``"pml"`` or ``"ref"``."""
    if lib == "pml":
        import pml.losses as losses
        import pml.miners as miners
    else:
        import pytorch_metric_learning.losses as losses  # type: ignore[no-redef]
        import pytorch_metric_learning.miners as miners  # type: ignore[no-redef]
    return losses, miners


def make_step(lib: str, name: str, n: int, d: int, per_class: int) -> Callable[[], None]:
    """Forward + backward of ``name()`` (default arguments) on :func:`data`, labels only."""
    losses, _ = libs(lib)
    torch.set_num_threads(1)
    emb, labels = data(n, d, per_class)
    loss_fn = getattr(losses, name)()

    def step() -> None:
        loss_fn(emb, labels).backward()
        emb.grad = None

    return step


def factories(make: Callable[..., Callable[[], None]], *args: Any) -> tuple[Callable, Callable]:
    """``(ours, ref)``: ``f(n, d, per_class)`` calling ``make(lib, *args, n, d, per_class)``."""

    def ours(n: int, d: int, per_class: int) -> Callable[[], None]:
        return make("pml", *args, n, d, per_class)

    def ref(n: int, d: int, per_class: int) -> Callable[[], None]:
        return make("ref", *args, n, d, per_class)

    return ours, ref


def case(module: str, name: str, prefix: str, n: int, **extra: Any) -> dict:
    """A suite entry for ``<module>:<prefix>_pml`` / ``_ref`` at ``n`` (D = 128, 8 per class)."""
    return {
        "name": name,
        "params": {"n": n, "d": 128, "per_class": 8},
        "pml": f"{module}:{prefix}_pml",
        "ref": f"{module}:{prefix}_ref",
        **extra,
    }
