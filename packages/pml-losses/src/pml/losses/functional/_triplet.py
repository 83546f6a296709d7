"""The triplet family: triplet margin, margin, dynamic soft margin, histogram and TCM losses.

Per-triplet functions take the anchor-positive / anchor-negative values of listed triplets.
The ``*_sums`` / ``*_from_mat`` functions cover *all* triplets of a batch (from labels, or from
a pairs tuple ``(a1, p, a2, n)``) without enumerating them: see ``_triplet_engine``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pml.core.dtypes import accumulation_dtype, pos_inf
from pml.losses.functional._triplet_engine import (
    block_sums,
    dense_layout,
    distance_like,
    layout_for,
    threshold_sums,
)

__all__ = [
    "dynamic_soft_margin_loss",
    "dynamic_soft_margin_loss_from_mat",
    "dynamic_soft_margin_paired_x",
    "margin_loss",
    "margin_loss_sums",
    "triplet_margin_loss",
    "triplet_margin_loss_sums",
]


# ---------------------------------------------------------------------------------------------
# TripletMarginLoss


def triplet_margin_loss(
    ap: Tensor,
    an: Tensor,
    margin: float = 0.05,
    *,
    smooth: bool = False,
    is_inverted: bool = False,
) -> Tensor:
    """Per-triplet margin loss from anchor-positive and anchor-negative values.

    ``relu(ap - an + margin)`` (distances) or ``relu(an - ap + margin)`` (similarities);
    ``softplus`` instead of ``relu`` when ``smooth``. For the "swap" variant pass
    ``an = smallest_dist(an, pn)``.

    Args:
        ap: anchor-positive distances or similarities, shape ``(T,)``.
        an: anchor-negative distances or similarities, shape ``(T,)``.
        margin: wanted gap between negatives and positives.
        smooth: use ``softplus`` instead of ``relu``.
        is_inverted: ``True`` when larger values mean closer.

    Returns:
        Unreduced losses, shape ``(T,)``, dtype and device of ``ap``.

    Example:
        >>> triplet_margin_loss(torch.tensor([0.2, 0.9]), torch.tensor([0.5, 0.4]), margin=0.1)
        tensor([0.0000, 0.6000])
    """
    violation = (an - ap if is_inverted else ap - an) + margin
    return torch.nn.functional.softplus(violation) if smooth else torch.relu(violation)


def triplet_margin_loss_sums(
    mat: Tensor,
    labels: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    pairs: Sequence[Tensor] | None = None,
    margin: float = 0.05,
    smooth: bool = False,
    swap_mat: Tensor | None = None,
    is_inverted: bool = False,
    low: float | None = 0.0,
    same_set: bool | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Sum and count of the triplet losses ``> low`` over all triplets, without listing them.

    Triplets are every ``(a, p, n)`` with ``p`` a positive and ``n`` a negative of anchor ``a``:
    from labels (``labels[a] == ref_labels[p] != ref_labels[n]``, self pairs removed in the
    same-set case) or, with ``pairs = (a1, p, a2, n)``, every positive entry joined with every
    negative entry of the same anchor (duplicates count), like :func:`triplet_margin_loss` on
    ``pml.core.indices.convert_to_triplets`` output.

    The hinge without swap costs ``O(N M log M)`` time (per-anchor sorted negatives,
    ``searchsorted`` and prefix sums); ``smooth`` or ``swap_mat`` enumerate triplets in
    bounded blocks (``O(T)`` time). Memory is ``O(N M)`` in every case.

    Args:
        mat: distances or similarities, shape ``(N, M)``.
        labels: query labels ``(N,)`` (when ``pairs`` is None).
        ref_labels: reference labels ``(M,)``; None for the query set itself.
        pairs: a pairs tuple ``(a1, p, a2, n)`` instead of labels.
        margin: the margin.
        smooth: softplus instead of relu.
        swap_mat: ``(M, M)`` values between references: use ``smallest_dist(an, pn)``.
        is_inverted: ``mat`` holds similarities.
        low: count losses strictly above ``low`` (None: all triplets).
        same_set: override the self-pair rule (default: ``ref_labels`` is None or ``labels``).

    Returns:
        ``(total, count, num_triplets)``: 0-dim sum (accumulation dtype; NaN if a used value is
        not finite), number of losses ``> low``, and the number of triplets (int64).

    Example:
        >>> mat = torch.tensor([[0.0, 0.3, 0.2], [0.3, 0.0, 0.5], [0.2, 0.5, 0.0]])
        >>> total, count, num = triplet_margin_loss_sums(mat, torch.tensor([0, 0, 1]), margin=0.2)
        >>> round(total.item(), 4), count.item(), num.item()
        (0.3, 1, 2)
    """
    layout = layout_for(mat.shape[0], labels, ref_labels, pairs, same_set)
    d = distance_like(mat, is_inverted)
    if smooth or swap_mat is not None:
        d_pn = None
        if swap_mat is not None:
            d_pn = d if swap_mat is mat else distance_like(swap_mat, is_inverted)
        return block_sums(d, layout, margin, smooth=smooth, d_pn=d_pn, low=low)
    # hinge: loss > tau  <=>  x = d_ap - d_an > tau - margin; losses are >= 0, so a negative
    # `low` selects every triplet while the non-zero ones carry the whole sum.
    tau = 0.0 if low is None or low < 0 else float(low)
    sums, counts = threshold_sums(d, layout, [tau - margin], "gt")
    total = sums[0] + margin * counts[0].to(sums.dtype)
    count = counts[-1] if low is None or low < 0 else counts[0]
    return total, count, counts[-1]


