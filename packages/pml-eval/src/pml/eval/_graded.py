"""NDCG@k with graded relevance (thin layer over :func:`pml.eval.functional.ndcg_values`)."""

from __future__ import annotations

from typing import Any, Literal

import torch

from pml.core.validation import check_bool, check_int, check_option, check_type
from pml.distances import BaseDistance
from pml.eval import functional as EF
from pml.eval._accuracy_inputs import accuracy_inputs
from pml.eval._summaries import class_labels, summarize

__all__ = ["ndcg_at_k"]


def ndcg_at_k(
    query: Any,
    query_labels: Any,
    reference: Any = None,
    reference_labels: Any = None,
    k: int | None = 10,
    *,
    ref_includes_query: bool = False,
    relevance_fn: EF.RelevanceFn | None = None,
    gain: Literal["linear", "exponential"] = "linear",
    distance: BaseDistance | None = None,
    return_per_class: bool = False,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Mean NDCG@k of the queries, with graded relevance from labels.

    The reference is ranked for each query by ``distance`` (default: squared L2, the ranking
    of ``AccuracyCalculator``'s default; equal distances by reference index). The gain of a
    reference item is ``relevance_fn(query_labels[:, None], reference_labels[None])``
    (non-negative, shape ``(B, M)``), by default the number of equal label columns (1-D
    labels: 1 for the same label, else 0; multi-column labels such as ``(class, brand,
    category)`` give graded gains). ``DCG@k = sum_{r<=k} gain_r / log2(r + 1)`` (``gain_r =
    g`` or ``2**g - 1`` with ``gain="exponential"``), divided by the ideal DCG@k of the
    query's whole reference set sorted by gain. ``reference=None`` ranks the query set
    against itself (``ref_includes_query`` forced): a query is never its own neighbour, nor
    in its ideal ranking. Queries whose references all have gain 0 are skipped and counted.

    Args:
        query: ``(N, D)`` embeddings (tensor or numpy; f16/bf16 computed in float32).
        query_labels: ``(N,)`` or ``(N, L)``.
        reference: ``(M, D)`` or None.
        reference_labels: ``(M,)`` or ``(M, L)``, with ``reference``.
        k: rank cut-off (None: the whole ranking).
        ref_includes_query: the query is the first ``N`` rows of ``reference``.
        relevance_fn: gains from labels (see above).
        gain: ``"linear"`` or ``"exponential"``.
        distance: a pml distance (None: squared L2).
        return_per_class: per-class means (classes: distinct query labels, sorted) instead
            of one mean.
        batch_size: query rows per block.

    Returns:
        ``{"ndcg_at_<k>" (or "ndcg" for k=None): float or list, "num_queries": scored
        queries, "num_skipped_queries": queries without any gain}``, plus ``"class_labels"``
        with ``return_per_class``.

    Raises:
        TypeError: wrong argument types.
        ValueError: shapes that do not match, NaN/inf embeddings, a bad ``k`` or ``gain``,
            gains of the wrong shape or negative.

    Example:
        >>> x = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
        >>> labels = torch.tensor([[0, 0], [0, 1], [1, 1], [0, 1]])
        >>> ndcg_at_k(x, labels, k=2)
        {'ndcg_at_2': 0.773..., 'num_queries': 4, 'num_skipped_queries': 0}
    """
    k = check_int("k", k, min=1, allow_none=True)
    check_option("gain", gain, ("linear", "exponential"))
    check_bool("return_per_class", return_per_class)
    check_bool("ref_includes_query", ref_includes_query)
    check_type("distance", distance, BaseDistance, allow_none=True)
    if relevance_fn is not None and not callable(relevance_fn):
        raise TypeError(f"relevance_fn must be callable; got {type(relevance_fn).__name__}")
    batch_size = check_int("batch_size", batch_size, min=1, allow_none=True)
    device = query.device if isinstance(query, torch.Tensor) else torch.device("cpu")
    inputs = accuracy_inputs(
        query, query_labels, reference, reference_labels, ref_includes_query, device
    )
    with torch.no_grad():
        values = EF.ndcg_values(
            inputs["query"],
            inputs["query_labels"],
            inputs["reference"],
            inputs["reference_labels"],
            k,
            relevance_fn=relevance_fn,
            gain=gain,
            ref_includes_query=inputs["ref_includes_query"],
            distance_fn=distance,
            is_inverted=bool(getattr(distance, "is_inverted", False)),
            batch_size=batch_size,
        )
    labels = inputs["query_labels"]
    scored = int((~torch.isnan(values)).sum())
    out: dict[str, Any] = {
        "ndcg" if k is None else f"ndcg_at_{k}": summarize(values, labels, return_per_class),
        "num_queries": scored,
        "num_skipped_queries": values.shape[0] - scored,
    }
    if return_per_class:
        out["class_labels"] = class_labels(values, labels)
    return out
