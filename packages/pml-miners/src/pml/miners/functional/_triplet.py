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

_DEFAULT_MAX_ELEMENTS = 1 << 21


class _TripletParts:
    """Blocks of selected triplets, stored compactly until the output is assembled.

    A block keeps its positive pairs ``(a1, p)`` and either its boolean selection mask
    (1 byte per candidate) or, when fewer than 1 in 8 candidates are selected, the selected
    ``(row, negative)`` pairs as int32. :meth:`assemble` writes the int64 output block by
    block into lazily committed memory and frees each block as it goes, so the peak is about
    the output itself plus one block.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.blocks: list[tuple[Tensor, Tensor, Tensor | None, Tensor | None, int]] = []

    def add(self, a1: Tensor, p: Tensor, keep: Tensor) -> None:
        count = int(keep.sum())
        if count == 0:
            return
        if 8 * count < keep.numel() and max(keep.shape) < 2**31:
            rows, n = torch.where(keep)
            self.blocks.append((a1, p, rows.to(torch.int32), n.to(torch.int32), count))
        else:
            self.blocks.append((a1, p, keep.clone(), None, count))

    def assemble(self) -> TripletsTuple:
        total = sum(b[4] for b in self.blocks)
        out = [torch.empty(total, dtype=torch.long, device=self.device) for _ in range(3)]
        start = 0
        self.blocks.reverse()
        while self.blocks:
            a1, p, rows, n, count = self.blocks.pop()
            if n is None:  # a stored mask
                rows, n = torch.where(rows)  # type: ignore[arg-type]
            stop = start + count
            rows = rows.long()  # type: ignore[union-attr]
            torch.index_select(a1, 0, rows, out=out[0][start:stop])
            torch.index_select(p, 0, rows, out=out[1][start:stop])
            out[2][start:stop] = n
            start = stop
            del a1, p, rows, n
        return out[0], out[1], out[2]


class _Workspace:
    """Reusable ``(rows, M)`` buffers: blocks write into them instead of allocating.

    Repeated allocation of block-sized temporaries fragments the heap, so the resident
    memory would keep growing over the blocks; reusing buffers keeps it at one block.
    """

    def __init__(self, rows: int, cols: int, device: torch.device) -> None:
        self.rows, self.cols, self.device = rows, cols, device
        self.buffers: dict[str, Tensor] = {}

    def get(self, name: str, rows: int, dtype: torch.dtype) -> Tensor:
        buf = self.buffers.get(name)
        if buf is None or buf.dtype != dtype:
            buf = torch.empty(self.rows, self.cols, dtype=dtype, device=self.device)
            self.buffers[name] = buf
        return buf[:rows]


def _block_rows(m: int, max_elements: int) -> int:
    if max_elements < 1:
        raise ValueError(f"max_elements must be >= 1; got {max_elements}")
    return max(1, max_elements // max(m, 1))


def _pos_pair_chunks(pos: Tensor, m: int, max_elements: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Positive pairs ``(a1, p)`` in row-major order, in chunks of ``~max_elements / m``."""
    a1, p = torch.where(pos)
    step = _block_rows(m, max_elements)
    for s in range(0, len(a1), step):
        yield a1[s : s + step], p[s : s + step]


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
    parts = _TripletParts(mat.device)
    step = _block_rows(mat.shape[1], max_elements)
    ws = _Workspace(min(step, int(pos.sum())), mat.shape[1], mat.device)
    for ca, cp in _pos_pair_chunks(pos, mat.shape[1], max_elements):
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


def _angular_blocks(
    embeddings: Tensor,
    labels: Tensor,
    ref_emb: Tensor,
    ref_labels: Tensor | None,
    max_elements: int,
    ws: _Workspace | None = None,
) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]]:
    """Per block of positive pairs: ``(a1, p, neg rows, ap, d2, err, centres)``.

    ``ap = ||a - p + 1e-6||`` (per pair, exact ``pairwise_distance``); ``d2 (P_c, M)`` is
    ``||n - c + 1e-6||^2`` for the pair's centre ``c = (a + p) / 2`` and every reference row,
    from a Gram matrix, with ``err`` a bound on its error (including the rounding of the
    exact per-triplet formula); entries that close to a threshold are recomputed exactly.
    ``neg``, ``d2`` and ``err`` live in ``ws``'s buffers: valid until the next block.
    """
    acc = accumulation_dtype(embeddings.dtype)
    emb, ref = embeddings.to(acc), ref_emb.to(acc)
    pos, neg = pos_neg_masks(labels, ref_labels)
    pos, neg = pos.to(emb.device), neg.to(emb.device)
    ref_sq = (ref * ref).sum(1).unsqueeze(0)
    kappa = (2 * emb.shape[1] + 16) * torch.finfo(acc).eps
    m = ref.shape[0]
    if ws is None:
        ws = _Workspace(min(_block_rows(m, max_elements), int(pos.sum())), m, emb.device)
    for ca, cp in _pos_pair_chunks(pos, m, max_elements):
        rows = len(ca)
        a, p = emb[ca], ref[cp]
        ap = F.pairwise_distance(a, p).unsqueeze(1)
        c = (a + p) / 2
        u = c - 1e-6  # ||n - c + eps|| == ||n - u||
        u_sq = (u * u).sum(1, keepdim=True)
        d2 = torch.mm(u, ref.T, out=ws.get("d2", rows, acc))
        d2.mul_(-2).add_(ref_sq).add_(u_sq).clamp_min_(0)
        err = torch.add(ref_sq, u_sq, out=ws.get("err", rows, acc))
        err.add_(d2).mul_(kappa)
        neg_rows = torch.index_select(neg, 0, ca, out=ws.get("neg", rows, torch.bool))
        yield ca, cp, neg_rows, ap, d2, err, c


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
    parts = _TripletParts(embeddings.device)
    if angle >= math.pi / 2:  # atan(x) < pi / 2 for finite x: nothing passes
        return parts.assemble()
    tan = math.tan(angle) if angle > 0 else 1.0
    scale = 1 / (4 * tan**2)
    # the reference rounds in angle space; d(d2)/d2 = 2 (1 + tan^2) / tan * angle * d(angle)/angle
    rel = torch.finfo(acc).eps * (8 + 8 * 2 * (1 + tan**2) / tan * max(angle, 0))
    ws = _Workspace(
        min(_block_rows(ref.shape[0], max_elements), max(len(labels) * ref.shape[0], 1)),
        ref.shape[0],
        embeddings.device,
    )
    for ca, cp, neg, ap, d2, err, c in _angular_blocks(
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
    for _, _, neg, ap, d2, _, _ in _angular_blocks(
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
