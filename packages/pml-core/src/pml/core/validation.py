"""Checks at the public boundary: argument vocabulary, shapes, labels, index tuples, guards.

Every check raises ``ValueError`` (values, shapes) or ``TypeError`` (types) with a message that
names the argument, then what was expected and what was given. Where the reference raised an
``AssertionError``, :class:`InvalidArgumentError` (both a ``ValueError`` and an
``AssertionError``) keeps ``except AssertionError`` code working.

* arguments (``_argument_checks``): :func:`check_int`, :func:`check_real`, :func:`check_bool`,
  :func:`check_type`, :func:`check_option`, :func:`check_callable`, :func:`check_device`;
* tensors (``_tensor_checks``): :func:`check_embeddings`, :func:`check_shapes`,
  :func:`check_finite` (opt-in: it syncs), :func:`check_indices_tuple`,
  :func:`check_index_labels`, :func:`check_distance_matrix` (``mat=``), and the guards
  :func:`labels_required` (returns the labels narrowed to a Tensor),
  :func:`labels_or_indices_tuple_required`, :func:`indices_tuple_not_supported`,
  :func:`ref_not_supported`.
"""

from pml.core._argument_checks import (
    InvalidArgumentError,
    UnsupportedLossError,
    check_bool,
    check_callable,
    check_device,
    check_int,
    check_option,
    check_real,
    check_type,
)
from pml.core._tensor_checks import (
    check_distance_matrix,
    check_embeddings,
    check_finite,
    check_index_labels,
    check_indices_tuple,
    check_shapes,
    indices_tuple_not_supported,
    labels_or_indices_tuple_required,
    labels_required,
    ref_not_supported,
)

__all__ = [
    "InvalidArgumentError",
    "UnsupportedLossError",
    "check_bool",
    "check_callable",
    "check_device",
    "check_distance_matrix",
    "check_embeddings",
    "check_finite",
    "check_index_labels",
    "check_indices_tuple",
    "check_int",
    "check_option",
    "check_real",
    "check_shapes",
    "check_type",
    "indices_tuple_not_supported",
    "labels_or_indices_tuple_required",
    "labels_required",
    "ref_not_supported",
]
