"""AccuracyCalculator's neighbour-list route: ``knn_func``'s ``(N, k)`` lists for ``calculate_*``.

Taken whenever the exact ranking (:mod:`pml.eval._ranked`) cannot stand in: custom metrics,
a custom label comparison, another ``knn_func``, or a small ``k``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from pml.core import config
from pml.eval._metrics import EQUALITY, get_label_match_counts, get_lone_query_labels

if TYPE_CHECKING:
    from pml.eval._accuracy import AccuracyCalculator

__all__ = ["check_knn_indices", "neighbor_lists"]


def neighbor_lists(
    calc: AccuracyCalculator,
    query: Tensor,
    reference: Tensor,
    query_labels: Tensor,
    reference_labels: Tensor,
    ref_includes_query: bool,
    **kwargs: Any,
) -> dict[str, Any]:
    """The k-NN keyword arguments of the metric functions.

    Returns:
        ``{"label_counts", "knn_labels", "knn_distances", "lone_query_labels",
        "not_lone_query_mask"}``.
    """
    comparison = calc.label_comparison_fn or EQUALITY
    label_counts = get_label_match_counts(query_labels, reference_labels, comparison)
    lone_query_labels, not_lone_query_mask = get_lone_query_labels(
        query_labels, label_counts, ref_includes_query, comparison
    )
    num_k = calc.determine_k(label_counts[1], reference.shape[0], ref_includes_query)
    knn_distances, knn_indices = calc.knn_func(query, num_k, reference, ref_includes_query)
    knn_indices = check_knn_indices(knn_indices, query.shape[0], reference.shape[0])
    knn_labels = reference_labels[knn_indices.to(reference_labels.device)]
    if not bool(not_lone_query_mask.any()):
        config.LOGGER.warning(
            "None of the query labels are in the reference set: k-NN metrics are NaN"
        )
    return {
        "label_counts": label_counts,
        "knn_labels": knn_labels,
        "knn_distances": knn_distances,
        "lone_query_labels": lone_query_labels,
        "not_lone_query_mask": not_lone_query_mask,
    }


def check_knn_indices(indices: Any, num_query: int, num_ref: int) -> Tensor:
    """``knn_func``'s indices: ``(num_query, k)`` integers in ``[0, num_ref)``.

    Raises:
        TypeError: not a tensor, or not of an integer dtype.
        ValueError: another shape, or an index outside the reference (faiss's ``-1``).
    """
    if not isinstance(indices, Tensor):
        raise TypeError(f"knn_func must return index tensors; got {type(indices).__name__}")
    if indices.ndim != 2 or indices.shape[0] != num_query:
        raise ValueError(
            f"knn_func must return indices of shape ({num_query}, k); got {tuple(indices.shape)}"
        )
    if indices.dtype.is_floating_point or indices.dtype == torch.bool:
        raise TypeError(f"knn_func must return integer indices; got {indices.dtype}")
    if indices.numel() > 0:
        low, high = torch.aminmax(indices)
        if int(low) < 0 or int(high) >= num_ref:
            # fix: the reference reads reference_labels[-1] for faiss's "not found" -1
            raise ValueError(
                f"knn_func returned neighbour indices outside [0, {num_ref}) "
                f"(min {int(low)}, max {int(high)}); -1 is faiss's padding when an index "
                "finds fewer than k neighbours (approximate indexes, NaN queries): use an "
                "exact index or a smaller k"
            )
    return indices
