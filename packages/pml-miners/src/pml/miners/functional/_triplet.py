"""Triplet miners: margin, angle, distance-weighted sampling and packaged triplets.

The margin and angle miners enumerate candidates per block of positive pairs
(:mod:`._triplet_blocks`: bounded memory, lexicographic ``(a, p, n)`` order). The
distance-weighted miner consumes torch's global RNG like the reference, so results under
``torch.manual_seed`` match it on CPU.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor
from torch.nn import functional as F

from pml.core.dtypes import accumulation_dtype
from pml.core.indices import TripletsTuple, pos_neg_masks
from pml.miners.functional._sample import triplet_collector
from pml.miners.functional._triplet_blocks import (
    DEFAULT_MAX_ELEMENTS,
    TripletParts,
    Workspace,
    angular_blocks,
    block_rows,
    pos_pair_chunks,
)

__all__ = [
    "angular_miner",
    "angular_miner_stats",
    "triplet_margin_miner",
    "triplet_margin_miner_stats",
]

TripletType = Literal["all", "hard", "semihard", "easy"]


def _margin_keep(
    tm: Tensor, margin: float, type_of_triplets: str, keep: Tensor, tmp: Tensor
) -> Tensor:
    """Write the selection into ``keep`` (``tmp``: a scratch bool buffer)."""
    if type_of_triplets == "easy":
        return torch.gt(tm, margin, out=keep)
    torch.le(tm, margin, out=keep)
    if type_of_triplets == "hard":
        keep &= torch.le(tm, 0, out=tmp)
    elif type_of_triplets == "semihard":
        keep &= torch.gt(tm, 0, out=tmp)
    return keep


def triplet_margin_miner(
    mat: Tensor,
    labels: Tensor,
    ref_labels: Tensor | None = None,
    *,
    margin: float = 0.2,
    type_of_triplets: TripletType | str = "all",
    is_inverted: bool = False,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    tuples_per_anchor: int | None = None,
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
        tuples_per_anchor: keep at most this many of each anchor's selected triplets, a
            uniformly random subset (torch's default generator of ``mat``'s device);
            None keeps all. Memory is one block plus ``N x tuples_per_anchor``: the
            selected triplets are never all listed.

    Returns:
        ``(a, p, n)`` int64 on ``mat``'s device, in lexicographic order.

    Example:
        >>> mat = torch.tensor([[0.0, 0.1, 0.9], [0.1, 0.0, 0.2], [0.9, 0.2, 0.0]])
        >>> [t.tolist() for t in triplet_margin_miner(mat, torch.tensor([0, 0, 1]))]
        [[1], [0], [2]]
    """
    pos, neg = pos_neg_masks(labels, ref_labels)
    pos, neg = pos.to(mat.device), neg.to(mat.device)
    step = block_rows(mat.shape[1], max_elements)
    rows = min(step, int(torch.count_nonzero(pos)))
    parts = triplet_collector(labels, ref_labels, mat.shape[1], tuples_per_anchor, rows, mat.device)
    ws = Workspace(rows, mat.shape[1], mat.device)
    for ca, cp in pos_pair_chunks(pos, mat.shape[1], max_elements):
        c = len(ca)
        tm = torch.index_select(mat, 0, ca, out=ws.get("tm", c, mat.dtype))  # an
        ap = mat[ca, cp].unsqueeze(1)
        if is_inverted:
            tm.neg_().add_(ap)  # ap - an
        else:
            tm.sub_(ap)  # an - ap
        keep = _margin_keep(
            tm,
            margin,
            type_of_triplets,
            ws.get("keep", c, torch.bool),
            ws.get("tmp", c, torch.bool),
        )
        keep &= torch.index_select(neg, 0, ca, out=ws.get("neg", c, torch.bool))
        parts.add(ca, cp, keep)
    return parts.assemble()


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


