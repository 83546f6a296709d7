"""Module-level metric helpers with the reference's names and positional order.

These are what ``AccuracyCalculator`` subclasses call from custom ``calculate_*`` methods.
They take neighbour labels (``knn_labels`` ``(N, K)`` or ``(N, K, D)``) and query labels with
an extra axis (``gt_labels = query_labels[:, None]``) and return Python numbers (or lists
with ``return_per_class``). The math is in :mod:`pml.eval.functional`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from pml.eval import functional as EF

__all__ = [
    "EQUALITY",
    "get_label_match_counts",
    "get_lone_query_labels",
    "get_relevance_mask",
    "get_unique_labels",
    "maybe_get_avg_of_avgs",
    "mean_average_precision",
    "mean_reciprocal_rank",
    "nan_accuracy",
    "precision_at_k",
    "r_precision",
    "try_getting_not_lone_labels",
]

LabelComparisonFn = Callable[[Tensor, Tensor], Tensor]

#: the default label comparison (``torch.eq``); labels with several dims must match on all.
EQUALITY: LabelComparisonFn = torch.eq

#: unique labels x reference labels compared per block of a custom comparison.
_BLOCK = 1 << 23


def _is_equality(fn: LabelComparisonFn | None) -> bool:
    return fn is None or fn is EQUALITY


def get_unique_labels(labels: Tensor) -> Tensor:
    """Sorted distinct labels (distinct rows for labels with several dims).

    Example:
        >>> get_unique_labels(torch.tensor([3, 1, 3]))
        tensor([1, 3])
    """
    return torch.unique(labels, dim=0)


def _positions(unique_labels: Tensor, labels: Tensor) -> Tensor:
    """Row of ``unique_labels`` equal to each label, -1 where there is none."""
    u_ids, l_ids, classes = EF.label_ids(unique_labels, labels)
    table = torch.full((classes.shape[0],), -1, dtype=torch.long, device=u_ids.device)
    table[u_ids] = torch.arange(u_ids.shape[0], device=u_ids.device)
    return table[l_ids]


def _self_matches(unique_labels: Tensor, label_comparison_fn: LabelComparisonFn | None) -> Tensor:
    """1 where a label matches itself under the comparison (always, for equality)."""
    if _is_equality(label_comparison_fn):
        return torch.ones(unique_labels.shape[0], dtype=torch.long, device=unique_labels.device)
    same = label_comparison_fn(unique_labels, unique_labels)  # type: ignore[misc]
    return same.reshape(unique_labels.shape[0], -1).all(1).long()


def get_label_match_counts(
    query_labels: Tensor,
    reference_labels: Tensor,
    label_comparison_fn: LabelComparisonFn | None = EQUALITY,
) -> tuple[Tensor, Tensor]:
    """For each distinct query label, how many reference labels match it.

    Equality is counted with one ``unique``/``bincount`` pass (no ``(U, M)`` matrix); a custom
    comparison is called on blocks of ``(u, 1[, D])`` unique labels against
    ``(1, M[, D])`` reference labels and must broadcast.

    Returns:
        ``(unique_query_labels (U, ...), counts (U,) int64)``.

    Example:
        >>> get_label_match_counts(torch.tensor([0, 1, 5]), torch.tensor([0, 0, 1, 2]))
        (tensor([0, 1, 5]), tensor([2, 1, 0]))
    """
    unique_labels = get_unique_labels(query_labels)
    reference_labels = reference_labels.to(unique_labels.device)
    if _is_equality(label_comparison_fn):
        u_ids, r_ids, classes = EF.label_ids(unique_labels, reference_labels)
        counts = torch.bincount(r_ids, minlength=classes.shape[0])[u_ids]
        return unique_labels, counts
    rows = max(1, _BLOCK // max(reference_labels.shape[0], 1))
    parts = [
        label_comparison_fn(  # type: ignore[misc]
            unique_labels[s : s + rows].unsqueeze(1), reference_labels.unsqueeze(0)
        )
        .bool()
        .sum(1)
        for s in range(0, unique_labels.shape[0], rows)
    ]
    counts = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
    return unique_labels, counts.long().to(unique_labels.device)


def get_lone_query_labels(
    query_labels: Tensor,
    label_counts: tuple[Tensor, Tensor],
    ref_includes_query: bool,
    label_comparison_fn: LabelComparisonFn | None = EQUALITY,
) -> tuple[Tensor, Tensor]:
    """Query labels with no possible neighbour, and the mask of queries that have one.

    A label is lone when nothing in the reference matches it (besides the query itself when
    ``ref_includes_query``).

    Returns:
        ``(lone_query_labels (L, ...), not_lone_query_mask (N,) bool)``.

    Example:
        >>> counts = get_label_match_counts(torch.tensor([0, 1, 5]), torch.tensor([0, 0, 1, 2]))
        >>> get_lone_query_labels(torch.tensor([0, 1, 5]), counts, False)
        (tensor([5]), tensor([ True,  True, False]))
    """
    unique_labels, counts = label_counts
    own = _self_matches(unique_labels, label_comparison_fn) if ref_includes_query else 0
    lone = (counts - own) <= 0
    positions = _positions(unique_labels, query_labels.to(unique_labels.device))
    lone_per_query = torch.where(positions >= 0, lone[positions.clamp(min=0)], True)
    return unique_labels[lone], ~lone_per_query


def get_relevance_mask(
    shape: tuple[int, ...] | torch.Size,
    gt_labels: Tensor,
    ref_includes_query: bool,
    label_counts: tuple[Tensor, Tensor],
    label_comparison_fn: LabelComparisonFn | None = None,
) -> tuple[Tensor, Tensor]:
    """Mask of the first ``R_i`` columns of each row, and ``R`` per row.

    ``R_i`` is the match count of query ``i``'s label, minus one for the query itself when
    ``ref_includes_query`` (only if the label matches itself under ``label_comparison_fn``:
    the reference always subtracts one).

    Args:
        shape: ``(N, K)``.
        gt_labels: ``(N, 1)`` or ``(N, 1, D)``.
        ref_includes_query: the query is part of the reference.
        label_counts: ``(unique_labels, counts)`` from :func:`get_label_match_counts`.
        label_comparison_fn: the comparison the counts were made with (default equality).

    Returns:
        ``(mask (N, K) bool, num_relevant (N,) int64)``.

    Example:
        >>> counts = get_label_match_counts(torch.tensor([0, 1]), torch.tensor([0, 0, 1]))
        >>> get_relevance_mask((2, 3), torch.tensor([[0], [1]]), False, counts)
        (tensor([[ True,  True, False],
                [ True, False, False]]), tensor([2, 1]))
    """
    unique_labels, counts = label_counts
    labels = gt_labels[:, 0] if gt_labels.ndim > 1 else gt_labels
    positions = _positions(unique_labels, labels.to(unique_labels.device))
    found = positions >= 0
    idx = positions.clamp(min=0)
    num_relevant = torch.where(found, counts[idx], 0)
    if ref_includes_query:
        own = _self_matches(unique_labels, label_comparison_fn)
        num_relevant = num_relevant - torch.where(found, own[idx], 0)
    cols = torch.arange(shape[1], device=num_relevant.device)
    return cols.unsqueeze(0) < num_relevant.unsqueeze(1), num_relevant


def maybe_get_avg_of_avgs(
    accuracy_per_sample: Tensor,
    sample_labels: Tensor,
    avg_of_avgs: bool,
    return_per_class: bool,
) -> float | list[float]:
    """Mean over samples, mean of class means, or the list of class means.

    Class means are in sorted label order (rows of ``sample_labels`` ``(N, 1[, D])`` group the
    samples); computed with one ``index_add`` (no ``(N, C)`` matrix), accumulated in float64 and
    rounded to ``accuracy_per_sample``'s dtype.

    Example:
        >>> acc, labels = torch.tensor([1.0, 0.0, 1.0]), torch.tensor([[0], [1], [0]])
        >>> maybe_get_avg_of_avgs(acc, labels, False, False)
        0.6666666865348816
        >>> maybe_get_avg_of_avgs(acc, labels, True, False)
        0.5
        >>> maybe_get_avg_of_avgs(acc, labels, False, True)
        [1.0, 0.0]
    """
    dtype = accuracy_per_sample.dtype
    if avg_of_avgs or return_per_class:
        _, means = EF.class_means(accuracy_per_sample, sample_labels)
        if return_per_class:
            return means.tolist()
        return means.to(torch.float64).mean().to(dtype).item()
    return accuracy_per_sample.to(torch.float64).mean().to(dtype).item()


def try_getting_not_lone_labels(
    knn_labels: Tensor, query_labels: Tensor, not_lone_query_mask: Tensor
) -> tuple[Tensor, Tensor] | tuple[None, None]:
    """Rows of queries that have a possible neighbour; ``(None, None)`` when there is none.

    Example:
        >>> knn_labels, labels = torch.tensor([[0, 1]]), torch.tensor([5])
        >>> try_getting_not_lone_labels(knn_labels, labels, torch.tensor([False]))
        (None, None)
    """
    if not bool(not_lone_query_mask.any()):
        return None, None
    return knn_labels[not_lone_query_mask], query_labels[not_lone_query_mask]


def nan_accuracy(unique_labels: Tensor, return_per_class: bool) -> float | list[float]:
    """``nan``, or one ``nan`` per unique label with ``return_per_class``.

    Example:
        >>> nan_accuracy(torch.tensor([0, 1]), True)
        [nan, nan]
    """
    if return_per_class:
        return [float("nan")] * len(unique_labels)
    return float("nan")


def precision_at_k(
    knn_labels: Tensor,
    gt_labels: Tensor,
    k: int,
    avg_of_avgs: bool = False,
    return_per_class: bool = False,
    label_comparison_fn: LabelComparisonFn = EQUALITY,
) -> Any:
    """Fraction of the first ``k`` neighbours whose label matches.

    The trailing three arguments have defaults (the reference requires them).

    Example:
        >>> precision_at_k(torch.tensor([[0, 1], [1, 1]]), torch.tensor([[0], [0]]), 1)
        0.5
    """
    rel = EF.relevance(gt_labels, knn_labels[:, :k], label_comparison_fn)
    values = EF.precision_at_k_values(rel, k)
    return maybe_get_avg_of_avgs(values, gt_labels, avg_of_avgs, return_per_class)


def _relevance_and_r(
    knn_labels: Tensor,
    gt_labels: Tensor,
    ref_includes_query: bool,
    label_counts: tuple[Tensor, Tensor],
    label_comparison_fn: LabelComparisonFn,
) -> tuple[Tensor, Tensor]:
    """Relevance rows ``(N, K)`` and each query's number of relevant references ``R``."""
    rel = EF.relevance(gt_labels, knn_labels, label_comparison_fn)
    _, num_relevant = get_relevance_mask(
        rel.shape, gt_labels, ref_includes_query, label_counts, label_comparison_fn
    )
    return rel, num_relevant


