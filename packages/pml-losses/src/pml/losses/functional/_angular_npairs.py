"""Angular and N-pair losses: softmax losses over (anchor, positive) pairs.

Angular takes L2-normalised embeddings and the pairs; N-pair the anchors-vs-positives
similarity matrix. Both return *unreduced* losses in the input's dtype, computed in at least
float32.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from pml.core.dtypes import accumulation_dtype
from pml.core.functional import masked_logsumexp
from pml.losses.functional._softmax_ops import softplus_exact

__all__ = ["angular_average_angle", "angular_loss", "npairs_loss"]


def _angular_dots(x: Tensor, x_ref: Tensor, a1: Tensor, p: Tensor, negatives: Tensor) -> Tensor:
    """``(x[a1] + x_ref[p]) · negatives[j]`` for every pair ``k`` and reference ``j``: (P, M).

    Either one ``(P, D) @ (D, M)`` product, or (cheaper when there are many pairs per
    anchor) two ``(·, M)`` products gathered by anchor and by positive.
    """
    num_pairs = a1.shape[0]
    if x.shape[0] + x_ref.shape[0] < num_pairs:
        per_query = x @ negatives.T
        per_ref = per_query if (x is x_ref) else x_ref @ negatives.T
        return per_query[a1] + per_ref[p]
    return (x[a1] + x_ref[p]) @ negatives.T


def angular_loss(
    x: Tensor,
    x_ref: Tensor,
    a1: Tensor,
    p: Tensor,
    neg_mask: Tensor,
    alpha: float = math.radians(40),
    negatives: Tensor | None = None,
) -> Tensor:
    """Angular loss of every positive pair (Wang et al., ICCV 2017), log-sum-exp form.

    ``loss_k = log(1 + Σ_j exp(4t·(x_a + x_p)·r_j - 2(1 + t)·x_a·x_p))``, ``t = tan²(alpha)``,
    ``j`` over the references with ``neg_mask[a, j]`` (0 when there is none).

    Args:
        x: L2-normalised query embeddings, shape ``(N, D)``.
        x_ref: L2-normalised reference embeddings, shape ``(M, D)``.
        a1: anchor index of each positive pair, int64 ``(P,)``.
        p: positive index of each positive pair, int64 ``(P,)``.
        neg_mask: ``neg_mask[i, j]`` is True when reference ``j`` is a negative of query
            ``i``, boolean ``(N, M)``.
        alpha: the angle bound in radians.
        negatives: the negative vectors ``r_j`` ``(M, D)``; None uses ``x_ref`` (the paper).
            The reference passes the un-normalised reference embeddings here.

    Returns:
        Unreduced losses, shape ``(P,)``, dtype of ``x``.

    Example:
        >>> x = torch.eye(3)[[0, 0, 1]] * 0.6 + torch.eye(3)[[1, 2, 2]] * 0.8
        >>> neg = torch.tensor([[False, False, True], [False, False, True], [True, True, False]])
        >>> angular_loss(x, x, torch.tensor([0, 1]), torch.tensor([1, 0]), neg)
        tensor([2.0632, 2.0632])
    """
    acc = accumulation_dtype(x.dtype)
    xa = x.to(acc)
    xr = xa if x_ref is x else x_ref.to(acc)
    r = xr if negatives is None else negatives.to(acc)
    t = math.tan(alpha) ** 2
    dots = _angular_dots(xa, xr, a1, p, r)
    ap = (xa[a1] * xr[p]).sum(dim=1, keepdim=True)
    f = dots * (4 * t) - ap * (2 * (1 + t))
    return softplus_exact(masked_logsumexp(f, neg_mask[a1], empty=-math.inf)).to(x.dtype)


@torch.no_grad()
def angular_average_angle(
    x: Tensor,
    x_ref: Tensor,
    a1: Tensor,
    p: Tensor,
    neg_mask: Tensor,
    negatives: Tensor | None = None,
) -> Tensor:
    """Mean angle (degrees) at the negative of every (pair, negative) of :func:`angular_loss`.

    ``atan(||x_a - x_p|| / (2·||c_k - r_j||))`` with ``c_k = (x_a + x_p) / 2`` and
    ``||x_a - x_p||`` from ``pairwise_distance`` (eps 1e-6), averaged over the kept cells.
    ``||c - r||`` is expanded as ``||c||² - 2c·r + ||r||²``: no ``(P, M, D)`` tensor.

    Returns:
        A 0-dim float tensor (NaN when there is no kept cell).
    """
    acc = accumulation_dtype(x.dtype)
    xa = x.to(acc)
    xr = xa if x_ref is x else x_ref.to(acc)
    r = xr if negatives is None else negatives.to(acc)
    centers = (xa[a1] + xr[p]) / 2
    cross = _angular_dots(xa, xr, a1, p, r) / 2
    sq = (centers * centers).sum(1, keepdim=True) - 2 * cross + (r * r).sum(1)
    dist_cn = sq.clamp_min(0).sqrt()
    dist_ap = F.pairwise_distance(xa[a1], xr[p]).unsqueeze(1)
    angles = torch.atan(dist_ap / (2 * dist_cn))
    mask = neg_mask[a1]
    return torch.rad2deg(angles[mask].mean())


def npairs_loss(sim: Tensor) -> Tensor:
    """N-pair loss (Sohn, NeurIPS 2016): cross entropy of row ``i`` with target ``i``.

    Args:
        sim: similarities between the anchors and their positives, shape ``(K, K)``
            (negate distances first).

    Returns:
        Unreduced losses, shape ``(K,)``, dtype of ``sim``.

    Example:
        >>> npairs_loss(torch.tensor([[2.0, 0.0], [1.0, 1.0]]))
        tensor([0.1269, 0.6931])
    """
    acc = accumulation_dtype(sim.dtype)
    target = torch.arange(sim.shape[0], device=sim.device)
    return F.cross_entropy(sim.to(acc), target, reduction="none").to(sim.dtype)
