"""AccuracyCalculator: retrieval and clustering metrics of query embeddings."""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable
from typing import Any, Literal, cast

import numpy as np
import torch
from torch import Tensor

from pml.core import config
from pml.core.validation import check_finite, check_int
from pml.eval import functional as EF
from pml.eval._clustering import default_kmeans_func
from pml.eval._io import as_embeddings, as_labels, common_dtype
from pml.eval._knn import CustomKNN, TorchKNN
from pml.eval._metrics import (
    EQUALITY,
    LabelComparisonFn,
    get_label_match_counts,
    get_lone_query_labels,
    maybe_get_avg_of_avgs,
    mean_average_precision,
    mean_reciprocal_rank,
    nan_accuracy,
    precision_at_k,
    r_precision,
    try_getting_not_lone_labels,
)

KNNFunc = Callable[[Tensor, int, Tensor, bool], tuple[Tensor, Tensor]]
KMeansFunc = Callable[[Tensor, int], Tensor]

#: the built-in k-NN metrics the exact chunked ranking computes.
_RANKED = frozenset(EF.RETRIEVAL_METRICS)
_BUILT_IN = frozenset({*EF.RETRIEVAL_METRICS, "NMI", "AMI"})
_EXACT_KNN_CALLS = (TorchKNN.__call__, CustomKNN.__call__)


