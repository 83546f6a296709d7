"""AccuracyCalculator's exact-ranking route: built-in k-NN metrics without neighbour lists.

``get_accuracy`` takes this route when :func:`can_rank_exactly` says so and ``k`` is large
(:func:`ranked_metrics`); otherwise it asks ``knn_func`` for ``(N, k)`` neighbour lists and
calls the ``calculate_*`` methods on them. Both give the same numbers; the math is
:func:`pml.eval.functional.retrieval_values`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from pml.core import config
from pml.eval import functional as EF
from pml.eval._knn import TorchKNN
from pml.eval._metrics import EQUALITY, maybe_get_avg_of_avgs, nan_accuracy

if TYPE_CHECKING:
    from pml.eval._accuracy import AccuracyCalculator

__all__ = ["can_rank_exactly", "ranked_metrics"]

#: the metrics the ranking computes (the built-in k-NN metrics).
_RANKED = frozenset(EF.RETRIEVAL_METRICS)


def _redefined(cls: type, attr: str) -> bool:
    """Whether a subclass redefines ``attr``: more than one class of the MRO defines it."""
    return sum(attr in vars(c) for c in cls.__mro__) > 1


def can_rank_exactly(calc: AccuracyCalculator, function_dict: dict[str, Callable]) -> bool:
    """Built-in metrics only, none redefined; the default comparison; TorchKNN's own search.

    The ranking stands in for the ``calculate_*`` methods and for ``knn_func`` without
    calling them, so it may only replace code it knows. A subclass that overrides a
    built-in metric (``def calculate_precision_at_1``, even one calling ``super()``) defines
    that name in its own class dict as well as AccuracyCalculator's: two classes of the MRO
    define it, and the neighbour-list route runs the user's code. The same holds for a
    ``TorchKNN``/``CustomKNN`` subclass that overrides ``__call__``. NMI/AMI need no
    neighbours and never block the route.
    """
    if calc.label_comparison_fn not in (None, EQUALITY):
        return False
    knn = calc.knn_func
    if not isinstance(knn, TorchKNN) or _redefined(type(knn), "__call__"):
        return False
    built_in = {*_RANKED, "NMI", "AMI"}
    return all(
        name in built_in and not _redefined(type(calc), calc.function_keyword + name)
        for name in function_dict
    )


def ranked_metrics(
    calc: AccuracyCalculator,
    function_dict: dict[str, Callable[..., Any]],
    query: Tensor,
    reference: Tensor,
    query_labels: Tensor,
    reference_labels: Tensor,
    ref_includes_query: bool,
    **kwargs: Any,
) -> dict[str, Callable[..., Any]] | None:
    """Metric functions returning the values of an exact ranking, or None for the other route.

    None unless :func:`can_rank_exactly`, and when ``4 * k`` is below the reference size:
    ranking costs about the same for any ``k``, neighbour lists ``O(k)`` per query.
    """
    if not can_rank_exactly(calc, function_dict):
        return None
    query_ids, reference_ids, classes = EF.label_ids(query_labels, reference_labels)
    counts = torch.bincount(reference_ids, minlength=classes.shape[0])
    bin_counts = counts[torch.unique(query_ids)]
    num_k = calc.determine_k(bin_counts, reference.shape[0], ref_includes_query)
    if 4 * num_k < reference.shape[0]:
        return None
    knn = calc.knn_func  # a TorchKNN: checked by can_rank_exactly
    with torch.no_grad():
        values = EF.retrieval_values(
            query,
            query_ids,
            reference,
            reference_ids,
            num_k,
            ref_includes_query=ref_includes_query,
            distance_fn=knn.distance,
            is_inverted=knn.is_inverted,
            batch_size=knn.batch_size,
        )
    kept = values["num_relevant"] > 0
    if not bool(kept.any()):
        config.LOGGER.warning(
            "None of the query labels are in the reference set: k-NN metrics are NaN"
        )
    unique_query_labels = torch.unique(query_labels, dim=0)
    knn_metrics = calc.requires_knn()
    aggregate = functools.partial(
        _aggregate, kept, query_labels, unique_query_labels, calc.avg_of_avgs, calc.return_per_class
    )
    return {
        name: functools.partial(aggregate, values[name])
        for name in function_dict
        if name in _RANKED and name in knn_metrics
    }


def _aggregate(
    kept: Tensor,
    query_labels: Tensor,
    unique_query_labels: Tensor,
    avg_of_avgs: bool,
    return_per_class: bool,
    values: Tensor,
    /,
    **kwargs: Any,
) -> Any:
    """A metric's value from its per-query values (NaN when no query has a neighbour)."""
    if not bool(kept.any()):
        return nan_accuracy(unique_query_labels, return_per_class)
    return maybe_get_avg_of_avgs(
        values[kept], query_labels[kept][:, None], avg_of_avgs, return_per_class
    )
