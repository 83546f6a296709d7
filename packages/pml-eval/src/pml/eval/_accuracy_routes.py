"""The body of ``AccuracyCalculator.get_accuracy``: which route computes which metric.

1. Distributed: a ``knn_func`` that owns a ``distributed_get_accuracy(calculator, ...)``
   method (:class:`~pml.eval.DistributedKNN`), or ``AccuracyCalculator(distributed=True)``,
   hands the whole call to it (each rank passes its shard; see
   :func:`~pml.eval.distributed_get_accuracy`), which comes back here with the local k-NN.
2. The built-in k-NN metrics: a known search scored on the fly (:mod:`pml.eval._ranked`),
   else ``knn_func``'s ``(N, k)`` lists for the ``calculate_*`` methods.
3. Custom metrics (``custom_metrics=``): from the lists of route 2 when it built them (with
   custom metrics selected, the block-scored search is skipped for the lists: one search),
   else (the exact ranking, or no built-in k-NN metric and an exact search pml knows) from
   blocks of ``knn_func`` lists (:mod:`pml.eval._custom_metrics`).
4. Clustering (NMI/AMI): ``kmeans_func``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from pml.core import config
from pml.eval._accuracy_inputs import accuracy_inputs, check_metric_names
from pml.eval._approximate_knn import ApproximateKNN
from pml.eval._custom_metrics import custom_metric_functions
from pml.eval._neighbor_lists import known_search, neighbor_lists
from pml.eval._ranked import ranked_metrics

if TYPE_CHECKING:
    from pml.eval._accuracy import AccuracyCalculator

__all__ = ["compute_accuracy", "distributed_route"]


def distributed_route(calc: AccuracyCalculator) -> Callable[..., dict[str, Any]] | None:
    """``fn(calculator, *get_accuracy args)`` evaluating shards together, or None (local).

    The ``knn_func``'s own ``distributed_get_accuracy`` method when it has one, else
    :func:`~pml.eval.distributed_get_accuracy` when the calculator was made with
    ``distributed=True``.
    """
    if getattr(calc, "_local_call", False):  # inside distributed_get_accuracy
        return None
    route = getattr(calc.knn_func, "distributed_get_accuracy", None)
    if callable(route):
        return route
    if getattr(calc, "distributed", False):
        from pml.eval._distributed_accuracy import distributed_get_accuracy

        return distributed_get_accuracy
    return None


class _Once(logging.Filter):
    """Drops a message already logged (the routes may each resolve ``k`` and warn)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


@contextlib.contextmanager
def _warn_once() -> Iterator[None]:
    once = _Once()
    config.LOGGER.addFilter(once)
    try:
        yield
    finally:
        config.LOGGER.removeFilter(once)


def compute_accuracy(
    calc: AccuracyCalculator,
    query: Any,
    query_labels: Any,
    reference: Any,
    reference_labels: Any,
    ref_includes_query: bool,
    include: tuple[str, ...] | list[str],
    exclude: tuple[str, ...] | list[str],
) -> dict[str, Any]:
    """``calc.get_accuracy(...)`` (arguments checked and documented there)."""
    # fix: the reference silently ignores unknown names here (a typo returns {})
    check_metric_names(include, exclude, calc._metric_names)
    route = distributed_route(calc)
    if route is not None:
        args = (query, query_labels, reference, reference_labels, ref_includes_query)
        return route(calc, *args, include=include, exclude=exclude)
    args = (query, query_labels, reference, reference_labels, ref_includes_query)
    with _warn_once():
        return _local_accuracy(calc, *args, include, exclude)


def _local_accuracy(
    calc: AccuracyCalculator,
    query: Any,
    query_labels: Any,
    reference: Any,
    reference_labels: Any,
    ref_includes_query: bool,
    include: tuple[str, ...] | list[str],
    exclude: tuple[str, ...] | list[str],
) -> dict[str, Any]:
    """The metrics of one process."""
    kwargs = accuracy_inputs(
        query, query_labels, reference, reference_labels, ref_includes_query, calc.device
    )
    kwargs["label_comparison_fn"] = calc.label_comparison_fn
    calc.curr_function_dict = calc.get_function_dict(include, exclude)
    function_dict = dict(calc.curr_function_dict)
    custom_all = getattr(calc, "custom_metrics", {})
    custom = [m for m in function_dict if m in custom_all]
    built_in = {m: fn for m, fn in function_dict.items() if m not in custom_all}
    uses_knn = any(m in calc.requires_knn() for m in built_in)
    lists, ranked = None, None
    if uses_knn:
        # route 1: a known search scored on the fly (see _ranked.py), else route 2:
        # knn_func's (N, k) lists for the calculate_* methods
        ranked = ranked_metrics(calc, built_in, rank_only=bool(custom), **kwargs)
        if ranked is not None:
            function_dict.update(ranked)
    # custom metrics alone search blocks of queries only with an exact search pml knows
    # (calling any other knn_func once per block could change what it does)
    search = known_search(calc, kwargs["query"]) if custom and not uses_knn else None
    if (uses_knn and ranked is None) or (custom and not uses_knn and not (search and search.exact)):
        found = neighbor_lists(calc, **kwargs)
        lists = (found["knn_distances"], found.pop("knn_indices"))
        kwargs.update(found)
    if custom:
        function_dict.update(
            custom_metric_functions(
                calc,
                custom,
                kwargs["query"],
                kwargs["query_labels"],
                kwargs["reference"],
                kwargs["reference_labels"],
                kwargs["ref_includes_query"],
                lists=lists,
                label_counts=kwargs.get("label_counts"),
            )
        )
    if any(m in calc.requires_clustering() for m in function_dict):
        kwargs["cluster_labels"] = calc.get_cluster_labels(**kwargs)
    results = calc._get_accuracy(function_dict, **kwargs)
    if (uses_knn or custom) and isinstance(calc.knn_func, ApproximateKNN):
        # how approximate the neighbours were: recall@k against exact search (sampled)
        results["knn_recall_at_k"] = calc.knn_func.last_recall
    return results
