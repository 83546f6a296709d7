"""Selectively contrastive triplet loss (Xuan et al., ECCV 2020).

"Hard negative examples are hard, but useful".
A triplet whose negative is more similar to the anchor than the positive (a *hard* triplet,
``s_an > s_ap``) only pushes the negative away (a contrastive term ``λ·s_an``); every other
triplet takes the NCA-style triplet term ``-log softmax`` of the positive against the
negative.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pml.core.dtypes import accumulation_dtype
from pml.losses.functional._softmax_ops import softplus_exact

__all__ = ["selectively_contrastive_triplet_loss"]


def selectively_contrastive_triplet_loss(
    mat: Tensor,
    a: Tensor,
    p: Tensor,
    n: Tensor,
    temperature: float = 0.1,
    hard_weight: float = 1.0,
    *,
    is_inverted: bool = True,
) -> Tensor:
    """Selectively contrastive triplet loss of every triplet (Xuan et al., ECCV 2020).

    With ``s`` the similarities (``-d`` for a distance), ``s_ap = s[a, p]`` and
    ``s_an = s[a, n]``:

    * ``s_an > s_ap`` (a hard triplet): ``loss = λ · s_an`` (the gradient only pushes the
      negative away from the anchor);
    * otherwise: ``loss = -log(exp(s_ap/T) / (exp(s_ap/T) + exp(s_an/T)))
      = softplus((s_an - s_ap) / T)`` (the NCA triplet loss).

    Args:
        mat: similarities or distances, shape ``(N, M)``.
        a: anchor (row) index of each triplet, int64 ``(T,)``.
        p: positive (column) index, int64 ``(T,)``.
        n: negative (column) index, int64 ``(T,)``.
        temperature: ``T > 0`` of the NCA term.
        hard_weight: ``λ``, the weight of the contrastive term of hard triplets.
        is_inverted: ``True`` when ``mat`` holds similarities.

    Returns:
        Unreduced losses, shape ``(T,)``, dtype of ``mat`` (computed in at least float32).
        Hard triplets can give negative values (``s_an < 0``).

    Example:
        >>> sim = torch.tensor([[1.0, 0.8, 0.2], [0.8, 1.0, 0.9]])
        >>> a, p, n = torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([2, 2])
        >>> selectively_contrastive_triplet_loss(sim, a, p, n, temperature=0.5)
        tensor([0.2633, 0.9000])
    """
    acc = accumulation_dtype(mat.dtype)
    s = mat.to(acc)
    if not is_inverted:
        s = -s
    s_ap, s_an = s[a, p], s[a, n]
    nca = softplus_exact((s_an - s_ap) / temperature)
    return torch.where(s_an > s_ap, hard_weight * s_an, nca).to(mat.dtype)