def _class_ids_numpy(labels: Tensor) -> np.ndarray:
    """Labels as dense int ids (rows for multi-dim labels) for scikit-learn."""
    if labels.ndim == 1:
        _, ids = torch.unique(labels, return_inverse=True)
    else:
        _, ids = torch.unique(labels.reshape(labels.shape[0], -1), dim=0, return_inverse=True)
    return ids.cpu().numpy()


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
    ``(N, k)`` neighbour lists, so ``k=None`` (the whole reference) works on large sets.

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

    Raises:
        TypeError: include/exclude not a tuple or list; a bool k.
        ValueError: unknown metric names, avg_of_avgs with return_per_class, or a bad k.
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
    ) -> None:
        # compat: spec §1 "Metric discovery": calculate_* attributes, in dir() order.
        self.function_keyword = "calculate_"
        names = [n for n in dir(self) if n.startswith(self.function_keyword)]
        self.original_function_dict: dict[str, Callable[..., Any]] = {
            n.replace(self.function_keyword, "", 1): getattr(self, n) for n in names
        }
        self._metric_names = list(self.original_function_dict)
        self.check_primary_metrics(include, exclude)
        self.original_function_dict = self.get_function_dict(include, exclude)
        self.curr_function_dict = self.get_function_dict()
        if avg_of_avgs and return_per_class:
            raise ValueError(
                "avg_of_avgs and return_per_class are mutually exclusive; got both True"
            )
        self.avg_of_avgs = avg_of_avgs
        self.return_per_class = return_per_class
        self.k = self._check_k(k)
        if label_comparison_fn and any(
            m in self.requires_clustering() for m in self.get_curr_metrics()
        ):
            raise NotImplementedError(
                "clustering metrics (NMI, AMI) cannot be combined with a custom "
                "label_comparison_fn: exclude them, e.g. exclude=('NMI', 'AMI')"
            )
        self.label_comparison_fn = label_comparison_fn
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.knn_func = TorchKNN() if knn_func is None else knn_func
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

    @staticmethod
    def _check_k(k: Any) -> int | str | None:
        """k: None, ``"max_bin_count"`` or a positive int (numpy ints too; bools rejected)."""
        if k is None or (isinstance(k, str) and k == "max_bin_count"):
            return k
        if isinstance(k, bool):
            # fix: the reference accepts k=True (bool is an int subclass): one neighbour
            raise TypeError(f"k must be a positive int, None or 'max_bin_count'; got bool {k!r}")
        if isinstance(k, numbers.Integral):
            return check_int("k", k, min=1)
        # compat: spec §1 step 5: other values (0, 1.5, 2.0, "max") are a ValueError
        raise ValueError(f"k must be a positive int, None or 'max_bin_count'; got {k!r}")

    def check_primary_metrics(
        self, include: tuple[str, ...] | list[str] = (), exclude: tuple[str, ...] | list[str] = ()
    ) -> None:
        """Validate include/exclude against the discovered metric names.

        Raises:
            TypeError: not a tuple or list.
            ValueError: a name that is not a metric.
        """
        self._check_metric_names(include, exclude, list(self.original_function_dict))

    @staticmethod
    def _check_metric_names(include: Any, exclude: Any, valid: list[str]) -> None:
        for arg, value in (("include", include), ("exclude", exclude)):
            if not isinstance(value, tuple | list):
                raise TypeError(
                    f"{arg} must be a tuple or list of metric names; got {type(value).__name__}"
                )
            unknown = [m for m in value if m not in valid]
            if unknown:
                raise ValueError(f"{arg} has unknown metrics {unknown}; valid metrics are {valid}")

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

    def calculate_precision_at_1(
        self,
        knn_labels: Tensor,
        query_labels: Tensor,
        not_lone_query_mask: Tensor,
        label_counts: tuple[Tensor, Tensor],
        **kwargs: Any,
    ) -> Any:
        knn_labels, query_labels = try_getting_not_lone_labels(  # type: ignore[assignment]
            knn_labels, query_labels, not_lone_query_mask
        )
        if knn_labels is None:
            return nan_accuracy(label_counts[0], self.return_per_class)
        return precision_at_k(
            knn_labels,
            query_labels[:, None],
            1,
            self.avg_of_avgs,
            self.return_per_class,
            self._comparison,
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
        return self._average_precision(
            knn_labels, query_labels, not_lone_query_mask, ref_includes_query, label_counts, True
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
        return self._average_precision(
            knn_labels, query_labels, not_lone_query_mask, ref_includes_query, label_counts, False
        )

    def _average_precision(
        self,
        knn_labels: Tensor,
        query_labels: Tensor,
        not_lone_query_mask: Tensor,
        ref_includes_query: bool,
        label_counts: tuple[Tensor, Tensor],
        at_r: bool,
    ) -> Any:
        knn_labels, query_labels = try_getting_not_lone_labels(  # type: ignore[assignment]
            knn_labels, query_labels, not_lone_query_mask
        )
        if knn_labels is None:
            return nan_accuracy(label_counts[0], self.return_per_class)
        return mean_average_precision(
            knn_labels,
            query_labels[:, None],
            ref_includes_query,
            label_counts,
            self.avg_of_avgs,
            self.return_per_class,
            self._comparison,
            at_r=at_r,
        )

    def calculate_mean_reciprocal_rank(
        self,
        knn_labels: Tensor,
        query_labels: Tensor,
        not_lone_query_mask: Tensor,
        label_counts: tuple[Tensor, Tensor],
        **kwargs: Any,
    ) -> Any:
        knn_labels, query_labels = try_getting_not_lone_labels(  # type: ignore[assignment]
            knn_labels, query_labels, not_lone_query_mask
        )
        if knn_labels is None:
            return nan_accuracy(label_counts[0], self.return_per_class)
        return mean_reciprocal_rank(
            knn_labels,
            query_labels[:, None],
            self.avg_of_avgs,
            self.return_per_class,
            self._comparison,
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
        knn_labels, query_labels = try_getting_not_lone_labels(  # type: ignore[assignment]
            knn_labels, query_labels, not_lone_query_mask
        )
        if knn_labels is None:
            return nan_accuracy(label_counts[0], self.return_per_class)
        return r_precision(
            knn_labels,
            query_labels[:, None],
            ref_includes_query,
            label_counts,
            self.avg_of_avgs,
            self.return_per_class,
            self._comparison,
        )

    def calculate_NMI(self, query_labels: Tensor, cluster_labels: Tensor, **kwargs: Any) -> float:
        from sklearn.metrics import normalized_mutual_info_score

        return float(
            normalized_mutual_info_score(
                _class_ids_numpy(query_labels), cluster_labels.cpu().numpy()
            )
        )

    def calculate_AMI(self, query_labels: Tensor, cluster_labels: Tensor, **kwargs: Any) -> float:
        from sklearn.metrics import adjusted_mutual_info_score

        return float(
            adjusted_mutual_info_score(_class_ids_numpy(query_labels), cluster_labels.cpu().numpy())
        )

    # ------------------------------------------------------------------ k and clustering
    def determine_k(
        self, bin_counts: Tensor, num_reference_embeddings: int, ref_includes_query: bool
    ) -> int:
        """Neighbours to retrieve (not counting the query itself).

        ``"max_bin_count"``: the largest match count of a query label (minus self); None: the
        whole reference (minus self); an int as given, clamped to the reference size.
        """
        own = int(ref_includes_query)
        max_bin_count = int(torch.max(bin_counts)) if len(bin_counts) > 0 else 0
        max_k = max(num_reference_embeddings - own, 0)
        if self.k == "max_bin_count":
            return max(max_bin_count - own, 0)
        if self.k is None:
            return max_k
        num_k = int(self.k)
        if num_k < max_bin_count and any(
            m in ("r_precision", "mean_average_precision_at_r") for m in self.get_curr_metrics()
        ):
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
                "k=%d exceeds the %d available reference embeddings; using k=%d",
                num_k,
                max_k,
                max_k,
            )
            num_k = max_k
        return num_k

    def get_cluster_labels(self, query: Tensor, query_labels: Tensor, **kwargs: Any) -> Tensor:
        """``kmeans_func(query, number of distinct query labels)``."""
        if query_labels.ndim == 1:
            num_clusters = int(torch.unique(query_labels).shape[0])
        else:
            num_clusters = int(
                torch.unique(query_labels.reshape(len(query_labels), -1), dim=0).shape[0]
            )
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
            possible neighbour), or lists with ``return_per_class``.

        Raises:
            TypeError: inputs that are not tensors/arrays; include/exclude not a tuple or
                list.
            ValueError: shapes or lengths that do not match, NaN or inf in query or
                reference, a query that is not the reference's prefix with
                ``ref_includes_query``, unknown metric names in include/exclude, or
                neighbour indices from ``knn_func`` outside the reference (faiss's ``-1``).
        """
        # fix: the reference silently ignores unknown names here (a typo returns {})
        self._check_metric_names(include, exclude, self._metric_names)
        same_set = reference is None
        if same_set:
            reference, reference_labels, ref_includes_query = query, query_labels, True
        if reference_labels is None:
            raise ValueError("reference_labels must be given with reference; got None")
        device = self.device
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
        if ref_includes_query and not same_set:
            self._check_query_is_prefix(query_t, query_labels_t, reference_t, reference_labels_t)

        self.curr_function_dict = self.get_function_dict(include, exclude)
        function_dict = dict(self.curr_function_dict)
        kwargs: dict[str, Any] = {
            "query": query_t,
            "reference": reference_t,
            "query_labels": query_labels_t,
            "reference_labels": reference_labels_t,
            "ref_includes_query": ref_includes_query,
            "label_comparison_fn": self.label_comparison_fn,
        }
        if any(m in self.requires_knn() for m in function_dict):
            ranked = None
            if self._can_rank_exactly(function_dict):
                ranked = self._ranked_metrics(function_dict, **kwargs)
            if ranked is not None:
                function_dict.update(ranked)
            else:
                kwargs.update(self._knn_kwargs(**kwargs))
        if any(m in self.requires_clustering() for m in function_dict):
            kwargs["cluster_labels"] = self.get_cluster_labels(**kwargs)
        return self._get_accuracy(function_dict, **kwargs)

    def _get_accuracy(self, function_dict: dict[str, Callable[..., Any]], **kwargs: Any) -> dict:
        """Call every metric function with ``kwargs``; results in ``function_dict`` order."""
        return {name: fn(**kwargs) for name, fn in function_dict.items()}

    # ------------------------------------------------------------------ internals
    @staticmethod
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

    @staticmethod
    def _check_knn_indices(indices: Any, num_query: int, num_ref: int) -> Tensor:
        """``knn_func``'s indices: ``(num_query, k)`` integers in ``[0, num_ref)``."""
        if not isinstance(indices, Tensor):
            raise TypeError(f"knn_func must return index tensors; got {type(indices).__name__}")
        if indices.ndim != 2 or indices.shape[0] != num_query:
            raise ValueError(
                f"knn_func must return indices of shape ({num_query}, k); "
                f"got {tuple(indices.shape)}"
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

    def _can_rank_exactly(self, function_dict: dict[str, Callable[..., Any]]) -> bool:
        """Built-in metrics only, default comparison, and the plain-torch k-NN."""
        if self.label_comparison_fn not in (None, EQUALITY):
            return False
        if not isinstance(self.knn_func, TorchKNN) or type(self.knn_func).__call__ not in (
            _EXACT_KNN_CALLS
        ):
            return False
        return all(
            name in _BUILT_IN
            and getattr(type(self), self.function_keyword + name)
            is getattr(AccuracyCalculator, self.function_keyword + name)
            for name in function_dict
        )

    def _ranked_metrics(
        self,
        function_dict: dict[str, Callable[..., Any]],
        query: Tensor,
        reference: Tensor,
        query_labels: Tensor,
        reference_labels: Tensor,
        ref_includes_query: bool,
        **kwargs: Any,
    ) -> dict[str, Callable[..., Any]] | None:
        """Metrics from exact ranks of the same-class items; None when ``k`` is small.

        Ranking costs about the same for any ``k``; the k-NN lists cost ``O(k)`` per query, so
        for ``4 * k`` below the reference size the k-NN route is taken (same numbers).
        """
        query_ids, reference_ids, classes = EF.label_ids(query_labels, reference_labels)
        counts = torch.bincount(reference_ids, minlength=classes.shape[0])
        bin_counts = counts[torch.unique(query_ids)]
        num_k = self.determine_k(bin_counts, reference.shape[0], ref_includes_query)
        if 4 * num_k < reference.shape[0]:
            return None
        knn = cast(TorchKNN, self.knn_func)  # checked by _can_rank_exactly
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
        selected = [
            name for name in function_dict if name in _RANKED and name in self.requires_knn()
        ]
        return {
            name: functools.partial(
                self._aggregate, values[name], kept, query_labels, unique_query_labels
            )
            for name in selected
        }

    def _aggregate(
        self,
        values: Tensor,
        kept: Tensor,
        query_labels: Tensor,
        unique_query_labels: Tensor,
        /,
        **kwargs: Any,
    ) -> Any:
        if not bool(kept.any()):
            return nan_accuracy(unique_query_labels, self.return_per_class)
        return maybe_get_avg_of_avgs(
            values[kept], query_labels[kept][:, None], self.avg_of_avgs, self.return_per_class
        )

    def _knn_kwargs(
        self,
        query: Tensor,
        reference: Tensor,
        query_labels: Tensor,
        reference_labels: Tensor,
        ref_includes_query: bool,
        **kwargs: Any,
    ) -> dict[str, Any]:
        comparison = self._comparison
        label_counts = get_label_match_counts(query_labels, reference_labels, comparison)
        lone_query_labels, not_lone_query_mask = get_lone_query_labels(
            query_labels, label_counts, ref_includes_query, comparison
        )
        num_k = self.determine_k(label_counts[1], reference.shape[0], ref_includes_query)
        knn_distances, knn_indices = self.knn_func(query, num_k, reference, ref_includes_query)
        knn_indices = self._check_knn_indices(knn_indices, query.shape[0], reference.shape[0])
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
