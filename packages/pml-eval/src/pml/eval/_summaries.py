"""Per-query values to reported numbers: mean over scored queries, or per-class means."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pml.eval import functional as EF

__all__ = ["class_labels", "summarize"]


def summarize(values: Tensor, labels: Tensor, return_per_class: bool) -> Any:
    """Mean of the non-NaN ``values`` ``(N,)`` (a Python float, NaN if none), or per class.

    With ``return_per_class``: a list of the class means of the scored queries, in sorted
    order of their distinct labels (rows for multi-column labels).
    """
    kept = ~torch.isnan(values)
    if not return_per_class:
        return float(values[kept].mean()) if bool(kept.any()) else float("nan")
    if not bool(kept.any()):
        return []
    _, means = EF.class_means(values[kept], labels[kept])
    return means.tolist()


def class_labels(values: Tensor, labels: Tensor) -> list[Any]:
    """The distinct labels of the queries with a value, sorted (what per-class lists follow)."""
    kept = ~torch.isnan(values)
    if not bool(kept.any()):
        return []
    unique, _ = EF.class_means(values[kept], labels[kept])
    return unique.tolist()
