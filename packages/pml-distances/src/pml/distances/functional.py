"""Distance and similarity matrices as pure functions on tensors.

Matrix functions map ``query (N, D)`` and ``ref (M, D)`` to ``(N, M)``; pairwise functions map
two ``(K, D)`` tensors to ``(K,)`` (row ``i`` against row ``i``). None of them normalises:
see :func:`lp_normalize`. Half-precision inputs are computed in float32 and cast back.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from pml.core.dtypes import accumulation_dtype

__all__ = [
    "cosine_similarity_matrix",
    "dot_product_matrix",
    "dot_product_pairwise",
    "lp_distance_matrix",
    "lp_distance_pairwise",
    "lp_norm",
    "lp_normalize",
    "snr_distance_matrix",
    "snr_distance_pairwise",
]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def lp_normalize(x: Tensor, p: float = 2, dim: int = 1) -> Tensor:
    """``x / max(||x||_p, 1e-12)`` along ``dim``; an all-zero row stays zero.

    Example:
        >>> lp_normalize(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
        tensor([[0.6000, 0.8000],
                [0.0000, 0.0000]])
    """
    if x.dtype in _LOW_PRECISION:
        return F.normalize(x.to(accumulation_dtype(x.dtype)), p=p, dim=dim).to(x.dtype)
    return F.normalize(x, p=p, dim=dim)


def lp_norm(x: Tensor, p: float = 2, dim: int = 1) -> Tensor:
    """The ``p``-norm of each row (``torch.norm(x, p, dim)``), computed in >= float32.

    Example:
        >>> lp_norm(torch.tensor([[3.0, 4.0]]))
        tensor([5.])
    """
    return torch.linalg.vector_norm(x.to(accumulation_dtype(x.dtype)), ord=p, dim=dim).to(x.dtype)


def lp_distance_matrix(query: Tensor, ref: Tensor, p: float = 2) -> Tensor:
    """Minkowski distances ``||q_i - r_j||_p``, shape ``(N, M)``.

    Uses ``torch.cdist`` with its default compute mode (bit-identical to the reference; for
    ``p=2`` and more than 25 rows it takes the matrix-multiplication route, so self distances
    are ~1e-7..1e-3 rather than 0). Half precision is computed in float32.

    Example:
        >>> lp_distance_matrix(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0], [1.0, 0.0]]))
        tensor([[5., 1.]])
    """
    if query.dtype in _LOW_PRECISION:
        acc = accumulation_dtype(query.dtype)
        return torch.cdist(query.to(acc), ref.to(acc), p=p).to(query.dtype)
    return torch.cdist(query, ref, p=p)


def lp_distance_pairwise(query: Tensor, ref: Tensor, p: float = 2) -> Tensor:
    """``||q_i - r_i + 1e-6||_p`` per row (``torch.nn.functional.pairwise_distance``).

    Example:
        >>> lp_distance_pairwise(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]]))
        tensor([5.0000])
    """
    return F.pairwise_distance(query, ref, p=p)


def dot_product_matrix(query: Tensor, ref: Tensor) -> Tensor:
    """Inner products ``q_i . r_j``, shape ``(N, M)``.

    Example:
        >>> dot_product_matrix(torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0], [1.0, 0.0]]))
        tensor([[11.,  1.]])
    """
    return torch.matmul(query, ref.transpose(-1, -2))


def cosine_similarity_matrix(x: Tensor, y: Tensor, eps: float = 1e-8) -> Tensor:
    """Cosine similarities of every row of ``x`` with every row of ``y``, shape ``(N, M)``.

    Like ``torch.nn.functional.cosine_similarity`` on each pair (rows scaled by
    ``1 / max(norm, eps)``), computed in the accumulation dtype with one matrix product.

    Example:
        >>> cosine_similarity_matrix(torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 1.0]]))
        tensor([[0.7071]])
    """
    acc = accumulation_dtype(x.dtype)
    xa, ya = x.to(acc), y.to(acc)
    xn = xa / torch.linalg.vector_norm(xa, dim=1, keepdim=True).clamp(min=eps)
    yn = xn if y is x else ya / torch.linalg.vector_norm(ya, dim=1, keepdim=True).clamp(min=eps)
    return (xn @ yn.T).to(x.dtype)


def dot_product_pairwise(query: Tensor, ref: Tensor) -> Tensor:
    """``q_i . r_i`` per row, shape ``(K,)``."""
    return torch.sum(query * ref, dim=1)


def snr_distance_matrix(query: Tensor, ref: Tensor) -> Tensor:
    """Signal-to-noise ratio distance ``var(q_i - r_j) / var(q_i)``, shape ``(N, M)``.

    Variances are unbiased (over the embedding dimension). Computed without the
    ``(N, M, D)`` difference tensor: centring is linear, so
    ``(D - 1) var(q - r) = ||(q - mean q) - (r - mean r)||^2``, a squared Euclidean distance
    between centred rows. Memory is ``O(N M)`` (the reference builds ``(N, M, D)``).

    Example:
        >>> q = torch.tensor([[1.0, 2.0, 3.0]])
        >>> r = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
        >>> snr_distance_matrix(q, r)
        tensor([[0., 4.]])
    """
    acc = accumulation_dtype(query.dtype)
    q, r = query.to(acc), ref.to(acc)
    qc = q - q.mean(dim=1, keepdim=True)
    rc = r - r.mean(dim=1, keepdim=True)
    # The direct (non-matmul) route keeps var(q - q) exactly 0, like the reference.
    dist = torch.cdist(qc, rc, p=2, compute_mode="donot_use_mm_for_euclid_dist")
    noise = dist.square() / (q.shape[1] - 1)
    signal = torch.var(q, dim=1, keepdim=True)
    return (noise / signal).to(query.dtype)


def snr_distance_pairwise(query: Tensor, ref: Tensor) -> Tensor:
    """``var(q_i - r_i) / var(q_i)`` per row (unbiased), shape ``(K,)``."""
    return torch.var(query - ref, dim=1) / torch.var(query, dim=1)
