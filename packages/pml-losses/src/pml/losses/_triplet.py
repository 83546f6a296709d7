"""TripletMarginLoss and MarginLoss: losses over (anchor, positive, negative) triplets.

Both follow the reference's pipeline, with one addition: when the reducer of the main
sub-loss is a plain mean / sum / threshold reducer (the defaults included) and the triplets
are "all triplets" of the batch (from labels, or from a miner's pairs tuple), the reduced value
is computed directly from per-anchor sums (``functional.triplet_margin_loss_sums`` /
``functional.margin_loss_sums``) in ``O(N M)`` memory instead of listing the ``O(N M^2)``
triplets. The reducer's statistics (``losses_size``, ``num_past_filter``, ...) are filled in
as if it had seen every triplet. Any other reducer (DoNothing, ClassWeighted, PerAnchor,
ThresholdReducer with ``high``, subclasses) gets the per-triplet losses in the reference's
order.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from pml.core.dtypes import accumulation_dtype
from pml.core.functional import zero_loss
from pml.core.indices import (
    IndicesTuple,
    get_all_triplets_indices,
    get_random_triplet_indices,
    is_same_set,
    pairs_to_triplets,
)
from pml.core.validation import check_index_labels, labels_or_indices_tuple_required
from pml.losses._arguments import check_bool, check_int, check_real
from pml.losses._base import BaseMetricLossFunction, loss_entry, zero_loss_entry
from pml.losses._pairs import poison_nonfinite
from pml.losses.functional._triplet import (
    margin_loss,
    margin_loss_sums,
    triplet_margin_loss,
    triplet_margin_loss_sums,
)
from pml.reducers import (
    AvgNonZeroReducer,
    BaseReducer,
    DivisorReducer,
    LossDict,
    MeanReducer,
    MultipleReducers,
    SumReducer,
    ThresholdReducer,
)
from pml.reducers.functional import threshold_mask

TripletsPerAnchor = int | Literal["all"] | None

# ---------------------------------------------------------------------------------------------
# helpers shared by the triplet family's classes


@dataclass(frozen=True)
class ReductionPlan:
    """What a simple reducer computes: ``sum``, ``mean`` or ``threshold`` (mean of ``> low``)."""

    kind: Literal["sum", "mean", "threshold"]
    low: float | None = None


_PLAN_KINDS: dict[type, Literal["sum", "mean", "threshold"]] = {
    AvgNonZeroReducer: "threshold",
    ThresholdReducer: "threshold",
    MeanReducer: "mean",
    SumReducer: "sum",
}


def reduction_plan(reducer: Any) -> ReductionPlan | None:
    """The plan of an exact AvgNonZero/Threshold(low only)/Mean/Sum reducer, else None."""
    kind = _PLAN_KINDS.get(type(reducer))
    if kind is None:
        return None
    if kind == "threshold":
        if reducer.high is not None:
            return None
        return ReductionPlan("threshold", float(reducer.low))
    return ReductionPlan(kind)


def sub_reducer(reducer: Any, name: str) -> Any:
    """The reducer that a loss's ``reducer`` applies to sub-loss ``name``."""
    if isinstance(reducer, MultipleReducers):
        reducers = reducer.reducers  # an nn.ModuleDict: no .get
        return reducers[name] if name in reducers else reducer.default_reducer  # noqa: SIM401
    return reducer


def reduce_sums(
    plan: ReductionPlan, total: Tensor, count: Tensor, num: Tensor, fallback: Tensor
) -> Tensor:
    """The value a simple reducer would return.

    ``total`` is the sum of the selected losses, ``count`` how many were selected and ``num``
    the number of all losses; ``fallback`` (the graph-connected zero) is returned when the
    denominator is 0, like the reducers' zero loss.
    """
    denom = {"sum": num, "mean": num, "threshold": count}[plan.kind]
    value = total if plan.kind == "sum" else total / denom.clamp(min=1).to(total.dtype)
    return torch.where(denom > 0, value.to(fallback.dtype), fallback)


