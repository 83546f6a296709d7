"""Exact k-nearest-neighbour search in plain torch, chunked over query rows.

Order convention (faiss's): neighbours sorted by distance, equal distances by ascending
reference index. Ties are resolved exactly, whatever ``torch.topk`` does with them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor

from pml.core.dtypes import accumulation_dtype
from pml.core.validation import check_finite
from pml.eval.functional._retrieval import (
    average_precision_values,
    precision_at_k_values,
    r_precision_values,
    reciprocal_rank_values,
)
from pml.eval.functional._self_matches import drop_self_matches, remove_self_matches
from pml.eval.functional._smallest_k import smallest_k

__all__ = [
    "DistanceFn",
    "block_distance",
    "chunk_rows",
    "closest_first",
    "knn",
    "knn_blocks",
    "knn_retrieval_values",
    "squared_l2_matrix",
]

#: ``fn(query_chunk (B, D), reference (M, D)) -> (B, M)``
DistanceFn = Callable[[Tensor, Tensor], Tensor]

#: the metrics :func:`knn_retrieval_values` returns (``RETRIEVAL_METRICS``), besides
#: ``num_relevant``.
_RETRIEVAL_NAMES = (
    "precision_at_1",
    "r_precision",
    "mean_average_precision_at_r",
    "mean_average_precision",
    "mean_reciprocal_rank",
)

#: elements of one ``(B, M)`` distance block; bounds the memory of every chunked pass.
_BLOCK_ELEMENTS = 1 << 24


def chunk_rows(num_ref: int, batch_size: int | None = None) -> int:
    """Query rows per block: ``batch_size`` or as many as fit a block of ~16M distances.

    Example:
        >>> chunk_rows(100_000), chunk_rows(10, batch_size=4)
        (167, 4)
    """
    if batch_size is not None:
        return batch_size
    return max(1, _BLOCK_ELEMENTS // max(num_ref, 1))


def squared_l2_matrix(
    query: Tensor, reference: Tensor, reference_sq_norms: Tensor | None = None
) -> Tensor:
    """Squared Euclidean distances ``||q_i - r_j||^2`` (faiss ``IndexFlatL2``), shape ``(N, M)``.

    Computed as ``|q|^2 + |r|^2 - 2 q.r`` (one matrix product) in at least float32 and
    clamped at 0; float64 stays float64.

    Args:
        query: shape ``(N, D)``.
        reference: shape ``(M, D)``.
        reference_sq_norms: ``|r|^2`` ``(M,)`` in the computation dtype, when already known
            (blocks of queries against one reference).

    Example:
        >>> squared_l2_matrix(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0], [1.0, 0.0]]))
        tensor([[25.,  1.]])
    """
    acc = torch.promote_types(accumulation_dtype(query.dtype), reference.dtype)
    q, r = query.to(acc), reference.to(acc)
    if reference_sq_norms is None:
        reference_sq_norms = (r * r).sum(1)
    out = torch.addmm(reference_sq_norms.to(acc).unsqueeze(0), q, r.T, alpha=-2)
    out += (q * q).sum(1, keepdim=True)
    return out.clamp_(min=0)


def block_distance(
    reference: Tensor, distance_fn: Callable[[Tensor, Tensor], Tensor] | None = None
) -> Callable[[Tensor], Tensor]:
    """``fn(query_block) -> (B, M)`` against a fixed reference, with per-reference work done once.

    ``distance_fn=None`` is squared L2 (reference norms computed once); a pml distance has its
    reference normalised once (same values as calling it on each block); any other callable
    is called as ``distance_fn(query_block, reference)``.
    """
    if distance_fn is None:
        acc = torch.promote_types(accumulation_dtype(reference.dtype), torch.float32)
        ref = reference.to(acc)
        norms = (ref * ref).sum(1)
        return lambda q: squared_l2_matrix(q, ref, norms)
    against = getattr(distance_fn, "against", None)
    if against is not None:  # a pml distance: it prepares the reference once itself
        return against(reference)
    return lambda q: distance_fn(q, reference)


def closest_first(mat: Tensor, is_inverted: bool, *, inplace: bool = False) -> Tensor:
    """Turn a distance or similarity block into "smaller is closer" values without NaN.

    Similarities are negated (exact); NaN becomes ``+inf`` (ranked last). With ``inplace``
    the block itself is overwritten (for blocks the caller owns).

    Example:
        >>> closest_first(torch.tensor([[0.5, float("nan")]]), is_inverted=True)
        tensor([[-0.5000,    inf]])
    """
    out = mat if inplace else mat.clone()
    if is_inverted:
        out.neg_()
    return torch.nan_to_num_(out, nan=float("inf"), posinf=float("inf"), neginf=float("-inf"))


def knn(
    query: Tensor,
    reference: Tensor,
    k: int,
    *,
    distance_fn: DistanceFn | None = None,
    is_inverted: bool = False,
    ref_includes_query: bool = False,
    batch_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Exact ``k`` nearest reference rows of every query row, chunked over queries.

    Peak memory is one ``(B, M)`` block (``B`` from ``batch_size`` or ~16M entries), never the
    full ``(N, M)`` matrix unless ``k`` asks for it. With ``ref_includes_query`` (query row
    ``i`` is reference row ``i``) ``k + 1`` rows are searched and the self match removed
    (:func:`remove_self_matches`). ``k`` is clamped to what the reference holds. Query and
    reference are compared in their common dtype (promoted, at least float32).

    Args:
        query: shape ``(N, D)``.
        reference: shape ``(M, D)``.
        k: neighbours per query.
        distance_fn: ``(B, D), (M, D) -> (B, M)`` (e.g. a pml distance); None: squared L2.
        is_inverted: ``True`` when larger values of ``distance_fn`` mean closer.
        ref_includes_query: remove each query's own row.
        batch_size: query rows per block (default: automatic).

    Returns:
        ``(distances (N, k'), indices (N, k') int64)``, distances as ``distance_fn`` gives
        them, ``k' = min(k, M - ref_includes_query)``.

    Raises:
        ValueError: NaN or inf in ``query`` or ``reference`` (one reduction each).

    Example:
        >>> x = torch.tensor([[0.0], [1.0], [3.0]])
        >>> knn(x, x, 1, ref_includes_query=True)[1].flatten().tolist()
        [1, 0, 1]
    """
    check_finite(query, "query")
    if reference is not query:
        check_finite(reference, "reference")
    num_search = min(k + int(ref_includes_query), reference.shape[0])
    out_d, out_i = [], []
    for s, dist, idx in knn_blocks(
        query,
        reference,
        num_search,
        distance_fn=distance_fn,
        is_inverted=is_inverted,
        batch_size=batch_size,
    ):
        if ref_includes_query:
            dist, idx = remove_self_matches(dist, idx, offset=s)
        out_d.append(dist)
        out_i.append(idx)
    return torch.cat(out_d), torch.cat(out_i)


