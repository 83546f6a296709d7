"""``distributed_get_accuracy``: AccuracyCalculator on data sharded across the ranks.

Queries and labels are gathered, the neighbours come from :class:`DistributedKNN`'s sharded
search (the reference embeddings never leave their rank), and every rank computes the
metrics from the merged lists of all queries: the same dict on every rank, equal to one
process's ``get_accuracy`` on the concatenated shards.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from pml.core import config
from pml.core.distributed import get_world_size
from pml.eval import functional as EF
from pml.eval._accuracy_inputs import accuracy_inputs, check_metric_names
from pml.eval._custom_metrics import custom_metric_functions
from pml.eval._distributed_comm import (
    _agree,
    _compute_dtype,
    _dtype_code,
    _exchange,
    _gather_rows,
    _same_on_all_ranks,
)
from pml.eval._distributed_knn import DistributedKNN, _Layout, _sharded_search
from pml.eval._metrics import EQUALITY, get_label_match_counts, get_lone_query_labels
from pml.eval._ranked import _aggregate, can_rank_exactly
from pml.eval.functional._ranked import _from_ranks

if TYPE_CHECKING:
    from pml.eval._accuracy import AccuracyCalculator

__all__ = ["distributed_get_accuracy", "evaluates_distributed", "gathered_unique"]


@contextlib.contextmanager
def _knn_func(calc: AccuracyCalculator, knn: Callable[..., Any]) -> Iterator[None]:
    """``calc.knn_func`` set to ``knn`` for the duration (the calculator's own routes see it).

    ``get_accuracy`` does not route to distributed evaluation again meanwhile.
    """
    saved, was_local = calc.knn_func, getattr(calc, "_local_call", False)
    calc.knn_func = knn
    calc._local_call = True
    try:
        yield
    finally:
        calc.knn_func = saved
        calc._local_call = was_local


def distributed_get_accuracy(
    calculator: AccuracyCalculator,
    query: Tensor | np.ndarray,
    query_labels: Tensor | np.ndarray,
    reference: Tensor | np.ndarray | None = None,
    reference_labels: Tensor | np.ndarray | None = None,
    ref_includes_query: bool = False,
    include: tuple[str, ...] | list[str] = (),
    exclude: tuple[str, ...] | list[str] = (),
) -> dict[str, Any]:
    """``calculator.get_accuracy`` of the data sharded across the ranks: same dict on every rank.

    Every rank calls it together with **its own shard** of the queries (and labels) and of
    the reference (and labels); ``reference=None`` on every rank means each rank's queries
    are its reference shard (the whole query against itself). The result equals, to the
    last bit, ``get_accuracy`` on one process of the concatenated shards (rank order; with
    ``ref_includes_query`` the reference is every rank's query rows followed by every rank's
    other reference rows) with ``knn_func`` the local k-NN: the calculator's own, or the
    ``local_knn`` of its :class:`DistributedKNN`. Without a process group (or world size 1)
    it is that ``get_accuracy`` call.

    Labels and queries are gathered on every rank (``N x D`` and the labels); the reference
    embeddings never leave their rank. Each rank holds the neighbour lists of all queries
    (``N x k``), so prefer ``k="max_bin_count"`` or an int: ``k=None`` needs ``N x M``.
    Metric functions get the gathered ``query``, labels and neighbour lists, and
    ``reference=None``; clustering (NMI/AMI) runs the calculator's ``kmeans_func`` on the
    gathered queries on every rank.

    Args:
        calculator: an :class:`AccuracyCalculator`.
        query, query_labels, reference, reference_labels, ref_includes_query, include,
            exclude: as for ``AccuracyCalculator.get_accuracy``, this rank's shards.

    Returns:
        ``{metric: value}``, identical on every rank.

    Raises:
        ValueError, TypeError: as ``get_accuracy``; ranks that disagree on the embedding
            dim, ``ref_includes_query``, the label shape or dtype. RuntimeError on the other
            ranks when one rank's inputs fail their checks.

    Example:
        >>> from pml.eval import AccuracyCalculator
        >>> calc = AccuracyCalculator(include=("precision_at_1",), device="cpu")
        >>> x = torch.tensor([[0.0], [1.0], [10.0], [11.0]])
        >>> distributed_get_accuracy(calc, x, torch.tensor([0, 0, 1, 1]))  # no process group
        {'precision_at_1': 1.0}
    """
    knn = calculator.knn_func
    dknn = knn if isinstance(knn, DistributedKNN) else DistributedKNN(local_knn=knn)
    args = (query, query_labels, reference, reference_labels, ref_includes_query)
    with _knn_func(calculator, dknn.local_knn):
        if get_world_size() <= 1:
            return calculator.get_accuracy(*args, include=include, exclude=exclude)
        return _sharded_accuracy(calculator, dknn, *args, include, exclude)


#: columns of the exchanged fields that every rank must share, and what they are.
_ACCURACY_AGREEMENT = {
    2: "embedding dim",
    4: "ref_includes_query (reference=None means True)",
    5: "query_labels ndim",
    6: "query_labels width",
    7: "query_labels dtype",
    8: "reference_labels ndim",
    9: "reference_labels width",
    10: "reference_labels dtype",
}


def _label_fields(labels: Tensor) -> list[int]:
    return [labels.ndim, int(np.prod(labels.shape[1:])), _dtype_code(labels.dtype)]


def _sharded_accuracy(
    calc: AccuracyCalculator,
    knn: DistributedKNN,
    query: Any,
    query_labels: Any,
    reference: Any,
    reference_labels: Any,
    ref_includes_query: bool,
    include: tuple[str, ...] | list[str],
    exclude: tuple[str, ...] | list[str],
) -> dict[str, Any]:
    error, fields, inputs = None, [0] * 11, None
    try:
        names = getattr(calc, "_metric_names", None) or list(calc.original_function_dict)
        check_metric_names(include, exclude, list(names))
        inputs = accuracy_inputs(
            query, query_labels, reference, reference_labels, ref_includes_query, calc.device
        )
        q, r = inputs["query"], inputs["reference"]
        fields = [
            q.shape[0],
            r.shape[0],
            q.shape[1],
            _dtype_code(q.dtype),
            int(inputs["ref_includes_query"]),
            *_label_fields(inputs["query_labels"]),
            *_label_fields(inputs["reference_labels"]),
        ]
    except Exception as e:  # raised on every rank by _agree
        error = e
    table = _agree(error, fields, calc.device)
    for column, name in _ACCURACY_AGREEMENT.items():
        _same_on_all_ranks(table, column, name)
    assert inputs is not None
    own = bool(inputs["ref_includes_query"])
    layout = _Layout(dist.get_rank(), tuple(table[:, 0].tolist()), tuple(table[:, 1].tolist()), own)
    dtype = _compute_dtype(table[:, 3])
    with torch.no_grad():
        query_all = layout.gather_queries(inputs["query"].to(dtype))
        query_labels_all = layout.gather_queries(inputs["query_labels"])
        reference_labels_all = layout.gather_reference(inputs["reference_labels"])
        calc.curr_function_dict = calc.get_function_dict(include, exclude)
        function_dict = dict(calc.curr_function_dict)
        custom_all = getattr(calc, "custom_metrics", {})
        custom = [m for m in function_dict if m in custom_all]
        built_in = {m: fn for m, fn in function_dict.items() if m not in custom_all}
        kwargs: dict[str, Any] = {
            "query": query_all,
            "reference": None,
            "query_labels": query_labels_all,
            "reference_labels": reference_labels_all,
            "ref_includes_query": own,
            "label_comparison_fn": calc.label_comparison_fn,
        }
        if custom or any(m in calc.requires_knn() for m in built_in):
            comparison = calc.label_comparison_fn or EQUALITY
            label_counts = get_label_match_counts(
                query_labels_all, reference_labels_all, comparison
            )
            num_ref = layout.total_reference
            num_k = calc.determine_k(label_counts[1], num_ref, own)
            distances, indices = _sharded_search(
                knn, layout, query_all, inputs["reference"].to(dtype), num_k, True
            )
            if custom:
                lists = (distances, indices)
                function_dict.update(
                    custom_metric_functions(
                        calc,
                        custom,
                        query_all,
                        query_labels_all,
                        None,
                        reference_labels_all,
                        own,
                        lists=lists,
                        label_counts=label_counts,
                        num_k=num_k,
                    )
                )
            if can_rank_exactly(calc, built_in) and 4 * num_k >= num_ref:
                # what one process computes here: _ranked.ranked_metrics (same threshold)
                function_dict.update(
                    _ranked_from_lists(calc, built_in, indices, kwargs, num_k, num_ref)
                )
            else:
                kwargs.update(_neighbor_kwargs(calc, distances, indices, kwargs, label_counts))
        if any(m in calc.requires_clustering() for m in function_dict):
            kwargs["cluster_labels"] = calc.get_cluster_labels(**kwargs)
        return calc._get_accuracy(function_dict, **kwargs)


def _warn_no_neighbour() -> None:
    config.LOGGER.warning("None of the query labels are in the reference set: k-NN metrics are NaN")


def _neighbor_kwargs(
    calc: AccuracyCalculator,
    distances: Tensor,
    indices: Tensor,
    kwargs: dict[str, Any],
    label_counts: tuple[Tensor, Tensor],
) -> dict[str, Any]:
    """The k-NN keyword arguments one process's neighbour-list route gives the metrics."""
    comparison = calc.label_comparison_fn or EQUALITY
    query_labels, reference_labels = kwargs["query_labels"], kwargs["reference_labels"]
    lone_query_labels, not_lone_query_mask = get_lone_query_labels(
        query_labels, label_counts, kwargs["ref_includes_query"], comparison
    )
    if not bool(not_lone_query_mask.any()):
        _warn_no_neighbour()
    return {
        "label_counts": label_counts,
        "knn_labels": reference_labels[indices.to(reference_labels.device)],
        "knn_distances": distances,
        "lone_query_labels": lone_query_labels,
        "not_lone_query_mask": not_lone_query_mask,
    }


def _ranked_from_lists(
    calc: AccuracyCalculator,
    function_dict: dict[str, Callable[..., Any]],
    indices: Tensor,
    kwargs: dict[str, Any],
    num_k: int,
    num_ref: int,
) -> dict[str, Callable[..., Any]]:
    """The exact-ranking route's metric functions, from the merged neighbour lists.

    One process ranks the whole reference (:func:`pml.eval.functional.retrieval_values`);
    here the lists hold the same ranking up to ``k``. The per-query values are computed by
    the same function on tensors of the same shapes (blocks of query rows, one column per
    same-class reference item), so every value is bitwise the same.
    """
    query_labels = kwargs["query_labels"]
    query_ids, reference_ids, classes = EF.label_ids(query_labels, kwargs["reference_labels"])
    counts = torch.bincount(reference_ids, minlength=classes.shape[0])
    num_relevant = counts[query_ids] - int(kwargs["ref_includes_query"])
    batch_size = getattr(calc.knn_func, "batch_size", None)
    rows = EF.chunk_rows(num_ref, batch_size)
    values = _values_from_lists(
        indices, query_ids, reference_ids, counts, num_relevant, num_k, rows
    )
    kept = num_relevant > 0
    if not bool(kept.any()):
        _warn_no_neighbour()
    aggregate = functools.partial(
        _aggregate,
        kept,
        query_labels,
        torch.unique(query_labels, dim=0),
        calc.avg_of_avgs,
        calc.return_per_class,
    )
    knn_metrics = calc.requires_knn()
    return {
        name: functools.partial(aggregate, values[name])
        for name in function_dict
        if name in EF.RETRIEVAL_METRICS and name in knn_metrics
    }


def _values_from_lists(
    indices: Tensor,
    query_ids: Tensor,
    reference_ids: Tensor,
    counts: Tensor,
    num_relevant: Tensor,
    k: int,
    rows: int,
) -> dict[str, Tensor]:
    """Per-query values of :func:`~pml.eval.functional.retrieval_values` from ``(N, k)`` lists."""
    num_query = query_ids.shape[0]
    device = query_ids.device
    out = {
        name: torch.full((num_query,), float("nan"), dtype=torch.float64, device=device)
        for name in EF.RETRIEVAL_METRICS
    }
    out["mean_reciprocal_rank"] = out["mean_reciprocal_rank"].float()
    for s in range(0, num_query if reference_ids.shape[0] and k else 0, rows):
        ids = query_ids[s : s + rows]
        width = int(counts[ids].max())  # the ranking's: one column per same-class item
        rel = reference_ids[indices[s : s + rows]] == ids.unsqueeze(1)
        ranks = torch.full((ids.shape[0], width), k + 1, dtype=torch.int64, device=device)
        r_rows, r_cols = rel.nonzero(as_tuple=True)
        slots = rel.cumsum(1)[r_rows, r_cols] - 1
        ranks[r_rows, slots] = r_cols + 1
        r = num_relevant[s : s + rows]
        lone = r <= 0
        for name, v in _from_ranks(ranks, r, k).items():
            out[name][s : s + rows] = v.masked_fill(lone, float("nan"))
    return out


def evaluates_distributed(calc: AccuracyCalculator) -> bool:
    """Whether ``calc.get_accuracy`` evaluates shards together.

    True under a process group of world size > 1 with a ``knn_func`` that has a
    ``distributed_get_accuracy`` method or a calculator made with ``distributed=True``.
    """
    from pml.eval._accuracy_routes import distributed_route

    return get_world_size() > 1 and distributed_route(calc) is not None


def gathered_unique(calc: AccuracyCalculator, values: Tensor) -> Tensor:
    """Sorted distinct ``values``, of every rank's when ``calc`` evaluates distributed."""
    if evaluates_distributed(calc):
        sizes = _exchange([values.shape[0]], values.device)[:, 0].tolist()
        values = _gather_rows(values, sizes)
    return torch.unique(values)
