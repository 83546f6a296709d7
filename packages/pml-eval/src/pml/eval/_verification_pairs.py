"""The pairs of a verification evaluation: given scores, or embeddings scored in blocks.

:func:`collect_pairs` checks the inputs of :func:`pml.eval.verification_metrics` /
:func:`pml.eval.select_threshold` and returns a :class:`Pairs` source of ``(scores,
is_genuine)`` blocks, larger scores more alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pml.core.validation import check_finite, check_int, check_type
from pml.distances import BaseDistance, CosineSimilarity
from pml.eval import functional as EF
from pml.eval._io import as_embeddings, as_labels, as_tensor, check_dim

__all__ = ["Pairs", "collect_pairs"]


@dataclass(frozen=True)
class Pairs:
    """Checked pair source: blocks of ``(scores, is_genuine)``, larger scores more alike."""

    blocks: Callable[[], Iterable[tuple[Tensor, Tensor]]]
    num_pairs: int
    is_inverted: bool
    dtype: torch.dtype
    distance: BaseDistance | None
    in_memory: bool


def _pairs_from_scores(
    scores: Any, is_genuine: Any, distance: BaseDistance | None, is_inverted: bool | None
) -> Pairs:
    s = as_tensor(scores, "scores")
    g = as_tensor(is_genuine, "is_genuine")
    if s.ndim != 1 or not s.dtype.is_floating_point:
        raise ValueError(
            f"scores must be a 1-D floating tensor of pair scores; got shape {tuple(s.shape)} "
            f"and dtype {s.dtype}"
        )
    if g.dtype != torch.bool:
        raise TypeError(f"is_genuine must be a bool tensor; got dtype {g.dtype}")
    if g.shape != s.shape:
        raise ValueError(
            f"is_genuine must have shape {tuple(s.shape)} like scores; got {tuple(g.shape)}"
        )
    check_finite(s, "scores")
    if is_inverted is None:
        is_inverted = True if distance is None else bool(distance.is_inverted)
    s = s.to(torch.promote_types(s.dtype, torch.float32))
    oriented = s if is_inverted else s.neg()
    g = g.to(s.device)
    return Pairs(lambda: iter([(oriented, g)]), s.shape[0], is_inverted, s.dtype, distance, True)


def _pairs_from_embeddings(
    query: Any,
    query_labels: Any,
    reference: Any,
    reference_labels: Any,
    distance: BaseDistance | None,
    is_inverted: bool | None,
    batch_size: int | None,
) -> Pairs:
    distance = CosineSimilarity() if distance is None else distance
    if is_inverted is not None and bool(is_inverted) != bool(distance.is_inverted):
        raise ValueError(
            f"is_inverted must match the distance's ({distance.is_inverted}) or be None when "
            f"scores come from embeddings; got {is_inverted}"
        )
    if query_labels is None:
        raise ValueError("query_labels must be given with query; got None")
    q = as_embeddings(query, "query")
    q_labels = as_labels(query_labels, "query_labels", q.shape[0], q.device)
    check_finite(q, "query")
    if reference is None:
        if reference_labels is not None:
            raise ValueError("reference_labels must be None without reference")
        r, r_labels = None, None
        num_pairs = q.shape[0] * (q.shape[0] - 1) // 2
        q_ids, _, _ = EF.label_ids(q_labels, q_labels[:0])
        r_ids = None
    else:
        if reference_labels is None:
            raise ValueError("reference_labels must be given with reference; got None")
        r = as_embeddings(reference, "reference", q.device)
        check_dim(r, "reference", q.shape[1], "query")
        r_labels = as_labels(reference_labels, "reference_labels", r.shape[0], q.device)
        check_finite(r, "reference")
        num_pairs = q.shape[0] * r.shape[0]
        q_ids, r_ids, _ = EF.label_ids(q_labels, r_labels)
    dtype = q.dtype if r is None else torch.promote_types(q.dtype, r.dtype)

    def blocks() -> Iterator[tuple[Tensor, Tensor]]:
        with torch.no_grad():
            yield from EF.pair_score_blocks(
                q,
                q_ids,
                r,
                r_ids,
                distance_fn=distance,
                is_inverted=bool(distance.is_inverted),
                batch_size=batch_size,
            )

    return Pairs(blocks, num_pairs, bool(distance.is_inverted), dtype, distance, False)


def collect_pairs(
    query: Any,
    query_labels: Any,
    reference: Any,
    reference_labels: Any,
    scores: Any,
    is_genuine: Any,
    distance: Any,
    is_inverted: Any,
    batch_size: Any,
) -> Pairs:
    check_type("distance", distance, BaseDistance, allow_none=True)
    if is_inverted is not None and not isinstance(is_inverted, bool):
        raise TypeError(f"is_inverted must be a bool or None; got {type(is_inverted).__name__}")
    batch_size = check_int("batch_size", batch_size, min=1, allow_none=True)
    from_scores = scores is not None or is_genuine is not None
    from_embeddings = query is not None or query_labels is not None
    if from_scores == from_embeddings:
        raise ValueError(
            "pass either query and query_labels (embeddings: all pairs are scored) or scores "
            "and is_genuine (pair scores), not both and not neither"
        )
    if from_scores:
        if scores is None or is_genuine is None:
            raise ValueError("scores and is_genuine must be given together")
        if reference is not None or reference_labels is not None:
            raise ValueError("reference and reference_labels cannot be used with scores")
        if distance is not None and is_inverted is not None and distance.is_inverted != is_inverted:
            raise ValueError(
                f"is_inverted ({is_inverted}) contradicts distance.is_inverted "
                f"({distance.is_inverted})"
            )
        return _pairs_from_scores(scores, is_genuine, distance, is_inverted)
    if query is None:
        raise ValueError("query must be given with query_labels; got None")
    return _pairs_from_embeddings(
        query, query_labels, reference, reference_labels, distance, is_inverted, batch_size
    )
