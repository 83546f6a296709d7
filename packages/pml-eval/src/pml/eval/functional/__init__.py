"""The math of pml-eval: pure functions on tensors.

* k-NN (:mod:`._knn`): exact chunked search with faiss's tie order, self-match removal, and
  the retrieval metrics of neighbour lists handed over block by block.
* retrieval (:mod:`._retrieval`): per-query precision@k, R-precision, (MAP@R) average
  precision, reciprocal rank from relevance rows; label ids, class means.
* ranking (:mod:`._ranked`): the same values from an exact chunked ranking, without
  neighbour lists (what ``AccuracyCalculator`` uses by default).
* clustering (:mod:`._clustering`): k-means (k-means++ seeding) and PCA in plain torch.
* verification (:mod:`._verification`): pair scores in blocks, exact or streamed operating
  points (TAR/FMR at every candidate threshold), FMR targets and threshold criteria.
* graded relevance (:mod:`._graded`): NDCG@k with gains from labels or a user function.
* re-identification (:mod:`._reid`): CMC@k and AP with same-camera and junk removal.
* collapse (:mod:`._collapse`): covariance spectrum, principal-component fractions and
  effective rank.
* merging (:mod:`._topk_merge`): k-NN candidate lists of disjoint reference parts into the
  lists of the whole reference (distributed evaluation), ties by reference index.
* k-NN vote (:mod:`._knn_vote`): class probabilities from neighbours' labels.
"""

from pml.eval.functional._clustering import kmeans, nearest_centroid, pca
from pml.eval.functional._collapse import collapse_statistics, covariance_spectrum
from pml.eval.functional._graded import RelevanceFn, label_gains, ndcg_values
from pml.eval.functional._knn import (
    DistanceFn,
    block_distance,
    chunk_rows,
    closest_first,
    knn,
    knn_blocks,
    knn_retrieval_values,
    squared_l2_matrix,
)
from pml.eval.functional._knn_vote import class_probabilities, inverse_distance_weights
from pml.eval.functional._ranked import RETRIEVAL_METRICS, retrieval_values
from pml.eval.functional._reid import reid_values
from pml.eval.functional._retrieval import (
    average_precision_values,
    class_means,
    label_ids,
    precision_at_k_values,
    r_precision_values,
    reciprocal_rank_values,
    relevance,
)
from pml.eval.functional._self_matches import (
    drop_self_matches,
    neighbour_recall,
    remove_self_matches,
)
from pml.eval.functional._smallest_k import smallest_k
from pml.eval.functional._topk_merge import PAD_INDEX, merge_topk, pad_candidates
from pml.eval.functional._verification import (
    CRITERIA,
    OperatingPoints,
    best_threshold,
    criterion_values,
    operating_points,
    pair_score_blocks,
    points_at_fmr,
    robust_thresholds,
)
from pml.eval.functional._verification_stream import streamed_operating_points

__all__ = [
    "CRITERIA",
    "DistanceFn",
    "OperatingPoints",
    "PAD_INDEX",
    "RETRIEVAL_METRICS",
    "RelevanceFn",
    "average_precision_values",
    "best_threshold",
    "block_distance",
    "chunk_rows",
    "class_means",
    "class_probabilities",
    "closest_first",
    "collapse_statistics",
    "covariance_spectrum",
    "criterion_values",
    "drop_self_matches",
    "inverse_distance_weights",
    "kmeans",
    "knn",
    "knn_blocks",
    "knn_retrieval_values",
    "label_gains",
    "label_ids",
    "merge_topk",
    "ndcg_values",
    "nearest_centroid",
    "neighbour_recall",
    "operating_points",
    "pad_candidates",
    "pair_score_blocks",
    "pca",
    "points_at_fmr",
    "precision_at_k_values",
    "r_precision_values",
    "reciprocal_rank_values",
    "reid_values",
    "relevance",
    "remove_self_matches",
    "retrieval_values",
    "robust_thresholds",
    "smallest_k",
    "squared_l2_matrix",
    "streamed_operating_points",
]
