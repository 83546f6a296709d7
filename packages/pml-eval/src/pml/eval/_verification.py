"""Verification metrics (TAR@FAR, FNMR@FMR, ROC points) and threshold selection.

Thin layer over :mod:`pml.eval.functional._verification`: checks the inputs, turns them into
pair-score blocks, and reports thresholds in the distance's own units.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pml.core.validation import check_int, check_option, check_real
from pml.distances import BaseDistance
from pml.eval import functional as EF
from pml.eval._verification_pairs import Pairs, collect_pairs

__all__ = ["ThresholdSelection", "VerificationResult", "select_threshold", "verification_metrics"]

#: default FMR targets of :func:`verification_metrics`
DEFAULT_FMR_TARGETS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


@dataclass(frozen=True)
class VerificationResult:
    """Operating points at FMR targets: ROC points ``(fmr, tar)`` and their thresholds.

    Attributes:
        fmr_targets: the requested FMR (= FAR) values.
        thresholds: per target, the threshold in the distance's units: a pair matches when
            its distance is ``<= threshold`` (similarity ``>= threshold`` when
            ``is_inverted``). ``±inf``: nothing matches.
        fmr: per target, the FMR reached (``<= target``).
        tar: per target, the TAR (= 1 - FNMR) reached, the largest possible at that FMR.
        fnmr: per target, ``1 - tar``.
        tar_slack: per target, how much higher the TAR could be at a threshold inside a
            score bin that did not fit ``max_buffered_scores`` (0: exact).
        num_genuine: genuine (same-label) pairs.
        num_impostor: impostor pairs.
        is_inverted: whether thresholds are similarities (``>=``) rather than distances.
        route: ``"sorted"`` (every score held and sorted) or ``"histogram"`` (streamed).
    """

    fmr_targets: list[float]
    thresholds: list[float]
    fmr: list[float]
    tar: list[float]
    fnmr: list[float]
    tar_slack: list[float]
    num_genuine: int
    num_impostor: int
    is_inverted: bool
    route: str

    @property
    def exact(self) -> bool:
        """Whether every reported TAR is exact (no slack)."""
        return all(s == 0 for s in self.tar_slack)

    def as_dict(self) -> dict[str, float]:
        """Flat ``{"tar_at_far_<t>", "fnmr_at_fmr_<t>", "threshold_at_fmr_<t>"}`` for logging.

        ``<t>`` is the target formatted with ``{:g}`` (``1e-05``, ``0.001``).
        """
        out: dict[str, float] = {}
        for t, tar, fnmr, th in zip(self.fmr_targets, self.tar, self.fnmr, self.thresholds):
            out[f"tar_at_far_{t:g}"] = tar
            out[f"fnmr_at_fmr_{t:g}"] = fnmr
            out[f"threshold_at_fmr_{t:g}"] = th
        return out


@dataclass(frozen=True)
class ThresholdSelection:
    """A chosen match threshold and the rates it gives on the pairs it was chosen on.

    ``MatchFinder(distance, threshold=selection.threshold)`` (or
    :meth:`MatchFinder.from_threshold_selection`) applies it: a pair matches when its
    distance is ``<= threshold`` (similarity ``>= threshold`` when ``is_inverted``).

    Attributes:
        threshold: in the distance's units, halfway between the deciding score and the next
            (so recomputed scores round the same way); ``±inf``: nothing matches.
        is_inverted: whether ``threshold`` is a similarity.
        criterion: ``"accuracy"``, ``"balanced_accuracy"``, ``"f1"`` or ``"fmr"``.
        value: the criterion's value (for ``"fmr"``: the TAR at the target FMR).
        accuracy, balanced_accuracy, f1, tar, fmr: the rates at ``threshold``.
        true_accepts, false_accepts: matched genuine / impostor pairs.
        num_genuine, num_impostor: pairs of each kind.
        slack: how much higher ``value`` could be at a threshold inside a score bin that did
            not fit ``max_buffered_scores`` (0: exact).
        route: ``"sorted"`` or ``"histogram"``.
        distance: the distance the scores came from (None for given pair scores).
    """

    threshold: float
    is_inverted: bool
    criterion: str
    value: float
    accuracy: float
    balanced_accuracy: float
    f1: float
    tar: float
    fmr: float
    true_accepts: int
    false_accepts: int
    num_genuine: int
    num_impostor: int
    slack: float
    route: str
    distance: BaseDistance | None = field(default=None, repr=False, compare=False)


def _points(
    pairs: Pairs,
    fmr_targets: Sequence[float],
    criterion: str | None,
    max_buffered_scores: int,
) -> tuple[EF.OperatingPoints, str]:
    if pairs.in_memory:
        scores, genuine = next(iter(pairs.blocks()))
        points, route = EF.operating_points(scores, genuine), "sorted"
    else:
        points = EF.streamed_operating_points(
            pairs.blocks,
            fmr_targets=fmr_targets,
            criterion=criterion,  # type: ignore[arg-type]
            max_buffered_scores=max_buffered_scores,
            num_pairs=pairs.num_pairs,
        )
        route = "sorted" if pairs.num_pairs <= max_buffered_scores else "histogram"
    if points.num_genuine == 0 or points.num_impostor == 0:
        kind = "genuine (same-label)" if points.num_genuine == 0 else "impostor (different-label)"
        raise ValueError(
            f"the pairs must include genuine and impostor pairs; got no {kind} pairs "
            f"({points.num_genuine} genuine, {points.num_impostor} impostor)"
        )
    return points, route


def _user_threshold(t: float, is_inverted: bool) -> float:
    """A "score >= t" threshold in the distance's units (distances were negated)."""
    return t if is_inverted else -t


