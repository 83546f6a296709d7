"""Ranking losses: FastAPLoss, PNPLoss, SmoothAPLoss and RankedListLoss.

Math: :mod:`pml.losses.functional` (``fast_ap_loss``, ``pnp_loss``, ``smooth_ap_loss``,
``ranked_list_loss``). PNP and Smooth-AP give the reference's numbers without its
``N x N x N`` tensors (bounded chunks, forward and backward); FastAP without one ``(N, N)``
pulse per bin.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import torch
from torch import Tensor

from pml.core.indices import IndicesTuple, convert_to_weights
from pml.core.validation import (
    InvalidArgumentError,
    check_option,
    indices_tuple_not_supported,
    labels_required,
    ref_not_supported,
)
from pml.distances import BaseDistance, CosineSimilarity, LpDistance, assert_distance_type
from pml.losses._arguments import check_count, check_real
from pml.losses._base import BaseMetricLossFunction, loss_entry
from pml.losses._pairs import nan_if_nonfinite
from pml.losses.functional._fast_ap import fast_ap_loss
from pml.losses.functional._ranking import (
    PNP_VARIANTS,
    pnp_loss,
    ranked_list_loss,
    smooth_ap_loss,
)
from pml.reducers import LossDict

__all__ = ["FastAPLoss", "PNPLoss", "RankedListLoss", "SmoothAPLoss"]


def _rows(n: int, like: Tensor) -> Tensor:
    return torch.arange(n, device=like.device)


class _Float32RankingLoss(BaseMetricLossFunction):
    """A ranking loss whose hand-written backwards need autocast off.

    fix: under ``torch.autocast`` the custom autograd functions of FastAP, PNP and Smooth-AP
    saved bfloat16/float16 products and their backward failed with a dtype mismatch; they
    compute in at least float32 anyway, so autocast is switched off for the whole forward.
    """

    accepts_mat = True  # forward(..., mat=): the batch matrix through batch_matrix
    autocast_off = True


class FastAPLoss(_Float32RankingLoss):
    """FastAP: average precision from distance histograms (Cakir et al., CVPR 2019).

    Paper: "Deep Metric Learning to Rank". Row ``i`` ranks the batch by distance; its
    positives (same label, other rows) and negatives are counted in ``num_bins + 1``
    triangular bins over ``[0, 2^power]`` and ``loss_i = 1 - FastAP_i / N⁺_i``, times the
    row's miner weight (a miner's tuple only gives per-row weights). Rows without a positive
    are left out; no such row, or no bin that counts, gives the zero loss. Math:
    :func:`pml.losses.functional.fast_ap_loss` (two ``scatter_add`` calls, ``O(N²)`` memory;
    the reference built ``(num_bins + 1) x N x N`` pulses).

    Args:
        num_bins: number of histogram bins (``>= 1``).
        **kwargs: ``distance`` (an :class:`LpDistance` with ``p=2`` and
            ``normalize_embeddings=True``; default ``LpDistance(power=2)``), ``reducer``
            (default ``MeanReducer``), ``collect_stats``, ``embedding_regularizer``,
            ``embedding_reg_weight``.

    Raises:
        InvalidArgumentError: another distance.
        TypeError: ``num_bins`` is not an integer.
        ValueError: ``num_bins < 1``.

    Example:
        >>> emb = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
        >>> FastAPLoss()(emb, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
        tensor(0.7972)
    """

    def __init__(self, num_bins: int = 10, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        assert_distance_type(self, LpDistance, normalize_embeddings=True, p=2)
        # fix: 0 bins divided by zero at the first forward; 2.5 bins was truncated to 2
        self.num_bins = check_count("num_bins", num_bins, min=1)
        self.num_edges = self.num_bins + 1
        self.add_to_recordable_attributes(list_of_names=["num_bins"], is_stat=False)

    def get_default_distance(self) -> BaseDistance:
        return LpDistance(power=2)

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        indices_tuple: IndicesTuple | None,
        ref_emb: Tensor,
        ref_labels: Tensor | None,
    ) -> LossDict:
        labels = labels_required(labels)
        ref_not_supported(embeddings, labels, ref_emb, ref_labels)
        dist = self.batch_acc_matrix(embeddings)
        weights = convert_to_weights(indices_tuple, labels, dtype=dist.dtype)
        hist_max = 2.0**self.distance.power
        losses, valid = fast_ap_loss(dist, labels, self.num_bins, hist_max, weights)
        rows = torch.nonzero(valid).squeeze(1)
        if len(rows) == 0:
            return self.zero_losses()
        return {"loss": loss_entry(losses[rows].to(embeddings.dtype), rows, "element")}


class PNPLoss(_Float32RankingLoss):
    """PNP loss (Li et al., AAAI 2022): ranking with penalised positives and negatives.

    Paper: "Rethinking the Optimization of Average Precision: Only Penalizing Negative
    Instances before Positive Ones is Enough". For each positive ``(i, j)`` (the row itself
    included), ``R_ij`` counts (softly, temperature ``anneal``) the negatives ranked above
    ``j``; the variant's function of ``R`` is averaged per row and over the rows that have a
    positive. The result is already reduced (a 0-dim value). Math:
    :func:`pml.losses.functional.pnp_loss` (bounded chunks: ``O(N²)`` memory where the
    reference built three ``N x N x N`` tensors).

    Args:
        b: slope of the ``"Ib"`` variant (``> 0``).
        alpha: exponent of the ``"Dq"`` variant.
        anneal: temperature of the sigmoid (``> 0``).
        variant: ``"O"``, ``"Ds"``, ``"Dq"``, ``"Iu"`` or ``"Ib"``.
        **kwargs: ``distance`` (must be :class:`CosineSimilarity`, the default), ``reducer``,
            ``collect_stats``, ``embedding_regularizer``, ``embedding_reg_weight``.

    Raises:
        ValueError: an unknown ``variant``; ``b`` or ``anneal`` not ``> 0``.
        InvalidArgumentError: another distance.

    Example:
        >>> emb = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
        >>> PNPLoss()(emb, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
        tensor(1.6445)
    """

    VARIANTS: ClassVar[list[str]] = list(PNP_VARIANTS)

    def __init__(
        self,
        b: float = 2,
        alpha: float = 1,
        anneal: float = 0.01,
        variant: str = "O",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        assert_distance_type(self, CosineSimilarity)
        check_option("variant", variant, self.VARIANTS)
        # fix: anneal <= 0 gave NaN and b <= 0 a NaN or division by zero in "Ib"
        check_real("b", b, min=0, min_open=True)
        check_real("alpha", alpha)
        check_real("anneal", anneal, min=0, min_open=True)
        self.b = b
        self.alpha = alpha
        self.anneal = anneal
        self.variant = variant

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        indices_tuple: IndicesTuple | None,
        ref_emb: Tensor,
        ref_labels: Tensor | None,
    ) -> LossDict:
        labels = labels_required(labels)
        indices_tuple_not_supported(indices_tuple)
        ref_not_supported(embeddings, labels, ref_emb, ref_labels)
        sim = self.batch_acc_matrix(embeddings)
        loss, valid = pnp_loss(sim, labels, self.b, self.alpha, self.anneal, self.variant)  # type: ignore[arg-type]
        rows = torch.nonzero(valid).squeeze(1)
        if len(rows) == 0:
            return self.zero_losses()
        # compat: the reduced value lists the rows it averages as its indices
        return {"loss": loss_entry(loss.to(embeddings.dtype), rows, "already_reduced")}


class SmoothAPLoss(_Float32RankingLoss):
    """Smooth-AP (Brown et al., ECCV 2020): a sigmoid-smoothed average precision.

    Paper: "Smooth-AP: Smoothing the Path Towards Large-Scale Image Retrieval". Every
    label must occur equally often (use :class:`pml.samplers.MPerClassSampler`). With ``U``
    distinct labels the batch is cut into consecutive blocks of ``U`` rows, and the
    positives of a query are the members of its block (itself included).
    compat: label values are otherwise ignored, like the reference: the blocks are the
    classes only when the batch is grouped by label and has as many samples per class as
    classes (spec, "Known issue"; docs/compatibility.md). ``loss_q = 1 - AP_q``, times the
    row's miner weight. Math: :func:`pml.losses.functional.smooth_ap_loss` (bounded chunks,
    forward and backward: ``O(N²)`` memory where the reference built ``N x N x N``).

    The unreduced losses are the sub-loss ``"ap_loss"``, and that is also the sub-loss name
    the reducers see. fix: the reference declared ``"loss"``, so with an embedding
    regularizer a user's reducer was replaced by ``MeanReducer`` for the AP term.
    fix: float64 embeddings give a float64 loss (the reference: a float32 AP buffer).

    Args:
        temperature: ``τ`` of the sigmoid (``> 0``).
        **kwargs: ``distance`` (must be :class:`CosineSimilarity`, the default), ``reducer``
            (default ``MeanReducer``), ``collect_stats``, ``embedding_regularizer``,
            ``embedding_reg_weight``.

    Raises:
        ValueError: ``temperature`` not ``> 0``; (forward) labels with unequal counts.
        InvalidArgumentError: another distance.

    Example:
        >>> emb = torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
        >>> SmoothAPLoss()(emb, torch.tensor([0, 0, 1, 1]))
        tensor(0.1875)
    """

    def __init__(self, temperature: float = 0.01, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        assert_distance_type(self, CosineSimilarity)
        # fix: a temperature of 0 gave NaN
        check_real("temperature", temperature, min=0, min_open=True)
        self.temperature = temperature

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()

    def _sub_loss_names(self) -> list[str]:
        # fix: the name the loss dict uses, so that the user's reducer applies to it
        return ["ap_loss"]

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        indices_tuple: IndicesTuple | None,
        ref_emb: Tensor,
        ref_labels: Tensor | None,
    ) -> LossDict:
        labels = labels_required(labels)
        ref_not_supported(embeddings, labels, ref_emb, ref_labels)
        n = len(embeddings)
        if n == 0:  # fix: the reference raised its unequal-counts error
            return self.zero_losses()
        _, counts = torch.unique(labels, return_counts=True)
        low, high = torch.aminmax(counts)
        if low != high:
            raise ValueError(
                "labels must hold every class the same number of times (SmoothAPLoss); got "
                f"counts {counts.tolist()}. pml.samplers.MPerClassSampler(labels, m, "
                "batch_size=...) draws such batches"
            )
        sim = self.batch_acc_matrix(embeddings)
        weights = convert_to_weights(indices_tuple, labels, dtype=sim.dtype)
        # compat: blocks of n // (n // U) = U consecutive rows are the positive sets
        block_size = n // (n // len(counts))
        losses = smooth_ap_loss(sim, block_size, self.temperature, weights)
        return {"ap_loss": loss_entry(losses.to(embeddings.dtype), _rows(n, losses), "element")}


class RankedListLoss(BaseMetricLossFunction):
    """Ranked list loss (Wang et al., CVPR 2019).

    Paper: "Ranked List Loss for Deep Metric Learning". Row ``i`` pulls its positives
    farther than ``alpha - margin`` in and pushes its negatives closer than ``alpha`` out,
    each weighted by ``exp(T·violation)``; ``loss_i = (1 - imbalance)·L_P + imbalance·L_N``.
    Math: :func:`pml.losses.functional.ranked_list_loss`.

    fix: NaN/inf embeddings give a NaN loss (the reference's comparisons dropped them and
    returned a finite number).

    Args:
        margin: ``m``; positives closer than ``alpha - margin`` are fine.
        Tn: temperature of the negative weights.
        imbalance: weight of the negative term, in ``[0, 1]``.
        alpha: the negative boundary (None: ``1 + margin / 2``).
        Tp: temperature of the positive weights.
        **kwargs: ``distance`` (default :class:`LpDistance`; the formula reads it as a
            distance), ``reducer`` (default ``MeanReducer``), ``collect_stats``,
            ``embedding_regularizer``, ``embedding_reg_weight``.

    Raises:
        InvalidArgumentError: ``imbalance`` outside ``[0, 1]``.

    Warns:
        UserWarning: ``Tp`` or ``Tn`` above 5 (``exp`` may overflow).

    Example:
        >>> emb = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
        >>> RankedListLoss(margin=0.4, Tn=1.0)(emb, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
        tensor(0.5333)
    """

    accepts_mat = True  # forward(..., mat=): the batch matrix through batch_matrix

    def __init__(
        self,
        margin: float,
        Tn: float,  # the reference's argument names
        imbalance: float = 0.5,
        alpha: float | None = None,
        Tp: float = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_real("margin", margin)
        check_real("Tn", Tn)
        check_real("Tp", Tp)
        check_real("alpha", alpha, allow_none=True)
        check_real("imbalance", imbalance)
        if not 0 <= imbalance <= 1:
            raise InvalidArgumentError(f"imbalance must be in [0, 1]; got {imbalance!r}")
        self.margin = margin
        self.Tn = Tn
        self.Tp = Tp
        self.imbalance = imbalance
        self.alpha = 1 + margin / 2 if alpha is None else alpha
        if Tp > 5 or Tn > 5:
            warnings.warn(  # compat: the reference's wording
                f"Values of Tp or Tn are too high (Tp = {Tp}, Tn = {Tn}). Too large "
                "temperature values may lead to overflow.",
                UserWarning,
                stacklevel=2,
            )
        self.add_to_recordable_attributes(
            list_of_names=["imbalance", "alpha", "margin", "Tp", "Tn"], is_stat=False
        )

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        indices_tuple: IndicesTuple | None,
        ref_emb: Tensor,
        ref_labels: Tensor | None,
    ) -> LossDict:
        labels = labels_required(labels)
        indices_tuple_not_supported(indices_tuple)
        ref_not_supported(embeddings, labels, ref_emb, ref_labels)
        if len(embeddings) == 0:  # fix: the reference's mean of nothing was NaN
            return self.zero_losses()
        dist = self.batch_acc_matrix(embeddings)
        losses = ranked_list_loss(
            dist, labels, self.margin, self.alpha, self.Tp, self.Tn, self.imbalance
        )
        # fix: NaN/inf distances fail every selection; the loss must still be NaN
        losses = nan_if_nonfinite(losses.to(embeddings.dtype), embeddings)
        return {"loss": loss_entry(losses, _rows(len(losses), losses), "element")}
