"""Pair miners: multi-similarity, pair margin and HDC threshold the matrix; uniform histogram.

The histogram sampler consumes torch's global RNG like the reference on CPU: the draws of
its one ``torch.multinomial`` call per non-empty bin are reproduced from a single call to the
same generator (see :func:`histogram_sample`), so results under ``torch.manual_seed`` match.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pml.core.dtypes import accumulation_dtype, neg_inf, pos_inf
from pml.core.indices import PairsTuple, is_same_set, pos_neg_masks
from pml.miners.functional._sample import cap_tuples, capped_where, check_tuples_per_anchor

__all__ = [
    "hdc_miner",
    "histogram_sample",
    "multi_similarity_miner",
    "pair_margin_miner",
    "pair_margin_miner_stats",
    "uniform_histogram_miner",
]


def _empty_pairs(device: torch.device) -> PairsTuple:
    e = torch.empty(0, dtype=torch.long, device=device)
    return e, e.clone(), e.clone(), e.clone()


def _sorted_by_anchor_then_value(a: Tensor, j: Tensor, mat: Tensor) -> tuple[Tensor, Tensor]:
    """Cells ``(a, j)`` (row-major), ordered by row, then by ascending ``mat`` value (stable)."""
    order = torch.sort(mat[a, j], stable=True).indices
    order = order[torch.sort(a[order], stable=True).indices]
    return a[order], j[order]


def multi_similarity_miner(
    mat: Tensor,
    labels: Tensor,
    ref_labels: Tensor | None = None,
    *,
    epsilon: float = 0.1,
    is_inverted: bool = True,
    exclude_diagonal: bool | None = None,
    tuples_per_anchor: int | None = None,
) -> PairsTuple:
    """Pairs that violate the multi-similarity margin (Wang et al., CVPR 2019).

    For similarities, with ``hn(i)`` the most similar negative and ``hp(i)`` the least
    similar positive of anchor ``i``: positive ``(i, j)`` is kept iff ``s_ij - eps < hn(i)``,
    negative ``(i, k)`` iff ``s_ik + eps > hp(i)``. For distances the mirror image:
    ``d_ij + eps > min_neg``, ``d_ik - eps < max_pos``. An anchor without negatives keeps no
    positive, one without positives keeps no negative.

    Args:
        mat: similarity (or distance) matrix, shape ``(N, M)``.
        labels: shape ``(N,)``.
        ref_labels: shape ``(M,)``; None or ``labels`` itself for the same set.
        epsilon: the margin.
        is_inverted: ``True`` when ``mat`` holds similarities.
        exclude_diagonal: drop ``(i, i)`` from both sides; None means "same set" (decided
            from ``ref_labels`` by identity). The reference decides it by ``embeddings is
            ref_emb``, so the class passes that.
        tuples_per_anchor: keep at most this many positive and, separately, this many
            negative pairs per anchor, a uniformly random subset of the selected ones
            (torch's default generator of ``mat``'s device); None keeps all.

    Returns:
        ``(a1, p, a2, n)`` int64, by anchor and then by ascending matrix value.

    Example:
        >>> sim = torch.tensor([[1.0, 0.9, 0.2], [0.9, 1.0, 0.5], [0.2, 0.5, 1.0]])
        >>> [t.tolist() for t in multi_similarity_miner(sim, torch.tensor([0, 1, 1]))]
        [[1], [2], [1], [0]]
    """
    tuples_per_anchor = check_tuples_per_anchor(tuples_per_anchor)
    device = mat.device
    label_pos, label_neg = pos_neg_masks(labels, ref_labels)
    if not (bool(label_pos.any()) and bool(label_neg.any())):
        return _empty_pairs(device)
    ref = labels if ref_labels is None else ref_labels.to(labels.device)
    same = labels.unsqueeze(1) == ref.unsqueeze(0)
    pos, neg = same, ~same
    if is_same_set(labels, ref_labels) if exclude_diagonal is None else exclude_diagonal:
        diag = torch.eye(*mat.shape, dtype=torch.bool, device=same.device)
        pos, neg = pos & ~diag, neg & ~diag
    pos, neg = pos.to(device), neg.to(device)
    has_pos, has_neg = pos.any(1, keepdim=True), neg.any(1, keepdim=True)
    lo, hi = neg_inf(mat.dtype), pos_inf(mat.dtype)
    if is_inverted:
        hardest_neg = torch.where(neg, mat, lo).amax(1, keepdim=True)
        hardest_pos = torch.where(pos, mat, hi).amin(1, keepdim=True)
        keep_pos = pos & has_neg & (mat - epsilon < hardest_neg)
        keep_neg = neg & has_pos & (mat + epsilon > hardest_pos)
    else:
        hardest_neg = torch.where(neg, mat, hi).amin(1, keepdim=True)
        hardest_pos = torch.where(pos, mat, lo).amax(1, keepdim=True)
        keep_pos = pos & has_neg & (mat + epsilon > hardest_neg)
        keep_neg = neg & has_pos & (mat - epsilon < hardest_pos)
    a1, p = _sorted_by_anchor_then_value(*capped_where(keep_pos, tuples_per_anchor), mat)
    a2, n = _sorted_by_anchor_then_value(*capped_where(keep_neg, tuples_per_anchor), mat)
    return a1, p, a2, n


def pair_margin_miner(
    mat: Tensor,
    labels: Tensor,
    ref_labels: Tensor | None = None,
    *,
    pos_margin: float = 0.2,
    neg_margin: float = 0.8,
    is_inverted: bool = False,
    tuples_per_anchor: int | None = None,
) -> PairsTuple:
    """Positive pairs beyond ``pos_margin`` and negative pairs within ``neg_margin``.

    Distances: positives with ``d > pos_margin``, negatives with ``d < neg_margin``;
    similarities: ``s < pos_margin`` and ``s > neg_margin``. Row-major order.

    Args:
        mat: distance or similarity matrix, shape ``(N, M)``.
        labels: shape ``(N,)``.
        ref_labels: shape ``(M,)``; None or ``labels`` itself for the same set.
        pos_margin: threshold for positive pairs.
        neg_margin: threshold for negative pairs.
        is_inverted: ``True`` when ``mat`` holds similarities.
        tuples_per_anchor: keep at most this many positive and, separately, this many
            negative pairs per anchor, a uniformly random subset of the selected ones
            (torch's default generator of ``mat``'s device); None keeps all.

    Returns:
        ``(a1, p, a2, n)`` int64.

    Example:
        >>> d = torch.tensor([[0.0, 0.5, 0.6], [0.5, 0.0, 0.9], [0.6, 0.9, 0.0]])
        >>> [t.tolist() for t in pair_margin_miner(d, torch.tensor([0, 0, 1]))]
        [[0, 1], [1, 0], [0, 2], [2, 0]]
    """
    pos, neg = pos_neg_masks(labels, ref_labels)
    pos, neg = pos.to(mat.device), neg.to(mat.device)
    if is_inverted:
        pos, neg = pos & (mat < pos_margin), neg & (mat > neg_margin)
    else:
        pos, neg = pos & (mat > pos_margin), neg & (mat < neg_margin)
    a1, p = capped_where(pos, tuples_per_anchor)
    a2, n = capped_where(neg, tuples_per_anchor)
    return a1, p, a2, n


def pair_margin_miner_stats(
    mat: Tensor, labels: Tensor, ref_labels: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Mean value over all positive and over all negative pairs (0 where there are none).

    Returns:
        ``(mean positive, mean negative)``, 0-dim tensors in ``>= float32``.
    """
    pos, neg = pos_neg_masks(labels, ref_labels)
    pos, neg = pos.to(mat.device), neg.to(mat.device)
    m = mat.to(accumulation_dtype(mat.dtype))
    means = []
    for mask in (pos, neg):
        count = mask.sum()
        total = torch.where(mask, m, 0.0).sum()
        means.append(torch.where(count > 0, total / count.clamp_min(1), 0.0))
    return means[0], means[1]


