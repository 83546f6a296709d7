"""Distance-weighted sampling (Wu et al. 2017) and pre-packaged triplets.

Miners that draw or read their triplets instead of filtering all of them by a margin.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pml.core.dtypes import accumulation_dtype
from pml.core.indices import TripletsTuple, get_random_triplet_indices
from pml.miners.functional._sample import cap_per_anchor

__all__ = [
    "distance_weighted_miner",
    "distance_weighted_weights",
    "embeddings_already_packaged_as_triplets",
]


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
    tuples_per_anchor: int | None = None,
) -> TripletsTuple:
    """Distance-weighted triplets: negatives drawn with :func:`distance_weighted_weights`.

    Every anchor of a label gets as many triplets as the label has (reference) members;
    positives are uniform, negatives follow the weights. Anchors without any weight are
    dropped. Uses torch's global RNG like the reference.

    ``tuples_per_anchor`` caps the draws per anchor: the triplets are drawn exactly as
    without it (same random stream), then each anchor keeps a uniformly random subset of at
    most ``tuples_per_anchor`` of its draws (without replacement among the draws; the draws
    themselves are with replacement, as in the reference, so a triplet drawn twice may stay
    twice). An anchor draws as many triplets as its label has members, so a cap at or
    above the largest class changes nothing.

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
    a, p, n = get_random_triplet_indices(labels, ref_labels=ref_labels, weights=weights)
    keep = cap_per_anchor(a, tuples_per_anchor)
    if len(keep) == len(a):
        return a, p, n
    return a[keep], p[keep], n[keep]


def embeddings_already_packaged_as_triplets(
    num_embeddings: int, device: torch.device | str = "cpu"
) -> TripletsTuple:
    """``a = 0, 3, 6, ...``, ``p = 1, 4, 7, ...``, ``n = 2, 5, 8, ...``.

    Args:
        num_embeddings: ``N``, a multiple of 3.
        device: where the indices are created.

    Raises:
        ValueError: ``num_embeddings`` is not a multiple of 3.

    Example:
        >>> [t.tolist() for t in embeddings_already_packaged_as_triplets(6)]
        [[0, 3], [1, 4], [2, 5]]
    """
    if num_embeddings % 3 != 0:
        raise ValueError(
            "embeddings must hold consecutive (anchor, positive, negative) rows, so their "
            f"number must be a multiple of 3; got {num_embeddings}"
        )
    anchors = torch.arange(0, num_embeddings, 3, device=device)
    return anchors, anchors + 1, anchors + 2
