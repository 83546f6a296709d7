"""Pair losses as pure functions.

Contrastive, intra-pair variance, (generalized) lifted structure, multi-similarity and circle
losses.

Two input forms:

* pair-list losses take the matrix entries of each listed pair (``pos_pair (P,)``,
  ``neg_pair (Nn,)``; duplicates count);
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
from pml.reducers.functional import threshold_mask

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


def _masked_lse(x: Tensor, keep: Tensor, dim: int = 1, add_one: bool = False) -> Tensor:
    """``log(sum(exp(x[keep])))`` along ``dim`` (``log(1 + ...)`` with ``add_one``).

    Slices without a kept entry give exactly 0; the reduced dimension is dropped. Same values
    as the reference's masked log-sum-exp (``pml.core.functional.logsumexp``), but masked
    entries are ``-inf`` instead of ``finfo.min``: ``exp`` of huge negative finite numbers
    takes a slow underflow path on CPU (about 10x slower), ``exp(-inf)`` does not. ``where``
    and ``amax`` are used instead of ``masked_fill`` and ``any`` (several times faster on
    CPU). ``x`` must already be in the accumulation dtype; ``keep`` is boolean.
    """
    has = keep.amax(dim=dim, keepdim=True)
    xm = torch.where(keep, x, float("-inf"))
    mx = xm.amax(dim=dim, keepdim=True).detach()
    # empty slices: shift by 0 (not -inf) and sum to 1, so that nothing is NaN, not even grads
    mx = mx.clamp_min(0) if add_one else torch.where(has, mx, 0)
    total = (xm - mx).exp_().sum(dim=dim, keepdim=True)  # in place: one allocation less
    total = total + torch.exp(-mx) if add_one else total + (~has).to(total.dtype)
    out = mx + torch.log(total)
    return torch.where(has, out, 0).squeeze(dim)


def _acc(x: Tensor) -> Tensor:
    return x.to(accumulation_dtype(x.dtype))


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
    # in-place relu on the fresh margin tensors: one allocation per side, not two
    pos = _margin(pos_pair, pos_margin, is_inverted).relu_()
    neg = _margin(neg_margin, neg_pair, is_inverted).relu_()
    return pos, neg


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
    pos = _acc(pos_pair)
    neg = _acc(neg_pair)
    mu_p = pos.mean() if pos_mean is None else _acc(pos_mean)
    mu_n = neg.mean() if neg_mean is None else _acc(neg_mean)
    if is_inverted:
        pos_loss = ((1 - pos_eps) * mu_p - pos).relu_().square()
        neg_loss = (neg - (1 + neg_eps) * mu_n).relu_().square()
    else:
        pos_loss = (pos - (1 + pos_eps) * mu_p).relu_().square()
        neg_loss = ((1 - neg_eps) * mu_n - neg).relu_().square()
    return pos_loss.to(pos_pair.dtype), neg_loss.to(neg_pair.dtype)


class _MaskedHingeMean(torch.autograd.Function):
    """Mean over kept cells of ``relu(sign * (x - center)) ** power``; fused backward.

    Autograd would keep and replay about six ``(N, M)`` passes (sub, relu, pow, where and
    their backward); here the gradient is one to three vectorised passes. ``where`` is only
    used with ``mask`` (label masks are regular); a data-dependent ``where`` (hinge active or
    not) is several times slower on CPU, so the active cells are read from the kept losses'
    sign instead. See :func:`masked_hinge_mean`.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        x: Tensor,
        mask: Tensor,
        offset: float,
        sign: int,
        power: int,
        center_coef: float | None,
        low: float | None,
        high: float | None,
    ) -> Tensor:
        xa = _acc(x)
        mask_count = torch.count_nonzero(mask)
        if center_coef is None:
            center: Tensor | float = offset
        else:
            center = center_coef * (torch.where(mask, xa, 0).sum() / mask_count.clamp_min(1))
        r = (xa - center if sign > 0 else center - xa).relu_()
        loss = r if power == 1 else r.square()
        if high is None and (low is None or low <= 0):
            # losses are >= 0: a threshold at or below 0 only drops zeros, which add nothing
            kept = torch.where(mask, loss, 0)
            count = mask_count if low is None or low < 0 else torch.count_nonzero(kept)
        else:
            keep = mask & threshold_mask(loss, low, high)
            kept = loss * keep
            count = torch.count_nonzero(keep)
        value = kept.sum() / count.clamp_min(1)
        ctx.save_for_backward(kept, count, mask, mask_count)
        ctx.sign, ctx.power, ctx.center_coef = sign, power, center_coef
        ctx.dtypes = (x.dtype, xa.dtype)
        return value.to(x.dtype)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple:  # type: ignore[override]
        dtype, acc = ctx.dtypes  # type: ignore[attr-defined]
        sign, power, coef = ctx.sign, ctx.power, ctx.center_coef  # type: ignore[attr-defined]
        kept, count, mask, mask_count = ctx.saved_tensors  # type: ignore[attr-defined]
        scale = grad.to(acc) * sign / count.clamp_min(1)
        if power == 1:
            # d relu / dx on kept cells: 1 where the kept loss is > 0, else 0
            grad_x = torch.sign(kept).mul_(scale)
        else:
            kept_r = kept.sqrt()  # relu(...) on kept cells, 0 elsewhere
            grad_x = kept_r * (2 * scale)
            if coef is not None:  # through the center: coef * mean over the mask
                shift = 2 * scale * coef * kept_r.sum() / mask_count.clamp_min(1)
                grad_x = grad_x - torch.where(mask, shift, 0)
        return grad_x.to(dtype), None, None, None, None, None, None, None


