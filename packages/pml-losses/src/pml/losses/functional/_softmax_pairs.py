"""Softmax losses of positive pairs against their anchor's negatives: NTXent, TupletMargin, SupCon.

Every function takes a distance/similarity matrix plus the pairs and returns *unreduced* losses
in the matrix's dtype, computed in at least float32.

NTXent and TupletMargin read an anchor's negatives through one log-sum-exp per anchor
(:func:`~pml.losses.functional._softmax_ops.negative_logsumexp`), which each positive pair then
reads: O(N·M) memory where the reference pairs every positive pair with every negative pair
(a ``P x Nn`` matrix). Their negatives are a boolean ``(N, M)`` mask (pairs built from labels:
each cell counts once) or a pair list ``(a2, n)`` (a miner's output: each entry counts, so a
duplicated pair counts several times, like the reference). SupCon takes ``(N, M)`` masks
(duplicate pairs collapse) and gives one value per row.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pml.core.dtypes import accumulation_dtype, small_val
from pml.core.functional import masked_logsumexp
from pml.losses.functional._softmax_ops import Negatives, negative_logsumexp, softplus_exact

__all__ = ["ntxent_loss", "supcon_loss", "tuplet_margin_loss"]


def ntxent_loss(
    mat: Tensor,
    a1: Tensor,
    p: Tensor,
    neg: Negatives,
    temperature: float = 0.07,
    *,
    is_inverted: bool = True,
) -> Tensor:
    """NT-Xent (InfoNCE) loss of every positive pair (Chen et al., 2020; Oord et al., 2018).

    With ``z = mat / temperature`` (negated for a distance) and ``R_a`` the log-sum-exp of
    ``z`` over the negatives of anchor ``a``:
    ``loss_k = -log(r_k + tiny)``, ``r_k = exp(z_ap) / (exp(z_ap) + exp(R_a))
    = sigmoid(z_ap - R_a)``, ``tiny = finfo.tiny`` of the computation dtype (at least
    float32). The ``tiny`` caps the loss at ``-log(tiny)`` (87.3365 in float32, 708.3964 in
    float64) with a zero gradient once ``r_k`` underflows, exactly like the reference; an
    anchor without negatives gives ``-log(1 + tiny) = -0.0``.

    Args:
        mat: distances or similarities, shape ``(N, M)``.
        a1: anchor (row) index of each positive pair, int64 ``(P,)``.
        p: positive (column) index of each positive pair, int64 ``(P,)``.
        neg: the negatives, a boolean ``(N, M)`` mask or a pair list ``(a2, n)``.
        temperature: softmax temperature.
        is_inverted: ``True`` when ``mat`` holds similarities.

    Returns:
        Unreduced losses, shape ``(P,)``, dtype of ``mat``.

    Example:
        >>> mat = torch.tensor([[1.0, 0.8, 0.1], [0.8, 1.0, 0.3], [0.1, 0.3, 1.0]])
        >>> neg = torch.tensor([[False, False, True], [False, False, True], [True, True, False]])
        >>> ntxent_loss(mat, torch.tensor([0, 1]), torch.tensor([1, 0]), neg, 0.5)
        tensor([0.2204, 0.3133])
    """
    acc = accumulation_dtype(mat.dtype)
    z = mat.to(acc) / temperature
    if not is_inverted:
        z = -z
    lse = negative_logsumexp(z, neg)
    ratio = torch.sigmoid(z[a1, p] - lse[a1])
    return (-torch.log(ratio + small_val(acc))).to(mat.dtype)


def _cos_minus_margin(s: Tensor, margin: float) -> Tensor:
    """``cos(acos(s) - margin)`` as ``s·cos(m) + sqrt(1 - s²)·sin(m)``.

    fix: cosines that round above 1 (duplicate embeddings) count as angle 0 instead of
    making ``acos`` NaN; ``sqrt`` at 0 passes a zero gradient instead of an infinite one.
    """
    q = (1 - s) * (1 + s)
    positive = q > 0
    root = torch.where(positive, torch.sqrt(torch.where(positive, q, 1)), 0)
    return s * math.cos(margin) + root * math.sin(margin)


def tuplet_margin_loss(
    sim: Tensor,
    a1: Tensor,
    p: Tensor,
    neg: Negatives,
    margin: float = math.radians(5.73),
    scale: float = 64,
) -> Tensor:
    """Tuplet margin loss of every positive pair (Yu & Tao, ICCV 2019).

    ``loss_k = log(1 + Σ_n exp(scale·(s_an - cos(θ_ap - margin))))``, ``θ_ap = acos(s_ap)``,
    the sum running over the negatives of anchor ``a`` (0 when it has none). Computed as
    ``softplus(R_a - scale·cos(θ_ap - margin))`` with ``R_a`` the log-sum-exp of
    ``scale·s`` over the anchor's negatives.

    Args:
        sim: cosine similarities, shape ``(N, M)``.
        a1: anchor index of each positive pair, int64 ``(P,)``.
        p: positive index of each positive pair, int64 ``(P,)``.
        neg: the negatives, a boolean ``(N, M)`` mask or a pair list ``(a2, n)``.
        margin: angular margin in radians.
        scale: the scale ``s`` of the paper.

    Returns:
        Unreduced losses, shape ``(P,)``, dtype of ``sim``.

    Example:
        >>> sim = torch.tensor([[1.0, 0.9, 0.2], [0.9, 1.0, 0.1], [0.2, 0.1, 1.0]])
        >>> neg = torch.tensor([[False, False, True], [False, False, True], [True, True, False]])
        >>> tuplet_margin_loss(sim, torch.tensor([0, 1]), torch.tensor([1, 0]), neg, 0.1, 8.0)
        tensor([0.0027, 0.0012])
    """
    acc = accumulation_dtype(sim.dtype)
    s = sim.to(acc)
    lse = negative_logsumexp(s * scale, neg)
    target = _cos_minus_margin(s[a1, p], margin) * scale
    return softplus_exact(lse[a1] - target).to(sim.dtype)


def supcon_loss(
    mat: Tensor,
    pos_mask: Tensor,
    neg_mask: Tensor,
    temperature: float = 0.1,
    *,
    is_inverted: bool = True,
) -> Tensor:
    """Per-row supervised contrastive loss (Khosla et al., NeurIPS 2020).

    With ``z = s / temperature`` (``-d / temperature`` for a distance) and
    ``den = LSE over positive and negative cells of z``:
    ``-sum_pos (z - den) / (|pos| + tiny)``. Rows without a positive give ``-0.0``.

    Args:
        mat: distances/similarities, shape ``(N, M)``.
        pos_mask: positive cells, bool or 0/1, shape ``(N, M)``.
        neg_mask: negative cells, bool or 0/1, shape ``(N, M)``.
        temperature: softmax temperature.
        is_inverted: ``True`` when ``mat`` holds similarities.

    Returns:
        Shape ``(N,)``, dtype of ``mat``.

    Example:
        >>> mat = torch.tensor([[1.0, 0.8, 0.1], [0.8, 1.0, 0.6]])
        >>> pos = torch.tensor([[0, 1, 0], [1, 0, 0]]).bool()
        >>> supcon_loss(mat, pos, torch.tensor([[0, 0, 1], [0, 0, 1]]).bool())
        tensor([0.0009, 0.1269])
    """
    x = mat.to(accumulation_dtype(mat.dtype))
    z = x / temperature if is_inverted else -x / temperature
    pos = pos_mask.bool()
    den = masked_logsumexp(z, pos | neg_mask.bool())
    num_pos = torch.count_nonzero(pos, dim=1).to(x.dtype)
    log_prob_sum = torch.where(pos, z - den.unsqueeze(1), 0).sum(dim=1)
    loss = -log_prob_sum / (num_pos + small_val(x.dtype))
    return loss.to(mat.dtype)
