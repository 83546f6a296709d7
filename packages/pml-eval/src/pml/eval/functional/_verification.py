"""Verification (1:1 matching) operating points from pair scores, in bounded memory.

A *pair* has a score (larger means more alike: similarities as they are, distances negated)
and is *genuine* (same label) or an *impostor*. Accepting the pairs with ``score >= t``
gives, at threshold ``t``, ``true_accepts(t)`` genuine and ``false_accepts(t)`` impostor
pairs: FMR (= FAR) is ``false_accepts / num_impostor``, TAR is ``true_accepts /
num_genuine`` and FNMR is ``1 - TAR``.

The candidate thresholds are tabulated as :class:`OperatingPoints`, strictest first.

* **sorted** (:func:`operating_points`): every score in memory, sorted; one row per distinct
  score: exact.
* **histogram** (:func:`streamed_operating_points`, ``_verification_stream.py``): the scores
  are streamed twice over blocks of pairs. Pass 1 counts genuine and impostor scores in
  ``2**20`` bins (the top 20 bits of each score's float32 pattern, order-preserving: a bin
  spans a relative width of ``2**-11`` ≈ 0.05%). The bins that decide the requested
  operating points (the bin where the FMR crosses each target; the bins where a criterion
  could beat the best bin edge) are then re-read exactly in pass 2, as far as
  ``max_buffered_scores`` allows. A bin not re-read is one row at its lower edge; the rows'
  counts are always exact, and :func:`points_at_fmr` / :func:`best_threshold` say how far an
  unread bin could move the result (their ``slack``; 0 when exact).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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
]

#: what :func:`best_threshold` can maximise.
CRITERIA = ("accuracy", "balanced_accuracy", "f1")

Criterion = Literal["accuracy", "balanced_accuracy", "f1"]

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