def masked_hinge_mean(
    x: Tensor,
    mask: Tensor,
    *,
    offset: float = 0.0,
    sign: int = 1,
    power: int = 1,
    center_coef: float | None = None,
    low: float | None = None,
    high: float | None = None,
) -> Tensor:
    """Mean of ``relu(sign * (x - center)) ** power`` over the kept cells of ``mask``, 0-dim.

    ``center`` is ``offset``, or ``center_coef * mean(x[mask])`` (differentiated) when
    ``center_coef`` is given. Kept cells: in ``mask`` and, when given, ``> low`` / ``< high``
    (a reducer's threshold on the per-cell losses). 0 when no cell is kept. This is what the
    mean/threshold reducers give for a pair-list loss whose pairs are the cells of ``mask``
    (contrastive: ``power=1``; intra-pair variance: ``power=2`` with a centre at a mean),
    without listing the pairs, in >= float32, with a fused backward.

    Args:
        x: values, shape ``(N, M)``.
        mask: boolean cells, shape ``(N, M)``.
        offset: fixed centre (ignored with ``center_coef``).
        sign: ``1`` for ``relu(x - center)``, ``-1`` for ``relu(center - x)``.
        power: 1 or 2.
        center_coef: centre = ``center_coef * mean(x[mask])``.
        low: keep losses strictly above (None: no bound).
        high: keep losses strictly below (None: no bound).

    Returns:
        0-dim tensor, dtype of ``x``.

    Example:
        >>> x = torch.tensor([[0.2, 1.5], [0.9, 0.4]])
        >>> masked_hinge_mean(x, torch.ones(2, 2, dtype=torch.bool), offset=1.0, sign=-1, low=0)
        tensor(0.5000)
    """
    return _MaskedHingeMean.apply(x, mask, offset, sign, power, center_coef, low, high)


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
    pos_lse = _masked_lse(_margin(x, pos_margin, is_inverted), pos_mask.bool())
    neg_lse = _masked_lse(_margin(neg_margin, x, is_inverted), neg_mask.bool())
    return torch.relu(pos_lse + neg_lse).unsqueeze(1).to(mat.dtype)


def _weighted_lse(z: Tensor, weight: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """``log(sum(weight * exp(z)))`` along ``dim`` with ``finfo.min`` for empty slices.

    Returns the values and a bool "slice has a positive weight" tensor.
    """
    keep = weight if weight.dtype == torch.bool else weight > 0
    if weight.dtype != torch.bool:
        z = z + torch.log(weight.to(z.dtype).clamp_min(1))  # counts >= 1 where kept
    has = keep.amax(dim=dim)
    out = _masked_lse(z, keep, dim=dim)
    return torch.where(has, out, neg_inf(z.dtype)), has


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
    row_lse, row_has = _weighted_lse(z, neg_weight, dim=1)
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
        col_lse, col_has = _weighted_lse(z, neg_weight, dim=0)
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
    pos_term = _masked_lse(_margin(x, base, is_inverted).mul_(alpha), pos_mask.bool(), add_one=True)
    neg_term = _masked_lse(_margin(base, x, is_inverted).mul_(beta), neg_mask.bool(), add_one=True)
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
    total = _masked_lse(logit_p, pos) + _masked_lse(logit_n, neg)
    loss = torch.where(pos.amax(dim=1) & neg.amax(dim=1), F.softplus(total), 0)
    return loss.unsqueeze(1).to(mat.dtype)
