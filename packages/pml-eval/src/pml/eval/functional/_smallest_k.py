"""The ``k`` smallest values of each row, ties in index order: the selection of the k-NN.

:func:`smallest_k` takes a bounded route (a per-row bound from a sample, then a short sort
of the candidates) where it applies and ``torch.topk`` otherwise; both give the values in
ascending order with equal values in ascending index order.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["ordered_float32_bits", "smallest_k"]


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