def angular_miner(
    embeddings: Tensor,
    labels: Tensor,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    angle: float = math.radians(20),
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    tuples_per_anchor: int | None = None,
) -> TripletsTuple:
    """Triplets whose angle at the negative exceeds ``angle`` (Wang et al., ICCV 2017).

    For a triplet ``(a, p, n)`` of raw (not normalised) rows with centre ``c = (a + p) / 2``,
    the angle is ``atan(||a - p|| / (2 ||n - c||))`` (distances in ``pairwise_distance``
    semantics, ``||x - y + 1e-6||``). Kept when strictly greater than ``angle``.

    Memory is ``O(max_elements)`` plus the output: the test ``angle_t > angle`` is
    ``||n - c||^2 < ||a - p||^2 / (4 tan^2(angle))``, evaluated for all negatives of a block
    of positive pairs from one matrix product; entries within rounding error of the
    threshold are recomputed with the exact per-triplet formula, so the selection is the
    reference's.

    Args:
        embeddings: shape ``(N, D)``.
        labels: shape ``(N,)``.
        ref_emb: shape ``(M, D)``; None uses ``embeddings``.
        ref_labels: shape ``(M,)``; None (or ``labels`` itself) for the same set.
        angle: threshold in radians.
        max_elements: candidate entries evaluated per block.
        tuples_per_anchor: keep at most this many of each anchor's selected triplets, a
            uniformly random subset (torch's default generator of the embeddings' device);
            None keeps all. Memory stays one block plus ``N x tuples_per_anchor``.

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
    ref = ref_emb.to(acc)
    if angle >= math.pi / 2:  # atan(x) < pi / 2 for finite x: nothing passes
        return TripletParts(embeddings.device).assemble()
    tan = math.tan(angle) if angle > 0 else 1.0
    scale = 1 / (4 * tan**2)
    # the reference rounds in angle space; d(d2)/d2 = 2 (1 + tan^2) / tan * angle * d(angle)/angle
    rel = torch.finfo(acc).eps * (8 + 8 * 2 * (1 + tan**2) / tan * max(angle, 0))
    ws = Workspace(
        min(block_rows(ref.shape[0], max_elements), max(len(labels) * ref.shape[0], 1)),
        ref.shape[0],
        embeddings.device,
    )
    parts = triplet_collector(
        labels, ref_labels, ref.shape[0], tuples_per_anchor, ws.rows, embeddings.device
    )
    for ca, cp, neg, ap, d2, err, c in angular_blocks(
        embeddings, labels, ref_emb, ref_labels, max_elements, ws
    ):
        rows = len(ca)
        keep = ws.get("keep", rows, torch.bool)
        band = ws.get("band", rows, torch.bool)
        if angle > 0:
            limit = ap * ap * scale  # angle_t > angle  <=>  d2 < limit
            gap = d2.neg_().add_(limit)  # limit - d2, in place
            err.add_(limit * rel)
            torch.gt(gap, err, out=keep)
            torch.le(gap.abs_(), err, out=band)
            band |= torch.ne(gap, gap, out=ws.get("nan", rows, torch.bool))
            band &= neg
        else:  # every angle is >= 0: only ap == 0 can fail a zero threshold
            keep.fill_(True)
            torch.logical_and(neg, ap == 0, out=band)
        bi, bn = torch.where(band)
        if len(bi):
            ap_exact = ap[bi, 0]
            nc = F.pairwise_distance(ref[bn], c[bi])
            keep[bi, bn] = torch.atan(ap_exact / (2 * nc)) > angle
        keep &= neg
        parts.add(ca, cp, keep)
    return parts.assemble()


def angular_miner_stats(
    embeddings: Tensor,
    labels: Tensor,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    angle: float = math.radians(20),
    max_elements: int = DEFAULT_MAX_ELEMENTS,
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
    for _, _, neg, ap, d2, _, _ in angular_blocks(
        embeddings, labels, ref_emb, ref_labels, max_elements
    ):
        v = torch.atan(ap / (2 * d2.sqrt()))[neg].to(torch.float64)  # d2 is a buffer: use now
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
