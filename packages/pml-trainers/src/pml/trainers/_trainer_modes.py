"""Train and eval modes of a trainer's models and losses, and freezing (spec §1).

Plain functions over the trainer's dicts; :class:`~pml.trainers.BaseTrainer`'s
``set_to_train``, ``set_to_eval`` and ``maybe_freeze_trunk_batchnorm`` call them.

Example:
    >>> models = {"trunk": torch.nn.Linear(2, 2), "embedder": torch.nn.Linear(2, 2)}
    >>> set_train_mode([models], freeze_these=("embedder",))
    >>> models["trunk"].training, models["embedder"].training
    (True, False)
    >>> models["embedder"].weight.requires_grad
    False
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["freeze_batchnorm", "set_eval_mode", "set_train_mode"]


def set_train_mode(dicts: Iterable[Mapping[str, Any]], freeze_these: Sequence[str]) -> None:
    """Train mode for the modules of ``dicts``; those named in ``freeze_these`` are frozen.

    A frozen module gets ``requires_grad=False`` on every parameter and eval mode. Entries
    that are not modules are left alone.
    """
    for d in dicts:
        for key, value in d.items():
            if not isinstance(value, nn.Module):
                continue
            if key in freeze_these:
                for p in value.parameters():
                    p.requires_grad_(False)
                value.eval()
            else:
                value.train()


def set_eval_mode(dicts: Iterable[Mapping[str, Any]]) -> None:
    """Eval mode for the modules of ``dicts``."""
    for d in dicts:
        for value in d.values():
            if isinstance(value, nn.Module):
                value.eval()


def freeze_batchnorm(module: torch.nn.Module) -> None:
    """Eval mode (frozen running statistics) for the BatchNorm layers of ``module``."""
    for sub in module.modules():
        # compat: spec §1 (any class whose name contains "BatchNorm")
        if "BatchNorm" in type(sub).__name__:
            sub.eval()
