"""Autocast off: losses that compute in at least float32 whatever autocast would choose.

A loss class sets ``autocast_off = True`` and :class:`~pml.losses.BaseMetricLossFunction`
runs its ``forward`` under :func:`full_precision`; other code (``get_logits``, ManifoldLoss's
own forward) uses the context manager directly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["full_precision"]


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no device argument
        if device_type == "cpu":
            return torch.is_autocast_cpu_enabled()
        return torch.is_autocast_enabled()


@contextlib.contextmanager
def full_precision(device: torch.device) -> Iterator[None]:
    """Switch autocast off on ``device`` (cpu/cuda) for the enclosed block."""
    if device.type in ("cpu", "cuda") and _autocast_enabled(device.type):
        with torch.autocast(device_type=device.type, enabled=False):
            yield
    else:
        yield