def hdc_miner(
    mat: Tensor,
    pairs: PairsTuple,
    *,
    filter_percentage: float = 0.5,
    is_inverted: bool = False,
    tuples_per_anchor: int | None = None,
) -> PairsTuple:
    """Keep the hardest ``ceil(filter_percentage * count)`` pairs of each side.

    Hardest = largest distance (smallest similarity) for positives, smallest distance
    (largest similarity) for negatives; the output is in ``torch.topk`` order (hardest
    first). ``ceil`` is taken in Python float arithmetic, like the reference
    (``0.07 * 100 -> 8``).

    Args:
        mat: distance or similarity matrix, shape ``(N, M)``.
        pairs: ``(a1, p, a2, n)`` candidate pairs.
        filter_percentage: fraction kept on each side, in ``[0, 1]``.
        is_inverted: ``True`` when ``mat`` holds similarities.
        tuples_per_anchor: after the filter (which keeps the hardest pairs of the whole
            batch, as without it), keep at most this many of each anchor's remaining
            positive and, separately, negative pairs: a uniformly random subset (torch's
            default generator of ``mat``'s device), still in hardest-first order. None
            keeps all. A pair listed twice in ``pairs`` counts twice.

    Returns:
        ``(a1, p, a2, n)`` int64.

    Example:
        >>> d = torch.tensor([[0.0, 0.5, 0.6], [0.5, 0.0, 0.9], [0.6, 0.9, 0.0]])
        >>> pairs = (torch.tensor([0, 1]), torch.tensor([1, 0]),
        ...          torch.tensor([0, 1, 2, 2]), torch.tensor([2, 2, 0, 1]))
        >>> [t.tolist() for t in hdc_miner(d, pairs)]
        [[0], [1], [0, 2], [2, 0]]
    """
    tuples_per_anchor = check_tuples_per_anchor(tuples_per_anchor)
    out = list(pairs)
    for side, largest in ((0, not is_inverted), (2, is_inverted)):
        anchors, others = out[side], out[side + 1]
        if len(anchors) == 0:
            continue
        values = mat[anchors, others]
        k = math.ceil(filter_percentage * len(values))
        idx = torch.topk(values, k, largest=largest).indices
        out[side], out[side + 1] = anchors[idx], others[idx]
    return cap_tuples(tuple(out), tuples_per_anchor)  # type: ignore[arg-type]


