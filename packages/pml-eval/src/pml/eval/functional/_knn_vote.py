"""k-NN classification: class probabilities from the labels of each query's neighbours.

Each of a query's ``k`` neighbours votes for its class with a weight: 1 (``"uniform"``), or
``1 / d`` for a neighbour at distance ``d`` (``"distance"``; neighbours at distance 0, if
any, take the whole vote, shared equally, as in scikit-learn). A class's probability is its
share of the votes; the predicted class is the most probable one, ties going to the smallest
class id (the smallest label).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["class_probabilities", "inverse_distance_weights"]


def inverse_distance_weights(distances: Tensor) -> Tensor:
    """``1 / d`` per neighbour; rows holding a distance 0 weigh only their zeros (1 each).

    Args:
        distances: ``(N, k)`` non-negative.

    Returns:
        ``(N, k)``, at least float32.

    Example:
        >>> inverse_distance_weights(torch.tensor([[0.5, 2.0], [0.0, 1.0]]))
        tensor([[2.0000, 0.5000],
                [1.0000, 0.0000]])
    """
    d = distances.to(torch.promote_types(distances.dtype, torch.float32))
    zero = d == 0
    has_zero = zero.any(1, keepdim=True)
    return torch.where(has_zero, zero.to(d.dtype), 1.0 / d)


def class_probabilities(neighbor_ids: Tensor, weights: Tensor, num_classes: int) -> Tensor:
    """Weighted vote shares ``(N, num_classes)`` of the neighbours' class ids.

    Args:
        neighbor_ids: ``(N, k)`` int64 in ``[0, num_classes)``.
        weights: ``(N, k)`` non-negative.
        num_classes: ``C``.

    Returns:
        ``(N, C)`` in ``weights``' dtype (at least float32); rows sum to 1 (NaN rows when
        every weight of a row is 0, or ``k`` is 0).

    Example:
        >>> class_probabilities(torch.tensor([[2, 0, 2]]), torch.ones(1, 3), 3)
        tensor([[0.3333, 0.0000, 0.6667]])
    """
    dtype = torch.promote_types(weights.dtype, torch.float32)
    votes = torch.zeros(neighbor_ids.shape[0], num_classes, dtype=dtype, device=weights.device)
    votes.scatter_add_(1, neighbor_ids, weights.to(dtype))
    return votes / votes.sum(1, keepdim=True)
