"""Inputs of the pair losses: pairs straight from labels, the reference's pair rules, guards.

When pairs come from labels (no ``indices_tuple``) the positive/negative cells are exactly
the boolean masks ``labels[i] == ref_labels[j]`` (diagonal cleared in the same set), so the
pair losses read them from the masks instead of listing every pair first and scattering the
lists back into float masks (what GenericPairLoss does for miner outputs). Values and pair
order are the same (row-major, like ``torch.where``).
"""

from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import Tensor

from pml.core.indices import IndicesTuple, pos_neg_masks
from pml.losses._base import GenericPairLoss
from pml.reducers import LossDict


def check_real(name: str, value: Any) -> None:
    """Raise ``TypeError`` unless ``value`` is a real number (or a one-element tensor)."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.dtype.is_complex:
        return
    if isinstance(value, numbers.Real):
        return
    raise TypeError(f"{name} must be a real number; got {type(value).__name__} {value!r:.40}")


def has_too_few_pairs(pos: Tensor, neg: Tensor) -> bool:
    """The reference's rule: no loss when there is at most one positive and one negative pair.

    Every cell of label masks is a positive or a negative pair except the cleared diagonal,
    so only tiny batches need the (synchronising) count.
    """
    n, m = pos.shape
    if n * m > 2 + min(n, m):
        return False
    return int(pos.sum()) <= 1 and int(neg.sum()) <= 1


def poison_nonfinite(loss_dict: LossDict, *tensors: Tensor) -> LossDict:
    """Make every per-tuple loss NaN when an input holds NaN/inf.

    Reducers that filter (AvgNonZero, Threshold) drop NaN entries, which would turn a broken
    batch into a finite loss computed from its healthy pairs; this keeps it NaN. No sync.
    """
    unique = list({id(t): t for t in tensors}.values())
    finite = torch.stack([torch.isfinite(t).all() for t in unique]).all()
    for entry in loss_dict.values():
        losses = entry["losses"]
        if isinstance(losses, Tensor) and losses.numel() > 0:
            # fix: a NaN/inf input never gives a finite loss (docs/compatibility.md).
            entry["losses"] = torch.where(finite, losses, torch.nan)
    return loss_dict


def compute_pair_loss(
    loss: GenericPairLoss,
    embeddings: Tensor,
    labels: Tensor | None,
    indices_tuple: IndicesTuple | None,
    ref_emb: Tensor,
    ref_labels: Tensor | None,
) -> LossDict:
    """``GenericPairLoss.compute_loss`` reading label-built pairs from boolean masks.

    Miner outputs take GenericPairLoss's path (pair lists, overlap check). Either way
    ``loss._compute_loss`` gets ``(mat, pos_mask, neg_mask)`` (matrix losses) or
    ``(pos_pair, neg_pair, (a1, p, a2, n))`` (pair-list losses), and non-finite inputs give NaN.
    """
    if indices_tuple is not None or labels is None:
        loss_dict = GenericPairLoss.compute_loss(
            loss, embeddings, labels, indices_tuple, ref_emb, ref_labels
        )
        return poison_nonfinite(loss_dict, embeddings, ref_emb)
    pos, neg = pos_neg_masks(labels, ref_labels)
    # compat: the reference returns zero when every index list has length <= 1.
    if has_too_few_pairs(pos, neg):
        return loss.zero_losses()
    mat = loss.distance(embeddings, ref_emb)
    if loss.mat_based_loss:
        loss_dict = loss._compute_loss(mat, pos, neg)
    else:
        a1, p = torch.where(pos)
        a2, n = torch.where(neg)
        pos_pair: Tensor | list = mat[pos] if len(a1) > 0 else []
        neg_pair: Tensor | list = mat[neg] if len(a2) > 0 else []
        loss_dict = loss._compute_loss(pos_pair, neg_pair, (a1, p, a2, n))
    return poison_nonfinite(loss_dict, embeddings, ref_emb)
