"""Verification (1:1 matching) operating points from pair scores, in bounded memory.

A *pair* has a score (larger means more alike: similarities as they are, distances negated)
and is *genuine* (same label) or an *impostor*. Accepting the pairs with ``score >= t``
gives, at threshold ``t``, ``true_accepts(t)`` genuine and ``false_accepts(t)`` impostor
pairs: FMR (= FAR) is ``false_accepts / num_impostor``, TAR is ``true_accepts /
num_genuine`` and FNMR is ``1 - TAR``.

The candidate thresholds are tabulated as :class:`OperatingPoints`, strictest first.

* **sorted** (:func:`operating_points`): every score in memory, sorted; one row per distinct
  score: exact.
* **histogram** (:func:`streamed_operating_points`): the scores are streamed twice over blocks
  of pairs. Pass 1 counts genuine and impostor scores in ``2**20`` bins (the top 20 bits of
  each score's float32 pattern, order-preserving: a bin spans a relative width of
  ``2**-11`` ≈ 0.05%). The bins that decide the requested operating points (the bin where
  the FMR crosses each target; the bins where a criterion could beat the best bin edge) are
  then re-read exactly in pass 2, as far as ``max_buffered_scores`` allows. A bin not re-read
  is one row at its lower edge; the rows' counts are always exact, and
  :func:`points_at_fmr` / :func:`best_threshold` say how far an unread bin could move the
  result (their ``slack``; 0 when exact).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from pml.core.dtypes import accumulation_dtype
from pml.eval.functional._knn import DistanceFn, block_distance

__all__ = [
    "CRITERIA",
    "OperatingPoints",
    "best_threshold",
    "criterion_values",
    "operating_points",
    "pair_score_blocks",
    "points_at_fmr",
    "robust_thresholds",
    "streamed_operating_points",
]

#: what :func:`best_threshold` can maximise.
CRITERIA = ("accuracy", "balanced_accuracy", "f1")

Criterion = Literal["accuracy", "balanced_accuracy", "f1"]

#: low bits of the order-preserving float32 pattern dropped to form a bin (2**20 bins)
_SHIFT = 12
_NUM_BINS = 1 << (32 - _SHIFT)
#: pairs per block of the score matrix
_BLOCK_PAIRS = 1 << 22


class OperatingPoints(NamedTuple):
    """Candidate thresholds, strictest first, with exact counts (accept ``score >= t``).

    Attributes:
        thresholds: ``(T,)`` float64, descending; the first is ``+inf`` (accept nothing).
        true_accepts: ``(T,)`` int64, genuine pairs with ``score >= t``.
        false_accepts: ``(T,)`` int64, impostor pairs with ``score >= t``.
        exact_below: ``(T,)`` bool: no score lies strictly between this row's threshold and
            the next row's (so no threshold in between gives other counts). False above a
            bin that was not re-read.
        num_genuine: genuine pairs in all.
        num_impostor: impostor pairs in all.
    """

    thresholds: Tensor
    true_accepts: Tensor
    false_accepts: Tensor
    exact_below: Tensor
    num_genuine: int
    num_impostor: int


# ---------------------------------------------------------------------------------- pairs
def pair_score_blocks(
    query: Tensor,
    query_ids: Tensor,
    reference: Tensor | None = None,
    reference_ids: Tensor | None = None,
    *,
    distance_fn: DistanceFn | None = None,
    is_inverted: bool = False,
    batch_size: int | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Scores of all pairs, block by block: ``(scores (P_b,), is_genuine (P_b,) bool)``.

    ``reference=None``: the unordered pairs ``i < j`` of ``query``; otherwise every
    ``(query row, reference row)`` pair. A pair is genuine when its ids are equal. Scores are
    "larger is more alike": ``distance_fn``'s values when ``is_inverted``, else negated; in
    ``query``'s dtype promoted to at least float32. Memory: one block of ~4M pairs.

    Args:
        query: shape ``(N, D)``.
        query_ids: ``(N,)`` int64 class ids (see :func:`~pml.eval.functional.label_ids`).
        reference: shape ``(M, D)``, or None.
        reference_ids: ``(M,)`` int64, with ``reference``.
        distance_fn: ``(B, D), (M, D) -> (B, M)`` (e.g. a pml distance); None: squared L2.
        is_inverted: ``True`` when larger values of ``distance_fn`` mean closer.
        batch_size: query rows per block (default: ~4M pairs per block).

    Example:
        >>> x = torch.tensor([[0.0], [1.0], [3.0]])
        >>> [(s.tolist(), g.tolist()) for s, g in pair_score_blocks(x, torch.tensor([0, 0, 1]))]
        [([-1.0, -9.0, -4.0], [True, False, False])]
    """
    same_set = reference is None
    ref = query if reference is None else reference
    ref_ids = query_ids if reference_ids is None else reference_ids
    dtype = accumulation_dtype(torch.promote_types(query.dtype, ref.dtype))
    query, ref = query.to(dtype), ref.to(dtype)
    num_ref = ref.shape[0]
    rows = batch_size if batch_size is not None else max(1, _BLOCK_PAIRS // max(num_ref, 1))
    blocks = block_distance(ref, distance_fn)
    cols = torch.arange(num_ref, device=query.device)
    for s in range(0, query.shape[0], rows):
        e = min(s + rows, query.shape[0])
        mat = blocks(query[s:e])
        scores = mat if is_inverted else mat.neg()
        genuine = query_ids[s:e].unsqueeze(1) == ref_ids.unsqueeze(0)
        if same_set:
            keep = cols.unsqueeze(0) > torch.arange(s, e, device=query.device).unsqueeze(1)
            yield scores[keep], genuine[keep]
        else:
            yield scores.reshape(-1), genuine.reshape(-1)


# ------------------------------------------------------------------------ the sorted route
def _observed_rows(
    scores: Tensor, is_genuine: Tensor, bins: Tensor | None = None, above: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """One row per distinct score: ``(thresholds, true_accepts, false_accepts)``, descending.

    Counts are those at or above each score among ``scores``, plus, with ``bins``/``above``
    (``(2, num_bins)`` genuine/impostor counts of the bins strictly above each bin), those of
    all higher bins (the scores then being the whole content of their bins).
    """
    order = torch.argsort(scores, descending=True)
    values = scores[order].to(torch.float64)
    gen = is_genuine[order].to(torch.int64)
    cum_gen = gen.cumsum(0)
    cum_imp = (1 - gen).cumsum(0)
    n = values.shape[0]
    last = torch.ones(n, dtype=torch.bool, device=values.device)
    last[:-1] = values[1:] != values[:-1]
    if bins is not None and above is not None:
        b = bins[order]
        first = torch.ones(n, dtype=torch.bool, device=values.device)
        first[1:] = b[1:] != b[:-1]
        pos = torch.arange(n, device=values.device)
        start = torch.cummax(torch.where(first, pos, 0), 0).values
        cum_gen = cum_gen - (cum_gen - gen)[start] + above[0][b]
        cum_imp = cum_imp - (cum_imp - (1 - gen))[start] + above[1][b]
    return values[last], cum_gen[last], cum_imp[last]


def _assemble(
    thresholds: Tensor,
    true_accepts: Tensor,
    false_accepts: Tensor,
    observed: Tensor,
    num_genuine: int,
    num_impostor: int,
    presorted: bool = False,
) -> OperatingPoints:
    """Rows sorted strictest first, behind the ``+inf`` row; ``exact_below`` from ``observed``."""
    if not presorted:
        order = torch.argsort(thresholds, descending=True, stable=True)
        thresholds, true_accepts = thresholds[order], true_accepts[order]
        false_accepts, observed = false_accepts[order], observed[order]
    device = thresholds.device
    zero = torch.zeros(1, dtype=torch.int64, device=device)
    t = torch.cat([torch.full((1,), float("inf"), dtype=torch.float64, device=device), thresholds])
    ta = torch.cat([zero, true_accepts])
    fa = torch.cat([zero, false_accepts])
    exact_below = torch.cat([observed, torch.ones(1, dtype=torch.bool, device=device)])
    return OperatingPoints(t, ta, fa, exact_below, num_genuine, num_impostor)


def operating_points(scores: Tensor, is_genuine: Tensor) -> OperatingPoints:
    """Exact operating points of pairs held in memory: one row per distinct score.

    Args:
        scores: ``(P,)`` floating, larger means more alike, finite.
        is_genuine: ``(P,)`` bool.

    Returns:
        :class:`OperatingPoints` with ``exact_below`` all True.

    Example:
        >>> p = operating_points(torch.tensor([0.9, 0.4, 0.7, 0.4]),
        ...                      torch.tensor([True, True, False, False]))
        >>> p.thresholds.tolist(), p.true_accepts.tolist(), p.false_accepts.tolist()
        ([inf, 0.9, 0.7, 0.4], [0, 1, 1, 2], [0, 0, 1, 2])
    """
    scores = scores.reshape(-1)
    is_genuine = is_genuine.reshape(-1).bool()
    num_genuine = int(is_genuine.sum())
    t, ta, fa = _observed_rows(scores, is_genuine)
    observed = torch.ones_like(t, dtype=torch.bool)
    num_impostor = scores.shape[0] - num_genuine
    return _assemble(t, ta, fa, observed, num_genuine, num_impostor, presorted=True)


# --------------------------------------------------------------------- the histogram route
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
    bits = (f32 + 0.0).view(torch.int32).to(torch.int64)
    return torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF) + (1 << 31)


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
def _fmr_rows(points: OperatingPoints, fmr_targets: Sequence[float] | Tensor) -> Tensor:
    fmr = points.false_accepts.to(torch.float64) / max(points.num_impostor, 1)
    targets = torch.as_tensor(fmr_targets, dtype=torch.float64, device=fmr.device)
    return torch.searchsorted(fmr, targets, right=True) - 1


def points_at_fmr(
    points: OperatingPoints, fmr_targets: Sequence[float] | Tensor
) -> tuple[Tensor, Tensor]:
    """The operating point of largest TAR with ``FMR <= target``, for each target.

    That is the smallest threshold whose false accepts are at most ``target * num_impostor``:
    with exact rows, ``score >= t`` accepts the genuine pairs scoring above the
    ``(m + 1)``-th largest impostor score, ``m = floor(target * num_impostor)``.

    Returns:
        ``(rows (F,) int64, tar_slack (F,) float64)``: rows of ``points``; ``tar_slack`` is
        by how much an unread bin below the row could raise the TAR (0: exact).

    Example:
        >>> p = operating_points(torch.tensor([0.9, 0.4, 0.7, 0.4]),
        ...                      torch.tensor([True, True, False, False]))
        >>> points_at_fmr(p, [0.0, 0.5, 1.0])[0].tolist()
        [1, 2, 3]
    """
    rows = _fmr_rows(points, fmr_targets)
    nxt = (rows + 1).clamp(max=points.thresholds.shape[0] - 1)
    gain = (points.true_accepts[nxt] - points.true_accepts[rows]).to(torch.float64)
    slack = torch.where(points.exact_below[rows], 0.0, gain / max(points.num_genuine, 1))
    return rows, slack


def _metric(ta: Tensor, fa: Tensor, num_genuine: int, num_impostor: int, criterion: str) -> Tensor:
    ta, fa = ta.to(torch.float64), fa.to(torch.float64)
    if criterion == "accuracy":
        return (ta + (num_impostor - fa)) / max(num_genuine + num_impostor, 1)
    if criterion == "balanced_accuracy":
        return (ta / max(num_genuine, 1) + (num_impostor - fa) / max(num_impostor, 1)) / 2
    if criterion == "f1":
        den = ta + fa + num_genuine
        return torch.where(den > 0, 2 * ta / den.clamp(min=1), 0.0)
    raise ValueError(f"criterion must be one of {list(CRITERIA)}; got {criterion!r}")


def criterion_values(points: OperatingPoints, criterion: Criterion) -> Tensor:
    """Accuracy, balanced accuracy or F1 (genuine = positive) at every row, ``(T,)`` float64.

    * accuracy = ``(TA + num_impostor - FA) / (num_genuine + num_impostor)``;
    * balanced accuracy = ``(TA / num_genuine + (num_impostor - FA) / num_impostor) / 2``;
    * F1 = ``2 TA / (TA + FA + num_genuine)`` (``2 precision recall / (precision + recall)``).

    Example:
        >>> p = operating_points(torch.tensor([0.9, 0.4, 0.7]), torch.tensor([True, True, False]))
        >>> criterion_values(p, "accuracy").tolist()
        [0.3333333333333333, 0.6666666666666666, 0.3333333333333333, 0.6666666666666666]
    """
    return _metric(
        points.true_accepts,
        points.false_accepts,
        points.num_genuine,
        points.num_impostor,
        criterion,
    )


def _gap_bounds(points: OperatingPoints, criterion: str) -> Tensor:
    """Upper bound of the criterion at thresholds inside each row's gap (``-inf``: none)."""
    nxt = (torch.arange(points.thresholds.shape[0], device=points.thresholds.device) + 1).clamp(
        max=points.thresholds.shape[0] - 1
    )
    # inside the gap: TA at most the next row's, FA at least this row's
    bound = _metric(
        points.true_accepts[nxt],
        points.false_accepts,
        points.num_genuine,
        points.num_impostor,
        criterion,
    )
    return torch.where(points.exact_below, float("-inf"), bound)


def best_threshold(points: OperatingPoints, criterion: Criterion) -> tuple[int, float, float]:
    """The row maximising ``criterion`` (the strictest among equal values).

    Returns:
        ``(row, value, slack)``: ``slack`` bounds how much higher the criterion could be at
        a threshold inside a bin that was not re-read (0: exact).

    Example:
        >>> p = operating_points(torch.tensor([0.9, 0.4, 0.7]), torch.tensor([True, True, False]))
        >>> best_threshold(p, "f1")
        (3, 0.8, 0.0)
    """
    values = criterion_values(points, criterion)
    row = int(torch.argmax(values))  # the first maximum: the strictest threshold
    value = float(values[row])
    slack = max(float(_gap_bounds(points, criterion).max()) - value, 0.0)
    return row, value, slack


def robust_thresholds(points: OperatingPoints, dtype: torch.dtype = torch.float64) -> Tensor:
    """Each row's threshold moved halfway down to the next row's, where that changes nothing.

    Where no score lies between a row and the next (``exact_below``), ``(t_r + t_{r+1}) / 2``
    accepts exactly the same pairs as ``t_r`` but is not itself a score: recomputing the
    scores (rounded in another order) does not flip the pairs scoring ``t_r``. Kept at
    ``t_r`` where the midpoint would round (in ``dtype``) onto the next score, and for
    ``+inf`` and the last row.

    Returns:
        ``(T,)`` float64.

    Example:
        >>> p = operating_points(torch.tensor([0.5, 0.25]), torch.tensor([True, False]))
        >>> robust_thresholds(p).tolist()
        [inf, 0.375, 0.25]
    """
    t = points.thresholds
    if t.shape[0] < 2:
        return t.clone()
    nxt = torch.cat([t[1:], t[-1:]])
    mid = (t + nxt) / 2
    usable = points.exact_below & (mid.to(dtype).to(torch.float64) > nxt) & torch.isfinite(mid)
    usable[-1] = False
    return torch.where(usable, mid, t)