def plan_stats(plan: ReductionPlan, count: Tensor, num: Tensor) -> dict[str, Tensor]:
    """Statistics the reducer would have recorded on the full per-triplet tensor."""
    stats = {"losses_size": num}
    if plan.kind == "threshold":
        stats.update(num_past_filter=count, num_above_low=count)
    return stats


def explicit_sums(losses: Tensor, low: float | None) -> tuple[Tensor, Tensor, Tensor]:
    """``(sum of losses > low, their count, len)``; the sum is NaN if any loss is NaN."""
    sel = threshold_mask(losses, low)
    total = torch.where(sel, losses, 0).sum(dtype=accumulation_dtype(losses.dtype))
    # fix: a NaN loss is not silently dropped by the filter (robustness rule)
    total = torch.where(torch.isnan(losses).any(), torch.full_like(total, float("nan")), total)
    return total, sel.sum(), torch.tensor(len(losses), device=losses.device)


def check_triplets_per_anchor(value: Any) -> None:
    """``"all"``, None or a non-negative integer (ValueError naming the argument otherwise)."""
    if value == "all" or value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f'triplets_per_anchor must be "all" or an integer >= 0; got {value!r}')


@dataclass
class TripletSource:
    """Where the triplets come from: ``labels`` (all triplets), ``pairs`` or ``triplets``."""

    kind: Literal["labels", "pairs", "triplets"]
    tuple: IndicesTuple | None = None


def triplet_source(
    indices_tuple: IndicesTuple | None,
    labels: Tensor | None,
    ref_labels: Tensor | None,
    triplets_per_anchor: TripletsPerAnchor,
) -> TripletSource:
    """The reference's ``convert_to_triplets`` cases, without listing "all" triplets yet."""
    if indices_tuple is None:
        if triplets_per_anchor == "all":
            return TripletSource("labels")
        assert labels is not None  # checked by labels_or_indices_tuple_required
        triplets = get_random_triplet_indices(
            labels,
            ref_labels,
            t_per_anchor=triplets_per_anchor,  # type: ignore[arg-type]
        )
        return TripletSource("triplets", triplets)
    if len(indices_tuple) == 4:
        return TripletSource("pairs", tuple(t.long() for t in indices_tuple))  # type: ignore[arg-type]
    return TripletSource("triplets", tuple(t.long() for t in indices_tuple))  # type: ignore[arg-type]


