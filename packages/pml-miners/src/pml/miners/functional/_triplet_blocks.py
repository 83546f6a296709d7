"""Candidate triplets evaluated per block of positive pairs: bounded memory, reference order.

The triplet miners compare the row of a positive pair's anchor with the positive's value in
one ``(P_chunk, M)`` block, so memory is bounded by ``max_elements`` (never ``N x M x M``) and
the output comes out in the reference's lexicographic ``(a, p, n)`` order.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.nn import functional as F

from pml.core.dtypes import accumulation_dtype
from pml.core.indices import TripletsTuple, pos_neg_masks
from pml.core.validation import check_int

#: candidate entries evaluated per block by default
DEFAULT_MAX_ELEMENTS = 1 << 21


class TripletParts:
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
        count = int(torch.count_nonzero(keep))
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


class Workspace:
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


def block_rows(m: int, max_elements: int) -> int:
    max_elements = check_int("max_elements", max_elements, min=1)  # type: ignore[assignment]
    return max(1, max_elements // max(m, 1))


def pos_pair_chunks(pos: Tensor, m: int, max_elements: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Positive pairs ``(a1, p)`` in row-major order, in chunks of ``~max_elements / m``."""
    a1, p = torch.where(pos)
    step = block_rows(m, max_elements)
    for s in range(0, len(a1), step):
        yield a1[s : s + step], p[s : s + step]


def angular_blocks(
    embeddings: Tensor,
    labels: Tensor,
    ref_emb: Tensor,
    ref_labels: Tensor | None,
    max_elements: int,
    ws: Workspace | None = None,
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
        ws = Workspace(
            min(block_rows(m, max_elements), int(torch.count_nonzero(pos))), m, emb.device
        )
    for ca, cp in pos_pair_chunks(pos, m, max_elements):
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