def _first_cdf_reaching(u: Tensor, sizes: Tensor) -> Tensor:
    """Smallest ``j`` in ``[0, L)`` with ``float32((j + 1) / L) >= u``, the last one forced.

    This is where an inverse-CDF draw over ``L`` equal weights lands, computed with the
    same float32 cumulative values as ``torch.multinomial``; a vectorised binary search.
    """
    lo = torch.zeros_like(sizes)
    hi = sizes.clone()
    for _ in range(int(sizes.max()).bit_length() + 1):
        active = hi > lo
        mid = lo + (hi - lo) // 2
        cdf = ((mid + 1).to(torch.float64) / sizes).to(torch.float32).to(torch.float64)
        cdf = torch.where(mid == sizes - 1, 1.0, cdf)
        right = active & (cdf < u)
        lo = torch.where(right, mid + 1, lo)
        hi = torch.where(active & ~right, mid, hi)
    return lo


def _draw_uniform(sizes: Tensor, per_bin: int, device: torch.device) -> Tensor:
    """``per_bin`` draws with replacement in ``[0, size)`` for each size, shape ``(B, per_bin)``.

    On CPU the global generator is consumed exactly as by one
    ``torch.multinomial(torch.ones(size), per_bin, replacement=True)`` call per size, in
    order: ``per_bin >= 2`` draws one float64 uniform per sample, ``per_bin == 1`` one
    exponential per category and takes the arg-max of ``1 / q``. Elsewhere the draws come
    from the device's generator (same distribution, different stream).
    """
    num = len(sizes)
    if device.type != "cpu":
        u = torch.rand(num, per_bin, device=device, dtype=torch.float64)
        return (u * sizes.unsqueeze(1)).long().clamp_max(sizes.unsqueeze(1) - 1)
    if per_bin == 1:
        total = int(sizes.sum())
        seg = torch.repeat_interleave(torch.arange(num), sizes, output_size=total)
        inv = 1 / torch.empty(total, dtype=torch.float32).exponential_()
        seg_max = torch.full((num,), -1.0, dtype=torch.float32).scatter_reduce(
            0, seg, inv, reduce="amax"
        )
        starts = torch.cumsum(sizes, 0) - sizes
        pos = torch.arange(total) - starts[seg]
        pos = torch.where(inv == seg_max[seg], pos, total)
        first = torch.full((num,), total).scatter_reduce(0, seg, pos, reduce="amin")
        return first.unsqueeze(1)
    u = torch.rand(num * per_bin, dtype=torch.float64)
    return _first_cdf_reaching(u, sizes.repeat_interleave(per_bin)).view(num, per_bin)


