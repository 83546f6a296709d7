"""AccuracyCalculator: retrieval and clustering metrics of query embeddings."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from pml.core.validation import check_bool, check_callable, check_device
from pml.eval._accuracy_inputs import (
    check_averaging,
    check_k,
    check_metric_names,
    cluster_score,
    label_classes,
    resolve_k,
)
from pml.eval._accuracy_routes import compute_accuracy
from pml.eval._clustering import default_kmeans_func
from pml.eval._custom_metrics import CustomMetricFn, check_custom_metrics, custom_placeholder
from pml.eval._knn import TorchKNN
from pml.eval._metrics import (
    EQUALITY,
    LabelComparisonFn,
    mean_average_precision,
    mean_reciprocal_rank,
    nan_accuracy,
    precision_at_k,
    r_precision,
    try_getting_not_lone_labels,
)

KNNFunc = Callable[[Tensor, int, Tensor, bool], tuple[Tensor, Tensor]]
KMeansFunc = Callable[[Tensor, int], Tensor]


class AccuracyCalculator:
    """Retrieval (k-NN) and clustering accuracy of query embeddings against a reference set.

    Metrics: ``precision_at_1``, ``r_precision``, ``mean_average_precision_at_r``,
    ``mean_average_precision``, ``mean_reciprocal_rank`` (k-NN) and ``NMI``, ``AMI``
    (k-means on the queries). Subclasses add metrics with ``calculate_<name>(self, ...,
    **kwargs)`` methods (listed in ``requires_knn()``/``requires_clustering()`` when they need
    neighbours or clusters). Definitions: Musgrave et al., "A Metric Learning Reality Check"
    (ECCV 2020).

    With the default ``knn_func`` (:class:`TorchKNN`) and label comparison, the built-in k-NN
    metrics come from an exact chunked ranking: identical numbers, without building
    ``(N, k)`` neighbour lists, so ``k=None`` (the whole reference) works on large sets. A
    small ``k`` (``4 k`` below the reference size, e.g. ``"max_bin_count"``) is searched
    block by block and scored on the fly: with faiss's exact ``IndexFlatL2`` when faiss is
    installed and the embeddings are float32 on the CPU, else plain torch
    (``knn_func=TorchKNN()`` forces plain torch). ``FaissKNN()`` is served the same way.

    For galleries of millions, ``knn_func=ApproximateKNN(...)`` (faiss IVF or HNSW) trades
    exactness for speed; the results then also hold ``"knn_recall_at_k"``: the fraction of
    the exact ``k`` nearest neighbours the index found, measured on a sample of queries.

    ``custom_metrics={"name": fn}`` adds retrieval metrics without subclassing: ``fn``
    receives a :class:`~pml.eval.QueryNeighbors` (a block of queries, their ``k`` ranked
    neighbours' labels, distances and indices, which match, ``R`` per query) and returns
    one value per query (NaN where undefined), averaged like the built-in k-NN metrics (see
    :mod:`pml.eval._custom_metrics`). It may be called on several blocks of queries.

    Args:
        include: metric names to compute (empty: all).
        exclude: metric names to drop.
        avg_of_avgs: average per class first, then over classes.
        return_per_class: return per-class lists (sorted labels) instead of numbers.
        k: neighbours: a positive int (not a bool), None (whole reference) or
            ``"max_bin_count"``.
        label_comparison_fn: ``fn(a, b) -> bool tensor`` (broadcasting); None: equality.
        device: where to compute (str or torch.device); None: cuda if available, else cpu.
        knn_func: ``fn(query, k, reference, ref_includes_query) -> (distances, indices)``;
            None: :class:`TorchKNN` (squared L2, faiss's order).
        kmeans_func: ``fn(x, n_clusters) -> ids``; None: ``FaissKMeans(niter=20)`` when faiss
            is installed, else :class:`TorchKMeans`.
        custom_metrics: ``{name: fn(QueryNeighbors) -> (n,) values}``, metrics after the
            built-in ones (``include``/``exclude`` name them too).
        distributed: under a ``torch.distributed`` process group (world size > 1) each rank
            passes its shard to ``get_accuracy`` and gets the metrics of the whole data
            (:func:`~pml.eval.distributed_get_accuracy`); without one nothing changes. A
            :class:`~pml.eval.DistributedKNN` ``knn_func`` does the same.

    Raises:
        TypeError: include/exclude not a tuple or list; a bool k; custom_metrics not a dict
            of str names to callables; a distributed that is not a bool.
        ValueError: unknown metric names, avg_of_avgs with return_per_class, a bad k, or a
            custom metric name that a built-in metric uses.
        NotImplementedError: a custom label_comparison_fn with NMI/AMI selected.

    Example:
        >>> x = torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0], [20.0]])
        >>> labels = torch.tensor([0, 0, 0, 1, 1, 2])
        >>> calc = AccuracyCalculator(exclude=("NMI", "AMI"))
        >>> calc.get_accuracy(x, labels)["precision_at_1"]
        1.0
    """

    def __init__(
        self,
        include: tuple[str, ...] | list[str] = (),
        exclude: tuple[str, ...] | list[str] = (),
        avg_of_avgs: bool = False,
        return_per_class: bool = False,
        k: int | Literal["max_bin_count"] | None = None,
        label_comparison_fn: LabelComparisonFn | None = None,
        device: torch.device | str | None = None,
        knn_func: KNNFunc | None = None,
        kmeans_func: KMeansFunc | None = None,
        custom_metrics: Mapping[str, CustomMetricFn] | None = None,
        distributed: bool = False,
    ) -> None:
        # compat: spec §1 "Metric discovery": calculate_* attributes, in dir() order.
        self.function_keyword = "calculate_"
        names = [n for n in dir(self) if n.startswith(self.function_keyword)]
        self.original_function_dict: dict[str, Callable[..., Any]] = {
            n.replace(self.function_keyword, "", 1): getattr(self, n) for n in names
        }
        self.custom_metrics = check_custom_metrics(
            custom_metrics, list(self.original_function_dict)
        )
        self.original_function_dict.update(dict.fromkeys(self.custom_metrics, custom_placeholder))
        self.distributed = check_bool("distributed", distributed)
        self._metric_names = list(self.original_function_dict)
        self.check_primary_metrics(include, exclude)
        self.original_function_dict = self.get_function_dict(include, exclude)
        self.curr_function_dict = self.get_function_dict()
        self.avg_of_avgs, self.return_per_class = check_averaging(avg_of_avgs, return_per_class)
        check_callable("label_comparison_fn", label_comparison_fn)
        check_callable("knn_func", knn_func)
        check_callable("kmeans_func", kmeans_func)
        self.k = check_k(k)
        if label_comparison_fn and any(
            m in self.requires_clustering() for m in self.get_curr_metrics()
        ):
            raise NotImplementedError(
                "clustering metrics (NMI, AMI) cannot be combined with a custom "
                "label_comparison_fn: exclude them, e.g. exclude=('NMI', 'AMI')"
            )
        self.label_comparison_fn = label_comparison_fn
        self.device = check_device("device", device)
        self.knn_func = TorchKNN() if knn_func is None else knn_func
        # the default may search with faiss's exact flat index (see known_search)
        self._default_knn = self.knn_func if knn_func is None else None
        self.kmeans_func = default_kmeans_func(self.device) if kmeans_func is None else kmeans_func

    # ------------------------------------------------------------------ metric set
    def get_function_dict(
        self, include: tuple[str, ...] | list[str] = (), exclude: tuple[str, ...] | list[str] = ()
    ) -> dict[str, Callable[..., Any]]:
        """The instance's metrics filtered by ``include`` (if non-empty) and ``exclude``."""
        return {
            name: fn
            for name, fn in self.original_function_dict.items()
            if (len(include) == 0 or name in include) and name not in exclude
        }

    def check_primary_metrics(
        self, include: tuple[str, ...] | list[str] = (), exclude: tuple[str, ...] | list[str] = ()
    ) -> None:
        """Validate include/exclude against the discovered metric names.

        Raises:
            TypeError: not a tuple or list.
            ValueError: a name that is not a metric.
        """
        check_metric_names(include, exclude, list(self.original_function_dict))

    def get_curr_metrics(self) -> list[str]:
        """Names of the metrics the last call computed (the instance's set before any call)."""
        return list(self.curr_function_dict)

    def requires_clustering(self) -> list[str]:
        """Metrics that need ``cluster_labels``."""
        return ["NMI", "AMI"]

    def requires_knn(self) -> list[str]:
        """Metrics that need neighbours (``knn_labels``, ``label_counts``, ...)."""
        # fix: the reference omits mean_reciprocal_rank (it then fails when selected alone).
        return [
            "precision_at_1",
            "mean_average_precision",
            "mean_average_precision_at_r",
            "r_precision",
            "mean_reciprocal_rank",
        ]

    def description(self) -> str:
        """``"avg_of_avgs"`` when averaging per class first, else ``""``."""
        return "avg_of_avgs" if self.avg_of_avgs else ""

    # ------------------------------------------------------------------ built-in metrics
    @property
    def _comparison(self) -> LabelComparisonFn:
        return self.label_comparison_fn or EQUALITY

    def _over_not_lone(
        self,
        metric: Callable[..., Any],
        knn_labels: Tensor,
        query_labels: Tensor,
        not_lone_query_mask: Tensor,
        label_counts: tuple[Tensor, Tensor],
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """``metric`` over the queries that have a possible neighbour; NaN when none has."""
        knn_labels, query_labels = try_getting_not_lone_labels(  # type: ignore[assignment]
            knn_labels, query_labels, not_lone_query_mask
        )
        if knn_labels is None:
            return nan_accuracy(label_counts[0], self.return_per_class)
        return metric(
            knn_labels,
            query_labels[:, None],
            *args,
            self.avg_of_avgs,
            self.return_per_class,
            self._comparison,
            **kwargs,
        )

    def calculate_precision_at_1(
        self,
        knn_labels: Tensor,
        query_labels: Tensor,
        not_lone_query_mask: Tensor,
        label_counts: tuple[Tensor, Tensor],
        **kwargs: Any,
    ) -> Any:
        return self._over_not_lone(
            precision_at_k, knn_labels, query_labels, not_lone_query_mask, label_counts, 1
        )

    def calculate_mean_average_precision_at_r(
        self,
        knn_labels: Tensor,
        query_labels: Tensor,
        not_lone_query_mask: Tensor,
        ref_includes_query: bool,
        label_counts: tuple[Tensor, Tensor],
        **kwargs: Any,
    ) -> Any:
        return self._over_not_lone(
            mean_average_precision,
            knn_labels,
            query_labels,
            not_lone_query_mask,
            label_counts,
            ref_includes_query,
            label_counts,
            at_r=True,
        )

    def calculate_mean_average_precision(
        self,
        knn_labels: Tensor,
        query_labels: Tensor,
        not_lone_query_mask: Tensor,
        ref_includes_query: bool,
        label_counts: tuple[Tensor, Tensor],
        **kwargs: Any,
    ) -> Any:
        return self._over_not_lone(
            mean_average_precision,
            knn_labels,
            query_labels,
            not_lone_query_mask,
            label_counts,
            ref_includes_query,
            label_counts,
        )

    def calculate_mean_reciprocal_rank(
        self,
        knn_labels: Tensor,
        query_labels: Tensor,
        not_lone_query_mask: Tensor,
        label_counts: tuple[Tensor, Tensor],
        **kwargs: Any,
    ) -> Any:
        return self._over_not_lone(
            mean_reciprocal_rank, knn_labels, query_labels, not_lone_query_mask, label_counts
        )

    def calculate_r_precision(
        self,
        knn_labels: Tensor,
        query_labels: Tensor,
        not_lone_query_mask: Tensor,
        ref_includes_query: bool,
        label_counts: tuple[Tensor, Tensor],
        **kwargs: Any,
    ) -> Any:
        return self._over_not_lone(
            r_precision,
            knn_labels,
            query_labels,
            not_lone_query_mask,
            label_counts,
            ref_includes_query,
            label_counts,
        )

    def calculate_NMI(self, query_labels: Tensor, cluster_labels: Tensor, **kwargs: Any) -> float:
        from sklearn.metrics import normalized_mutual_info_score

        return cluster_score(normalized_mutual_info_score, query_labels, cluster_labels)

    def calculate_AMI(self, query_labels: Tensor, cluster_labels: Tensor, **kwargs: Any) -> float:
        from sklearn.metrics import adjusted_mutual_info_score

        return cluster_score(adjusted_mutual_info_score, query_labels, cluster_labels)

    # ------------------------------------------------------------------ k and clustering
    def determine_k(
        self, bin_counts: Tensor, num_reference_embeddings: int, ref_includes_query: bool
    ) -> int:
        """Neighbours to retrieve (not counting the query itself).

        ``"max_bin_count"``: the largest match count of a query label (minus self); None: the
        whole reference (minus self); an int as given, clamped to the reference size.
        """
        r_metrics = ("r_precision", "mean_average_precision_at_r")
        return resolve_k(
            self.k,
            bin_counts,
            num_reference_embeddings,
            ref_includes_query,
            warn_if_inexact=any(m in r_metrics for m in self.get_curr_metrics()),
        )

    def get_cluster_labels(self, query: Tensor, query_labels: Tensor, **kwargs: Any) -> Tensor:
        """``kmeans_func(query, number of distinct query labels)``; none for an empty query."""
        if query.shape[0] == 0:  # fix: the k-means function refused 0 clusters
            return torch.empty(0, dtype=torch.long, device=query.device)
        num_clusters = int(label_classes(query_labels)[0].shape[0])
        # compat: the reference hands kmeans_func a float32 tensor on the device
        return self.kmeans_func(query.to(torch.float32), num_clusters)

    # ------------------------------------------------------------------ main entry
    def get_accuracy(
        self,
        query: Tensor | np.ndarray,
        query_labels: Tensor | np.ndarray,
        reference: Tensor | np.ndarray | None = None,
        reference_labels: Tensor | np.ndarray | None = None,
        ref_includes_query: bool = False,
        include: tuple[str, ...] | list[str] = (),
        exclude: tuple[str, ...] | list[str] = (),
    ) -> dict[str, Any]:
        """Compute the selected metrics.

        Query and reference may mix numpy arrays and tensors and dtypes: they are compared
        in their common dtype (float64 when either is float64, else float32).

        Args:
            query: embeddings ``(N, D)`` (tensor or numpy; float64 is kept).
            query_labels: ``(N,)`` (any dtype, exact), or ``(N, L)`` rows as labels.
            reference: ``(M, D)``; None uses the query (and forces ``ref_includes_query``).
            reference_labels: ``(M,)`` or ``(M, L)``.
            ref_includes_query: the query is the first ``N`` rows of the reference: each
                query's own row is never its neighbour.
            include: restrict this call to these of the instance's metrics (names of
                metrics the instance does not compute are skipped).
            exclude: drop these metrics for this call.

        Returns:
            ``{metric: value}`` in metric order: Python floats (NaN when no query has a
            possible neighbour), or lists with ``return_per_class``; with an
            :class:`ApproximateKNN` also ``"knn_recall_at_k"`` (its measured recall@k, None
            when not measured).

        With ``distributed=True`` or a :class:`~pml.eval.DistributedKNN` ``knn_func``,
        under a process group every rank passes its own shards and gets the metrics of the
        whole data (the same dict on every rank).

        Raises:
            TypeError: inputs that are not tensors/arrays; include/exclude not a tuple or
                list; a custom metric's result that is not per-query numbers.
            ValueError: shapes or lengths that do not match, NaN or inf in query or
                reference, a query that is not the reference's prefix with
                ``ref_includes_query``, unknown metric names in include/exclude,
                neighbour indices from ``knn_func`` outside the reference (faiss's ``-1``),
                or a custom metric's result of another shape than ``(n,)``.
        """
        args = (query, query_labels, reference, reference_labels, ref_includes_query)
        return compute_accuracy(self, *args, include, exclude)

    def _get_accuracy(self, function_dict: dict[str, Callable[..., Any]], **kwargs: Any) -> dict:
        """Call every metric function with ``kwargs``; results in ``function_dict`` order."""
        return {name: fn(**kwargs) for name, fn in function_dict.items()}
