"""TripletMarginLoss and MarginLoss: losses over (anchor, positive, negative) triplets.

Both follow the reference's route: triplets (all of the labels, a miner's pairs or triplets,
or random ones) -> distances -> per-triplet losses -> the reducer. One shortcut: when the
triplets are *all* triplets of the labels or of a pairs tuple and the reducer can finish from
sums (``reducer_sums_plan``, see :class:`pml.reducers.BaseReducer`), the loss hands it the
sums over every triplet (``functional.*_sums``, ``O(N M)`` memory) instead of listing the
``O(N M^2)`` triplets; the reducer records its statistics as if it had seen them all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from pml.core.dtypes import accumulation_dtype
from pml.core.indices import IndicesTuple, is_same_set
from pml.core.validation import (
    check_index_labels,
    check_int,
    check_option,
    labels_or_indices_tuple_required,
    labels_required,
)
from pml.losses._arguments import check_bool, check_real
from pml.losses._base import BaseMetricLossFunction, loss_entry, zero_loss_entry
from pml.losses._pairs import poison_nonfinite
from pml.losses._triplet_sources import (
    TripletSource,
    TripletsPerAnchor,
    list_triplets,
    triplet_source,
)
from pml.losses.functional._triplet import (
    margin_loss,
    margin_loss_sums,
    triplet_margin_loss,
    triplet_margin_loss_sums,
)
from pml.reducers import AvgNonZeroReducer, BaseReducer, DivisorReducer, LossDict
from pml.reducers.functional import threshold_mask


def check_triplets_per_anchor(value: Any) -> TripletsPerAnchor:
    """``"all"``, None or an int ``>= 0`` (ValueError for another string or a negative int)."""
    if isinstance(value, str):
        check_option("triplets_per_anchor", value, ["all"])
        return "all"
    return check_int("triplets_per_anchor", value, min=0, allow_none=True)


def sums_entry(total: Tensor, count: Tensor, num: Tensor, **extra: Any) -> dict[str, Any]:
    """A ``"sums"`` loss-dict entry: the reducer finishes it and records its statistics."""
    return loss_entry(total, None, "sums", count=count, num=num, **extra)


def listed_sums(losses: Tensor, low: float | None, high: float | None) -> dict[str, Any]:
    """The ``"sums"`` entry of listed losses, keeping those strictly inside ``(low, high)``."""
    kept = threshold_mask(losses, low, high)
    total = torch.where(kept, losses, 0).sum(dtype=accumulation_dtype(losses.dtype))
    # fix: a NaN loss is not silently dropped by the filter (robustness rule)
    total = torch.where(losses.isnan().any(), torch.full_like(total, float("nan")), total)
    return sums_entry(total, kept.sum(), torch.tensor(len(losses), device=losses.device))


class TripletMarginLoss(BaseMetricLossFunction):
    """Triplet margin loss (Schroff et al., 2015; Weinberger & Saul, 2009).

    Per triplet ``relu(d_ap - d_an + margin)`` (``softplus`` when ``smooth_loss``), written
    through ``distance.margin`` so similarities work too. Math:
    :func:`pml.losses.functional.triplet_margin_loss` and
    :func:`~pml.losses.functional.triplet_margin_loss_sums`.

    Routes: listed triplets (a miner's triplets, random ones, or a reducer without a sums plan
    such as DoNothing, ClassWeighted, a subclass) go through ``triplet_margin_loss`` and reach
    the reducer as per-triplet losses (as sums when it has a plan). All triplets of the labels
    or of a miner's pairs, with a reducer that has a plan without ``high`` (the default
    AvgNonZero, Mean, Sum, Threshold(low)), are summed unlisted (``_all_triplets_sums``).

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

    accepts_mat = True  # forward(..., mat=): the batch matrix through batch_matrix
    anchor_batching = "reference"  # pml.losses.anchor_batched_backward

    def __init__(
        self,
        margin: float = 0.05,
        swap: bool = False,
        smooth_loss: bool = False,
        triplets_per_anchor: TripletsPerAnchor = "all",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.triplets_per_anchor = check_triplets_per_anchor(triplets_per_anchor)
        check_real("margin", margin)  # fix: the reference fails at forward
        check_bool("swap", swap)
        check_bool("smooth_loss", smooth_loss)
        self.margin = margin
        self.swap = swap
        self.smooth_loss = smooth_loss
        self.add_to_recordable_attributes(list_of_names=["margin"], is_stat=False)

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
        mat = self.batch_matrix(embeddings, ref_emb)
        swap_mat = self._swap_matrix(mat, embeddings, ref_emb)
        plan = self.reducer_sums_plan("loss")
        if source.triplets is None and plan is not None and plan.high is None:
            return self._all_triplets_sums(mat, swap_mat, labels, ref_labels, source, plan.low)
        a, p, n = list_triplets(source, labels, ref_labels)
        if len(a) == 0:
            return self.zero_losses()
        ap, an = mat[a, p], mat[a, n]
        if swap_mat is not None:
            an = self.distance.smallest_dist(an, swap_mat[p, n])
        losses = triplet_margin_loss(
            ap, an, self.margin, smooth=self.smooth_loss, is_inverted=self.distance.is_inverted
        )
        entry = loss_entry(losses, (a, p, n), "triplet")
        if plan is not None:
            entry = listed_sums(losses, plan.low, plan.high)
        # fix: listed triplets may not read a NaN/inf row; the loss is NaN all the same
        return poison_nonfinite({"loss": entry}, embeddings, ref_emb)

    def _swap_matrix(self, mat: Tensor, embeddings: Tensor, ref_emb: Tensor) -> Tensor | None:
        """With ``swap``, the distances ``d(p, n)`` between reference rows (else None)."""
        if not self.swap:
            return None
        # fix: d(p, n) compares two reference rows; the reference indexed the (N, M)
        # query-by-reference matrix with reference indices (IndexError or wrong rows).
        return mat if ref_emb is embeddings else self.distance(ref_emb)

    def _all_triplets_sums(
        self,
        mat: Tensor,
        swap_mat: Tensor | None,
        labels: Tensor | None,
        ref_labels: Tensor | None,
        source: TripletSource,
        low: float | None,
    ) -> LossDict:
        """Every triplet of the labels or of ``source.pairs``, summed without listing them."""
        total, count, num = triplet_margin_loss_sums(
            mat,
            labels,
            ref_labels,
            pairs=source.pairs,
            margin=self.margin,
            smooth=self.smooth_loss,
            swap_mat=swap_mat,
            is_inverted=self.distance.is_inverted,
            low=low,
            same_set=is_same_set(labels, ref_labels),
        )
        return {"loss": sums_entry(total, count, num)}


class MarginLoss(BaseMetricLossFunction):
    """Margin loss of "Sampling Matters in Deep Embedding Learning" (Wu et al., 2017).

    Per triplet ``pos = relu(d_ap - beta + margin)`` and ``neg = relu(beta - d_an + margin)``,
    reduced as ``sum(pos + neg) / (#pos > 0 + #neg > 0)``; with ``learn_beta`` the boundary
    ``beta`` is learnt (one per class with ``num_classes``) and ``nu * beta`` is added. Math:
    :func:`pml.losses.functional.margin_loss` and :func:`~pml.losses.functional.margin_loss_sums`.

    Routes: listed triplets go through ``margin_loss`` (a miner's triplets, random ones, or a
    reducer that needs the losses: AvgNonZero, ClassWeighted, a subclass, ...). All triplets
    of the labels or of a miner's pairs, with reducers that finish from the sum of all losses
    (the default Divisor, Mean, Sum), come from per-anchor sums (``_all_triplets_sums``).

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

    accepts_mat = True  # forward(..., mat=): the batch matrix through batch_matrix
    anchor_batching = "reference"  # pml.losses.anchor_batched_backward

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
        self.triplets_per_anchor = check_triplets_per_anchor(triplets_per_anchor)
        check_real("margin", margin)
        check_real("nu", nu, min=0)  # fix: a negative weight rewards a large beta
        check_real("beta", beta)
        check_bool("learn_beta", learn_beta)
        self.num_classes = check_int("num_classes", num_classes, min=1, allow_none=True)
        self.margin = margin
        self.nu = nu
        self.learn_beta = learn_beta
        self.initialize_beta(beta, self.num_classes)
        self.add_to_recordable_attributes(list_of_names=["margin", "nu", "beta"], is_stat=False)

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
        labels, ref_labels = self._class_labels(labels, ref_labels)
        source = triplet_source(indices_tuple, labels, ref_labels, self.triplets_per_anchor)
        mat = self.batch_matrix(embeddings, ref_emb)
        beta = self.beta.to(device=embeddings.device, dtype=embeddings.dtype)
        if source.triplets is None and self._reducers_take_sums():
            return self._all_triplets_sums(mat, beta, labels, ref_labels, source)
        a, p, n = list_triplets(source, labels, ref_labels)
        if len(a) == 0:
            return self.zero_losses()
        beta_t = beta if self.num_classes is None else beta[self._anchor_labels(labels, a)]
        pos, neg = margin_loss(
            mat[a, p], mat[a, n], beta_t, self.margin, is_inverted=self.distance.is_inverted
        )
        divisor = (pos > 0).sum() + (neg > 0).sum()
        margin = loss_entry(pos + neg, (a, p, n), "triplet", divisor=divisor)
        return self._with_beta_reg(
            margin, beta, lambda: loss_entry(beta_t * self.nu, a, "element", divisor=divisor)
        )

    def _class_labels(
        self, labels: Tensor | None, ref_labels: Tensor | None
    ) -> tuple[Tensor | None, Tensor | None]:
        """With ``num_classes`` labels index ``beta``: required, int64 (``ref`` identity kept)."""
        if self.num_classes is None:
            return labels, ref_labels
        if labels is None:
            raise TypeError("labels must be given when num_classes is set (beta is per class)")
        # fix: labels index beta; uint8 labels would be read as a mask, int8 refused
        checked = check_index_labels(labels)
        return checked, checked if ref_labels is labels else ref_labels

    def _anchor_labels(self, labels: Tensor | None, anchors: Tensor) -> Tensor:
        """The labels of anchors that have triplets; ValueError outside ``[0, num_classes)``."""
        name = f"labels of anchors (they index beta, num_classes={self.num_classes})"
        return check_index_labels(labels_required(labels)[anchors], name, self.num_classes)

    def _reducers_take_sums(self) -> bool:
        """Each reducer of a per-triplet sub-loss finishes from the sum of all its losses."""
        names = ["margin_loss"]
        if self.learn_beta and self.num_classes is not None:
            names.append("beta_reg_loss")
        plans = [self.reducer_sums_plan(name) for name in names]
        return all(plan is not None and plan.kind != "threshold" for plan in plans)

    def _with_beta_reg(
        self, margin: dict[str, Any], beta: Tensor, per_triplet_reg: Callable[[], dict[str, Any]]
    ) -> LossDict:
        """The loss dict: ``margin_loss`` and ``beta_reg_loss``.

        ``nu * beta`` when beta is learnt; per class, ``nu * beta[anchor label]`` per triplet,
        reduced like the margin loss (``per_triplet_reg`` of the route); else nothing.
        """
        if not self.learn_beta:
            reg = zero_loss_entry()
        elif self.num_classes is None:
            reg = loss_entry(beta * self.nu, None, "already_reduced")
        else:
            reg = per_triplet_reg()
        return {"margin_loss": margin, "beta_reg_loss": reg}

    def _all_triplets_sums(
        self,
        mat: Tensor,
        beta: Tensor,
        labels: Tensor | None,
        ref_labels: Tensor | None,
        source: TripletSource,
    ) -> LossDict:
        """Every triplet of the labels or of ``source.pairs``, from per-anchor sums."""
        per_class = self.num_classes is not None
        # rows without triplets may carry any label: they read some beta that is never used
        beta_row = beta[labels_required(labels).clamp(0, len(beta) - 1)] if per_class else beta
        losses, divisor, num_row = margin_loss_sums(
            mat,
            beta_row,
            labels,
            ref_labels,
            pairs=source.pairs,
            margin=self.margin,
            is_inverted=self.distance.is_inverted,
            same_set=is_same_set(labels, ref_labels),
        )
        num = num_row.sum()
        if not bool(num > 0):
            return self.zero_losses()
        if per_class:
            self._anchor_labels(labels, num_row > 0)
        reg = beta_row.to(losses.dtype) * self.nu * num_row  # nu * beta of each triplet, summed
        return self._with_beta_reg(
            sums_entry(losses.sum(), num, num, divisor=divisor),
            beta,
            lambda: sums_entry(reg.sum(), num, num, divisor=divisor),
        )
