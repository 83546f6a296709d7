"""Random miners: distance-weighted sampling and uniform histogram sampling.

Both consume torch's global RNG exactly like the reference on CPU, so results under
``torch.manual_seed`` match it. The histogram sampler draws every bin at once: the draws of
the reference's one ``torch.multinomial`` call per non-empty bin are reproduced from a single
call to the same generator (see :func:`histogram_sample`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pml.core.dtypes import accumulation_dtype
from pml.core.indices import (
    PairsTuple,
    TripletsTuple,
    get_random_triplet_indices,
    pos_neg_masks,
)

__all__ = [
    "distance_weighted_miner",
    "distance_weighted_weights",
    "histogram_sample",
    "uniform_histogram_miner",
]

# torch.multinomial refuses more categories than this; larger bins are drawn the same way.
_MULTINOMIAL_MAX_CATEGORIES = 1 << 24


def distance_weighted_weights(
    mat: Tensor,
    labels: Tensor,
    ref_labels: Tensor | None = None,
    *,
    embedding_size: int,
    cutoff: float = 0.5,
    nonzero_loss_cutoff: float = 1.4,
) -> Tensor:
    """Negative sampling weights ``1 / q(d)`` of Wu et al. (ICCV 2017), row-normalised.

    With ``d`` the clamped distance (``>= cutoff``) and ``D`` the embedding size,
    ``log w = (2 - D) log d - (D - 3) / 2 * log(1 - d^2 / 4)``, shifted by its maximum over
    the finite entries, exponentiated, zeroed for same-label pairs, non-finite entries and
    ``d >= nonzero_loss_cutoff``, and divided by the row sum (a row without any weight gets
    NaN, which the sampler skips).

    Args:
        mat: L2 distances between L2-normalised rows, shape ``(N, M)``.
        labels: shape ``(N,)``.
        ref_labels: shape ``(M,)``; None for the same set.
        embedding_size: ``D``.
        cutoff: lower clamp of the distances.
        nonzero_loss_cutoff: distances at or above it get weight 0.

    Returns:
        Weights, shape ``(N, M)``, dtype ``accumulation_dtype(mat.dtype)``; all zeros if no
        entry is finite.

    Example:
        >>> d = torch.tensor([[0.0, 1.0, 1.2], [1.0, 0.0, 1.3], [1.2, 1.3, 0.0]])
        >>> distance_weighted_weights(d, torch.tensor([0, 0, 1]), embedding_size=4)[2]
        tensor([0.5271, 0.4729, 0.0000])
    """
    ref = labels if ref_labels is None else ref_labels.to(labels.device)
    dim = float(embedding_size)
    dist = mat.to(accumulation_dtype(mat.dtype)).clamp(min=cutoff)
    log_w = (2.0 - dim) * torch.log(dist) - ((dim - 3) / 2) * torch.log(1.0 - 0.25 * (dist**2))
    bad = torch.isinf(log_w) | torch.isnan(log_w)
    same = (labels.unsqueeze(1) == ref.unsqueeze(0)).to(dist.device)
    log_w = log_w * ~same
    finite = log_w[~bad]
    if finite.numel() == 0:
        # fix: the reference takes the max of an empty tensor and raises
        return torch.zeros_like(dist)
    weights = torch.exp(log_w - finite.max())
    weights = weights * ~same * (dist < nonzero_loss_cutoff)
    weights = weights.masked_fill(bad, 0)
    return weights / weights.sum(dim=1, keepdim=True)


def distance_weighted_miner(
    mat: Tensor,
    labels: Tensor,
    ref_labels: Tensor | None = None,
    *,
    embedding_size: int,
    cutoff: float = 0.5,
    nonzero_loss_cutoff: float = 1.4,
) -> TripletsTuple:
    """Distance-weighted triplets: negatives drawn with :func:`distance_weighted_weights`.

    Every anchor of a label gets as many triplets as the label has (reference) members;
    positives are uniform, negatives follow the weights. Anchors without any weight are
    dropped. Uses torch's global RNG like the reference.

    Returns:
        ``(a, p, n)`` int64 on the labels' device.
    """
    weights = distance_weighted_weights(
        mat,
        labels,
        ref_labels,
        embedding_size=embedding_size,
        cutoff=cutoff,
        nonzero_loss_cutoff=nonzero_loss_cutoff,
    )
    return get_random_triplet_indices(labels, ref_labels=ref_labels, weights=weights)


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
) -> PairsTuple:
    """Pairs sampled so that their values are spread uniformly over a histogram.

    Positive pairs first, then negative pairs, each through :func:`histogram_sample`
    (``per_bin`` draws in each non-empty bin). A side without pairs stays empty.

    Returns:
        ``(a1, p, a2, n)`` int64; duplicates are expected.
    """
    pos, neg = pos_neg_masks(labels, ref_labels)
    out: list[Tensor] = []
    flat_mat = mat.reshape(-1)
    for mask, per_bin in ((pos, pos_per_bin), (neg, neg_per_bin)):
        # positions in the flattened matrix, row-major: the all-pairs order
        flat = torch.nonzero(mask.to(mat.device).reshape(-1)).squeeze(1)
        if len(flat):
            flat = flat[histogram_sample(flat_mat[flat], num_bins, per_bin)]
        out += [torch.div(flat, mat.shape[1], rounding_mode="floor"), flat % mat.shape[1]]
    return out[0], out[1], out[2], out[3]
