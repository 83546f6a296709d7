"""Exact k-nearest-neighbour search in plain torch, chunked over query rows.

Order convention (faiss's): neighbours sorted by distance, equal distances by ascending
reference index. Ties are resolved exactly, whatever ``torch.topk`` does with them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from pml.core.dtypes import accumulation_dtype
from pml.core.validation import check_finite

__all__ = [
    "DistanceFn",
    "block_distance",
    "chunk_rows",
    "closest_first",
    "knn",
    "remove_self_matches",
    "smallest_k",
    "squared_l2_matrix",
]

#: ``fn(query_chunk (B, D), reference (M, D)) -> (B, M)``
DistanceFn = Callable[[Tensor, Tensor], Tensor]

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


def smallest_k(values: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` smallest entries of each row, ordered by ``(value, column index)``.

    Exactly what a stable full sort would give (faiss's tie order), at ``topk`` cost: ties
    inside the selection are reordered by index, and rows where more entries tie with the
    ``k``-th value than were selected are redone with a stable sort.

    Args:
        values: shape ``(B, M)``, no NaN.
        k: ``0 <= k <= M``.

    Returns:
        ``(vals (B, k), indices (B, k) int64)``.

    Example:
        >>> smallest_k(torch.tensor([[2.0, 1.0, 1.0, 0.0, 1.0]]), 3)
        (tensor([[0., 1., 1.]]), tensor([[3, 1, 2]]))
    """
    num_cols = values.shape[1]
    if 4 * k >= num_cols or k == 0:
        vals, idx = torch.sort(values, dim=1, stable=True)
        return vals[:, :k], idx[:, :k]
    # one extra column: an entry outside the selection ties with the k-th exactly when the
    # (k+1)-th smallest value equals the k-th (no pass over the whole row to count ties)
    vals, idx = torch.topk(values, k + 1, dim=1, largest=False, sorted=True)
    redo = vals[:, k] == vals[:, k - 1]
    vals, idx = vals[:, :k], idx[:, :k]
    idx, order = torch.sort(idx, dim=1)
    vals, order2 = torch.sort(vals.gather(1, order), dim=1, stable=True)
    idx = idx.gather(1, order2)
    fixed_vals, fixed_idx = torch.sort(values[redo], dim=1, stable=True)
    vals[redo] = fixed_vals[:, :k]
    idx[redo] = fixed_idx[:, :k]
    return vals, idx


def remove_self_matches(
    distances: Tensor, indices: Tensor, offset: int = 0
) -> tuple[Tensor, Tensor]:
    """Drop each row's own column from ``k + 1`` neighbours, keeping ``k``.

    Row ``i`` is query ``offset + i``, which is reference row ``offset + i`` (the query is a
    prefix of the reference). Where that index is among the neighbours it is dropped;
    elsewhere (more than ``k`` items tie ahead of it) the last column is dropped. Order is
    otherwise kept.

    Args:
        distances: shape ``(B, k + 1)``.
        indices: shape ``(B, k + 1)``, int64.
        offset: index of the first row's query.

    Returns:
        ``(distances (B, k), indices (B, k))``.

    Example:
        >>> d = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 3.0]])
        >>> i = torch.tensor([[0, 2, 1], [0, 2, 1]])
        >>> remove_self_matches(d, i)[1]
        tensor([[2, 1],
                [0, 2]])
    """
    num_rows, width = indices.shape
    if width == 0:
        return distances, indices
    own = torch.arange(offset, offset + num_rows, device=indices.device).unsqueeze(1)
    is_self = indices == own
    drop = torch.where(is_self.any(1), is_self.to(torch.uint8).argmax(1), width - 1)
    keep = torch.arange(width, device=indices.device).unsqueeze(0) != drop.unsqueeze(1)
    return (
        distances[keep].view(num_rows, width - 1),
        indices[keep].view(num_rows, width - 1),
    )


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
    dtype = accumulation_dtype(torch.promote_types(query.dtype, reference.dtype))
    query, reference = query.to(dtype), reference.to(dtype)
    num_ref = reference.shape[0]
    num_search = min(k + int(ref_includes_query), num_ref)
    rows = chunk_rows(num_ref, batch_size)
    blocks = block_distance(reference, distance_fn)
    # blocks computed here are ours to overwrite; a custom callable's output is copied
    owned = distance_fn is None or hasattr(distance_fn, "against")
    out_d, out_i = [], []
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
        if ref_includes_query:
            dist, idx = remove_self_matches(dist, idx, offset=s)
        out_d.append(dist)
        out_i.append(idx)
    return torch.cat(out_d), torch.cat(out_i)
