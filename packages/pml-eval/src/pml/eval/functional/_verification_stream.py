"""Verification operating points streamed over blocks of pairs, in bounded memory.

:func:`streamed_operating_points`: pass 1 counts genuine and impostor scores in ``2**20``
bins of their order-preserving float32 patterns; pass 2 re-reads exactly the bins that decide
the requested operating points (see :mod:`pml.eval.functional._verification`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor

from pml.eval.functional._smallest_k import ordered_float32_bits
from pml.eval.functional._verification import (
    Criterion,
    OperatingPoints,
    _assemble,
    _fmr_rows,
    _gap_bounds,
    _observed_rows,
    criterion_values,
    operating_points,
)

__all__ = ["streamed_operating_points"]

#: low bits of the order-preserving float32 pattern dropped to form a bin (2**20 bins)
_SHIFT = 12
_NUM_BINS = 1 << (32 - _SHIFT)


def _ordered_bits(scores: Tensor) -> Tensor:
    """Scores -> int64 in ``[0, 2**32)``, non-decreasing in the value.

    Via the largest float32 at or below the value (float64 rounded down), so a value is
    never below the lower edge of its bin.
    """
    f32 = scores.to(torch.float32)
    if scores.dtype == torch.float64:
        f32 = torch.where(
            f32.to(torch.float64) > scores, torch.nextafter(f32, f32.new_tensor(float("-inf"))), f32
        )
    return ordered_float32_bits(f32)


def _score_bins(scores: Tensor) -> Tensor:
    return _ordered_bits(scores) >> _SHIFT


def _bin_lower_edges(bins: Tensor) -> Tensor:
    """The smallest float32 value of each bin, as float64."""
    ordered = (bins << _SHIFT) - (1 << 31)
    bits = torch.where(ordered >= 0, ordered, ordered ^ 0x7FFFFFFF)
    return bits.to(torch.int32).view(torch.float32).to(torch.float64)


def _histograms(blocks: Iterable[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor, int]:
    """``(counts (2, num_bins) int64 [genuine, impostor], non-finite scores)`` of all blocks."""
    counts: Tensor | None = None
    bad: Tensor | None = None
    for scores, genuine in blocks:
        bins = _score_bins(scores) + (~genuine).to(torch.int64) * _NUM_BINS
        block = torch.bincount(bins, minlength=2 * _NUM_BINS)
        nonfinite = (~torch.isfinite(scores)).sum()
        counts = block if counts is None else counts.add_(block)
        bad = nonfinite if bad is None else bad + nonfinite
    if counts is None or bad is None:
        return torch.zeros(2, _NUM_BINS, dtype=torch.int64), 0
    return counts.view(2, _NUM_BINS), int(bad)


def _binned_points(
    counts: Tensor, scores: Tensor, is_genuine: Tensor, refined: Tensor
) -> OperatingPoints:
    """Rows of the bins: ``scores`` are the whole content of the ``refined`` bins."""
    totals = counts.sum(1)
    incl = counts.flip(1).cumsum(1).flip(1)  # at or above each bin
    above = incl - counts
    nonempty = (counts.sum(0) > 0) & ~refined
    edge_bins = nonempty.nonzero(as_tuple=True)[0]
    t_edge = _bin_lower_edges(edge_bins)
    ta_edge, fa_edge = incl[0][edge_bins], incl[1][edge_bins]
    t_obs, ta_obs, fa_obs = _observed_rows(scores, is_genuine, _score_bins(scores), above)
    observed = torch.cat(
        [torch.zeros_like(edge_bins, dtype=torch.bool), torch.ones_like(t_obs, dtype=torch.bool)]
    )
    return _assemble(
        torch.cat([t_edge, t_obs]),
        torch.cat([ta_edge, ta_obs]),
        torch.cat([fa_edge, fa_obs]),
        observed,
        int(totals[0]),
        int(totals[1]),
    )


def _gap_bins(points: OperatingPoints, rows: Tensor) -> Tensor:
    """The bin just below each row (what an inexact gap below the row holds)."""
    nxt = (rows + 1).clamp(max=points.thresholds.shape[0] - 1)
    return _score_bins(points.thresholds[nxt])


def streamed_operating_points(
    blocks: Callable[[], Iterable[tuple[Tensor, Tensor]]],
    *,
    fmr_targets: Sequence[float] = (),
    criterion: Criterion | None = None,
    max_buffered_scores: int = 1 << 22,
    num_pairs: int | None = None,
) -> OperatingPoints:
    """Operating points of pairs streamed in blocks (twice), exact where they matter.

    When ``num_pairs`` is known and fits ``max_buffered_scores``, the pairs are read once and
    sorted (:func:`operating_points`: exact, every row). Otherwise pass 1 histograms the
    scores (``2**20`` bins, order-preserving); the bins that decide the operating point at
    each of ``fmr_targets`` and the ``criterion``'s best threshold are re-read exactly in
    pass 2, most decisive first, while their scores fit ``max_buffered_scores`` (memory: that
    many scores, about 80 bytes each at the peak, plus 16 MB of counts). Other bins are one
    row at their lower edge.

    Args:
        blocks: called once per pass, gives ``(scores, is_genuine)`` blocks (e.g.
            :func:`pair_score_blocks`), the same each time.
        fmr_targets: FMR values whose operating points must be exact.
        criterion: one of :data:`CRITERIA` to make exact, or None.
        max_buffered_scores: scores kept in memory in pass 2.
        num_pairs: how many pairs ``blocks`` gives, when known.

    Returns:
        :class:`OperatingPoints`.

    Raises:
        ValueError: a non-finite score.
    """
    if num_pairs is not None and num_pairs <= max_buffered_scores:
        parts = list(blocks())
        if not parts:
            raise ValueError("there are no pairs to score")
        scores = torch.cat([s for s, _ in parts])
        if not bool(torch.isfinite(scores).all()):
            raise ValueError("scores must be finite; got NaN or inf pair scores")
        return operating_points(scores, torch.cat([g for _, g in parts]))
    counts, nonfinite = _histograms(blocks())
    if nonfinite:
        raise ValueError(f"scores must be finite; got {nonfinite} NaN or inf pair scores")
    device = counts.device
    empty = torch.zeros(0, dtype=torch.float64, device=device)
    no_bins = torch.zeros(_NUM_BINS, dtype=torch.bool, device=device)
    coarse = _binned_points(counts, empty, empty.bool(), no_bins)
    wanted: list[Tensor] = []
    if len(fmr_targets):
        rows = _fmr_rows(coarse, fmr_targets)
        wanted.append(_gap_bins(coarse, rows[~coarse.exact_below[rows]]))
    if criterion is not None:
        values = criterion_values(coarse, criterion)
        best = values.max()
        bounds = _gap_bounds(coarse, criterion)
        gaps = (bounds > best).nonzero(as_tuple=True)[0]
        gaps = gaps[torch.argsort(bounds[gaps], descending=True, stable=True)]
        wanted.append(_gap_bins(coarse, gaps))
    refined = no_bins.clone()
    if wanted:
        bins = torch.cat(wanted)
        sizes = counts.sum(0)[bins]
        # most decisive first; keep the bins whose running total fits the buffer
        unique, inverse = torch.unique(bins, return_inverse=True)
        seen = torch.full_like(unique, bins.shape[0]).scatter_reduce_(
            0, inverse, torch.arange(bins.shape[0], device=device), "amin"
        )
        first_seen = seen[inverse] == torch.arange(bins.shape[0], device=device)
        sizes = sizes * first_seen
        keep = first_seen & (sizes.cumsum(0) <= max_buffered_scores)
        refined[bins[keep]] = True
    if not bool(refined.any()):
        return coarse
    parts_s, parts_g = [], []
    for scores, genuine in blocks():
        take = refined[_score_bins(scores)]
        parts_s.append(scores[take])
        parts_g.append(genuine[take])
    return _binned_points(counts, torch.cat(parts_s), torch.cat(parts_g), refined)


# --------------------------------------------------------------------------------- queries