# ---------------------------------------------------------------------------------------------
# MarginLoss


def margin_loss(
    ap: Tensor, an: Tensor, beta: Tensor | float, margin: float = 0.2, *, is_inverted: bool = False
) -> tuple[Tensor, Tensor]:
    """Per-triplet terms of the margin loss (Wu et al., 2017).

    ``pos = relu(ap - beta + margin)``, ``neg = relu(beta - an + margin)`` for distances
    (``beta - ap`` / ``an - beta`` for similarities).

    Args:
        ap: anchor-positive values, shape ``(T,)`` (any broadcastable shape).
        an: anchor-negative values, same shape.
        beta: the boundary, scalar or broadcastable tensor (per triplet).
        margin: the margin ``alpha``.
        is_inverted: ``True`` for similarities.

    Returns:
        ``(pos, neg)``, each shaped like ``ap``.

    Example:
        >>> pos, neg = margin_loss(torch.tensor([1.3]), torch.tensor([1.1]), 1.2, 0.2)
        >>> [round(v, 4) for v in (pos.item(), neg.item())]
        [0.3, 0.3]
    """
    return _margin_pos(ap, beta, margin, is_inverted), _margin_neg(an, beta, margin, is_inverted)


def _margin_pos(ap: Tensor, beta: Tensor | float, margin: float, is_inverted: bool) -> Tensor:
    return torch.relu((beta - ap if is_inverted else ap - beta) + margin)


def _margin_neg(an: Tensor, beta: Tensor | float, margin: float, is_inverted: bool) -> Tensor:
    return torch.relu((an - beta if is_inverted else beta - an) + margin)


