"""Argument checks of the trainers' constructors (types and values, naming the argument)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import IterableDataset

from pml.core.validation import check_int, check_real, check_type
from pml.trainers._trainer_data import is_batch_sampler

__all__ = [
    "MixedPrecision",
    "check_batch_size",
    "check_dataset",
    "check_dict",
    "check_freeze_these",
    "check_hierarchy_level",
    "check_mixed_precision",
    "check_sampler",
]

MixedPrecision = Literal["bf16", "bfloat16", "fp16", "float16"] | torch.dtype | None

_MIXED = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    torch.bfloat16: torch.bfloat16,
    torch.float16: torch.float16,
}

_VALUE_CHECKS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "models": ("a torch.nn.Module", lambda v: isinstance(v, nn.Module)),
    "optimizers": (
        "an optimizer (with step() and zero_grad())",
        lambda v: callable(getattr(v, "step", None)) and callable(getattr(v, "zero_grad", None)),
    ),
    "loss_funcs": ("callable (a loss)", callable),
    "mining_funcs": ("callable (a miner)", callable),
    "lr_schedulers": ("a scheduler (with step())", lambda v: callable(getattr(v, "step", None))),
    "gradient_clippers": ("a callable with no arguments", callable),
}


def check_dict(name: str, value: Any, *, allow_none: bool = False) -> dict[str, Any] | None:
    """``value`` if it is a dict whose values suit ``name`` (see ``_VALUE_CHECKS``).

    Raises:
        TypeError: not a dict (None only when allowed), or a value of the wrong kind.
    """
    if value is None and allow_none:
        return None
    if not isinstance(value, dict):
        what = "a dict or None" if allow_none else "a dict"
        raise TypeError(f"{name} must be {what}; got {type(value).__name__} {value!r:.80}")
    if name == "loss_weights":
        for key, weight in value.items():
            check_real(f'loss_weights["{key}"]', weight)
        return value
    expected, ok = _VALUE_CHECKS[name]
    for key, item in value.items():
        if not ok(item):
            raise TypeError(
                f'{name}["{key}"] must be {expected}; got {type(item).__name__} {item!r:.80}'
            )
    return value


def check_dataset(dataset: Any) -> Any:
    """A map-style dataset (``__getitem__`` and ``__len__``).

    Raises:
        TypeError: an ``IterableDataset``, a bare tensor (its items carry no labels), or an
            object without ``__getitem__``/``__len__``.
        ValueError: an empty dataset.
    """
    if isinstance(dataset, torch.Tensor):
        raise TypeError(
            "dataset must be a Dataset of (data, label) items; got a Tensor (wrap it with its "
            "labels: TensorDataset(x, labels))"
        )
    if isinstance(dataset, IterableDataset) or not (
        hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")
    ):
        raise TypeError(
            "dataset must be a map-style dataset (with __getitem__ and __len__); got "
            f"{type(dataset).__name__}"
        )
    if len(dataset) == 0:
        # fix: torch's RandomSampler said "num_samples should be a positive integer value"
        raise ValueError("dataset is empty: there is nothing to train on")
    return dataset


def check_sampler(sampler: Any) -> Any:
    """``sampler``: None or an iterable sampler (of indices, or of batches).

    Raises:
        TypeError: an object without ``__iter__``.
    """
    if sampler is not None and not hasattr(sampler, "__iter__"):
        raise TypeError(f"sampler must be a Sampler or None; got {type(sampler).__name__}")
    return sampler


def check_batch_size(batch_size: Any, sampler: Any) -> int | None:
    """``batch_size`` as an int >= 1; None only with a batch sampler (which makes the batches).

    Raises:
        TypeError: None without a batch sampler, or not an integral number.
        ValueError: < 1.
    """
    # compat: the reference casts batch_size with int() (4.0 is accepted)
    value = check_int("batch_size", batch_size, min=1, integral_float=True, allow_none=True)
    if value is None and not is_batch_sampler(sampler):
        raise TypeError("batch_size must be an int (it may be None only with a batch sampler)")
    return value


def check_freeze_these(value: Any) -> tuple[str, ...]:
    """``freeze_these`` as a tuple of names."""
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise TypeError(
            f"freeze_these must be a list or tuple of model/loss names; got "
            f"{type(value).__name__} {value!r:.80}"
        )
    names = tuple(value)
    for v in names:
        check_type("freeze_these entries", v, str)
    return names


def check_hierarchy_level(value: Any) -> int | list[int] | str:
    """``label_hierarchy_level``: an int >= 0, a list of them, or ``"all"``."""
    if isinstance(value, str):
        if value != "all":
            raise ValueError(
                f'label_hierarchy_level must be an int, a list or "all"; got {value!r}'
            )
        return value
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError("label_hierarchy_level must not be an empty list")
        return [check_int("label_hierarchy_level", v, min=0) for v in value]  # type: ignore[misc]
    return check_int("label_hierarchy_level", value, min=0)  # type: ignore[return-value]


def check_mixed_precision(value: Any, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``mixed_precision`` (None: off).

    Raises:
        ValueError: not one of None, "bf16", "fp16" (or their long names / dtypes), or
            autocast not available on ``device``.
    """
    if value is None:
        return None
    dtype = _MIXED.get(value) if isinstance(value, (str, torch.dtype)) else None
    if dtype is None:
        raise ValueError(
            f'mixed_precision must be None, "bf16" or "fp16" (or torch.bfloat16 / '
            f"torch.float16); got {value!r}"
        )
    available = getattr(torch.amp, "is_autocast_available", None)
    if available is not None and not available(device.type):
        raise ValueError(
            f"mixed_precision needs autocast on data_device = {device}; it is not available there"
        )
    return dtype
