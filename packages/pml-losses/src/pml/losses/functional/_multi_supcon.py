"""Multi-label supervised contrastive loss: Jaccard similarity of label sets, weighted SupCon.

Zhang & Wu, "Multi-Label Supervised Contrastive Learning" (AAAI 2024). Labels are label sets,
given as boolean (or 0/1) ``(N, C)`` matrices; two samples are positives when the Jaccard
index of their label sets reaches a threshold, and each positive is weighted by it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pml.core.dtypes import accumulation_dtype
from pml.core.functional import masked_logsumexp

__all__ = ["label_set_jaccard", "multi_supcon_loss"]


def label_set_jaccard(
    labels: Tensor, ref_labels: Tensor | None = None, *, dtype: torch.dtype | None = None
) -> Tensor:
    """Jaccard index (shared labels / labels of either) of all pairs of label sets, ``(N, M)``.

    Two empty label sets are identical: their index is 1 (the formula is 0/0). An empty set
    and a non-empty one give 0. One ``(N, C) @ (C, M)`` product in ``dtype`` (float32 exact
    counts up to 2^24 classes per set).

    Args:
        labels: ``(N, C)`` label sets, bool (or 0/1 numbers: any non-zero entry is a label).
        ref_labels: ``(M, C)`` label sets, or None for ``labels`` itself.
        dtype: the floating dtype of the result; None: float64 for float64 labels, else
            float32.

    Returns:
        ``(N, M)`` in ``[0, 1]``.

    Example:
        >>> sets = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]]).bool()
        >>> label_set_jaccard(sets)
        tensor([[1.0000, 0.5000, 0.0000],
                [0.5000, 1.0000, 0.0000],
                [0.0000, 0.0000, 1.0000]])
    """
    if dtype is None:
        dtype = torch.float64 if labels.dtype == torch.float64 else torch.float32
    a = (labels != 0).to(dtype)
    b = a if ref_labels is None else (ref_labels != 0).to(dtype)
    inter = a @ b.t()
    union = a.sum(dim=1, keepdim=True) + b.sum(dim=1) - inter
    empty = union == 0  # both sets empty: identical sets
    return torch.where(empty, 1.0, inter / torch.where(empty, 1.0, union))


def multi_supcon_loss(
    mat: Tensor,
    jaccard: Tensor,
    pos_mask: Tensor,
    den_mask: Tensor,
    temperature: float = 0.1,
    *,
    is_inverted: bool = True,
) -> Tensor:
    """Per-row multi-label supervised contrastive loss.

    With ``z = s / temperature`` (``-d / temperature`` for a distance), ``N(i)`` the positive
    cells of row ``i`` and ``A(i)`` its cells in the denominator:

    ``loss_i = -1/|N(i)| · Σ_{p ∈ N(i)} J_ip · (z_ip - log Σ_{a ∈ A(i)} exp(z_ia))``.

    Rows without a positive give ``0``. ``pos_mask`` should lie inside ``den_mask``.

    Args:
        mat: distances/similarities, shape ``(N, M)``.
        jaccard: the positive weights ``J`` (:func:`label_set_jaccard`), shape ``(N, M)``.
        pos_mask: positive cells ``N(i)``, bool ``(N, M)``.
        den_mask: the cells ``A(i)`` of each row's softmax, bool ``(N, M)``.
        temperature: softmax temperature.
        is_inverted: ``True`` when ``mat`` holds similarities.

    Returns:
        Shape ``(N,)``, dtype of ``mat`` (computed in at least float32).

    Example:
        >>> mat = torch.tensor([[1.0, 0.8, 0.1], [0.8, 1.0, 0.6]])
        >>> jac = torch.tensor([[1.0, 0.5, 0.0], [0.5, 1.0, 0.0]])
        >>> pos = torch.tensor([[0, 1, 0], [1, 0, 0]]).bool()
        >>> den = torch.tensor([[0, 1, 1], [1, 0, 1]]).bool()
        >>> multi_supcon_loss(mat, jac, pos, den)
        tensor([0.0005, 0.0635])
    """
    x = mat.to(accumulation_dtype(mat.dtype))
    z = x / temperature if is_inverted else -x / temperature
    pos = pos_mask.bool()
    den = masked_logsumexp(z, den_mask.bool(), empty=0.0)
    weights = jaccard.to(x.dtype)
    log_prob_sum = torch.where(pos, weights * (z - den.unsqueeze(1)), 0).sum(dim=1)
    num_pos = torch.count_nonzero(pos, dim=1).to(x.dtype)
    return (-log_prob_sum / num_pos.clamp_min(1)).to(mat.dtype)