def margin_loss_sums(
    mat: Tensor,
    beta: Tensor,
    labels: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    pairs: Sequence[Tensor] | None = None,
    margin: float = 0.2,
    is_inverted: bool = False,
    same_set: bool | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Margin-loss sums per anchor over all its triplets, in ``O(N M)``.

    Over triplets, ``pos`` depends on ``(a, p)`` only and ``neg`` on ``(a, n)`` only, so
    ``sum_t (pos_t + neg_t) = sum_(a,p) Nn_a pos_ap + sum_(a,n) P_a neg_an`` (``P_a``/``Nn_a``:
    positives/negatives of ``a``), and likewise for the number of non-zero terms.

    Args:
        mat: distances or similarities, shape ``(N, M)``.
        beta: boundary per anchor row, shape ``(N,)`` or ``(1,)``.
        labels: query labels ``(N,)`` (when ``pairs`` is None).
        ref_labels: reference labels ``(M,)``; None for the query set.
        pairs: ``(a1, p, a2, n)`` instead of labels (entries joined per anchor).
        margin: the margin ``alpha``.
        is_inverted: ``mat`` holds similarities.
        same_set: override the self-pair rule.

    Returns:
        ``(losses, divisor, num_triplets)``: ``sum_t pos_t + neg_t`` per anchor ``(N,)``
        (accumulation dtype), the number of non-zero ``pos_t`` and ``neg_t`` terms (0-dim
        int64) and the number of triplets per anchor ``(N,)`` (int64).

    Example:
        >>> mat = torch.tensor([[0.0, 1.0, 1.5], [1.0, 0.0, 1.1], [1.5, 1.1, 0.0]])
        >>> beta, labels = torch.tensor([1.2]), torch.tensor([0, 0, 1])
        >>> losses, divisor, num = margin_loss_sums(mat, beta, labels)
        >>> [round(v, 4) for v in losses.tolist()], divisor.item(), num.tolist()
        ([0.0, 0.3, 0.0], 1, [1, 1, 0])
    """
    acc = accumulation_dtype(mat.dtype)
    n = mat.shape[0]
    beta = beta.to(device=mat.device, dtype=acc).reshape(-1).expand(n)
    if pairs is not None:
        a1, p, a2, nn_ = (t.long() for t in pairs)
        n_pos = torch.bincount(a1, minlength=n)[:n]
        n_neg = torch.bincount(a2, minlength=n)[:n]
        pos = _margin_pos(mat[a1, p].to(acc), beta[a1], margin, is_inverted)
        neg = _margin_neg(mat[a2, nn_].to(acc), beta[a2], margin, is_inverted)
        pos_w, neg_w = n_neg[a1], n_pos[a2]
        zeros = torch.zeros(n, dtype=acc, device=mat.device)
        losses = zeros.index_add(0, a1, pos_w * pos).index_add(0, a2, neg_w * neg)
        divisor = (pos_w * (pos > 0)).sum() + (neg_w * (neg > 0)).sum()
        return losses, divisor, n_pos * n_neg
    pos_mask, neg_mask = dense_layout(labels, ref_labels, same_set).masks(0, n)
    n_pos, n_neg = pos_mask.sum(dim=1), neg_mask.sum(dim=1)
    m = mat.to(acc)
    pos, neg = margin_loss(m, m, beta.unsqueeze(1), margin, is_inverted=is_inverted)
    pos, neg = torch.where(pos_mask, pos, 0), torch.where(neg_mask, neg, 0)
    losses = n_neg * pos.sum(dim=1) + n_pos * neg.sum(dim=1)
    divisor = (n_neg * (pos > 0).sum(dim=1)).sum() + (n_pos * (neg > 0).sum(dim=1)).sum()
    return losses, divisor, n_pos * n_neg


# ---------------------------------------------------------------------------------------------
# DynamicSoftMarginLoss


def _dsm_edges(min_val: float, num_bins: int) -> list[float]:
    delta = 2 * abs(min_val) / num_bins
    return [min_val + k * delta for k in range(num_bins)]


def _dsm_from_sums(
    sums: Tensor,
    counts: Tensor,
    total: Tensor,
    num: Tensor,
    hist: Tensor,
    min_val: float,
    momentum: float,
) -> tuple[Tensor, Tensor]:
    """Loss and updated histogram from per-threshold sums.

    ``sums[k] = sum(x < e_k)``, ``counts[k] = #(x < e_k)``, ``total = sum(x)``, ``num = #x``,
    with ``e_k = min_val + k * delta``.
    """
    nb = hist.numel()
    acc = sums.dtype
    delta = 2 * abs(min_val) / nb
    cnt = counts.to(acc)
    n_num = num.to(acc)
    # A value x sits at u = (x - min_val) / delta on the node axis. Inside bin b (node b <= u
    # < node b + 1, b < nb - 1) it gives 1 - frac(u) to node b and frac(u) to node b + 1;
    # below node 0 it all goes to node 0, at or above the last node all to the last node. So
    # only each region's count and sum of x are needed (differences of the prefix sums), with
    # sum(frac(u)) = (x_bin - n_bin * min_val) / delta - b * n_bin in bin b; the loss weights
    # the x of bin b by CDF[b] (node 0 below the range, the last node above it).
    n_low, x_low = cnt[0], sums[0]
    n_bin, x_bin = cnt[1:] - cnt[:-1], sums[1:] - sums[:-1]
    n_high, x_high = n_num - cnt[-1], total - sums[-1]
    b = torch.arange(nb - 1, device=sums.device, dtype=acc)
    sum_alpha = (x_bin - n_bin * min_val) / delta - b * n_bin  # sum of frac(u) in bin b
    pad = torch.nn.functional.pad  # node b: its own bin's lower share + bin b - 1's upper share
    contrib = (pad(n_bin - sum_alpha, (0, 2)) + pad(sum_alpha, (1, 1)))[:nb]
    contrib = torch.cat([contrib[:1] + n_low, contrib[1:]])
    contrib = torch.cat([contrib[:-1], contrib[-1:] + n_high])
    old = hist.to(device=sums.device, dtype=acc)
    mom = torch.where(old.sum() != 0, old.new_tensor(momentum), old.new_tensor(1.0))
    new = (1 - mom) * old + mom * contrib
    new = new / new.sum()
    cdf = torch.cumsum(new, 0)
    weighted = cdf[0] * x_low + (cdf[:-1] * x_bin).sum() + cdf[-1] * x_high
    return weighted / n_num, new


def dynamic_soft_margin_loss(
    x: Tensor, hist: Tensor, min_val: float = -2.0, momentum: float = 0.01
) -> tuple[Tensor, Tensor]:
    """Dynamic soft margin loss (Zhang et al., 2019) of explicit values ``x = d_ap - d_an``.

    The histogram ``hist`` (``num_bins`` nodes over ``[min_val, -min_val)``, spacing
    ``delta = 2 |min_val| / num_bins``) is blended with the soft (linearly interpolated)
    histogram of ``x``: ``new = (1 - mom) hist + mom h(x)``, ``mom = momentum`` (1 while
    ``hist`` is all zeros), normalized to sum 1. The loss is ``mean_t CDF[idx_t] x_t`` with
    ``CDF = cumsum(new)`` and ``idx_t = floor((x_t - min_val) / delta)``. Values outside the
    node range go to the first or last node (the reference raised an index error).

    Args:
        x: shape ``(T,)``, ``T > 0``.
        hist: ``(num_bins,)`` running histogram.
        min_val: lower end of the histogram (negative).
        momentum: blending weight of the current batch.

    Returns:
        ``(loss, new_hist)``: 0-dim loss (dtype of ``x``) and the updated histogram
        (accumulation dtype, attached to the graph of ``x``).

    Example:
        >>> loss, h = dynamic_soft_margin_loss(torch.tensor([-0.5, 0.3]), torch.zeros(4))
        >>> round(loss.item(), 4), [round(v, 3) for v in h.tolist()]
        (0.065, [0.0, 0.25, 0.6, 0.15])
    """
    acc = accumulation_dtype(x.dtype)
    xa = x.to(acc).reshape(-1)
    xs = torch.sort(xa).values
    edges = torch.tensor(_dsm_edges(min_val, hist.numel()), dtype=acc, device=x.device)
    counts = torch.searchsorted(xs, edges, side="left")
    prefix = torch.nn.functional.pad(torch.cumsum(xs, 0), (1, 0))
    sums = prefix[counts]
    num = torch.tensor(xa.numel(), device=x.device)
    loss, new = _dsm_from_sums(sums, counts, xa.sum(), num, hist, min_val, momentum)
    return loss.to(x.dtype), new


def dynamic_soft_margin_loss_from_mat(
    mat: Tensor,
    hist: Tensor,
    labels: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    pairs: Sequence[Tensor] | None = None,
    min_val: float = -2.0,
    momentum: float = 0.01,
    same_set: bool | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`dynamic_soft_margin_loss` over all triplets of a distance matrix, unlisted.

    ``x = mat[a, p] - mat[a, n]`` for every triplet from labels or a pairs tuple (see
    :func:`triplet_margin_loss_sums`). Only per-bin sums are needed, so each threshold
    ``min_val + k delta`` is one sorted-prefix-sum pass: ``O(num_bins N M log M)`` time,
    ``O(N M)`` memory.

    Args:
        mat: distances, shape ``(N, M)``.
        hist: ``(num_bins,)`` running histogram.
        labels: query labels (when ``pairs`` is None).
        ref_labels: reference labels; None for the query set.
        pairs: ``(a1, p, a2, n)`` instead of labels.
        min_val: lower end of the histogram.
        momentum: blending weight of the current batch.
        same_set: override the self-pair rule.

    Returns:
        ``(loss, new_hist, num_triplets)``; ``loss`` is NaN when there is no triplet.
    """
    layout = layout_for(mat.shape[0], labels, ref_labels, pairs, same_set)
    d = distance_like(mat, False)
    edges = _dsm_edges(min_val, hist.numel())
    sums, counts = threshold_sums(d, layout, edges, "lt", with_total=True)
    loss, new = _dsm_from_sums(
        sums[:-1], counts[:-1], sums[-1], counts[-1], hist, min_val, momentum
    )
    return loss.to(mat.dtype), new, counts[-1]


def dynamic_soft_margin_paired_x(mat: Tensor) -> Tensor:
    """``x`` of the paired mode (no labels): row ``i`` of query and reference are the pair.

    ``d_pos`` = diagonal, ``d_neg`` = the smaller of the row and column minima excluding the
    diagonal; with ``r != c`` the vectors are zero-padded to ``max(r, c)`` (like the
    reference). The diagonal is masked out of place, so the graph stays intact.

    Args:
        mat: distances, shape ``(r, c)``.

    Returns:
        ``x = d_pos - d_neg``, shape ``(max(r, c),)``.

    Example:
        >>> dynamic_soft_margin_paired_x(torch.tensor([[0.1, 0.9], [0.8, 0.2]]))
        tensor([-0.7000, -0.6000])
    """
    r, c = mat.shape
    size, k = max(r, c), min(r, c)
    eye = torch.eye(r, c, dtype=torch.bool, device=mat.device)
    masked = mat.masked_fill(eye, pos_inf(mat.dtype))
    d_pos = torch.nn.functional.pad(mat.diagonal(), (0, size - k))
    min_a = torch.nn.functional.pad(masked.min(dim=0).values, (0, size - c))
    min_p = torch.nn.functional.pad(masked.min(dim=1).values, (0, size - r))
    return d_pos - torch.minimum(min_a, min_p)


# ---------------------------------------------------------------------------------------------
# ThresholdConsistentMarginLoss