def list_triplets(
    source: TripletSource, labels: Tensor | None, ref_labels: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """All triplets of ``source`` in the reference's order (memory proportional to T)."""
    if source.kind == "labels":
        assert labels is not None
        return get_all_triplets_indices(labels, ref_labels)
    if source.kind == "pairs":
        return pairs_to_triplets(source.tuple)  # type: ignore[arg-type]
    return source.tuple  # type: ignore[return-value]


def apply_pending_stats(pending: list[tuple[BaseReducer, dict[str, Tensor]]]) -> None:
    """Write the fast path's statistics into the reducers (after they ran), then forget them."""
    for reducer, stats in pending:
        reducer.set_stats(**stats)
    pending.clear()


class PendingStatsMixin:
    """Reducer statistics of the fast paths, written after the reducers ran.

    List it before ``BaseMetricLossFunction``; ``__init__`` sets ``self._pending_stats = []``
    and ``compute_loss`` appends ``(reducer, stats)`` to it.
    """

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor | None = None,
        indices_tuple: IndicesTuple | None = None,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> Tensor:
        """See :meth:`BaseMetricLossFunction.forward`."""
        self._pending_stats = []
        loss = super().forward(  # type: ignore[misc]
            embeddings, labels, indices_tuple, ref_emb, ref_labels
        )
        apply_pending_stats(self._pending_stats)
        return loss


# ---------------------------------------------------------------------------------------------


class TripletMarginLoss(PendingStatsMixin, BaseMetricLossFunction):
    """Triplet margin loss (Schroff et al., 2015; Weinberger & Saul, 2009).

    Per triplet ``relu(d_ap - d_an + margin)`` (``softplus`` when ``smooth_loss``), written
    through ``distance.margin`` so similarities work too. Math:
    :func:`pml.losses.functional.triplet_margin_loss` and
    :func:`~pml.losses.functional.triplet_margin_loss_sums`.

    Args:
        margin: the margin.
        swap: use ``min(d_an, d_pn)`` as the negative distance (Balntas et al., 2016).
        smooth_loss: softplus instead of relu.
        triplets_per_anchor: ``"all"`` triplets, or that many random triplets per anchor.
        **kwargs: ``distance`` (default LpDistance), ``reducer`` (default AvgNonZeroReducer),
            ``embedding_regularizer``, ``embedding_reg_weight``, ``collect_stats``.

    Example:
        >>> loss_fn = TripletMarginLoss(margin=0.2)
        >>> emb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
        >>> round(loss_fn(emb, torch.tensor([0, 0, 1, 1])).item(), 4)
        0.0
    """

    def __init__(
        self,
        margin: float = 0.05,
        swap: bool = False,
        smooth_loss: bool = False,
        triplets_per_anchor: TripletsPerAnchor = "all",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_triplets_per_anchor(triplets_per_anchor)
        check_real("margin", margin)  # fix: the reference fails at forward
        check_bool("swap", swap)
        check_bool("smooth_loss", smooth_loss)
        self.margin = margin
        self.swap = swap
        self.smooth_loss = smooth_loss
        self.triplets_per_anchor = triplets_per_anchor
        self.add_to_recordable_attributes(list_of_names=["margin"], is_stat=False)
        self._pending_stats: list[tuple[BaseReducer, dict[str, Tensor]]] = []

    def get_default_reducer(self) -> BaseReducer:
        return AvgNonZeroReducer()

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        indices_tuple: IndicesTuple | None,
        ref_emb: Tensor,
        ref_labels: Tensor | None,
    ) -> LossDict:
        labels_or_indices_tuple_required(labels, indices_tuple)
        source = triplet_source(indices_tuple, labels, ref_labels, self.triplets_per_anchor)
        mat = self.distance(embeddings, ref_emb)
        swap_mat = None
        if self.swap:
            # fix: d(p, n) compares two reference rows; the reference indexed the
            # (N, M) query-by-reference matrix with reference indices (IndexError or wrong rows).
            swap_mat = mat if ref_emb is embeddings else self.distance(ref_emb)
        reducer = sub_reducer(self.reducer, "loss")
        plan = reduction_plan(reducer)
        if plan is not None and source.kind != "triplets":
            total, count, num = triplet_margin_loss_sums(
                mat,
                labels,
                ref_labels,
                pairs=source.tuple if source.kind == "pairs" else None,
                margin=self.margin,
                smooth=self.smooth_loss,
                swap_mat=swap_mat,
                is_inverted=self.distance.is_inverted,
                low=plan.low,
                same_set=is_same_set(labels, ref_labels),
            )
            return self._reduced(plan, reducer, total, count, num, embeddings)
        a, p, n = list_triplets(source, labels, ref_labels)
        if len(a) == 0:
            return self.zero_losses()
        ap, an = mat[a, p], mat[a, n]
        if swap_mat is not None:
            an = self.distance.smallest_dist(an, swap_mat[p, n])
        losses = triplet_margin_loss(
            ap, an, self.margin, smooth=self.smooth_loss, is_inverted=self.distance.is_inverted
        )
        if plan is not None:
            loss_dict = self._reduced(plan, reducer, *explicit_sums(losses, plan.low), embeddings)
        else:
            loss_dict = {"loss": loss_entry(losses, (a, p, n), "triplet")}
        # fix: listed triplets may not read a NaN/inf row; the loss is NaN all the same
        return poison_nonfinite(loss_dict, embeddings, ref_emb)

    def _reduced(
        self,
        plan: ReductionPlan,
        reducer: BaseReducer,
        total: Tensor,
        count: Tensor,
        num: Tensor,
        embeddings: Tensor,
    ) -> LossDict:
        value = reduce_sums(plan, total, count, num, zero_loss(embeddings))
        if reducer.collect_stats:
            self._pending_stats.append((reducer, plan_stats(plan, count, num)))
        return {"loss": loss_entry(value, None, "already_reduced")}


class MarginLoss(PendingStatsMixin, BaseMetricLossFunction):
    """Margin loss of "Sampling Matters in Deep Embedding Learning" (Wu et al., 2017).

    Per triplet ``pos = relu(d_ap - beta + margin)`` and ``neg = relu(beta - d_an + margin)``,
    reduced as ``sum(pos + neg) / (#pos > 0 + #neg > 0)``; with ``learn_beta`` the boundary
    ``beta`` is learnt (one per class with ``num_classes``) and ``nu * beta`` is added.

    Args:
        margin: the margin ``alpha``.
        nu: weight of the beta regularization.
        beta: initial boundary, stored as a float32 tensor (the reference's precision).
        triplets_per_anchor: ``"all"`` or an integer (random triplets per anchor).
        learn_beta: make ``beta`` an ``nn.Parameter``.
        num_classes: one beta per class (labels are then required).
        **kwargs: ``distance`` (default LpDistance), ``reducer`` (default DivisorReducer for
            both sub-losses), ``embedding_regularizer``, ``collect_stats``.

    Example:
        >>> loss_fn = MarginLoss()
        >>> emb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
        >>> round(loss_fn(emb, torch.tensor([0, 0, 1, 1])).item(), 4)
        0.0943
    """

    def __init__(
        self,
        margin: float = 0.2,
        nu: float = 0,
        beta: float = 1.2,
        triplets_per_anchor: TripletsPerAnchor = "all",
        learn_beta: bool = False,
        num_classes: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_triplets_per_anchor(triplets_per_anchor)
        check_real("margin", margin)
        check_real("nu", nu, min=0)  # fix: a negative weight rewards a large beta
        check_real("beta", beta)
        check_bool("learn_beta", learn_beta)
        num_classes = check_int("num_classes", num_classes, min=1, allow_none=True)
        self.margin = margin
        self.nu = nu
        self.learn_beta = learn_beta
        self.num_classes = num_classes
        self.initialize_beta(beta, num_classes)
        self.triplets_per_anchor = triplets_per_anchor
        self.add_to_recordable_attributes(list_of_names=["margin", "nu", "beta"], is_stat=False)
        self._pending_stats: list[tuple[BaseReducer, dict[str, Tensor]]] = []

    def initialize_beta(self, beta: float, num_classes: int | None) -> None:
        """``beta`` as a float32 tensor ``(1,)`` or ``(num_classes,)``; a Parameter if learnt.

        Not a buffer: it is not in ``state_dict`` unless learnt (like the reference).
        """
        shape = (1,) if num_classes is None else (num_classes,)
        value = torch.full(shape, float(beta), dtype=torch.float32)
        self.beta: Tensor = nn.Parameter(value) if self.learn_beta else value

    def _sub_loss_names(self) -> list[str]:
        return ["margin_loss", "beta_reg_loss"]

    def get_default_reducer(self) -> BaseReducer:
        return DivisorReducer()

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        indices_tuple: IndicesTuple | None,
        ref_emb: Tensor,
        ref_labels: Tensor | None,
    ) -> LossDict:
        labels_or_indices_tuple_required(labels, indices_tuple)
        per_class = self.num_classes is not None
        if per_class and labels is None:
            raise TypeError("labels must be given when num_classes is set (beta is per class)")
        if per_class:
            # fix: labels index beta; uint8 labels would be read as a mask, int8 refused
            same = ref_labels is labels
            labels = check_index_labels(labels)
            ref_labels = labels if same else ref_labels
        source = triplet_source(indices_tuple, labels, ref_labels, self.triplets_per_anchor)
        mat = self.distance(embeddings, ref_emb)
        beta = self.beta.to(device=embeddings.device, dtype=embeddings.dtype)
        margin_reducer = sub_reducer(self.reducer, "margin_loss")
        reg_reducer = sub_reducer(self.reducer, "beta_reg_loss")
        reg_is_per_triplet = self.learn_beta and per_class
        fast = (
            source.kind != "triplets"
            and type(margin_reducer) is DivisorReducer
            and (not reg_is_per_triplet or type(reg_reducer) is DivisorReducer)
        )
        if fast:
            return self._compute_fast(
                mat, beta, labels, ref_labels, source, margin_reducer, reg_reducer
            )
        a, p, n = list_triplets(source, labels, ref_labels)
        if len(a) == 0:
            return self.zero_losses()
        beta_t = self._class_beta(beta, labels[a]) if per_class else beta  # type: ignore[index]
        pos, neg = margin_loss(
            mat[a, p], mat[a, n], beta_t, self.margin, is_inverted=self.distance.is_inverted
        )
        divisor = (pos > 0).sum() + (neg > 0).sum()
        out = {"margin_loss": loss_entry(pos + neg, (a, p, n), "triplet", divisor=divisor)}
        if reg_is_per_triplet:
            out["beta_reg_loss"] = loss_entry(beta_t * self.nu, a, "element", divisor=divisor)
        else:
            out["beta_reg_loss"] = self._scalar_beta_reg(beta)
        return out

    @staticmethod
    def _class_beta(beta: Tensor, anchor_labels: Tensor) -> Tensor:
        """``beta[anchor_labels]``; ValueError for labels outside ``[0, num_classes)``."""
        if len(anchor_labels) and not bool(
            ((anchor_labels >= 0) & (anchor_labels < len(beta))).all()
        ):
            raise ValueError(
                f"labels must lie in [0, num_classes) = [0, {len(beta)}) when num_classes is "
                f"set (beta is indexed by the anchor's label); got "
                f"[{int(anchor_labels.min())}, {int(anchor_labels.max())}]"
            )
        return beta[anchor_labels]

    def _scalar_beta_reg(self, beta: Tensor) -> dict[str, Any]:
        if self.learn_beta:
            return loss_entry(beta * self.nu, None, "already_reduced")
        return zero_loss_entry()

    def _compute_fast(
        self,
        mat: Tensor,
        beta: Tensor,
        labels: Tensor | None,
        ref_labels: Tensor | None,
        source: TripletSource,
        margin_reducer: BaseReducer,
        reg_reducer: BaseReducer,
    ) -> LossDict:
        per_class = self.num_classes is not None
        beta_row = beta
        if per_class:  # rows without triplets may carry any label (they are never used)
            assert labels is not None
            in_range = (labels >= 0) & (labels < len(beta))
            beta_row = beta[torch.where(in_range, labels, 0)]
        losses, divisor, num_row = margin_loss_sums(
            mat,
            beta_row,
            labels,
            ref_labels,
            pairs=source.tuple if source.kind == "pairs" else None,
            margin=self.margin,
            is_inverted=self.distance.is_inverted,
            same_set=is_same_set(labels, ref_labels),
        )
        num = num_row.sum()
        if not bool(num > 0):
            return self.zero_losses()
        if per_class and not bool(in_range[num_row > 0].all()):
            self._class_beta(beta, labels[num_row > 0])  # type: ignore[index]  # raises
        rows = torch.arange(len(losses), device=losses.device)
        out = {"margin_loss": loss_entry(losses, rows, "element", divisor=divisor)}
        if margin_reducer.collect_stats:
            self._pending_stats.append((margin_reducer, {"losses_size": num}))
        if self.learn_beta and per_class:
            reg = beta_row * self.nu * num_row.to(beta_row.dtype)
            out["beta_reg_loss"] = loss_entry(reg, rows, "element", divisor=divisor)
            if reg_reducer.collect_stats:
                self._pending_stats.append((reg_reducer, {"losses_size": num}))
        else:
            out["beta_reg_loss"] = self._scalar_beta_reg(beta)
        return out
