"""Softmax-style pair and tuple losses: NTXent, TupletMargin, Angular, NPairs, NCA, Instance.

Every function takes a distance/similarity matrix (or normalised embeddings) plus index
tensors and returns *unreduced* losses in the input's dtype, computed in at least float32.

Memory is O(N·M): where the reference pairs every positive pair with every negative pair
(a ``P x Nn`` matrix), the negatives of an anchor enter only through one log-sum-exp per
anchor (:func:`negative_logsumexp`), which each positive pair then reads.

Negatives are given either as a boolean ``(N, M)`` mask (pairs built from labels: each
cell counts once) or as a pair list ``(a2, n)`` (a miner's output: each entry counts, so a
duplicated pair counts several times, like the reference).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from pml.core.dtypes import accumulation_dtype, small_val
from pml.losses.functional._softmax_ops import (
    Negatives,
    neg_log_target_mass,
    negative_logsumexp,
    row_logsumexp_or_min,
    same_label_targets,
    softplus_exact,
)

__all__ = [
    "angular_average_angle",
    "angular_loss",
    "instance_loss",
    "nca_loss",
    "npairs_loss",
    "ntxent_loss",
    "tuplet_margin_loss",
]


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
    return softplus_exact(row_logsumexp_or_min(f, neg_mask[a1])).to(x.dtype)


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


def nca_loss(
    mat: Tensor,
    labels: Tensor,
    ref_labels: Tensor,
    softmax_scale: float = 1,
    *,
    is_inverted: bool = False,
    mask_diagonal: bool = False,
    weights: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Neighbourhood components analysis loss per query row (Goldberger et al., 2004).

    ``p_i = Σ_{j: labels_i = ref_labels_j} softmax(softmax_scale·u_i)_j`` with ``u = -mat`` for a
    distance (``mat`` for a similarity); with ``mask_diagonal`` the column ``j = i`` leaves the
    softmax. ``loss_i = -log(p_i)·weights_i``, computed as ``LSE_all - LSE_same`` (exact for
    any scale on any dtype: a ``p_i`` below the smallest float is not rounded to 0). Rows
    without a same-label reference are not kept.

    fix: the reference filled the diagonal with ``finfo.min`` before scaling (an overflow
    error for a scale > 1 in float32) and dropped rows whose ``p_i`` underflowed to 0.
    compat: a scale of 0 leaves the diagonal in (the reference's ``0·finfo.min`` is 0).

    Args:
        mat: distances or similarities, shape ``(N, M)``.
        labels: query labels, shape ``(N,)``.
        ref_labels: reference labels, shape ``(M,)``.
        softmax_scale: multiplier of the logits.
        is_inverted: ``True`` when ``mat`` holds similarities.
        mask_diagonal: exclude ``j == i`` (the query set is the reference set).
        weights: per-row weights ``(N,)`` (miner weights), or None for ones.

    Returns:
        ``(losses, kept)``: losses ``(N,)`` in ``mat``'s dtype (0 on rows not kept, with a
        zero gradient) and the boolean ``(N,)`` mask of kept rows.

    Example:
        >>> mat = torch.tensor([[0.0, 1.0, 4.0], [1.0, 0.0, 4.0], [4.0, 4.0, 0.0]])
        >>> labels = torch.tensor([0, 0, 1])
        >>> nca_loss(mat, labels, labels, mask_diagonal=True)
        (tensor([0.0486, 0.0486, 0.0000]), tensor([ True,  True, False]))
    """
    acc = accumulation_dtype(mat.dtype)
    logits = mat.to(acc) * (softmax_scale if is_inverted else -softmax_scale)
    own = "drop" if mask_diagonal and softmax_scale != 0 else "keep"
    targets, excluded = same_label_targets(labels, ref_labels, own)
    if excluded is not None:
        logits.diagonal().masked_fill_(excluded, float("-inf"))
    losses, kept = neg_log_target_mass(logits, targets)
    if weights is not None:
        losses = losses * weights.to(acc)
    return losses.to(mat.dtype), kept


def instance_loss(sim: Tensor, labels: Tensor, gamma: float = 64) -> Tensor:
    """Instance loss over in-batch prototypes (after Zheng et al., TOMM 2020).

    Row ``i`` of ``gamma·sim`` is a softmax classifier over the batch's columns. Its targets
    are the other columns holding the same instance id, and its own column (``cos = 1``, the
    largest logit) leaves the softmax: ``loss_i = -log Σ_{j ≠ i: labels_j = labels_i}
    softmax_{k ≠ i}(gamma·sim_i)_j``. A row whose label is unique in the batch targets its
    own column: the cross entropy of the full row with target ``i`` (with distinct labels,
    every row: the reference's value for labels ``0..N-1`` in batch order).

    fix: with the own column among the targets, the loss of class labels is ~0 for any
    embeddings at the default gamma (no training signal).

    Args:
        sim: cosine similarities of the batch with itself, shape ``(N, N)``.
        labels: instance ids, shape ``(N,)``.
        gamma: scale of the logits.

    Returns:
        Unreduced losses, shape ``(N,)``, dtype of ``sim``.

    Example:
        >>> sim = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> instance_loss(sim, torch.tensor([0, 1]), gamma=2.0)
        tensor([0.1269, 0.1269])
    """
    acc = accumulation_dtype(sim.dtype)
    targets, excluded = same_label_targets(labels, labels, "fallback")
    logits = sim.to(acc) * gamma
    logits.diagonal().masked_fill_(excluded, float("-inf"))  # type: ignore[arg-type]
    losses, _ = neg_log_target_mass(logits, targets)
    return losses.to(sim.dtype)
