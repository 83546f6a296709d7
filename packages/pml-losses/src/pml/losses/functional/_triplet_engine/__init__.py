"""Sums over all triplets of a batch without enumerating them (private engine).

A *layout* (:mod:`._layouts`) says, for every anchor row ``a`` of an ``(N, M)`` matrix ``d``
of distance-like values (smaller = closer), which columns are its positives and which its
negatives: all triplets are ``(a, p, n)`` for every positive ``p`` and negative ``n`` of the
anchor, with ``x = d[a, p] - d[a, n]``. Two layouts exist:

* :class:`DenseLayout` (labels): positives/negatives from label equality, the diagonal removed
  in the same-set case. Nothing larger than ``(chunk, M)`` is ever built.
* :class:`GroupedLayout` (a pairs tuple ``(a1, p, a2, n)``): every positive-pair entry of an
  anchor meets every negative-pair entry of the same anchor (duplicates count), like the
  reference's pairs-to-triplets conversion, without its ``P x Nn`` matrix.

Two autograd functions consume a layout, both in ``O(N M)`` memory:

* :func:`threshold_sums` (:mod:`._threshold_sums`, sorting): per threshold, the count and sum
  of ``x`` over the triplets on one side of it, ``O(N M log M)`` time.
* :func:`block_sums` (:mod:`._block_sums`, enumeration in bounded blocks): the sum and count
  of ``f(x + margin)`` for a non-separable ``f`` (softplus, or the hinge with the "swap"
  distance), ``O(T)`` time.

Values must already be in the accumulation dtype (:func:`distance_like`). Both functions are
first-order differentiable (``once_differentiable``).
"""

from pml.losses.functional._triplet_engine._block_sums import BlockSums, block_sums
from pml.losses.functional._triplet_engine._layouts import (
    Chunk,
    DenseLayout,
    GroupedLayout,
    Layout,
    dense_layout,
    distance_like,
    layout_for,
)
from pml.losses.functional._triplet_engine._threshold_sums import ThresholdSums, threshold_sums

__all__ = [
    "BlockSums",
    "Chunk",
    "DenseLayout",
    "GroupedLayout",
    "Layout",
    "ThresholdSums",
    "block_sums",
    "dense_layout",
    "distance_like",
    "layout_for",
    "threshold_sums",
]
