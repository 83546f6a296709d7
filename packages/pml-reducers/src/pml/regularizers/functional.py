"""Regularizer terms as pure functions: one value per row of ``x`` (embeddings or class vectors)."""

from __future__ import annotations

import torch
from torch import Tensor

from pml.core.dtypes import accumulation_dtype, neg_inf, small_val

__all__ = [
    "center_invariant_regularizer",
    "lp_regularizer",
    "regular_face_regularizer",
    "sparse_centers_regularizer",
    "spherical_embedding_regularizer",
    "zero_mean_regularizer",
]


def lp_regularizer(x: Tensor, p: float = 2, power: float = 1) -> Tensor:
    """``||x_i||_p ** power`` per row (raw rows, never normalised), shape ``(N,)``.

    Example:
        >>> lp_regularizer(torch.tensor([[3.0, 4.0]]), power=2)
        tensor([25.])
    """
    norms = torch.linalg.vector_norm(x, ord=p, dim=1)
    return norms if power == 1 else norms**power


def zero_mean_regularizer(x: Tensor) -> Tensor:
    """``|sum_d x_id|`` per row, shape ``(N,)``.

    Example:
        >>> zero_mean_regularizer(torch.tensor([[1.0, -3.0]]))
        tensor([2.])
    """
    return torch.abs(torch.sum(x, dim=1))


def center_invariant_regularizer(squared_norms: Tensor) -> Tensor:
    """``(s_i - mean(s))^2 / 4`` for squared row norms ``s``, shape ``(N,)``.

    Example:
        >>> center_invariant_regularizer(torch.tensor([1.0, 3.0]))
        tensor([0.2500, 0.2500])
    """
    return (squared_norms - squared_norms.mean()) ** 2 / 4


def regular_face_regularizer(sim: Tensor) -> Tensor:
    """Each row's largest off-diagonal similarity (ties: first index), shape ``(N,)``.

    The gradient flows only through the selected entry of ``sim`` (``(N, N)``).

    Example:
        >>> sim = torch.tensor([[1.0, 0.2, 0.5], [0.2, 1.0, 0.1], [0.5, 0.1, 1.0]])
        >>> regular_face_regularizer(sim)
        tensor([0.5000, 0.2000, 0.5000])
    """
    with torch.no_grad():
        masked = sim.clone()
        masked.fill_diagonal_(neg_inf(sim.dtype))
        nearest = torch.argmax(masked, dim=1, keepdim=True)
    return torch.gather(sim, 1, nearest).squeeze(1)


def sparse_centers_regularizer(same_class_sim: Tensor) -> Tensor:
    """``sqrt(2 + tiny - min(2 s, 2))`` for within-class center similarities ``s``.

    Example:
        >>> sparse_centers_regularizer(torch.tensor([1.0, 0.0], dtype=torch.float64))
        tensor([0.0000, 1.4142], dtype=torch.float64)
    """
    v = torch.clamp(2 * same_class_sim, max=2)
    return torch.sqrt(2 + small_val(same_class_sim.dtype) - v)


def spherical_embedding_regularizer(x: Tensor) -> Tensor:
    """``(||x_i||_2 - mu)^2`` per row, ``mu`` the mean row norm (detached), shape ``(N,)``.

    The spherical embedding constraint of Zhang et al., "Deep Metric Learning with Spherical
    Embedding" (NeurIPS 2020): the mean of these values over the batch is the variance of
    the embedding norms. ``mu`` is a constant of the gradient (the gradient moves each norm
    towards the batch's mean norm, not the mean towards the norms). Norms are computed in
    at least float32; the result has the dtype of ``x``.

    Example:
        >>> spherical_embedding_regularizer(torch.tensor([[3.0, 4.0], [0.0, 1.0]]))
        tensor([4., 4.])
    """
    norms = torch.linalg.vector_norm(x.to(accumulation_dtype(x.dtype)), dim=1)
    return ((norms - norms.mean().detach()) ** 2).to(x.dtype)
