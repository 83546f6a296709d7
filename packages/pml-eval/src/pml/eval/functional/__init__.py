"""The math of pml-eval: pure functions on tensors.

* k-NN (:mod:`._knn`): exact chunked search with faiss's tie order, self-match removal.
* retrieval (:mod:`._retrieval`): per-query precision@k, R-precision, (MAP@R) average
  precision, reciprocal rank from relevance rows; label ids, class means.
* ranking (:mod:`._ranked`): the same values from an exact chunked ranking, without
  neighbour lists (what ``AccuracyCalculator`` uses by default).
* clustering (:mod:`._clustering`): k-means (k-means++ seeding) and PCA in plain torch.
"""

from pml.eval.functional._clustering import kmeans, nearest_centroid, pca
from pml.eval.functional._knn import (
    DistanceFn,
    block_distance,
    chunk_rows,
    closest_first,
    knn,
    remove_self_matches,
    smallest_k,
    squared_l2_matrix,
)
from pml.eval.functional._ranked import RETRIEVAL_METRICS, retrieval_values
from pml.eval.functional._retrieval import (
    average_precision_values,
    class_means,
    label_ids,
    precision_at_k_values,
    r_precision_values,
    reciprocal_rank_values,
    relevance,
)

__all__ = [
    "DistanceFn",
    "RETRIEVAL_METRICS",
    "average_precision_values",
    "block_distance",
    "chunk_rows",
    "class_means",
    "closest_first",
    "kmeans",
    "knn",
    "label_ids",
    "nearest_centroid",
    "pca",
    "precision_at_k_values",
    "r_precision_values",
    "reciprocal_rank_values",
    "relevance",
    "remove_self_matches",
    "retrieval_values",
    "smallest_k",
    "squared_l2_matrix",
]
