"""Triplet miners: margin, angle and packaged triplets.

Every function enumerates candidate triplets per *positive pair*: the row of the positive
pair's anchor is compared with the positive's value in one ``(P_chunk, M)`` block, so memory
is bounded by ``max_elements`` (never ``N x M x M``) and the output comes out in the
reference's lexicographic ``(a, p, n)`` order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Literal

import torch
from torch import Tensor
from torch.nn import functional as F

from pml.core.dtypes import accumulation_dtype
from pml.core.indices import TripletsTuple, pos_neg_masks

__all__ = [
    "angular_miner",
    "angular_miner_stats",
    "embeddings_already_packaged_as_triplets",
    "triplet_margin_miner",
    "triplet_margin_miner_stats",
]

TripletType = Literal["all", "hard", "semihard", "easy"]

_DEFAULT_MAX_ELEMENTS = 1 << 22


def _empty_triplets(device: torch.device) -> TripletsTuple:
    e = torch.empty(0, dtype=torch.long, device=device)
    return e, e.clone(), e.clone()


def _cat_triplets(parts: list[TripletsTuple], device: torch.device) -> TripletsTuple:
    if not parts:
        return _empty_triplets(device)
    if len(parts) == 1:
        return parts[0]
    return tuple(torch.cat(x) for x in zip(*parts))  # type: ignore[return-value]


def _pos_pair_chunks(pos: Tensor, m: int, max_elements: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Positive pairs ``(a1, p)`` in row-major order, in chunks of ``~max_elements / m``."""
    if max_elements < 1:
        raise ValueError(f"max_elements must be >= 1; got {max_elements}")
    a1, p = torch.where(pos)
    step = max(1, max_elements // max(m, 1))
    for s in range(0, len(a1), step):
        yield a1[s : s + step], p[s : s + step]


def _margin_keep(tm: Tensor, margin: float, type_of_triplets: str) -> Tensor:
    if type_of_triplets == "easy":
        return tm > margin
    keep = tm <= margin
    if type_of_triplets == "hard":
        keep &= tm <= 0
    elif type_of_triplets == "semihard":
        keep &= tm > 0
    return keep


def triplet_margin_miner(
    mat: Tensor,
    labels: Tensor,
    ref_labels: Tensor | None = None,
    *,
    margin: float = 0.2,
    type_of_triplets: TripletType | str = "all",
    is_inverted: bool = False,
    max_elements: int = _DEFAULT_MAX_ELEMENTS,
) -> TripletsTuple:
    """Triplets whose margin ``tm`` satisfies the chosen condition.

    ``tm = mat[a, n] - mat[a, p]`` for distances (``mat[a, p] - mat[a, n]`` for
    similarities). ``"easy"`` keeps ``tm > margin``; the others keep ``tm <= margin``, plus
    ``tm <= 0`` for ``"hard"`` and ``tm > 0`` for ``"semihard"``; any other string keeps all
    margin violators, like ``"all"``.

    Args:
        mat: distance or similarity matrix, shape ``(N, M)``.
        labels: query labels, shape ``(N,)``.
        ref_labels: reference labels, shape ``(M,)``; None or ``labels`` itself for the same
            set (self pairs excluded).
        margin: the margin ``m``.
        type_of_triplets: ``"all"``, ``"hard"``, ``"semihard"`` or ``"easy"``.
        is_inverted: ``True`` when ``mat`` holds similarities.
        max_elements: candidate entries evaluated per block (bounds the memory).

    Returns:
        ``(a, p, n)`` int64 on ``mat``'s device, in lexicographic order.

    Example:
        >>> mat = torch.tensor([[0.0, 0.1, 0.9], [0.1, 0.0, 0.2], [0.9, 0.2, 0.0]])
        >>> [t.tolist() for t in triplet_margin_miner(mat, torch.tensor([0, 0, 1]))]
        [[1], [0], [2]]
    """
    pos, neg = pos_neg_masks(labels, ref_labels)
    pos, neg = pos.to(mat.device), neg.to(mat.device)
    parts = []
    for ca, cp in _pos_pair_chunks(pos, mat.shape[1], max_elements):
        an = mat[ca]
        ap = mat[ca, cp].unsqueeze(1)
        tm = ap - an if is_inverted else an - ap
        rows, n = torch.where(neg[ca] & _margin_keep(tm, margin, type_of_triplets))
        parts.append((ca[rows], cp[rows], n))
    return _cat_triplets(parts, mat.device)


def triplet_margin_miner_stats(
    mat: Tensor, labels: Tensor, ref_labels: Tensor | None = None, *, is_inverted: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """Means over *every* candidate triplet of ``ap``, ``an`` and the triplet margin.

    Computed in closed form (each positive pair counts once per negative of its anchor),
    without enumerating the triplets. NaN when there is no triplet.

    Returns:
        ``(mean ap, mean an, mean tm)``, 0-dim float64 tensors.
    """
    pos, neg = pos_neg_masks(labels, ref_labels)
    pos, neg = pos.to(mat.device), neg.to(mat.device)
    m = mat.to(torch.float64)
    num_pos = pos.sum(1, dtype=torch.float64)
    num_neg = neg.sum(1, dtype=torch.float64)
    total = (num_pos * num_neg).sum()
    sum_ap = (torch.where(pos, m, 0.0).sum(1) * num_neg).sum()
    sum_an = (torch.where(neg, m, 0.0).sum(1) * num_pos).sum()
    mean_ap, mean_an = sum_ap / total, sum_an / total
    mean_tm = mean_ap - mean_an if is_inverted else mean_an - mean_ap
    return mean_ap, mean_an, mean_tm


def _angular_blocks(
    embeddings: Tensor,
    labels: Tensor,
    ref_emb: Tensor,
    ref_labels: Tensor | None,
    max_elements: int,
) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor, Tensor]]:
    """Per block of positive pairs: ``(a1, p, neg rows, angle (P_c, M), error bound (P_c, M))``.

    The angle ``atan(||a - p|| / (2 ||n - (a + p) / 2||))`` uses the reference's
    ``pairwise_distance`` semantics (``||x - y + 1e-6||``). ``||n - c||`` comes from a Gram
    matrix, so every entry also gets a bound on its error; entries closer to a threshold than
    that bound are recomputed exactly by the caller.
    """
    acc = accumulation_dtype(embeddings.dtype)
    emb, ref = embeddings.to(acc), ref_emb.to(acc)
    pos, neg = pos_neg_masks(labels, ref_labels)
    pos, neg = pos.to(emb.device), neg.to(emb.device)
    eps = torch.finfo(acc).eps
    ref_sq = (ref * ref).sum(1)
    kappa = (2 * emb.shape[1] + 16) * eps
    for ca, cp in _pos_pair_chunks(pos, ref.shape[0], max_elements):
        a, p = emb[ca], ref[cp]
        ap = F.pairwise_distance(a, p)
        # ||n - c + eps|| == ||n - u|| with u = c - eps
        u = (a + p) / 2 - 1e-6
        u_sq = (u * u).sum(1, keepdim=True)
        d2 = torch.addmm(ref_sq.unsqueeze(0) + u_sq, u, ref.T, alpha=-2).clamp_min_(0)
        nc = d2.sqrt()
        angle = torch.atan(ap.unsqueeze(1) / (2 * nc))
        # d angle / d(d2) <= 1 / (4 d2); the error of d2 is below kappa * (|n|^2 + |u|^2 + d2)
        err_d2 = kappa * (ref_sq.unsqueeze(0) + u_sq + d2)
        bound = torch.where(d2 > 2 * err_d2, err_d2 / (4 * d2), math.inf) + 8 * eps
        yield ca, cp, neg[ca], angle, bound