def histogram_sample(values: Tensor, num_bins: int, per_bin: int) -> Tensor:
    """Indices of ``values`` drawn uniformly (with replacement) per equal-width bin.

    ``num_bins`` bins of equal width span ``[min, max]`` (``torch.linspace`` edges, in the
    values' dtype); bin ``i`` holds ``edges[i] <= v < edges[i + 1]``, the last bin is closed.
    Each non-empty bin, in ascending order, contributes ``per_bin`` draws. No Python loop
    over bins: values are bucketised once and all draws are made together.

    Args:
        values: shape ``(P,)``, ``P >= 1``.
        num_bins: number of bins, ``>= 1``.
        per_bin: draws per non-empty bin, ``>= 1``.

    Returns:
        int64 indices into ``values``, shape ``(per_bin * non-empty bins,)``.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> histogram_sample(torch.tensor([0.0, 0.1, 0.9, 1.0]), num_bins=2, per_bin=3)
        tensor([1, 1, 0, 3, 3, 3])
    """
    device = values.device
    edges = torch.linspace(
        values.min(), values.max(), num_bins + 1, dtype=values.dtype, device=device
    )
    small = torch.int32 if num_bins < 2**31 - 1 else torch.long
    bins = torch.bucketize(values, edges, right=True, out_int32=small == torch.int32)
    bins = bins.sub_(1).clamp_(0, num_bins - 1)
    counts = torch.bincount(bins, minlength=num_bins)
    nonempty = torch.where(counts > 0)[0]
    members = torch.sort(bins, stable=True).indices  # grouped by bin, ascending index
    del bins
    starts = (torch.cumsum(counts, 0) - counts)[nonempty]
    sizes = counts[nonempty]
    local = _draw_uniform(sizes.cpu() if device.type == "cpu" else sizes, per_bin, device)
    return members[(starts.unsqueeze(1) + local.to(device)).flatten()]


def uniform_histogram_miner(
    mat: Tensor,
    labels: Tensor,
    ref_labels: Tensor | None = None,
    *,
    num_bins: int = 100,
    pos_per_bin: int = 10,
    neg_per_bin: int = 10,
    tuples_per_anchor: int | None = None,
) -> PairsTuple:
    """Pairs sampled so that their values are spread uniformly over a histogram.

    Positive pairs first, then negative pairs, each through :func:`histogram_sample`
    (``per_bin`` draws in each non-empty bin). A side without pairs stays empty.

    ``tuples_per_anchor`` caps the drawn pairs per anchor (positives and negatives
    separately): all histogram draws are made first, exactly as without it (same random
    stream), then each anchor keeps a uniformly random subset of at most
    ``tuples_per_anchor`` of its drawn entries (without replacement among the entries; the
    histogram draws are with replacement, so a pair drawn twice may stay twice).

    Returns:
        ``(a1, p, a2, n)`` int64; duplicates are expected.
    """
    tuples_per_anchor = check_tuples_per_anchor(tuples_per_anchor)
    pos, neg = pos_neg_masks(labels, ref_labels)
    out: list[Tensor] = []
    flat_mat = mat.reshape(-1)
    for mask, per_bin in ((pos, pos_per_bin), (neg, neg_per_bin)):
        # positions in the flattened matrix, row-major: the all-pairs order
        flat = torch.nonzero(mask.to(mat.device).reshape(-1)).squeeze(1)
        if len(flat):
            flat = flat[histogram_sample(flat_mat[flat], num_bins, per_bin)]
        out += [torch.div(flat, mat.shape[1], rounding_mode="floor"), flat % mat.shape[1]]
    return cap_tuples((out[0], out[1], out[2], out[3]), tuples_per_anchor)  # type: ignore[return-value]