def r_precision(
    knn_labels: Tensor,
    gt_labels: Tensor,
    ref_includes_query: bool,
    label_counts: tuple[Tensor, Tensor],
    avg_of_avgs: bool = False,
    return_per_class: bool = False,
    label_comparison_fn: LabelComparisonFn = EQUALITY,
) -> Any:
    """Precision over the first ``min(R, K)`` neighbours (R-precision when ``K >= R``).

    Example:
        >>> counts = get_label_match_counts(torch.tensor([0]), torch.tensor([0, 0, 1]))
        >>> r_precision(torch.tensor([[0, 1, 0]]), torch.tensor([[0]]), False, counts)
        0.5
    """
    rel, num_relevant = _relevance_and_r(
        knn_labels, gt_labels, ref_includes_query, label_counts, label_comparison_fn
    )
    values = EF.r_precision_values(rel, num_relevant)
    return maybe_get_avg_of_avgs(values, gt_labels, avg_of_avgs, return_per_class)


def mean_average_precision(
    knn_labels: Tensor,
    gt_labels: Tensor,
    ref_includes_query: bool,
    label_counts: tuple[Tensor, Tensor],
    avg_of_avgs: bool = False,
    return_per_class: bool = False,
    label_comparison_fn: LabelComparisonFn = EQUALITY,
    at_r: bool = False,
) -> Any:
    """Mean average precision over the ``K`` neighbours, normalised by ``R`` (MAP@R if ``at_r``).

    Example:
        >>> counts = get_label_match_counts(torch.tensor([0]), torch.tensor([0, 0, 1]))
        >>> mean_average_precision(torch.tensor([[0, 1, 0]]), torch.tensor([[0]]), False, counts)
        0.8333333333333333
    """
    rel, num_relevant = _relevance_and_r(
        knn_labels, gt_labels, ref_includes_query, label_counts, label_comparison_fn
    )
    values = EF.average_precision_values(rel, num_relevant, at_r=at_r)
    return maybe_get_avg_of_avgs(values, gt_labels, avg_of_avgs, return_per_class)


def mean_reciprocal_rank(
    knn_labels: Tensor,
    gt_labels: Tensor,
    avg_of_avgs: bool = False,
    return_per_class: bool = False,
    label_comparison_fn: LabelComparisonFn = EQUALITY,
) -> Any:
    """Mean of ``1 / rank`` of the first matching neighbour (0 if none), in float32.

    Example:
        >>> mean_reciprocal_rank(torch.tensor([[1, 0], [0, 1]]), torch.tensor([[0], [0]]))
        0.75
    """
    rel = EF.relevance(gt_labels, knn_labels, label_comparison_fn)
    values = EF.reciprocal_rank_values(rel)
    return maybe_get_avg_of_avgs(values, gt_labels, avg_of_avgs, return_per_class)
