"""One optimisation step of a trainer: gradients, the grad scaler, clipping, optimizers, schedulers.

Plain functions over the trainer's dicts; :class:`~pml.trainers.BaseTrainer`'s overridable
methods (``zero_grad``, ``backward``, ``clip_gradients``, ``step_optimizers``,
``step_optimizer``, ``step_lr_schedulers``, ...) call them in the reference's order. Under
float16 mixed precision the loss is scaled by a ``torch.amp.GradScaler``, gradients are
unscaled before clipping, and the scaler steps (and is updated once per iteration) only
optimizers that got gradients.

Example:
    >>> layer = torch.nn.Linear(2, 1)
    >>> opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    >>> backward(layer(torch.ones(1, 2)).sum(), None)
    >>> has_grads(opt), step_optimizer(opt, None)
    (True, False)
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "autocast",
    "backward",
    "clip_gradients",
    "grad_scaler",
    "has_grads",
    "is_frozen_optimizer",
    "step_lr_schedulers",
    "step_optimizer",
    "update_grad_scaler",
    "zero_grad",
]


def grad_scaler(mixed_precision: torch.dtype | None, device: torch.device) -> Any:
    """A ``torch.amp.GradScaler`` under float16 mixed precision, else None."""
    return torch.amp.GradScaler(device.type) if mixed_precision == torch.float16 else None


def autocast(
    mixed_precision: torch.dtype | None, device: torch.device
) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` to ``mixed_precision`` on ``device`` (a no-op context for None)."""
    if mixed_precision is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=mixed_precision)


def has_grads(optimizer: torch.optim.Optimizer) -> bool:
    """Whether any parameter of ``optimizer`` has a gradient."""
    return any(p.grad is not None for g in optimizer.param_groups for p in g["params"])


def zero_grad(models: Mapping[str, Any], optimizers: Mapping[str, Any]) -> None:
    """``zero_grad()`` on every model, then on every optimizer."""
    for v in models.values():
        v.zero_grad()
    for v in optimizers.values():
        v.zero_grad()


def backward(total: Any, scaler: Any) -> None:
    """Backpropagate ``total`` (scaled by ``scaler`` when there is one).

    A total that is not on the autograd graph (e.g. the int 0 when every loss is 0) has
    nothing to backpropagate and is skipped.
    """
    if not (isinstance(total, Tensor) and total.requires_grad):
        # fix: the reference calls int.backward() and fails
        return
    if scaler is not None:
        total = scaler.scale(total)
    total.backward()


def clip_gradients(
    clippers: Mapping[str, Callable[[], Any]], optimizers: Mapping[str, Any], scaler: Any
) -> None:
    """Call every clipper, in order; with a scaler, first unscale the optimizers' gradients."""
    if not clippers:
        return
    if scaler is not None:
        for opt in optimizers.values():
            if has_grads(opt):
                scaler.unscale_(opt)
    for clipper in clippers.values():
        clipper()


def is_frozen_optimizer(key: str, freeze_these: Sequence[str]) -> bool:
    """Whether the optimizer ``key`` (minus ``"_optimizer"``) belongs to a frozen name."""
    return re.sub("_optimizer$", "", key) in freeze_these


def step_optimizer(optimizer: torch.optim.Optimizer, scaler: Any) -> bool:
    """``optimizer.step()``, through ``scaler`` when there is one.

    With a scaler, an optimizer without gradients is not stepped.

    Returns:
        whether ``scaler`` stepped (it must then be updated: :func:`update_grad_scaler`).
    """
    if scaler is None:
        optimizer.step()
        return False
    if not has_grads(optimizer):
        return False
    scaler.step(optimizer)
    return True


def update_grad_scaler(scaler: Any, stepped: bool) -> None:
    """``scaler.update()`` once per iteration, after it stepped at least one optimizer."""
    if scaler is not None and stepped:
        scaler.update()


def step_lr_schedulers(lr_schedulers: Mapping[str, Any], suffix: str, *args: Any) -> None:
    """``step(*args)`` on every scheduler whose key ends with ``suffix``, in order."""
    for key, scheduler in lr_schedulers.items():
        if key.endswith(suffix):
            scheduler.step(*args)