def _check_targets(name: str, values: Any) -> list[float]:
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a sequence of numbers in [0, 1]; got {values!r}")
    out = [check_real(f"{name}[{i}]", v, min=0, max=1) for i, v in enumerate(values)]
    if not out:
        raise ValueError(f"{name} must not be empty")
    return out  # type: ignore[return-value]


def verification_metrics(
    query: Any = None,
    query_labels: Any = None,
    reference: Any = None,
    reference_labels: Any = None,
    *,
    scores: Any = None,
    is_genuine: Any = None,
    distance: BaseDistance | None = None,
    is_inverted: bool | None = None,
    fmr_targets: Sequence[float] = DEFAULT_FMR_TARGETS,
    batch_size: int | None = None,
    max_buffered_scores: int = 1 << 22,
) -> VerificationResult:
    """TAR@FAR / FNMR@FMR and ROC points ``(fmr, tar)`` at each of ``fmr_targets``.

    Pairs come from embeddings (``reference=None``: every unordered pair ``i < j`` of the
    query; otherwise every query-reference pair; genuine = same label, every column for
    multi-column labels), scored with ``distance`` (default :class:`CosineSimilarity`) in
    blocks; or from precomputed ``scores`` and ``is_genuine`` flags (``is_inverted``: True
    when larger scores mean more alike, the default; else taken from ``distance``).

    At target ``a`` the threshold is the FMR-quantile of the impostor scores: with
    ``m = floor(a * num_impostor)``, a pair matches when it scores better than the
    ``(m + 1)``-th best impostor score, so ``FMR <= a`` and the TAR is the largest possible.

    Memory: up to ``max_buffered_scores`` pairs (default ``2**22``; about 80 bytes each at
    the peak) are scored once, held and sorted (route ``"sorted"``, exact). More are streamed
    twice over blocks of the score matrix (route ``"histogram"``): a histogram of ``2**20``
    order-preserving bins (relative width ``2**-11``), then the bin that decides each target
    is re-read exactly; a bin holding more than ``max_buffered_scores`` scores is not, and
    ``tar_slack`` bounds the TAR it could hide (``result.exact`` says whether all are exact).

    Args:
        query: ``(N, D)`` embeddings (tensor or numpy array; f16/bf16 computed in float32).
        query_labels: ``(N,)`` or ``(N, L)`` labels.
        reference: ``(M, D)`` embeddings, or None.
        reference_labels: ``(M,)`` or ``(M, L)`` labels, with ``reference``.
        scores: ``(P,)`` pair scores (instead of embeddings).
        is_genuine: ``(P,)`` bool, with ``scores``.
        distance: a pml distance (default ``CosineSimilarity()``).
        is_inverted: orientation of ``scores`` (None: the distance's, or True).
        fmr_targets: FMR values in ``[0, 1]``.
        batch_size: query rows per block (default: ~4M pairs per block).
        max_buffered_scores: scores held in memory at once.

    Returns:
        :class:`VerificationResult`.

    Raises:
        TypeError: wrong argument types.
        ValueError: both or neither input kinds, shapes that do not match, NaN/inf
            embeddings or scores, no genuine or no impostor pair, a target outside [0, 1].

    Example:
        >>> s = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.2])
        >>> r = verification_metrics(scores=s, is_genuine=s > 0.65, fmr_targets=[0.5])
        >>> r.tar, r.fmr, r.thresholds
        ([1.0], [0.5], [0.4...])
    """
    targets = _check_targets("fmr_targets", fmr_targets)
    max_buffered_scores = check_int("max_buffered_scores", max_buffered_scores, min=0)  # type: ignore[assignment]
    pairs = collect_pairs(
        query,
        query_labels,
        reference,
        reference_labels,
        scores,
        is_genuine,
        distance,
        is_inverted,
        batch_size,
    )
    points, route = _points(pairs, targets, None, max_buffered_scores)
    rows, slack = EF.points_at_fmr(points, targets)
    thresholds = EF.robust_thresholds(points, pairs.dtype)[rows]
    tar = (points.true_accepts[rows].double() / points.num_genuine).tolist()
    return VerificationResult(
        fmr_targets=targets,
        thresholds=[_user_threshold(t, pairs.is_inverted) for t in thresholds.tolist()],
        fmr=(points.false_accepts[rows].double() / points.num_impostor).tolist(),
        tar=tar,
        fnmr=[1.0 - t for t in tar],
        tar_slack=slack.tolist(),
        num_genuine=points.num_genuine,
        num_impostor=points.num_impostor,
        is_inverted=pairs.is_inverted,
        route=route,
    )


