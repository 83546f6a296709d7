"""The math of every miner: pure functions from a distance matrix (or embeddings) to indices.

Functions take the ``(N, M)`` matrix of a distance (``is_inverted`` tells similarities from
distances), the labels and, for a separate reference set, ``ref_labels``; "same set" is decided
by identity (``ref_labels is None or ref_labels is labels``), which removes self pairs. They
return index tuples: pairs ``(a1, p, a2, n)`` or triplets ``(a, p, n)`` of int64 tensors.
"""

from pml.miners.functional._batch import batch_easy_hard_miner, batch_hard_miner
from pml.miners.functional._distance_weighted import (
    distance_weighted_miner,
    distance_weighted_weights,
    embeddings_already_packaged_as_triplets,
)
from pml.miners.functional._pair import (
    hdc_miner,
    histogram_sample,
    multi_similarity_miner,
    pair_margin_miner,
    pair_margin_miner_stats,
    uniform_histogram_miner,
)
from pml.miners.functional._triplet import (
    angular_miner,
    angular_miner_stats,
    triplet_margin_miner,
    triplet_margin_miner_stats,
)

__all__ = [
    "angular_miner",
    "angular_miner_stats",
    "batch_easy_hard_miner",
    "batch_hard_miner",
    "distance_weighted_miner",
    "distance_weighted_weights",
    "embeddings_already_packaged_as_triplets",
    "hdc_miner",
    "histogram_sample",
    "multi_similarity_miner",
    "pair_margin_miner",
    "pair_margin_miner_stats",
    "triplet_margin_miner",
    "triplet_margin_miner_stats",
    "uniform_histogram_miner",
]
