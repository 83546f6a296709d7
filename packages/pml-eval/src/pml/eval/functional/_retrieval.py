"""Retrieval metrics from relevance rows, and the label helpers they need.

A relevance row ``rel`` ``(N, K)`` says which of a query's ``K`` nearest references share its
class, closest first; ``num_relevant`` ``(N,)`` is how many references share it in all (its
``R``). Every value is returned per query, so callers can average them any way. The exact
chunked ranking that gives the same values without neighbour lists is in :mod:`._ranked`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "average_precision_values",
    "class_means",
    "label_ids",
    "precision_at_k_values",
    "r_precision_values",
    "reciprocal_rank_values",
    "relevance",
]


def label_ids(query_labels: Tensor, reference_labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Dense class ids shared by query and reference labels, in sorted label order.

    Labels may have any dtype; a label with more than one dimension (``(N, D)``) is one class
    per distinct row. Integer labels keep their exact values (no float32 collisions).

    Returns:
        ``(query_ids (N,), reference_ids (M,), unique_labels (C, ...))``, ids int64 in
        ``[0, C)``.

    Example:
        >>> label_ids(torch.tensor([7, 3]), torch.tensor([3, 3, 9]))
        (tensor([1, 0]), tensor([0, 0, 2]), tensor([3, 7, 9]))
    """
    both = torch.cat([query_labels, reference_labels.to(query_labels.device)])
    if both.ndim == 1:
        unique, inverse = torch.unique(both, sorted=True, return_inverse=True)
    else:
        unique, inverse = torch.unique(both, dim=0, sorted=True, return_inverse=True)
    num_query = query_labels.shape[0]
    return inverse[:num_query], inverse[num_query:], unique


def relevance(
    gt_labels: Tensor,
    knn_labels: Tensor,
    label_comparison_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> Tensor:
    """Which retrieved labels match the query's: ``(N, K)`` bool.

    ``gt_labels`` is ``(N, 1)`` (or ``(N, 1, D)``) against ``knn_labels`` ``(N, K)`` (or
    ``(N, K, D)``). The default comparison is equality of the whole label (every dimension);
    a custom ``label_comparison_fn`` must broadcast and reduce any label dimension itself.

    Example:
        >>> relevance(torch.tensor([[1], [2]]), torch.tensor([[1, 2], [1, 1]]))
        tensor([[ True, False],
                [False, False]])
    """
    if label_comparison_fn is None or label_comparison_fn is torch.eq:
        same = gt_labels == knn_labels
        return same.reshape(*same.shape[:2], -1).all(-1) if same.ndim > 2 else same
    return label_comparison_fn(gt_labels, knn_labels).bool()


def precision_at_k_values(rel: Tensor, k: int) -> Tensor:
    """Fraction of the first ``k`` neighbours that are relevant, ``(N,)`` float64.

    Example:
        >>> precision_at_k_values(torch.tensor([[True, False, True]]), 2)
        tensor([0.5000], dtype=torch.float64)
    """
    return rel[:, :k].sum(1, dtype=torch.float64) / k


def _ranks(rel: Tensor) -> Tensor:
    return torch.arange(1, rel.shape[1] + 1, device=rel.device, dtype=torch.float64)


def r_precision_values(rel: Tensor, num_relevant: Tensor, k: int | None = None) -> Tensor:
    """Precision over the first ``min(R, k)`` neighbours, ``(N,)`` float64.

    ``k`` is how many neighbours were retrieved (default ``rel.shape[1]``); ``rel`` may hold
    fewer columns when the rest are known to be irrelevant.

    Example:
        >>> r_precision_values(torch.tensor([[True, False, True]]), torch.tensor([2]))
        tensor([0.5000], dtype=torch.float64)
    """
    k = rel.shape[1] if k is None else k
    cutoff = num_relevant.clamp(max=k).to(torch.float64)
    hits = (rel & (_ranks(rel) <= cutoff.unsqueeze(1))).sum(1, dtype=torch.float64)
    return hits / cutoff


def average_precision_values(
    rel: Tensor, num_relevant: Tensor, at_r: bool = False, k: int | None = None
) -> Tensor:
    """``(1/R) sum_j rel_j P(j)`` over the retrieved neighbours (``j <= min(R, k)`` if ``at_r``).

    The sum stops at the ``k`` retrieved neighbours but is always divided by ``R``, so it
    reaches 1 only when every relevant item was retrieved first.

    Returns:
        ``(N,)`` float64.

    Example:
        >>> rel = torch.tensor([[True, False, True]])
        >>> average_precision_values(rel, torch.tensor([2])).tolist()
        [0.8333333333333333]
        >>> average_precision_values(rel, torch.tensor([2]), at_r=True).tolist()
        [0.5]
    """
    k = rel.shape[1] if k is None else k
    ranks = _ranks(rel)
    relf = rel.to(torch.float64)
    contrib = relf.cumsum(1) / ranks * relf
    if at_r:
        contrib = contrib * (ranks <= num_relevant.clamp(max=k).unsqueeze(1))
    return contrib.sum(1) / num_relevant.to(torch.float64)


def reciprocal_rank_values(rel: Tensor) -> Tensor:
    """``1 / (position of the first relevant neighbour)``, 0 if none, ``(N,)`` float32.

    float32 like the reference, so averages print the same digits.

    Example:
        >>> reciprocal_rank_values(torch.tensor([[False, False, True], [False, False, False]]))
        tensor([0.3333, 0.0000])
    """
    if rel.shape[1] == 0:
        return torch.zeros(rel.shape[0], dtype=torch.float32, device=rel.device)
    first = rel.to(torch.uint8).argmax(1)
    rr = torch.reciprocal((first + 1).to(torch.float32))
    return torch.where(rel.any(1), rr, torch.zeros_like(rr))


def class_means(values: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Mean of ``values`` per distinct label (rows of ``labels`` when it has more dims).

    Accumulates in float64, returns ``values``' dtype; classes in sorted label order.

    Args:
        values: shape ``(N,)``.
        labels: shape ``(N,)`` or ``(N, ...)``.

    Returns:
        ``(unique_labels (C, ...), means (C,))``.

    Example:
        >>> class_means(torch.tensor([1.0, 0.0, 1.0]), torch.tensor([5, 2, 5]))
        (tensor([2, 5]), tensor([0., 1.]))
    """
    flat = labels.reshape(labels.shape[0], -1) if labels.ndim > 1 else labels
    if flat.ndim > 1 and flat.shape[1] == 1:
        flat = flat[:, 0]
    if flat.ndim == 1:
        unique, inverse = torch.unique(flat, sorted=True, return_inverse=True)
    else:
        unique, inverse = torch.unique(flat, dim=0, sorted=True, return_inverse=True)
    acc = torch.promote_types(values.dtype, torch.float64)
    sums = torch.zeros(unique.shape[0], dtype=acc, device=values.device)
    sums.index_add_(0, inverse, values.to(acc))
    counts = torch.bincount(inverse, minlength=unique.shape[0])
    return unique, (sums / counts).to(values.dtype)
