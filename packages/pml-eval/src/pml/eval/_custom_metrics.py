"""Custom retrieval metrics of AccuracyCalculator: ``custom_metrics={"name": fn}``.

``fn`` receives a :class:`QueryNeighbors` (a block of queries and their ranked neighbours)
and returns one value per query (NaN where the metric is undefined). The calculator
averages the values like the built-in k-NN metrics: over the queries that have a possible
neighbour (``num_relevant > 0``), per class first with ``avg_of_avgs``, per class with
``return_per_class``; NaN values are left out of every mean.

The neighbour lists are those of the calculator's ``k`` and ``knn_func``: the lists the
built-in metrics use when they take the neighbour-list route, otherwise (the exact-ranking
route, e.g. ``k=None``) ``knn_func`` searches blocks of queries, so ``(N, M)`` lists are
never held at once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from pml.eval import functional as EF
from pml.eval._metrics import (
    EQUALITY,
    LabelComparisonFn,
    get_label_match_counts,
    get_relevance_mask,
    nan_accuracy,
)
from pml.eval._neighbor_lists import check_knn_indices

if TYPE_CHECKING:
    from pml.eval._accuracy import AccuracyCalculator

__all__ = [
    "CustomMetricFn",
    "QueryNeighbors",
    "check_custom_metrics",
    "custom_metric_functions",
    "custom_placeholder",
]

#: neighbour-list entries per block of the blockwise search (~16M, as the k-NN blocks)
_BLOCK_ENTRIES = 1 << 24


@dataclass(frozen=True)
class QueryNeighbors:
    """A block of queries and their ranked neighbours: what a custom metric receives.

    Column ``j`` of the ``(n, k)`` fields is the neighbour of rank ``j + 1`` (nearest
    first). With ``ref_includes_query`` each query's own reference row (row
    ``query_indices[i]`` of the reference) was removed from its list.

    Attributes:
        query_labels: ``(n,)`` or ``(n, L)`` labels of the queries.
        knn_labels: ``(n, k)`` or ``(n, k, L)`` labels of their neighbours.
        knn_distances: ``(n, k)`` as ``knn_func`` returns them (default: squared L2;
            similarities for an inverted distance, larger = closer).
        knn_indices: ``(n, k)`` int64 rows of the reference.
        is_match: ``(n, k)`` bool, the neighbour's label matches the query's (under the
            calculator's ``label_comparison_fn``).
        num_relevant: ``(n,)`` int64, matching reference items of each query (``R``, the
            query itself excluded); 0 for a query without a possible neighbour.
        query_indices: ``(n,)`` int64 rows of these queries in the whole query set.
        ref_includes_query: whether self matches were removed.
        k: neighbours per query (the calculator's resolved ``k``).
    """

    query_labels: Tensor
    knn_labels: Tensor
    knn_distances: Tensor
    knn_indices: Tensor
    is_match: Tensor
    num_relevant: Tensor
    query_indices: Tensor
    ref_includes_query: bool
    k: int

    @property
    def ranks(self) -> Tensor:
        """``(k,)`` int64 ranks ``1 .. k`` of the columns."""
        return torch.arange(1, self.k + 1, device=self.knn_indices.device)


#: ``fn(neighbors) -> (n,)`` per-query values (tensor, array or list; NaN where undefined)
CustomMetricFn = Callable[[QueryNeighbors], Any]


def custom_placeholder(**kwargs: Any) -> Any:
    """Stands for a custom metric in the function dicts (``get_accuracy`` computes it)."""
    raise RuntimeError("custom metrics are computed by AccuracyCalculator.get_accuracy")


def check_custom_metrics(custom_metrics: Any, built_in: list[str]) -> dict[str, Callable]:
    """``custom_metrics``: None or a mapping of new metric names to callables.

    Raises:
        TypeError: not a mapping, a name that is not a str, a value that is not callable.
        ValueError: an empty name, or one that a built-in metric (or ``knn_recall_at_k``)
            already uses.
    """
    if custom_metrics is None:
        return {}
    if not isinstance(custom_metrics, Mapping):
        raise TypeError(
            f"custom_metrics must be a dict of {{name: fn}}; got {type(custom_metrics).__name__}"
        )
    taken = {*built_in, "knn_recall_at_k"}
    out: dict[str, Callable] = {}
    for name, fn in custom_metrics.items():
        if not isinstance(name, str):
            raise TypeError(f"custom_metrics names must be str; got {name!r}")
        if not name:
            raise ValueError("custom_metrics names must be non-empty; got ''")
        if name in taken:
            raise ValueError(
                f"custom_metrics name {name!r} clashes with a built-in metric; built-in "
                f"names are {sorted(taken)}"
            )
        if not callable(fn):
            raise TypeError(
                f"custom_metrics[{name!r}] must be callable (fn(QueryNeighbors) -> per-query "
                f"values); got {type(fn).__name__}"
            )
        out[name] = fn
    return out


def _per_query(name: str, out: Any, n: int, device: torch.device) -> Tensor:
    """``fn``'s result as ``(n,)`` float64 on ``device``."""
    if not isinstance(out, Tensor):
        try:
            out = torch.as_tensor(np.asarray(out))
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(
                f"custom metric {name!r} must return per-query values (a tensor or array of "
                f"shape ({n},)); got {type(out).__name__}"
            ) from e
    if out.is_complex():
        raise TypeError(f"custom metric {name!r} must return real values; got {out.dtype}")
    if tuple(out.shape) != (n,):
        raise ValueError(
            f"custom metric {name!r} must return one value per query, shape ({n},); got "
            f"{tuple(out.shape)}"
        )
    return out.to(device=device, dtype=torch.float64)


def _lists_blocks(
    calc: AccuracyCalculator,
    query: Tensor,
    reference: Tensor,
    num_k: int,
    ref_includes_query: bool,
) -> Iterator[tuple[int, Tensor, Tensor]]:
    """``(start, distances, indices)`` of blocks of queries, from ``calc.knn_func``.

    Each block is searched with ``k + 1`` neighbours and its self matches removed
    (:func:`pml.eval.functional.remove_self_matches`): what pml's searches do for the whole
    query with ``ref_includes_query``.
    """
    own = int(ref_includes_query)
    num_search = min(num_k + own, reference.shape[0])
    rows = max(1, _BLOCK_ENTRIES // max(num_search, 1))
    for s in range(0, query.shape[0], rows):
        block = query[s : s + rows]
        d, i = calc.knn_func(block, num_search, reference, False)
        i = check_knn_indices(i, block.shape[0], reference.shape[0]).to(torch.int64)
        if own and num_search > 0:
            d, i = EF.remove_self_matches(d, i.to(d.device), offset=s)
        yield s, d, i


def custom_metric_functions(
    calc: AccuracyCalculator,
    names: list[str],
    query: Tensor,
    query_labels: Tensor,
    reference: Tensor | None,
    reference_labels: Tensor,
    ref_includes_query: bool,
    *,
    lists: tuple[Tensor, Tensor] | None = None,
    label_counts: tuple[Tensor, Tensor] | None = None,
    num_k: int | None = None,
) -> dict[str, Callable[..., Any]]:
    """Metric functions (called with the metric keyword arguments) of the custom ``names``.

    Args:
        lists: ``(distances, indices)`` ``(N, k)`` of every query (the neighbour-list
            route); None: ``knn_func`` searches blocks of queries (``reference`` needed).
        label_counts: from :func:`get_label_match_counts` (computed when None).
        num_k: the resolved ``k`` (computed when None).
    """
    comparison: LabelComparisonFn = calc.label_comparison_fn or EQUALITY
    if label_counts is None:
        label_counts = get_label_match_counts(query_labels, reference_labels, comparison)
    if num_k is None and lists is None:
        num_ref = reference_labels.shape[0]
        num_k = calc.determine_k(label_counts[1], num_ref, ref_includes_query)
    gt = query_labels[:, None]
    _, num_relevant = get_relevance_mask(
        (query_labels.shape[0], 0), gt, ref_includes_query, label_counts, comparison
    )
    num_relevant = num_relevant.to(query_labels.device)
    values = {
        name: torch.full(
            (query_labels.shape[0],), float("nan"), dtype=torch.float64, device=query_labels.device
        )
        for name in names
    }
    if lists is not None:
        blocks: Any = [(0, lists[0], lists[1])]
    else:
        assert reference is not None and num_k is not None
        blocks = _lists_blocks(calc, query, reference, num_k, ref_includes_query)
    with torch.no_grad():
        for s, d, i in blocks:
            n = i.shape[0]
            i = i.to(reference_labels.device)
            knn_labels = reference_labels[i]
            labels = query_labels[s : s + n]
            neighbors = QueryNeighbors(
                query_labels=labels,
                knn_labels=knn_labels,
                knn_distances=d,
                knn_indices=i,
                is_match=EF.relevance(labels[:, None], knn_labels, comparison),
                num_relevant=num_relevant[s : s + n],
                query_indices=torch.arange(s, s + n, device=i.device),
                ref_includes_query=bool(ref_includes_query),
                k=int(i.shape[1]),
            )
            for name in names:
                out = _per_query(name, calc.custom_metrics[name](neighbors), n, labels.device)
                values[name][s : s + n] = out
    kept = num_relevant > 0
    aggregate = functools.partial(
        aggregate_custom, kept, query_labels, calc.avg_of_avgs, calc.return_per_class
    )
    return {name: functools.partial(aggregate, values[name]) for name in names}


def aggregate_custom(
    kept: Tensor,
    query_labels: Tensor,
    avg_of_avgs: bool,
    return_per_class: bool,
    values: Tensor,
    /,
    **kwargs: Any,
) -> Any:
    """A custom metric from its per-query values: NaN values left out of every mean.

    The queries are those with a possible neighbour (``kept``), as for the built-in metrics;
    with ``return_per_class`` a class whose values are all NaN is NaN.
    """
    if not bool(kept.any()):
        unique = torch.unique(query_labels, dim=0) if query_labels.numel() else query_labels
        return nan_accuracy(unique, return_per_class)
    v, labels = values[kept], query_labels[kept]
    valid = ~torch.isnan(v)
    if not (avg_of_avgs or return_per_class):
        return float(v[valid].mean()) if bool(valid.any()) else float("nan")
    _, sums = EF.class_means(torch.where(valid, v, 0.0), labels)
    _, fractions = EF.class_means(valid.to(torch.float64), labels)
    means = sums / fractions  # NaN (0 / 0) for a class without a value
    if return_per_class:
        return means.tolist()
    finite = means[~torch.isnan(means)]
    return float(finite.mean()) if finite.numel() else float("nan")
