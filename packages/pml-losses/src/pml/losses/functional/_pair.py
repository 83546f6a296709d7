"""Pair losses as pure functions.

Contrastive, intra-pair variance, (generalized) lifted structure, multi-similarity and circle
losses.

Two input forms:

* pair-list losses take the matrix entries of each listed pair (``pos_pair (P,)``,
  ``neg_pair (Nn,)``; duplicates count); their formula is a pair of hinges
  (``*_hinges``), which the classes also sum over a negative mask (``_pair_ops``);
* matrix losses take ``mat (N, M)`` and boolean (or 0/1) ``pos_mask`` / ``neg_mask`` of the
  same shape and return one value per row.

``is_inverted`` says whether ``mat`` holds similarities (larger = closer). Margins follow the
distance convention ``margin(x, y) = x - y`` (distance) or ``y - x`` (similarity). Everything
is computed in at least float32 and returned in the input's dtype. Memory is ``O(N * M)``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from pml.core.dtypes import accumulation_dtype, neg_inf
from pml.core.functional import masked_logsumexp
from pml.losses.functional._pair_ops import Hinge, hinge_losses, weighted_logsumexp

__all__ = [
    "circle_loss",
    "contrastive_loss",
    "generalized_lifted_structure_loss",
    "intra_pair_variance_loss",
    "lifted_structure_loss",
    "multi_similarity_loss",
]


def _margin(x: Tensor | float, y: Tensor | float, is_inverted: bool) -> Tensor:
    """``x - y`` for a distance, ``y - x`` for a similarity (the reference's ``margin``)."""
    return y - x if is_inverted else x - y  # type: ignore[return-value]


def _acc(x: Tensor) -> Tensor:
    return x.to(accumulation_dtype(x.dtype))


def contrastive_hinges(
    pos_margin: Tensor | float, neg_margin: Tensor | float, is_inverted: bool
) -> tuple[Hinge, Hinge]:
    """The contrastive formula: ``relu(margin(v, pos_margin))``, ``relu(margin(neg_margin, v))``."""
    sign = -1 if is_inverted else 1
    return Hinge(sign, pos_margin), Hinge(-sign, neg_margin)


def contrastive_loss(
    pos_pair: Tensor,
    neg_pair: Tensor,
    pos_margin: float = 0.0,
    neg_margin: float = 1.0,
    *,
    is_inverted: bool = False,
) -> tuple[Tensor, Tensor]:
    """Per-pair contrastive losses (Hadsell et al., 2006).

    Positive pairs: ``relu(margin(v, pos_margin))``; negative pairs:
    ``relu(margin(neg_margin, v))`` (distance: ``relu(d - pos_margin)`` and
    ``relu(neg_margin - d)``; similarity: ``relu(pos_margin - s)`` and ``relu(s - neg_margin)``).

    Args:
        pos_pair: distances/similarities of the positive pairs, shape ``(P,)``.
        neg_pair: distances/similarities of the negative pairs, shape ``(Nn,)``.
        pos_margin: positive pairs closer than this give no loss.
        neg_margin: negative pairs farther than this give no loss.
        is_inverted: ``True`` when the values are similarities.

    Returns:
        ``(pos_losses (P,), neg_losses (Nn,))`` in the inputs' dtypes.

    Example:
        >>> pos, neg = contrastive_loss(torch.tensor([0.2, 0.0]), torch.tensor([0.5, 1.5]))
        >>> pos.tolist(), neg.tolist()
        ([0.20000000298023224, 0.0], [0.5, 0.0])
    """
    pos, neg = contrastive_hinges(pos_margin, neg_margin, is_inverted)
    return hinge_losses(pos_pair, pos), hinge_losses(neg_pair, neg)


def intra_pair_variance_hinges(
    pos_eps: Tensor | float, neg_eps: Tensor | float, is_inverted: bool
) -> tuple[Hinge, Hinge]:
    """The intra-pair variance formula (see :func:`intra_pair_variance_loss`) as two hinges."""
    if is_inverted:
        return Hinge(-1, power=2, center_coef=1 - pos_eps), Hinge(
            1, power=2, center_coef=1 + neg_eps
        )
    return Hinge(1, power=2, center_coef=1 + pos_eps), Hinge(-1, power=2, center_coef=1 - neg_eps)


def intra_pair_variance_loss(
    pos_pair: Tensor,
    neg_pair: Tensor,
    pos_eps: float = 0.01,
    neg_eps: float = 0.01,
    *,
    is_inverted: bool = True,
    pos_mean: Tensor | None = None,
    neg_mean: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-pair intra-pair variance losses (Yu & Tao, ICCV 2019, tuplet margin paper).

    With ``mu_p`` / ``mu_n`` the means of the positive / negative values (not detached):
    similarity: ``relu((1 - pos_eps) mu_p - s)^2`` and ``relu(s - (1 + neg_eps) mu_n)^2``;
    distance: ``relu(d - (1 + pos_eps) mu_p)^2`` and ``relu((1 - neg_eps) mu_n - d)^2``.

    Args:
        pos_pair: values of the positive pairs, shape ``(P,)`` (``P >= 1``).
        neg_pair: values of the negative pairs, shape ``(Nn,)`` (``Nn >= 1``).
        pos_eps: relative slack around the positive mean.
        neg_eps: relative slack around the negative mean.
        is_inverted: ``True`` when the values are similarities.
        pos_mean: ``mu_p`` to use instead of the mean of ``pos_pair`` (0-dim); lets callers
            pass whole matrices as ``pos_pair`` / ``neg_pair`` (any shape) with masked means.
        neg_mean: likewise ``mu_n``.

    Returns:
        ``(pos_losses, neg_losses)``, shaped and typed like ``pos_pair`` and ``neg_pair``.

    Example:
        >>> pos, neg = intra_pair_variance_loss(torch.tensor([0.9, 0.5]), torch.tensor([0.1, 0.3]))
        >>> [round(v, 4) for v in pos.tolist() + neg.tolist()]
        [0.0, 0.0372, 0.0, 0.0096]
    """
    pos, neg = intra_pair_variance_hinges(pos_eps, neg_eps, is_inverted)
    return hinge_losses(pos_pair, pos, pos_mean), hinge_losses(neg_pair, neg, neg_mean)


def generalized_lifted_structure_loss(
    mat: Tensor,
    pos_mask: Tensor,
    neg_mask: Tensor,
    neg_margin: float = 1.0,
    pos_margin: float = 0.0,
    *,
    is_inverted: bool = False,
) -> Tensor:
    """Per-row generalized lifted structure loss (Hermans, Beyer & Leibe, 2017).

    ``relu(LSE_pos(margin(v, pos_margin)) + LSE_neg(margin(neg_margin, v)))`` per row, where an
    empty set's log-sum-exp is 0.

    Args:
        mat: distances/similarities, shape ``(N, M)``.
        pos_mask: positive cells, bool or 0/1, shape ``(N, M)``.
        neg_mask: negative cells, bool or 0/1, shape ``(N, M)``.
        neg_margin: wanted distance of negatives.
        pos_margin: wanted distance of positives.
        is_inverted: ``True`` when ``mat`` holds similarities.

    Returns:
        Shape ``(N, 1)``, dtype of ``mat``.

    Example:
        >>> mat = torch.tensor([[0.0, 0.2, 1.5], [0.2, 0.0, 0.4]])
        >>> pos = torch.tensor([[0, 1, 0], [1, 0, 0]]).bool()
        >>> generalized_lifted_structure_loss(mat, pos, ~pos & (mat > 0)).flatten()
        tensor([0.0000, 0.8000])
    """
    x = _acc(mat)
    pos_lse = masked_logsumexp(_margin(x, pos_margin, is_inverted), pos_mask.bool())
    neg_lse = masked_logsumexp(_margin(neg_margin, x, is_inverted), neg_mask.bool())
    return torch.relu(pos_lse + neg_lse).unsqueeze(1).to(mat.dtype)


def lifted_structure_loss(
    mat: Tensor,
    a1: Tensor,
    p: Tensor,
    neg_weight: Tensor,
    neg_margin: float = 1.0,
    pos_margin: float = 0.0,
    *,
    is_inverted: bool = False,
    same_set: bool = True,
) -> Tensor:
    """Per-positive-pair lifted structure loss (Oh Song et al., CVPR 2016).

    For a positive pair ``(a, p)`` let ``J`` be the negative pairs that touch it. Then
    ``loss = relu(LSE_J(margin(neg_margin, v_neg)) + margin(v_ap, pos_margin))^2 / 2`` (the LSE
    of an empty ``J`` is 0). In the same set (``same_set``, the reference's rule) ``J`` = the
    negative pairs whose first index is ``a`` or ``p``; with a separate reference set it is the
    negative pairs in row ``a`` or in column ``p`` (the negatives of query ``a`` and of
    reference ``p``). A negative pair is counted once even when it touches both.

    No ``(P, Nn)`` matrix is built: per-row (and per-column) log-sum-exps over the weighted
    negative cells are combined per positive pair, in ``O(N * M)`` memory.

    Args:
        mat: distances/similarities, shape ``(N, M)``.
        a1: anchors of the positive pairs (rows of ``mat``), shape ``(P,)``.
        p: positives (columns of ``mat``), shape ``(P,)``.
        neg_weight: how often each cell occurs as a negative pair: bool mask or counts,
            shape ``(N, M)``.
        neg_margin: wanted distance of negatives.
        pos_margin: wanted distance of positives.
        is_inverted: ``True`` when ``mat`` holds similarities.
        same_set: the reference set is the query set (then ``M == N``).

    Returns:
        Shape ``(P, 1)``, dtype of ``mat``.

    Example:
        >>> mat = torch.tensor([[0.0, 0.3, 1.2], [0.3, 0.0, 0.8], [1.2, 0.8, 0.0]])
        >>> neg = torch.tensor([[0, 0, 1], [0, 0, 1], [1, 1, 0]]).bool()
        >>> lifted_structure_loss(mat, torch.tensor([0, 1]), torch.tensor([1, 0]), neg).flatten()
        tensor([0.5131, 0.5131])
    """
    x = _acc(mat)
    z = _margin(neg_margin, x, is_inverted)
    row_lse, row_has = weighted_logsumexp(z, neg_weight, dim=1)
    a1, p = a1.long(), p.long()
    ra, has_a = row_lse[a1], row_has[a1]
    if same_set:
        # compat: the reference takes the negative pairs of rows a and p (p indexes rows).
        distinct = a1 != p
        rb = torch.where(distinct, row_lse[p], neg_inf(x.dtype))
        has_b = row_has[p] & distinct
        mx = torch.maximum(ra, rb).detach()
        total = torch.exp(ra - mx) + torch.exp(rb - mx)
    else:
        # fix: with a separate reference set the negatives of p are those of column p
        # (the reference used query row number p; docs/compatibility.md).
        col_lse, col_has = weighted_logsumexp(z, neg_weight, dim=0)
        rb, has_b = col_lse[p], col_has[p]
        mx = torch.maximum(ra, rb).detach()
        # cell (a, p) belongs to row a and column p: count its weight once
        w_ap = neg_weight[a1, p].to(x.dtype)
        total = torch.exp(ra - mx) + torch.exp(rb - mx) - w_ap * torch.exp(z[a1, p] - mx)
    neg_lse = torch.where(has_a | has_b, mx + torch.log(total), 0)
    hinge = torch.relu(neg_lse + _margin(x[a1, p], pos_margin, is_inverted))
    return (hinge**2 / 2).unsqueeze(1).to(mat.dtype)


def multi_similarity_loss(
    mat: Tensor,
    pos_mask: Tensor,
    neg_mask: Tensor,
    alpha: float = 2.0,
    beta: float = 50.0,
    base: float = 0.5,
    *,
    is_inverted: bool = True,
) -> Tensor:
    """Per-row multi-similarity loss (Wang et al., CVPR 2019).

    ``(1/alpha) log(1 + sum_pos exp(alpha margin(v, base)))
    + (1/beta) log(1 + sum_neg exp(beta margin(base, v)))``; for similarities
    ``exp(-alpha (s - base))`` and ``exp(beta (s - base))``.

    Args:
        mat: distances/similarities, shape ``(N, M)``.
        pos_mask: positive cells, bool or 0/1, shape ``(N, M)``.
        neg_mask: negative cells, bool or 0/1, shape ``(N, M)``.
        alpha: positive scale.
        beta: negative scale.
        base: similarity (or distance) offset.
        is_inverted: ``True`` when ``mat`` holds similarities.

    Returns:
        Shape ``(N, 1)``, dtype of ``mat``.

    Example:
        >>> mat = torch.tensor([[1.0, 0.8, 0.1], [0.8, 1.0, 0.6]])
        >>> pos = torch.tensor([[0, 1, 0], [1, 0, 0]]).bool()
        >>> multi_similarity_loss(mat, pos, torch.tensor([[0, 0, 1], [0, 0, 1]]).bool()).flatten()
        tensor([0.2187, 0.3189])
    """
    x = _acc(mat)
    pos_term = masked_logsumexp(
        _margin(x, base, is_inverted).mul_(alpha), pos_mask.bool(), add_one=True
    )
    neg_term = masked_logsumexp(
        _margin(base, x, is_inverted).mul_(beta), neg_mask.bool(), add_one=True
    )
    loss = (1.0 / alpha) * pos_term + (1.0 / beta) * neg_term
    return loss.unsqueeze(1).to(mat.dtype)


def circle_loss(
    mat: Tensor,
    pos_mask: Tensor,
    neg_mask: Tensor,
    m: float = 0.4,
    gamma: float = 80.0,
) -> Tensor:
    """Per-row circle loss (Sun et al., CVPR 2020) on cosine similarities.

    With detached weights ``ap = relu(1 + m - s)`` and ``an = relu(s + m)``:
    ``softplus(LSE_pos(-gamma ap (s - (1 - m))) + LSE_neg(gamma an (s - m)))``, 0 for rows
    lacking a positive or a negative cell.

    Args:
        mat: similarities, shape ``(N, M)``.
        pos_mask: positive cells, bool or 0/1, shape ``(N, M)``.
        neg_mask: negative cells, bool or 0/1, shape ``(N, M)``.
        m: relaxation margin.
        gamma: scale.

    Returns:
        Shape ``(N, 1)``, dtype of ``mat``.

    Example:
        >>> mat = torch.tensor([[1.0, 0.8, 0.1], [0.8, 1.0, 0.6]])
        >>> pos = torch.tensor([[0, 1, 0], [1, 0, 0]]).bool()
        >>> circle_loss(mat, pos, torch.tensor([[0, 0, 1], [0, 0, 1]]).bool()).flatten()
        tensor([4.1614e-10, 6.4017e+00])
    """
    s = _acc(mat)
    pos, neg = pos_mask.bool(), neg_mask.bool()
    sd = s.detach()
    logit_p = -gamma * torch.relu(1 + m - sd) * (s - (1 - m))
    logit_n = gamma * torch.relu(sd + m) * (s - m)
    total = masked_logsumexp(logit_p, pos) + masked_logsumexp(logit_n, neg)
    loss = torch.where(pos.amax(dim=1) & neg.amax(dim=1), F.softplus(total), 0)
    return loss.unsqueeze(1).to(mat.dtype)
