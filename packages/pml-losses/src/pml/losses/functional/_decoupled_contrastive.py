"""Decoupled contrastive loss (DCL) and its von Mises-Fisher weighted variant (DCLW).

Yeh et al., "Decoupled Contrastive Learning", ECCV 2022. NT-Xent without the positive in the
denominator: ``-w · z_ap + log Σ_n exp(z_an)``, the sum over the anchor's negatives only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pml.core.dtypes import accumulation_dtype
from pml.losses.functional._softmax_ops import Negatives, negative_logsumexp

__all__ = ["decoupled_contrastive_loss", "von_mises_weights"]


def von_mises_weights(pos_sim: Tensor, sigma: float = 0.5) -> Tensor:
    """DCLW's positive weights: ``w_k = 2 - exp(s_k / sigma) / mean_j exp(s_j / sigma)``.

    ``= 2 - P · softmax(s / sigma)_k`` over the ``P`` positive pairs of the batch (the paper's
    expectation over the batch); the weights average to 1, and a pair that is already close
    (large ``s_k``) weighs less than one far apart. Differentiable (not detached), as in the
    paper's definition. No pair: an empty tensor.

    Args:
        pos_sim: similarities of the positive pairs, shape ``(P,)``.
        sigma: the von Mises-Fisher concentration parameter ``sigma > 0``.

    Returns:
        Shape ``(P,)``, dtype of ``pos_sim`` (computed in at least float32).

    Example:
        >>> von_mises_weights(torch.tensor([0.9, 0.1]), 0.5)
        tensor([0.3360, 1.6640])
    """
    s = pos_sim.to(accumulation_dtype(pos_sim.dtype))
    if s.numel() == 0:
        return pos_sim.new_zeros(0)
    return (2 - s.numel() * torch.softmax(s / sigma, dim=0)).to(pos_sim.dtype)


def decoupled_contrastive_loss(
    mat: Tensor,
    a1: Tensor,
    p: Tensor,
    neg: Negatives,
    temperature: float = 0.1,
    *,
    weights: Tensor | None = None,
    is_inverted: bool = True,
) -> Tensor:
    """Decoupled contrastive loss of every positive pair (Yeh et al., ECCV 2022).

    With ``z = mat / temperature`` (negated for a distance):
    ``loss_k = -w_k · z_{a_k p_k} + log Σ_{n ∈ neg(a_k)} exp(z_{a_k n})``. The positive is
    not in the denominator (the "decoupling"), so the loss can be negative. ``w`` is 1 (DCL)
    or per-pair weights such as :func:`von_mises_weights` (DCLW). An anchor without negatives
    gives ``-inf``: callers drop those pairs.

    Args:
        mat: distances or similarities, shape ``(N, M)``.
        a1: anchor (row) index of each positive pair, int64 ``(P,)``.
        p: positive (column) index of each positive pair, int64 ``(P,)``.
        neg: the negatives, a boolean ``(N, M)`` mask (each cell once) or a pair list
            ``(a2, n)`` (each entry counts).
        temperature: softmax temperature.
        weights: ``(P,)`` weights of the positive terms, or None for ones.
        is_inverted: ``True`` when ``mat`` holds similarities.

    Returns:
        Unreduced losses, shape ``(P,)``, dtype of ``mat`` (computed in at least float32).

    Example:
        >>> mat = torch.tensor([[1.0, 0.8, 0.1], [0.8, 1.0, 0.3], [0.1, 0.3, 1.0]])
        >>> neg = torch.tensor([[False, False, True], [False, False, True], [True, True, False]])
        >>> decoupled_contrastive_loss(mat, torch.tensor([0, 1]), torch.tensor([1, 0]), neg, 0.5)
        tensor([-1.4000, -1.0000])
    """
    acc = accumulation_dtype(mat.dtype)
    z = mat.to(acc) / temperature
    if not is_inverted:
        z = -z
    positive = z[a1, p]
    if weights is not None:
        positive = positive * weights.to(acc)
    return (negative_logsumexp(z, neg)[a1] - positive).to(mat.dtype)