def angular_miner(
    embeddings: Tensor,
    labels: Tensor,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    angle: float = math.radians(20),
    max_elements: int = _DEFAULT_MAX_ELEMENTS,
) -> TripletsTuple:
    """Triplets whose angle at the negative exceeds ``angle`` (Wang et al., ICCV 2017).

    For a triplet ``(a, p, n)`` of raw (not normalised) rows with centre ``c = (a + p) / 2``,
    the angle is ``atan(||a - p|| / (2 ||n - c||))`` (distances in ``pairwise_distance``
    semantics, ``||x - y + 1e-6||``). Kept when strictly greater than ``angle``.

    Memory is ``O(max_elements)`` plus the output: ``||n - c||`` for all negatives of a block
    of positive pairs comes from one matrix product; entries whose angle is within rounding
    error of the threshold are recomputed with the exact per-triplet formula.

    Args:
        embeddings: shape ``(N, D)``.
        labels: shape ``(N,)``.
        ref_emb: shape ``(M, D)``; None uses ``embeddings``.
        ref_labels: shape ``(M,)``; None (or ``labels`` itself) for the same set.
        angle: threshold in radians.
        max_elements: candidate entries evaluated per block.

    Returns:
        ``(a, p, n)`` int64 in lexicographic order, on ``embeddings``' device.

    Example:
        >>> emb = torch.tensor([[1.0, 0.0], [1.0, 0.2], [0.0, 1.0]])
        >>> [t.tolist() for t in angular_miner(emb, torch.tensor([0, 0, 1]), angle=0.05)]
        [[0, 1], [1, 0], [2, 2]]
    """
    if ref_emb is None:
        ref_emb, ref_labels = embeddings, labels
    acc = accumulation_dtype(embeddings.dtype)
    emb, ref = embeddings.to(acc), ref_emb.to(acc)
    parts = []
    for ca, cp, neg, theta, bound in _angular_blocks(
        embeddings, labels, ref_emb, ref_labels, max_elements
    ):
        gap = theta - angle
        keep = gap > bound
        band = neg & ((gap.abs() <= bound) | gap.isnan())
        bi, bn = torch.where(band)
        if len(bi):
            a, p = emb[ca[bi]], ref[cp[bi]]
            ap = F.pairwise_distance(a, p)
            nc = F.pairwise_distance(ref[bn], (a + p) / 2)
            keep[bi, bn] = torch.atan(ap / (2 * nc)) > angle
        rows, n = torch.where(neg & keep)
        parts.append((ca[rows], cp[rows], n))
    return _cat_triplets(parts, embeddings.device)


