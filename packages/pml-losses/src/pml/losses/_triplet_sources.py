"""Where a triplet loss's triplets come from: all of the labels, a pairs tuple, or a list."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from pml.core.indices import (
    IndicesTuple,
    PairsTuple,
    TripletsTuple,
    get_all_triplets_indices,
    get_random_triplet_indices,
    pairs_to_triplets,
)
from pml.core.validation import labels_required

TripletsPerAnchor = int | Literal["all"] | None


@dataclass(frozen=True)
class TripletSource:
    """Where the triplets come from: all of the labels (both None), a pairs tuple, or a list."""

    pairs: PairsTuple | None = None
    triplets: TripletsTuple | None = None


def triplet_source(
    indices_tuple: IndicesTuple | None,
    labels: Tensor | None,
    ref_labels: Tensor | None,
    triplets_per_anchor: TripletsPerAnchor,
) -> TripletSource:
    """The reference's ``convert_to_triplets`` cases, without listing "all" triplets yet."""
    if indices_tuple is None:
        if isinstance(triplets_per_anchor, str):  # "all"
            return TripletSource()
        labels = labels_required(labels)
        return TripletSource(
            triplets=get_random_triplet_indices(
                labels, ref_labels, t_per_anchor=triplets_per_anchor
            )
        )
    if len(indices_tuple) == 4:
        a1, p, a2, n = indices_tuple
        return TripletSource(pairs=(a1.long(), p.long(), a2.long(), n.long()))
    a, p, n = indices_tuple
    return TripletSource(triplets=(a.long(), p.long(), n.long()))


def list_triplets(
    source: TripletSource, labels: Tensor | None, ref_labels: Tensor | None
) -> TripletsTuple:
    """All triplets of ``source`` in the reference's order (memory proportional to T)."""
    if source.triplets is not None:
        return source.triplets
    if source.pairs is not None:
        return pairs_to_triplets(source.pairs)
    return get_all_triplets_indices(labels_required(labels), ref_labels)


__all__ = ["TripletSource", "TripletsPerAnchor", "list_triplets", "triplet_source"]