def knn_blocks(
    query: Tensor,
    reference: Tensor,
    num_search: int,
    *,
    distance_fn: DistanceFn | None = None,
    is_inverted: bool = False,
    batch_size: int | None = None,
) -> Iterator[tuple[int, Tensor, Tensor]]:
    """The ``num_search`` nearest reference rows of each block of query rows (no self removal).

    The search behind :func:`knn`, one block of query rows at a time (at least one block, empty
    when ``N == 0``); inputs are not checked for NaN (the caller does). Query and reference
    are compared in their common dtype (promoted, at least float32).

    Yields:
        ``(start, distances (B, num_search), indices (B, num_search) int64)``: the block's
        first query row, then neighbours in ``(distance, index)`` order.
    """
    dtype = accumulation_dtype(torch.promote_types(query.dtype, reference.dtype))
    query, reference = query.to(dtype), reference.to(dtype)
    num_search = min(num_search, reference.shape[0])
    rows = chunk_rows(reference.shape[0], batch_size)
    blocks = block_distance(reference, distance_fn)
    # blocks computed here are ours to overwrite; a custom callable's output is copied
    owned = distance_fn is None or hasattr(distance_fn, "against")
    for s in range(0, max(query.shape[0], 1), rows):  # one (empty) block when N == 0
        mat = blocks(query[s : s + rows])
        # a NaN anywhere makes the sum NaN (so does +inf with -inf: then the general path)
        if owned and not bool(mat.sum().isnan()):
            # no NaN: the transform is an exact negation (or nothing), undone on k values
            vals, idx = smallest_k(mat.neg_() if is_inverted else mat, num_search)
            dist = vals.neg_() if is_inverted else vals
        else:
            _, idx = smallest_k(closest_first(mat, is_inverted), num_search)
            dist = mat.gather(1, idx)
        yield s, dist, idx