def select_threshold(
    query: Any = None,
    query_labels: Any = None,
    reference: Any = None,
    reference_labels: Any = None,
    *,
    scores: Any = None,
    is_genuine: Any = None,
    distance: BaseDistance | None = None,
    is_inverted: bool | None = None,
    criterion: Literal["accuracy", "balanced_accuracy", "f1", "fmr"] = "accuracy",
    target_fmr: float | None = None,
    batch_size: int | None = None,
    max_buffered_scores: int = 1 << 22,
) -> ThresholdSelection:
    """The match threshold maximising accuracy, balanced accuracy or F1, or meeting an FMR.

    Pairs as in :func:`verification_metrics`. Every distinct score is a candidate threshold
    (a pair matches when it scores at least as well); the first maximum from the strictest
    side wins (the fewest false matches). ``criterion="fmr"`` takes the loosest threshold
    with ``FMR <= target_fmr`` (the largest TAR there). Genuine pairs are the positives of
    F1. The result configures :class:`MatchFinder`:
    ``MatchFinder(distance, threshold=selection.threshold)``.

    On the histogram route (more than ``max_buffered_scores`` pairs) the bins where a better
    threshold could lie are re-read exactly; ``slack`` bounds what the bins that did not fit
    could hide (0: exact).

    Args:
        criterion: what to maximise, or ``"fmr"``.
        target_fmr: the FMR in ``[0, 1]`` for ``criterion="fmr"``.
        others: as in :func:`verification_metrics`.

    Returns:
        :class:`ThresholdSelection`.

    Raises:
        TypeError: wrong argument types.
        ValueError: as :func:`verification_metrics`; an unknown criterion; ``target_fmr``
            missing with ``"fmr"`` or given with another criterion.

    Example:
        >>> s = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.2])
        >>> sel = select_threshold(scores=s, is_genuine=torch.tensor([1, 1, 0, 1, 0]).bool())
        >>> sel.threshold, sel.accuracy  # halfway between 0.8 and 0.7
        (0.75, 0.8)
    """
    check_option("criterion", criterion, (*EF.CRITERIA, "fmr"))
    if criterion == "fmr":
        if target_fmr is None:
            raise ValueError("target_fmr must be given with criterion='fmr'; got None")
        target = check_real("target_fmr", target_fmr, min=0, max=1)
    elif target_fmr is not None:
        raise ValueError(
            f"target_fmr is only used with criterion='fmr'; got target_fmr={target_fmr!r} "
            f"with criterion={criterion!r}"
        )
    max_buffered_scores = check_int("max_buffered_scores", max_buffered_scores, min=0)  # type: ignore[assignment]
    pairs = collect_pairs(
        query,
        query_labels,
        reference,
        reference_labels,
        scores,
        is_genuine,
        distance,
        is_inverted,
        batch_size,
    )
    if criterion == "fmr":
        points, route = _points(pairs, [target], None, max_buffered_scores)
        rows, slack_t = EF.points_at_fmr(points, [target])
        row, slack = int(rows[0]), float(slack_t[0])
        value = float(points.true_accepts[row]) / points.num_genuine
    else:
        points, route = _points(pairs, [], criterion, max_buffered_scores)
        row, value, slack = EF.best_threshold(points, criterion)  # type: ignore[arg-type]
    ta, fa = int(points.true_accepts[row]), int(points.false_accepts[row])
    at_row = points._replace(
        true_accepts=points.true_accepts[row : row + 1],
        false_accepts=points.false_accepts[row : row + 1],
    )
    rates = {
        name: float(EF.criterion_values(at_row, name))  # type: ignore[arg-type]
        for name in EF.CRITERIA
    }
    threshold = float(EF.robust_thresholds(points, pairs.dtype)[row])
    return ThresholdSelection(
        threshold=_user_threshold(threshold, pairs.is_inverted),
        is_inverted=pairs.is_inverted,
        criterion=criterion,
        value=value,
        accuracy=rates["accuracy"],
        balanced_accuracy=rates["balanced_accuracy"],
        f1=rates["f1"],
        tar=ta / points.num_genuine,
        fmr=fa / points.num_impostor,
        true_accepts=ta,
        false_accepts=fa,
        num_genuine=points.num_genuine,
        num_impostor=points.num_impostor,
        slack=slack if math.isfinite(slack) else 0.0,
        route=route,
        distance=pairs.distance,
    )
