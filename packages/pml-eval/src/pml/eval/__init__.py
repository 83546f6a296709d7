"""pml-eval: accuracy metrics, exact k-NN, testers and inference for deep metric learning.

Example:
    >>> import torch
    >>> from pml.eval import AccuracyCalculator
    >>> x = torch.tensor([[0.0], [1.0], [10.0], [11.0]])
    >>> AccuracyCalculator(include=("precision_at_1",)).get_accuracy(x, torch.tensor([0, 0, 1, 1]))
    {'precision_at_1': 1.0}
"""

from pml.eval.__about__ import __version__
from pml.eval._accuracy import AccuracyCalculator
from pml.eval._approximate_knn import ApproximateKNN
from pml.eval._clustering import FaissKMeans, TorchKMeans, run_pca
from pml.eval._collapse import embedding_collapse
from pml.eval._custom_metrics import QueryNeighbors
from pml.eval._distributed_accuracy import distributed_get_accuracy
from pml.eval._distributed_knn import DistributedKNN
from pml.eval._faiss_knn import FaissKNN
from pml.eval._graded import ndcg_at_k
from pml.eval._inference import InferenceModel, MatchFinder
from pml.eval._knn import CustomKNN, IndexNotReadyError, TorchKNN
from pml.eval._knn_classifier import KNNClassifier
from pml.eval._metrics import (
    EQUALITY,
    get_label_match_counts,
    get_lone_query_labels,
    get_relevance_mask,
    get_unique_labels,
    maybe_get_avg_of_avgs,
    mean_average_precision,
    mean_reciprocal_rank,
    nan_accuracy,
    precision_at_k,
    r_precision,
    try_getting_not_lone_labels,
)
from pml.eval._reid import reid_metrics
from pml.eval._tester_base import BaseTester
from pml.eval._tester_distributed import distributed_test, shard_dataset
from pml.eval._testers import (
    GlobalEmbeddingSpaceTester,
    GlobalTwoStreamEmbeddingSpaceTester,
    WithSameParentLabelTester,
)
from pml.eval._verification import (
    ThresholdSelection,
    VerificationResult,
    select_threshold,
    verification_metrics,
)

__all__ = [
    "AccuracyCalculator",
    "ApproximateKNN",
    "BaseTester",
    "CustomKNN",
    "DistributedKNN",
    "EQUALITY",
    "FaissKMeans",
    "FaissKNN",
    "GlobalEmbeddingSpaceTester",
    "GlobalTwoStreamEmbeddingSpaceTester",
    "IndexNotReadyError",
    "InferenceModel",
    "KNNClassifier",
    "MatchFinder",
    "QueryNeighbors",
    "ThresholdSelection",
    "TorchKMeans",
    "TorchKNN",
    "VerificationResult",
    "WithSameParentLabelTester",
    "__version__",
    "distributed_get_accuracy",
    "distributed_test",
    "embedding_collapse",
    "get_label_match_counts",
    "get_lone_query_labels",
    "get_relevance_mask",
    "get_unique_labels",
    "maybe_get_avg_of_avgs",
    "mean_average_precision",
    "mean_reciprocal_rank",
    "nan_accuracy",
    "ndcg_at_k",
    "precision_at_k",
    "r_precision",
    "reid_metrics",
    "run_pca",
    "select_threshold",
    "shard_dataset",
    "try_getting_not_lone_labels",
    "verification_metrics",
]
