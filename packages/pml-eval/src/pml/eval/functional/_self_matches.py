"""Neighbour lists without each query's own item, and the recall of approximate lists."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["drop_self_matches", "neighbour_recall", "remove_self_matches"]


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
