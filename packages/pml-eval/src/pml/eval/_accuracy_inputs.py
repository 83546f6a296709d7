"""What AccuracyCalculator is given: its options and the inputs of ``get_accuracy``."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from pml.core import config
from pml.core.validation import check_bool, check_finite, check_int, check_type
from pml.eval._io import as_embeddings, as_labels, common_dtype

__all__ = [
    "accuracy_inputs",
    "check_averaging",
    "check_k",
    "check_metric_names",
    "cluster_score",
    "label_classes",
    "resolve_k",
]


def label_classes(labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(distinct labels, dense id of each label)``; a multi-dim label is one class per row."""
    if labels.ndim == 1:
        return torch.unique(labels, return_inverse=True)
    return torch.unique(labels.reshape(labels.shape[0], -1), dim=0, return_inverse=True)


def cluster_score(score: Callable[..., Any], labels: Tensor, cluster_labels: Tensor) -> float:
    """A scikit-learn clustering score of the clusters against the labels' classes.

    NaN for an empty query, like the k-NN metrics (there is nothing to cluster).
    """
    if labels.shape[0] == 0:
        return float("nan")
    return float(score(label_classes(labels)[1].cpu().numpy(), cluster_labels.cpu().numpy()))


def check_averaging(avg_of_avgs: Any, return_per_class: Any) -> tuple[bool, bool]:
    """``avg_of_avgs`` and ``return_per_class``: bools, not both True.

    Raises:
        TypeError: not a bool.
        ValueError: both True.
    """
    avg_of_avgs = check_bool("avg_of_avgs", avg_of_avgs)
    return_per_class = check_bool("return_per_class", return_per_class)
    if avg_of_avgs and return_per_class:
        raise ValueError("avg_of_avgs and return_per_class are mutually exclusive; got both True")
    return avg_of_avgs, return_per_class


def check_k(k: Any) -> int | str | None:
    """k: None, ``"max_bin_count"`` or a positive int (numpy ints too; bools rejected)."""
    if k is None or (isinstance(k, str) and k == "max_bin_count"):
        return k
    if isinstance(k, numbers.Integral):
        # fix: the reference accepts k=True (bool is an int subclass): a TypeError here
        return check_int("k", k, min=1)
    # compat: spec §1 step 5: other values (0, 1.5, 2.0, "max") are a ValueError
    raise ValueError(f"k must be a positive int, None or 'max_bin_count'; got {k!r}")


def resolve_k(
    k: int | str | None,
    bin_counts: Tensor,
    num_reference: int,
    ref_includes_query: bool,
    warn_if_inexact: bool = False,
) -> int:
    """Neighbours to retrieve for the option ``k`` (see ``AccuracyCalculator.determine_k``).

    ``warn_if_inexact``: warn when an int ``k`` is below the largest class (R-precision and
    MAP@R need every same-class item within ``k``).
    """
    own = int(ref_includes_query)
    max_bin_count = int(torch.max(bin_counts)) if len(bin_counts) > 0 else 0
    max_k = max(num_reference - own, 0)
    if k == "max_bin_count":
        return max(max_bin_count - own, 0)
    if k is None:
        return max_k
    num_k = int(k)
    if num_k < max_bin_count and warn_if_inexact:
        config.LOGGER.warning(
            "k=%d is smaller than the largest class (%d): r_precision and "
            "mean_average_precision_at_r are only exact with k >= that; "
            "mean_average_precision is then MAP@k",
            num_k,
            max_bin_count,
        )
    if num_k > max_k:
        # fix: the reference lets faiss pad with index -1 (wrong labels, MAP > 1).
        config.LOGGER.warning(
            "k=%d exceeds the %d available reference embeddings; using k=%d", num_k, max_k, max_k
        )
        num_k = max_k
    return num_k


def check_metric_names(include: Any, exclude: Any, valid: list[str]) -> None:
    """``include``/``exclude``: tuples or lists of names from ``valid``.

    Raises:
        TypeError: not a tuple or list.
        ValueError: a name that is not in ``valid``.
    """
    for arg, value in (("include", include), ("exclude", exclude)):
        check_type(arg, value, (tuple, list))
        unknown = [m for m in value if m not in valid]
        if unknown:
            raise ValueError(f"{arg} has unknown metrics {unknown}; valid metrics are {valid}")


def accuracy_inputs(
    query: Any,
    query_labels: Any,
    reference: Any,
    reference_labels: Any,
    ref_includes_query: bool,
    device: torch.device,
) -> dict[str, Any]:
    """Checked tensors on ``device``: the base keyword arguments of every metric function.

    ``reference=None`` is the query itself (and forces ``ref_includes_query``). Query and
    reference are compared in their common dtype.

    Returns:
        ``{"query", "reference", "query_labels", "reference_labels", "ref_includes_query"}``.

    Raises:
        TypeError: inputs that are not tensors/arrays.
        ValueError: shapes or lengths that do not match, NaN or inf in query or reference, a
            query that is not the reference's prefix with ``ref_includes_query``.
    """
    same_set = reference is None
    if same_set:
        reference, reference_labels, ref_includes_query = query, query_labels, True
    if reference_labels is None:
        raise ValueError("reference_labels must be given with reference; got None")
    query_t = as_embeddings(query, "query", device)
    query_labels_t = as_labels(query_labels, "query_labels", query_t.shape[0], device)
    if same_set:
        reference_t, reference_labels_t = query_t, query_labels_t
    else:
        reference_t = as_embeddings(reference, "reference", device)
        reference_labels_t = as_labels(
            reference_labels, "reference_labels", reference_t.shape[0], device
        )
    if reference_t.shape[1] != query_t.shape[1]:
        raise ValueError(
            f"reference must have embedding size {query_t.shape[1]} like query; "
            f"got {reference_t.shape[1]}"
        )
    # fix: NaN/inf rows were ranked last (finite metrics) or gave faiss index -1
    check_finite(query_t, "query")
    if not same_set:
        check_finite(reference_t, "reference")
        dtype = common_dtype(query_t, reference_t)
        query_t, reference_t = query_t.to(dtype), reference_t.to(dtype)
        if ref_includes_query:
            _check_query_is_prefix(query_t, query_labels_t, reference_t, reference_labels_t)
    return {
        "query": query_t,
        "reference": reference_t,
        "query_labels": query_labels_t,
        "reference_labels": reference_labels_t,
        "ref_includes_query": ref_includes_query,
    }


def _check_query_is_prefix(
    query: Tensor, query_labels: Tensor, reference: Tensor, reference_labels: Tensor
) -> None:
    n = query.shape[0]
    if (
        reference.shape[0] < n
        or not torch.allclose(reference[:n].to(query.dtype), query)
        or not torch.equal(reference_labels[:n], query_labels.to(reference_labels.dtype))
    ):
        raise ValueError(
            "ref_includes_query=True needs the query to be the first len(query) rows of "
            "reference (and query_labels of reference_labels); got a reference that does "
            "not start with the query"
        )
