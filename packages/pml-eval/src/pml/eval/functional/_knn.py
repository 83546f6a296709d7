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

__all__ = [
    "DistanceFn",
    "block_distance",
    "chunk_rows",
    "closest_first",
    "drop_self_matches",
    "knn",
    "knn_blocks",
    "knn_retrieval_values",
    "neighbour_recall",
    "remove_self_matches",
    "smallest_k",
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


def ordered_float32_bits(values: Tensor) -> Tensor:
    """float32 values -> int64 in ``[0, 2**32)`` with the same order (``-0.0`` == ``0.0``)."""
    bits = (values.to(torch.float32) + 0.0).view(torch.int32).to(torch.int64)
    return torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF) + (1 << 31)


def _order_ties(vals: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """Rows sorted by value whose equal values are put in ascending index order.

    Only rows where two neighbouring values are equal are touched (one pass to find them).
    """
    tied = (vals[:, 1:] == vals[:, :-1]).any(1)
    if bool(tied.any()):
        rows = tied.nonzero(as_tuple=True)[0]
        row_idx, order = torch.sort(idx[rows], dim=1)
        row_vals, order2 = torch.sort(vals[rows].gather(1, order), dim=1, stable=True)
        vals[rows] = row_vals
        idx[rows] = row_idx.gather(1, order2)
    return vals, idx


def _smallest_k_topk(values: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``topk`` of ``k + 1`` entries, ties put in index order, boundary-tie rows re-sorted."""
    # one extra column: an entry outside the selection ties with the k-th exactly when the
    # (k+1)-th smallest value equals the k-th (no pass over the whole row to count ties)
    vals, idx = torch.topk(values, k + 1, dim=1, largest=False, sorted=True)
    redo = vals[:, k] == vals[:, k - 1]
    vals, idx = _order_ties(vals[:, :k], idx[:, :k])
    if bool(redo.any()):
        rows = redo.nonzero(as_tuple=True)[0]
        fixed_vals, fixed_idx = torch.sort(values[rows], dim=1, stable=True)
        vals[rows] = fixed_vals[:, :k]
        idx[rows] = fixed_idx[:, :k]
    return vals, idx


def _smallest_k_bounded(values: Tensor, k: int) -> tuple[Tensor, Tensor] | None:
    """The ``k`` smallest of each row by ``(value, column)``, from a bound and a short sort (CPU).

    Columns are dealt into ``G >= k`` interleaved groups (column ``j`` in group ``j mod G``,
    so that neighbours stored next to each other fall in different groups). The ``k``
    smallest group minima are ``k`` distinct entries, so the largest of them bounds the
    ``k``-th smallest value from above; the entries within the bound (typically little more
    than ``k`` a row) are ranked by sorting ``(value, column)`` keys, row by row. A few
    passes over the block instead of a per-row partial sort. Rows with many entries within
    their bound (ties) go to ``topk``; None when the bound selects too much of the block.
    """
    num_rows, num_cols = values.shape
    col_bits = max(num_cols - 1, 1).bit_length()
    if col_bits > 30 or num_rows == 0:
        return None
    device = values.device
    groups = max(k, min(2 * k, num_cols // 2))
    per_group = num_cols // groups
    minima = values[:, : per_group * groups].reshape(num_rows, per_group, groups).amin(1)
    bound = torch.topk(minima, k, dim=1, largest=False, sorted=False).values.amax(1, keepdim=True)
    rows, cols = (values <= bound).nonzero(as_tuple=True)
    if rows.numel() * 8 > num_rows * num_cols:  # sorting them would cost more than topk
        return None
    counts = torch.bincount(rows, minlength=num_rows)  # >= k: the k minima are within
    limit = max(2 * k, 2 * -(-rows.numel() // max(num_rows, 1)))
    heavy = counts > limit
    if bool(heavy.any()):  # a few rows with many ties: they would widen every row
        light = ~heavy[rows]
        rows, cols = rows[light], cols[light]
        counts = counts.masked_fill(heavy, 0)
    width = int(counts.max())
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.arange(rows.shape[0], device=device) - starts[rows]
    keys = torch.full((num_rows, width), torch.iinfo(torch.int64).max, device=device)
    found = torch.take(values, rows * num_cols + cols)
    keys.view(-1)[rows * width + pos] = (ordered_float32_bits(found) << col_bits) | cols
    # rows are sorted independently (torch parallelises over rows, unlike one long sort)
    idx = torch.sort(keys, dim=1).values[:, :k] & ((1 << col_bits) - 1)
    if bool(heavy.any()):
        heavy_rows = heavy.nonzero(as_tuple=True)[0]
        idx[heavy_rows] = _smallest_k_topk(values[heavy_rows], k)[1]
    return values.gather(1, idx), idx


def smallest_k(values: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` smallest entries of each row, ordered by ``(value, column index)``.

    Exactly what a stable full sort would give (faiss's tie order), at a fraction of its cost:
    on the CPU (for ``M <= 256 k``) from a per-row bound and one sort of the few entries
    within it; elsewhere (and for float64) with ``topk``, ties inside the selection
    reordered by index and rows where more entries tie with the ``k``-th value than were
    selected redone with a stable sort.

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
    # the bound pays off where topk partially sorts whole rows (M up to a few hundred k)
    if values.device.type == "cpu" and values.dtype != torch.float64 and num_cols <= 256 * k:
        out = _smallest_k_bounded(values, k)
        if out is not None:
            return out
    return _smallest_k_topk(values, k)


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
    if indices.shape[1] == 0:
        return distances, indices
    keep = _kept_columns(indices, _own_rows(indices, offset))
    return distances.gather(1, keep), indices.gather(1, keep)


def _kept_columns(indices: Tensor, own: Tensor) -> Tensor:
    """Column positions ``(B, W - 1)`` that remain once each row's ``own`` index is dropped."""
    width = indices.shape[1]
    is_self = indices == own.unsqueeze(1)
    drop = torch.where(is_self.any(1), is_self.to(torch.uint8).argmax(1), width - 1)
    cols = torch.arange(width - 1, device=indices.device).unsqueeze(0)
    return cols + (cols >= drop.unsqueeze(1)).long()  # skip the dropped column


def _own_rows(indices: Tensor, offset: int) -> Tensor:
    return torch.arange(offset, offset + indices.shape[0], device=indices.device)


def drop_self_matches(indices: Tensor, offset: int = 0, own: Tensor | None = None) -> Tensor:
    """:func:`remove_self_matches` on neighbour indices alone.

    Args:
        indices: ``(B, k + 1)`` neighbour indices.
        offset: row ``i`` is query (and reference row) ``offset + i``.
        own: each row's own reference index ``(B,)`` instead (sampled rows).

    Example:
        >>> drop_self_matches(torch.tensor([[0, 2, 1], [0, 1, 2]]))
        tensor([[2, 1],
                [0, 2]])
    """
    if indices.shape[1] == 0:
        return indices
    own = _own_rows(indices, offset) if own is None else own.to(indices.device)
    return indices.gather(1, _kept_columns(indices, own))


def neighbour_recall(found: Tensor, exact: Tensor) -> Tensor:
    """Fraction of each row's exact neighbours that were found: ``|found & exact| / k``.

    Args:
        found: ``(S, k)`` neighbour indices from an approximate search (``-1``: none).
        exact: ``(S, k)`` the exact ``k`` nearest.

    Returns:
        ``(S,)`` float64 (NaN when ``k == 0``).

    Example:
        >>> neighbour_recall(torch.tensor([[3, 1, -1]]), torch.tensor([[1, 2, 3]]))
        tensor([0.6667], dtype=torch.float64)
    """
    num_rows, k = exact.shape
    hits = torch.zeros(num_rows, dtype=torch.float64, device=exact.device)
    step = max(1, (1 << 22) // max(k * k, 1))
    for s in range(0, num_rows, step):
        same = found[s : s + step].unsqueeze(2) == exact[s : s + step].unsqueeze(1)
        hits[s : s + step] = same.any(1).sum(1, dtype=torch.float64)
    return hits / k if k else hits.fill_(float("nan"))


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
