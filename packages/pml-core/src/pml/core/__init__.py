"""pml-core: index tuples, records, dtype helpers and distributed helpers.

Submodules: :mod:`pml.core.indices`, :mod:`pml.core.dtypes`, :mod:`pml.core.records`,
:mod:`pml.core.validation`, :mod:`pml.core.distributed`, :mod:`pml.core.functional`,
:mod:`pml.core.config` and (for tests) :mod:`pml.core.testing`.
"""

from pml.core.__about__ import __version__
from pml.core.config import set_collect_stats, set_logger_name
from pml.core.dtypes import accumulation_dtype, neg_inf, pos_inf, small_val, to_device, to_dtype
from pml.core.functional import logsumexp, zero_loss
from pml.core.indices import (
    IndicesTuple,
    PairsTuple,
    TripletsTuple,
    concatenate_indices_tuples,
    convert_to_pairs,
    convert_to_pos_pairs_with_unique_labels,
    convert_to_triplets,
    convert_to_weights,
    get_all_pairs_indices,
    get_all_triplets_indices,
    get_anchors,
    get_matches_and_diffs,
    get_random_triplet_indices,
    is_same_set,
    iter_all_triplets_indices,
    matched_size_indices,
    neg_pairs_from_tuple,
    pairs_to_triplets,
    pos_neg_masks,
    pos_pairs_from_tuple,
    remove_self_comparisons,
    repeat_to_match_size,
    shift_indices_tuple,
)
from pml.core.records import ModuleWithRecords, list_of_recordable_attributes_list_names
from pml.core.validation import InvalidArgumentError, UnsupportedLossError, check_shapes

__all__ = [
    "IndicesTuple",
    "InvalidArgumentError",
    "ModuleWithRecords",
    "PairsTuple",
    "TripletsTuple",
    "UnsupportedLossError",
    "__version__",
    "accumulation_dtype",
    "check_shapes",
    "concatenate_indices_tuples",
    "convert_to_pairs",
    "convert_to_pos_pairs_with_unique_labels",
    "convert_to_triplets",
    "convert_to_weights",
    "get_all_pairs_indices",
    "get_all_triplets_indices",
    "get_anchors",
    "get_matches_and_diffs",
    "get_random_triplet_indices",
    "is_same_set",
    "iter_all_triplets_indices",
    "list_of_recordable_attributes_list_names",
    "logsumexp",
    "matched_size_indices",
    "neg_inf",
    "neg_pairs_from_tuple",
    "pairs_to_triplets",
    "pos_inf",
    "pos_neg_masks",
    "pos_pairs_from_tuple",
    "remove_self_comparisons",
    "repeat_to_match_size",
    "set_collect_stats",
    "set_logger_name",
    "shift_indices_tuple",
    "small_val",
    "to_device",
    "to_dtype",
    "zero_loss",
]
