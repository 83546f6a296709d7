"""Merging k-nearest-neighbour candidate lists found in disjoint parts of a reference set.

Each part (e.g. one rank's shard) gives its own ``k`` nearest rows of every query, with
indices already mapped to the whole reference. The ``k`` nearest rows of the whole reference
are the ``k`` best of the union, in faiss's order: distance, then ascending reference index;
so merged lists equal one search of the whole reference whenever each part's lists are
ordered that way too (ties included).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pml.eval.functional._knn import closest_first

__all__ = ["PAD_INDEX", "merge_topk", "pad_candidates"]

#: index of a padding candidate (sorts after every real reference index).
PAD_INDEX = torch.iinfo(torch.int64).max


def pad_candidates(
    distances: Tensor, indices: Tensor, width: int, *, is_inverted: bool = False
) -> tuple[Tensor, Tensor]:
    """Pad candidate lists ``(N, c)`` to ``(N, width)`` with entries ranked after any real one.

    Padding is the farthest value (``+inf``, or ``-inf`` for similarities) with index
    :data:`PAD_INDEX`, so :func:`merge_topk` never prefers it to a real candidate.

    Example:
        >>> pad_candidates(torch.tensor([[1.0]]), torch.tensor([[4]]), 2)[0]
        tensor([[1., inf]])
    """
    missing = width - distances.shape[1]
    if missing <= 0:
        return distances, indices
    far = float("-inf") if is_inverted else float("inf")
    n = distances.shape[0]
    pad_d = distances.new_full((n, missing), far)
    pad_i = torch.full((n, missing), PAD_INDEX, dtype=torch.int64, device=indices.device)
    return torch.cat([distances, pad_d], 1), torch.cat([indices.to(torch.int64), pad_i], 1)


def merge_topk(
    distances: Tensor, indices: Tensor, k: int, *, is_inverted: bool = False
) -> tuple[Tensor, Tensor]:
    """The ``k`` best candidates of each row, ordered by ``(distance, reference index)``.

    Columns may come in any order (e.g. the lists of several parts side by side); a row's
    real indices must be distinct. NaN ranks last (like :func:`~pml.eval.functional.knn`);
    similarities (``is_inverted``) rank largest first. Ties are broken by ascending index,
    exactly.

    Args:
        distances: candidate values ``(N, C)``.
        indices: their reference indices ``(N, C)`` (int64; padding: :data:`PAD_INDEX`).
        k: ``0 <= k <= C``.
        is_inverted: larger values are closer.

    Returns:
        ``(distances (N, k), indices (N, k))``: the values as given (not transformed).

    Example:
        >>> d = torch.tensor([[3.0, 1.0, 2.0, 1.0]])
        >>> i = torch.tensor([[0, 7, 5, 2]])
        >>> merge_topk(d, i, 3)
        (tensor([[1., 1., 2.]]), tensor([[2, 7, 5]]))
    """
    if not 0 <= k <= distances.shape[1]:
        raise ValueError(f"k must be in [0, {distances.shape[1]}] (the candidates); got {k}")
    indices = indices.to(torch.int64)
    # ascending index first, then a stable sort by closeness: (value, index) order
    indices, by_index = torch.sort(indices, dim=1)
    distances = distances.gather(1, by_index)
    key = closest_first(distances, is_inverted)
    _, order = torch.sort(key, dim=1, stable=True)
    order = order[:, :k]
    return distances.gather(1, order), indices.gather(1, order)
