"""NCA and instance losses: a softmax over a row of the batch's matrix, same-label targets.

Both return *unreduced* per-row losses in the matrix's dtype, computed in at least float32 as
``LSE_all - LSE_targets`` (:func:`~pml.losses.functional._softmax_ops.neg_log_target_mass`).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from pml.core.dtypes import accumulation_dtype
from pml.losses.functional._softmax_ops import neg_log_target_mass, same_label_targets

__all__ = ["instance_loss", "nca_loss"]


def nca_loss(
    mat: Tensor,
    labels: Tensor,
    ref_labels: Tensor | None,
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
        ref_labels: reference labels, shape ``(M,)``; None when reference ``j`` is class ``j``
            (one reference per class, e.g. proxies: ``labels`` are int class ids in
            ``[0, M)``): each row's only target is its label's column, and the loss is the
            cross entropy (the same numbers as ``ref_labels = arange(M)``, one log-softmax).
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
    if ref_labels is None:  # one reference per class: -log p_i is the cross entropy
        if mask_diagonal:
            raise ValueError("mask_diagonal needs ref_labels (the query set is the reference set)")
        losses = F.cross_entropy(logits, labels.to(logits.device).long(), reduction="none")
        if weights is not None:
            losses = losses * weights.to(acc)
        return losses.to(mat.dtype), torch.ones_like(losses, dtype=torch.bool)
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
