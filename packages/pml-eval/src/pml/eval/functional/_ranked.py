"""The exact chunked ranking behind ``AccuracyCalculator``'s built-in k-NN metrics.

:func:`retrieval_values` gives, per query, what scoring the relevance rows of ``k`` retrieved
neighbours would give (:mod:`._retrieval`), without building ``(N, k)`` neighbour lists: per
block of query rows it ranks only the entries up to each row's farthest same-class item.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pml.core.dtypes import accumulation_dtype
from pml.core.validation import check_finite
from pml.eval.functional._knn import DistanceFn, block_distance, chunk_rows, closest_first
from pml.eval.functional._smallest_k import ordered_float32_bits

__all__ = ["RETRIEVAL_METRICS", "retrieval_values"]

#: the metrics :func:`retrieval_values` returns, besides ``num_relevant``.
RETRIEVAL_METRICS = (
    "precision_at_1",
    "r_precision",
    "mean_average_precision_at_r",
    "mean_average_precision",
    "mean_reciprocal_rank",
)


def _from_ranks(rank: Tensor, num_relevant: Tensor, k: int) -> dict[str, Tensor]:
    """Metrics from the ranks ``(B, W)`` of each row's relevant items, in rank order.

    Entries ``t >= R`` of a row are ignored. Item ``t`` (0-based) counts in MAP as
    ``(t + 1) / rank`` when its rank is within ``k`` (within ``min(R, k)`` for MAP@R).
    """
    rank = rank.to(torch.float64)
    t1 = torch.arange(1, rank.shape[1] + 1, device=rank.device, dtype=torch.float64)
    valid = t1 <= num_relevant.unsqueeze(1)
    cutoff = num_relevant.clamp(max=k)
    in_k = valid & (rank <= k)
    in_r = valid & (rank <= cutoff.unsqueeze(1))
    prec = t1 / rank
    first = rank[:, 0] if rank.shape[1] else rank.new_full((rank.shape[0],), float("inf"))
    has_first = (num_relevant > 0) & (first <= k)
    return {
        "precision_at_1": (has_first & (first == 1)).to(torch.float64),
        "r_precision": in_r.sum(1, dtype=torch.float64) / cutoff,
        "mean_average_precision_at_r": (prec * in_r).sum(1) / num_relevant,
        "mean_average_precision": (prec * in_k).sum(1) / num_relevant,
        "mean_reciprocal_rank": torch.where(
            has_first, torch.reciprocal(first.to(torch.float32)), 0.0
        ),
    }


#: value bins per relevant item in :func:`_binned_ranks`
_BINS_PER_ITEM = 16


def _binned_ranks(
    mat: Tensor,
    rows: Tensor,
    cols: Tensor,
    members: Tensor,
    is_member: Tensor,
    limit: Tensor,
    k: int,
    own_cols: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """Ranks of each row's relevant items among the selected entries, without sorting them.

    ``(rows, cols)`` are the entries of ``mat`` at or below each row's ``limit`` (the query's
    own entry left out). A row's relevant values within its limit are sorted (``(value,
    column)`` order: ``members`` are column-ascending) and the range from the closest to the
    farthest is cut into ``16 * W`` equal bins, ``(v - lo) * scale``: two correctly rounded
    operations, so binning is monotone and the same wherever a value is computed. An entry's
    number of relevant items below it is then a table lookup (relevant items in lower bins),
    corrected exactly, by comparing ``(value, column)``, only for the few entries sharing a
    bin with a relevant item. Counting entries per result gives each relevant item's rank;
    relevant items beyond the limit get rank ``k + 1``. Rows whose relevant values are not
    finite are flagged for :func:`_ragged_ranks`.

    Returns:
        ``(ranks (B, W) int64, flagged (B,) bool)``: row ``i``'s relevant items in
        ``(value, column)`` order.
    """
    rows_n, width = members.shape
    device = mat.device
    if width == 0:  # no row of this block has a relevant item
        return members.new_zeros((rows_n, 0)), torch.zeros(rows_n, dtype=torch.bool, device=device)
    rel_vals = mat.gather(1, members)
    ok = is_member & (rel_vals <= limit)
    if own_cols is not None:  # the query's own entry is neither selected nor relevant
        ok &= members != own_cols.unsqueeze(1)
    rel_vals = rel_vals.masked_fill_(~ok, float("inf"))
    rel_vals, order = torch.sort(rel_vals, dim=1, stable=True)
    rel_cols = members.gather(1, order)
    ok = ok.gather(1, order)
    num_ok = ok.sum(1)
    has = (num_ok > 0).unsqueeze(1)
    lo = torch.where(has, rel_vals[:, :1], 0.0)
    hi = torch.where(has, rel_vals.masked_fill(~ok, float("-inf")).amax(1, keepdim=True), 0.0)
    flagged = ~(torch.isfinite(lo) & torch.isfinite(hi)).squeeze(1)
    lo, hi = lo.nan_to_num(0.0, 0.0, 0.0), hi.nan_to_num(0.0, 0.0, 0.0)
    num_bins = _BINS_PER_ITEM * max(width, 1)
    span = hi - lo
    # slightly fewer than num_bins bins per span: the farthest relevant value stays in bin
    # num_bins, clear of the bin num_bins + 1 that collects farther entries
    scale = torch.where(span > 0, num_bins * (1 - 2**-16) / span, 0.0).nan_to_num_(0.0, 0.0, 0.0)
    slots = num_bins + 2  # 0: below the closest, 1..num_bins, num_bins + 1: beyond

    def cells_of(values: Tensor, lo: Tensor, scale: Tensor) -> Tensor:
        f = (values - lo).mul_(scale).floor_().clamp_(min=-1, max=num_bins).nan_to_num_(0.0)
        return f.to(torch.int64).add_(1)

    rel_cells = cells_of(rel_vals, lo, scale)
    offsets = torch.arange(rows_n, device=device) * slots
    per_bin = torch.bincount((rel_cells + offsets.unsqueeze(1))[ok], minlength=rows_n * slots)
    before = per_bin.view(rows_n, slots).cumsum(1).view(-1) - per_bin
    table = (before * 2 + (per_bin > 0)).to(torch.int32)
    values = mat[rows, cols]
    cells = cells_of(values, lo[rows, 0], scale[rows, 0]).add_(offsets[rows])
    entry = table.index_select(0, cells)  # 2 * (relevant items in lower bins) + shares a bin
    bucket = entry.bitwise_right_shift(1).long()
    cand = (entry & 1).nonzero(as_tuple=True)[0]
    if cand.numel():
        c_rows, c_vals, c_cols = rows[cand], values[cand], cols[cand]
        first, count = before[cells[cand]], per_bin[cells[cand]]
        extra = torch.zeros_like(first)
        for step in range(int(count.max())):  # relevant items sharing the bin (usually 1)
            t = (first + step).clamp_(max=width - 1)
            rel_v, rel_c = rel_vals[c_rows, t], rel_cols[c_rows, t]
            below = (rel_v < c_vals) | ((rel_v == c_vals) & (rel_c < c_cols))
            extra += below & (step < count)
        bucket[cand] += extra
    counts = torch.bincount(bucket + rows * (width + 1), minlength=rows_n * (width + 1))
    ranks = counts.view(rows_n, width + 1).cumsum(1)[:, :width]
    t = torch.arange(width, device=device).unsqueeze(0)
    return torch.where(t < num_ok.unsqueeze(1), ranks, k + 1), flagged


def _ragged_ranks(
    mat: Tensor, selected: Tensor, ids: Tensor, reference_ids: Tensor, k: int
) -> tuple[Tensor, Tensor]:
    """Ranks of each row's relevant items among the ``selected`` entries (exact, any ties).

    The selected entries (every relevant item within ``k`` must be selected; the query's own
    column must not) are ranked by ``(value, column)`` with one sort of composite keys
    (float64: two stable sorts), in a ragged layout.

    Returns:
        ``(ranks (B, W), in_order (B, W) bool)``: row ``i``'s first entries are the ranks of
        its relevant items, ascending; ``W`` = most relevant items found in a row.
    """
    rows_n = mat.shape[0]
    rows, cols = selected.nonzero(as_tuple=True)
    if mat.dtype == torch.float64:
        order = torch.sort(mat[rows, cols], stable=True).indices
        order = order[torch.sort(rows[order], stable=True).indices]
    else:
        order = torch.sort(
            (rows << 32) | ordered_float32_bits(mat[rows, cols]), stable=True
        ).indices
    rows, cols = rows[order], cols[order]
    counts = torch.bincount(rows, minlength=rows_n)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(rows.shape[0], device=mat.device) - starts[rows] + 1
    rel = reference_ids[cols] == ids[rows]
    rel_rows, rel_rank = rows[rel], rank[rel]
    found = torch.bincount(rel_rows, minlength=rows_n)
    width = int(found.max()) if rows_n else 0
    slot = (
        torch.arange(rel_rows.shape[0], device=mat.device)
        - (torch.cumsum(found, 0) - found)[rel_rows]
    )
    ranks = torch.full((rows_n, width), k + 1, dtype=torch.long, device=mat.device)
    ranks[rel_rows, slot] = rel_rank
    return ranks, found


def _block_values(
    mat: Tensor,
    ids: Tensor,
    reference_ids: Tensor,
    members: Tensor,
    is_member: Tensor,
    num_relevant: Tensor,
    limit: Tensor,
    k: int,
    offset: int,
    exclude_self: bool,
) -> dict[str, Tensor]:
    """Metrics of one block of query rows (``mat`` is "smaller is closer", ``(B, M)``).

    Only the entries at or below each row's ``limit`` are ranked (every relevant item within
    ``k`` is among them), by :func:`_binned_ranks`, or :func:`_ragged_ranks` for rows with
    non-finite values.
    """
    rows_n = mat.shape[0]
    selected = mat <= limit
    own_cols = None
    if exclude_self:
        own = torch.arange(rows_n, device=mat.device)
        own_cols = own + offset
        selected[own, own_cols] = False
    rows, cols = selected.nonzero(as_tuple=True)
    rank, flagged = _binned_ranks(mat, rows, cols, members, is_member, limit, k, own_cols)
    if bool(flagged.any()):
        redo = flagged.nonzero(as_tuple=True)[0]
        ranks, _ = _ragged_ranks(mat[redo], selected[redo], ids[redo], reference_ids, k)
        rank[redo] = k + 1
        rank[redo, : ranks.shape[1]] = ranks
    return _from_ranks(rank, num_relevant, k)


def retrieval_values(
    query: Tensor,
    query_ids: Tensor,
    reference: Tensor,
    reference_ids: Tensor,
    k: int | None = None,
    *,
    ref_includes_query: bool = False,
    distance_fn: DistanceFn | None = None,
    is_inverted: bool = False,
    batch_size: int | None = None,
) -> dict[str, Tensor]:
    """Per-query retrieval metrics over the exact ranking of the reference, chunked.

    Equal to retrieving ``k`` neighbours (``None``: the whole reference) with
    :func:`~pml.eval.functional.knn` and scoring the relevance rows, without holding
    ``(N, k)`` neighbour lists. Per block of query rows: one distance block, each row's
    farthest same-class item (a bound on how far it must be ranked), and one sort of the
    entries within that bound. Well-trained embeddings need little more than the distances;
    memory stays one ``(B, M)`` block.

    Args:
        query: shape ``(N, D)``.
        query_ids: class ids ``(N,)`` int64 (see :func:`~pml.eval.functional.label_ids`).
        reference: shape ``(M, D)``.
        reference_ids: class ids ``(M,)`` int64, same id space.
        k: neighbours retrieved (None: all); clamped to ``M - ref_includes_query``.
        ref_includes_query: query row ``i`` is reference row ``i``: it is not its own
            neighbour and does not count in ``R``.
        distance_fn: ``(B, D), (M, D) -> (B, M)`` (e.g. a pml distance); None: squared L2.
        is_inverted: ``True`` when larger values mean closer.
        batch_size: query rows per block (default: ~16M distances per block).

    Returns:
        ``{name: (N,)}`` for each of :data:`RETRIEVAL_METRICS` (float64, except
        ``mean_reciprocal_rank`` float32; NaN where ``R == 0``) and ``num_relevant`` (int64).

    Raises:
        ValueError: NaN or inf in ``query`` or ``reference`` (one reduction each).

    Example:
        >>> x = torch.tensor([[0.0], [1.0], [5.0], [6.0]])
        >>> ids = torch.tensor([0, 1, 1, 0])
        >>> out = retrieval_values(x, ids, x, ids, ref_includes_query=True)
        >>> out["precision_at_1"].tolist(), out["mean_average_precision"].tolist()
        ([0.0, 0.0, 0.0, 0.0], [0.3333333333333333, 0.5, 0.5, 0.3333333333333333])
    """
    check_finite(query, "query")
    if reference is not query:
        check_finite(reference, "reference")
    dtype = accumulation_dtype(torch.promote_types(query.dtype, reference.dtype))
    query, reference = query.to(dtype), reference.to(dtype)
    num_query, num_ref = query.shape[0], reference.shape[0]
    own = int(ref_includes_query)
    max_k = max(num_ref - own, 0)
    k_eff = max_k if k is None else min(k, max_k)
    device = query.device
    num_classes = int(torch.cat([query_ids, reference_ids]).max()) + 1 if num_query else 0
    counts = torch.bincount(reference_ids, minlength=num_classes)
    num_relevant = counts[query_ids] - own
    by_class = torch.argsort(reference_ids, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    out = {
        name: torch.full((num_query,), float("nan"), dtype=torch.float64, device=device)
        for name in RETRIEVAL_METRICS
    }
    out["mean_reciprocal_rank"] = out["mean_reciprocal_rank"].float()
    # a small k bounds the ranking more tightly than the farthest same-class item
    cap_by_k = k_eff > 0 and (k_eff + own) * 64 <= num_ref
    rows = chunk_rows(num_ref, batch_size)
    blocks = block_distance(reference, distance_fn)
    for s in range(0, num_query if num_ref and k_eff else 0, rows):
        e = min(s + rows, num_query)
        ids = query_ids[s:e]
        mat = closest_first(blocks(query[s:e]), is_inverted, inplace=True)
        class_size = counts[ids]
        offsets = torch.arange(int(class_size.max()), device=device)
        members = by_class[(starts[ids].unsqueeze(1) + offsets).clamp_(max=num_ref - 1)]
        member_d = mat.gather(1, members).masked_fill_(
            offsets >= class_size.unsqueeze(1), float("-inf")
        )
        if offsets.numel():
            limit = member_d.amax(1, keepdim=True)
        else:  # no row of this block has a same-class reference item
            limit = mat.new_full((e - s, 1), float("-inf"))
        if cap_by_k:
            kth = torch.topk(mat, k_eff + own, dim=1, largest=False, sorted=True).values[:, -1:]
            limit = torch.minimum(limit, kth)
        r = num_relevant[s:e]
        values = _block_values(
            mat,
            ids,
            reference_ids,
            members,
            offsets < class_size.unsqueeze(1),
            r,
            limit,
            k_eff,
            s,
            ref_includes_query,
        )
        del mat
        lone = r <= 0
        for name, v in values.items():
            out[name][s:e] = v.masked_fill(lone, float("nan"))
    out["num_relevant"] = num_relevant
    return out