def angular_miner_stats(
    embeddings: Tensor,
    labels: Tensor,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    angle: float = math.radians(20),
    max_elements: int = _DEFAULT_MAX_ELEMENTS,
) -> dict[str, Tensor]:
    """Angles (radians) of every candidate triplet, summarised without storing them.

    Returns:
        0-dim float64 tensors: ``count``, ``mean``, ``m2`` (sum of squared deviations),
        ``min``, ``max``, ``count_above``/``sum_above`` (angle > ``angle``) and
        ``count_below``/``sum_below``.
    """
    if ref_emb is None:
        ref_emb, ref_labels = embeddings, labels
    f64 = dict(dtype=torch.float64, device=embeddings.device)
    count, mean, m2 = (torch.zeros((), **f64) for _ in range(3))  # type: ignore[arg-type]
    lo, hi = torch.tensor(math.inf, **f64), torch.tensor(-math.inf, **f64)  # type: ignore[arg-type]
    count_above, sum_above = torch.zeros((), **f64), torch.zeros((), **f64)  # type: ignore[arg-type]
    for _, _, neg, theta, _ in _angular_blocks(
        embeddings, labels, ref_emb, ref_labels, max_elements
    ):
        v = theta[neg].to(torch.float64)
        if v.numel() == 0:
            continue
        n_b = torch.tensor(float(v.numel()), **f64)  # type: ignore[arg-type]
        mean_b = v.mean()
        m2_b = ((v - mean_b) ** 2).sum()
        total = count + n_b
        delta = mean_b - mean
        mean = mean + delta * n_b / total
        m2 = m2 + m2_b + delta**2 * count * n_b / total
        count = total
        lo, hi = torch.minimum(lo, v.min()), torch.maximum(hi, v.max())
        above = v > angle
        count_above = count_above + above.sum()
        sum_above = sum_above + v[above].sum()
    sum_all = mean * count
    return {
        "count": count,
        "mean": mean,
        "m2": m2,
        "min": lo,
        "max": hi,
        "count_above": count_above,
        "sum_above": sum_above,
        "count_below": count - count_above,
        "sum_below": sum_all - sum_above,
    }


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