def knn_retrieval_values(
    query_ids: Tensor,
    reference_ids: Tensor,
    neighbours: Iterable[tuple[int, Tensor]],
    k: int,
    *,
    ref_includes_query: bool = False,
) -> dict[str, Tensor]:
    """Per-query retrieval metrics of neighbour lists handed over block by block.

    What scoring the relevance rows of ``k`` retrieved neighbours gives (the definitions of
    :mod:`._retrieval`), without ever holding ``(N, k)`` lists: each block of neighbour
    indices is turned into relevance rows (same class id), scored and dropped.

    Args:
        query_ids: class ids ``(N,)`` int64 (see :func:`~pml.eval.functional.label_ids`).
        reference_ids: class ids ``(M,)`` int64, same id space.
        neighbours: ``(start, indices (B, k + ref_includes_query))`` blocks covering the
            queries in order, nearest first; with ``ref_includes_query`` each row still holds
            its own index (dropped here like :func:`remove_self_matches` does). Index ``-1``
            (nothing found) is never relevant.
        k: neighbours retrieved per query (after self removal).
        ref_includes_query: query row ``i`` is reference row ``i``: it is not its own
            neighbour and does not count in ``R``.

    Returns:
        ``{name: (N,)}`` for each of ``RETRIEVAL_METRICS`` (float64, except
        ``mean_reciprocal_rank`` float32; NaN where ``R == 0``) and ``num_relevant`` (int64).

    Example:
        >>> ids = torch.tensor([0, 0, 1, 1])
        >>> blocks = [(0, torch.tensor([[0, 2], [1, 0], [2, 3], [3, 1]]))]
        >>> out = knn_retrieval_values(ids, ids, blocks, 1, ref_includes_query=True)
        >>> out["precision_at_1"].tolist()
        [0.0, 1.0, 1.0, 0.0]
    """
    num_query = query_ids.shape[0]
    own = int(ref_includes_query)
    device = query_ids.device
    num_classes = int(torch.cat([query_ids, reference_ids]).max()) + 1 if num_query else 0
    counts = torch.bincount(reference_ids, minlength=num_classes)
    num_relevant = counts[query_ids] - own
    out = {
        name: torch.full((num_query,), float("nan"), dtype=torch.float64, device=device)
        for name in _RETRIEVAL_NAMES
    }
    out["mean_reciprocal_rank"] = out["mean_reciprocal_rank"].float()
    for s, idx in neighbours:
        e = s + idx.shape[0]
        idx = idx.to(device)
        if own:
            idx = drop_self_matches(idx, offset=s)
        idx = idx[:, :k]
        ids = query_ids[s:e]
        rel = (reference_ids[idx.clamp(min=0)] == ids.unsqueeze(1)) & (idx >= 0)
        r = num_relevant[s:e]
        lone = r <= 0
        for name, v in _relevance_values(rel, r).items():
            out[name][s:e] = v.masked_fill(lone, float("nan"))
    out["num_relevant"] = num_relevant
    return out


def _relevance_values(rel: Tensor, num_relevant: Tensor) -> dict[str, Tensor]:
    """The built-in retrieval metrics per query from relevance rows ``(N, k)``.

    The functions of :mod:`._retrieval` (the neighbour-list route's math), each once.

    Example:
        >>> out = _relevance_values(torch.tensor([[False, True, True]]), torch.tensor([2]))
        >>> out["mean_average_precision"].tolist(), out["mean_reciprocal_rank"].tolist()
        ([0.5833333333333333], [0.5])
    """
    return {
        "precision_at_1": precision_at_k_values(rel, 1),
        "r_precision": r_precision_values(rel, num_relevant),
        "mean_average_precision_at_r": average_precision_values(rel, num_relevant, at_r=True),
        "mean_average_precision": average_precision_values(rel, num_relevant),
        "mean_reciprocal_rank": reciprocal_rank_values(rel),
    }
