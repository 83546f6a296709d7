"""AccuracyCalculator's fast routes: built-in k-NN metrics without ``(N, k)`` neighbour lists.

``get_accuracy`` takes them when :func:`can_rank_exactly` says so (:func:`ranked_metrics`):
for a large ``k`` (``4 k >= M``) an exact chunked ranking
(:func:`pml.eval.functional.retrieval_values`), otherwise the ``knn_func``'s own search
(:func:`~pml.eval._neighbor_lists.known_search`) scored block by block
(:func:`pml.eval.functional.knn_retrieval_values`). Otherwise it asks ``knn_func`` for
``(N, k)`` neighbour lists and calls the ``calculate_*`` methods on them. All give the same
numbers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from pml.core import config
from pml.eval import functional as EF
from pml.eval._metrics import EQUALITY, maybe_get_avg_of_avgs, nan_accuracy
from pml.eval._neighbor_lists import known_search, redefined

if TYPE_CHECKING:
    from pml.eval._accuracy import AccuracyCalculator

__all__ = ["can_rank_exactly", "ranked_metrics"]

#: the metrics the ranking computes (the built-in k-NN metrics).
_RANKED = frozenset(EF.RETRIEVAL_METRICS)


#: kept for callers of the former private name
_redefined = redefined


def can_rank_exactly(calc: AccuracyCalculator, function_dict: dict[str, Callable]) -> bool:
    """Built-in metrics only, none redefined; the default comparison; a search pml knows.

    The fast routes stand in for the ``calculate_*`` methods and for ``knn_func`` without
    calling them, so they may only replace code they know. A subclass that overrides a
    built-in metric (``def calculate_precision_at_1``, even one calling ``super()``) defines
    that name in its own class dict as well as AccuracyCalculator's: two classes of the MRO
    define it, and the neighbour-list route runs the user's code. The same holds for a
    ``knn_func`` subclass that overrides ``__call__`` (see
    :func:`~pml.eval._neighbor_lists.known_search` for the searches pml knows). NMI/AMI need
    no neighbours and never block the route.
    """
    if calc.label_comparison_fn not in (None, EQUALITY):
        return False
    if known_search(calc) is None:
        return False
    built_in = {*_RANKED, "NMI", "AMI"}
    return all(
        name in built_in and not redefined(type(calc), calc.function_keyword + name)
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
    *,
    rank_only: bool = False,
    **kwargs: Any,
) -> dict[str, Callable[..., Any]] | None:
    """Metric functions returning per-query values of a fast route, or None for the lists.

    None unless :func:`can_rank_exactly`. An exact search with ``4 * k`` at least the
    reference size is ranked (the cost is about the same for any ``k``); otherwise the
    ``knn_func``'s search hands ``k`` neighbours per query block by block (unless
    ``rank_only``: then None, the caller needs the neighbour lists anyway).
    """
    search = known_search(calc, query) if can_rank_exactly(calc, function_dict) else None
    if search is None:
        return None
    query_ids, reference_ids, classes = EF.label_ids(query_labels, reference_labels)
    counts = torch.bincount(reference_ids, minlength=classes.shape[0])
    bin_counts = counts[torch.unique(query_ids)]
    num_k = calc.determine_k(bin_counts, reference.shape[0], ref_includes_query)
    ranks = search.exact and 4 * num_k >= reference.shape[0]
    if rank_only and not ranks:
        return None
    with torch.no_grad():
        if ranks:
            values = EF.retrieval_values(
                query,
                query_ids,
                reference,
                reference_ids,
                num_k,
                ref_includes_query=ref_includes_query,
                distance_fn=search.distance,
                is_inverted=search.is_inverted,
                batch_size=search.batch_size,
            )
        else:
            own = int(ref_includes_query)
            blocks = search.blocks(query, reference, num_k + own, ref_includes_query)
            values = EF.knn_retrieval_values(
                query_ids, reference_ids, blocks, num_k, ref_includes_query=ref_includes_query
            )
    kept = values["num_relevant"] > 0
    if not bool(kept.any()):
        config.LOGGER.warning(
            "None of the query labels are in the reference set: k-NN metrics are NaN"
        )
    # only its length is used (one NaN per class with return_per_class); unique(dim=0) on
    # 1-D labels is slow
    unique_query_labels = classes[torch.unique(query_ids)]
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
