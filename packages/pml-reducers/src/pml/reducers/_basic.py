"""Reducers that treat every reduction type alike: mean, sum, thresholds, divisor, weights."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from pml.core.dtypes import accumulation_dtype
from pml.core.validation import InvalidArgumentError, check_index_labels, check_real
from pml.reducers import functional as RF
from pml.reducers._base import BaseReducer, SumsPlan


class _UniformReducer(BaseReducer):
    """A reducer whose element/pair/triplet reductions are the same function of ``losses``."""

    def reduce(self, losses: Tensor, embeddings: Tensor, **kw: Any) -> Tensor:
        raise NotImplementedError

    def element_reduction(self, losses, loss_indices, embeddings, labels, **kw):  # type: ignore[no-untyped-def]
        return self.reduce(losses, embeddings, **kw)

    def pos_pair_reduction(self, losses, loss_indices, embeddings, labels, **kw):  # type: ignore[no-untyped-def]
        return self.reduce(losses, embeddings, **kw)

    def neg_pair_reduction(self, losses, loss_indices, embeddings, labels, **kw):  # type: ignore[no-untyped-def]
        return self.reduce(losses, embeddings, **kw)

    def triplet_reduction(self, losses, loss_indices, embeddings, labels, **kw):  # type: ignore[no-untyped-def]
        return self.reduce(losses, embeddings, **kw)


class MeanReducer(_UniformReducer):
    """Plain mean of the losses (an empty tensor gives NaN, like ``torch.mean``).

    Example:
        >>> d = {"losses": torch.tensor([1.0, 3.0]), "indices": torch.tensor([0, 1]),
        ...      "reduction_type": "element"}
        >>> MeanReducer()({"loss": d}, torch.zeros(2, 1), None)
        tensor(2.)
    """

    def reduce(self, losses: Tensor, embeddings: Tensor, **kw: Any) -> Tensor:
        return losses.mean(dtype=accumulation_dtype(losses.dtype)).to(losses.dtype)

    def sums_plan(self, name: str = "loss") -> SumsPlan | None:
        # exactly this class: a subclass may reduce differently, so it gets the losses
        return SumsPlan("mean") if type(self) is MeanReducer else None


class SumReducer(MeanReducer):
    """Sum of the losses."""

    def reduce(self, losses: Tensor, embeddings: Tensor, **kw: Any) -> Tensor:
        return losses.sum(dtype=accumulation_dtype(losses.dtype)).to(losses.dtype)

    def sums_plan(self, name: str = "loss") -> SumsPlan | None:
        return SumsPlan("sum") if type(self) is SumReducer else None


class ThresholdReducer(_UniformReducer):
    """Mean of the losses strictly inside ``(low, high)``; the zero loss if none are.

    Args:
        low: keep losses ``> low`` (None: no lower bound).
        high: keep losses ``< high`` (None: no upper bound).

    Stats (with ``collect_stats``): ``num_past_filter``, ``num_above_low``,
    ``num_below_high`` (survivors of the low filter that are ``< high``; the reference left
    this at 0 and wrote the count to ``num_above_high``, which is kept as an alias).

    Raises:
        InvalidArgumentError: neither ``low`` nor ``high`` is given.
        TypeError: a bound is not a real number.
        ValueError: a bound is NaN, or ``low >= high`` (nothing could ever be kept).
    """

    def __init__(self, low: float | None = None, high: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if low is None and high is None:
            raise InvalidArgumentError("ThresholdReducer needs at least one of low or high")
        lo = check_real("low", low, allow_none=True)
        hi = check_real("high", high, allow_none=True)
        if lo is not None and hi is not None and lo >= hi:
            # fix: the reference keeps nothing and returns the zero loss on every call
            raise ValueError(
                f"low must be < high (losses strictly between them are kept); got low={low!r}, "
                f"high={high!r}"
            )
        self.low, self.high = low, high
        self.add_to_recordable_attributes(list_of_names=["low", "high"], is_stat=False)
        self.add_to_recordable_attributes(
            list_of_names=["num_past_filter", "num_above_low", "num_below_high", "num_above_high"],
            is_stat=True,
        )

    def reduce(self, losses: Tensor, embeddings: Tensor, **kw: Any) -> Tensor:
        mask = RF.threshold_mask(losses, self.low, self.high)
        if self.collect_stats:
            self._set_filter_stats(losses, mask)
        return RF.mean_or_fallback(losses, mask, self.zero_loss(embeddings))

    def sums_plan(self, name: str = "loss") -> SumsPlan | None:
        if type(self) not in (ThresholdReducer, AvgNonZeroReducer):
            return None
        if self.collect_stats and self.low is not None and self.high is not None:
            return None  # num_above_low / num_below_high need the losses themselves
        return SumsPlan("threshold", self.low, self.high)

    def sums_stats(self, plan: SumsPlan, count: Tensor, num: Tensor) -> dict[str, Any]:
        stats: dict[str, Any] = {"losses_size": num, "num_past_filter": count}
        if self.low is not None:
            stats["num_above_low"] = count
        if self.high is not None:
            stats["num_below_high"] = count
            stats["num_above_high"] = count  # compat alias (see _set_filter_stats)
        return stats

    def _set_filter_stats(self, losses: Tensor, mask: Tensor) -> None:
        with torch.no_grad():
            stats: dict[str, Any] = {"num_past_filter": mask.sum()}
            if self.low is not None:
                stats["num_above_low"] = (losses > self.low).sum()
            if self.high is not None:
                below = RF.threshold_mask(losses, self.low, self.high).sum()
                # compat: the reference wrote this count to `num_above_high` (spec: reducers).
                stats["num_below_high"] = below
                stats["num_above_high"] = below
            self.set_stats(**stats)


class AvgNonZeroReducer(ThresholdReducer):
    """Mean of the strictly positive losses (``ThresholdReducer(low=0)``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(low=0, **kwargs)


class MissingDivisorError(ValueError, KeyError):
    """A loss dict without the ``"divisor"`` entry that :class:`DivisorReducer` needs.

    Also a ``KeyError``, which the reference raised.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DivisorReducer(_UniformReducer):
    """``sum(losses) / divisor``, the divisor coming from the loss dict (``"divisor"`` key).

    A zero divisor gives the zero loss. The last divisor is kept in ``self.divisor``. From sums
    (see :class:`BaseReducer`) its plan is ``"sum"``: the loss hands the sum of all its losses
    with the ``"divisor"`` beside it.

    Raises:
        ValueError: (also a ``KeyError``) the loss gives no divisor: only losses that put a
            ``"divisor"`` next to their ``"losses"`` (e.g. ``MarginLoss``) can use it.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.divisor: Any = 0
        self.add_to_recordable_attributes(name="divisor", is_stat=True)

    def forward(
        self, loss_dict: Mapping[str, Mapping[str, Any]], embeddings: Tensor, labels: Tensor | None
    ) -> Tensor:
        for name, info in loss_dict.items():
            if info.get("reduction_type") != "already_reduced" and "divisor" not in info:
                # fix: the reference raised a bare KeyError('divisor')
                raise MissingDivisorError(
                    f"DivisorReducer needs a 'divisor' entry next to 'losses' in the loss dict; "
                    f"sub-loss {name!r} has only {', '.join(map(str, info))} (this loss gives no "
                    "divisor: use another reducer, e.g. MeanReducer())"
                )
        return super().forward(loss_dict, embeddings, labels)

    def reduce(self, losses: Tensor, embeddings: Tensor, **kw: Any) -> Tensor:
        divisor = kw["divisor"]
        self.divisor = divisor
        return RF.divide_or_fallback(losses, divisor, self.zero_loss(embeddings))

    def sums_plan(self, name: str = "loss") -> SumsPlan | None:
        # the sum of all losses; the loss hands its divisor next to it, as with losses
        return SumsPlan("sum") if type(self) is DivisorReducer else None

    def sums_reduction(
        self, total: Tensor, embeddings: Tensor, *, count: Tensor, num: Tensor, **kw: Any
    ) -> Tensor:
        """``total / divisor`` (the entry's ``"divisor"``), divided in ``total``'s dtype."""
        super().sums_reduction(total, embeddings, count=count, num=num)  # plan check, stats
        return self.reduce(total, embeddings, **kw)


class ClassWeightedReducer(_UniformReducer):
    """``mean(losses * weights[labels[anchor]])`` (the plain mean over all losses).

    Args:
        weights: ``weights[c]`` is the weight of class ``c`` (a tensor or a sequence).
    """

    def __init__(self, weights: Tensor | Sequence[float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.weights = weights if isinstance(weights, Tensor) else torch.as_tensor(weights)

    def _reduce_at(self, losses: Tensor, sample_idx: Tensor, labels: Tensor | None) -> Tensor:
        if labels is None:
            raise ValueError("ClassWeightedReducer needs labels; got None")
        self.weights = self.weights.to(device=losses.device, dtype=losses.dtype)
        # fix: labels index the weights: float labels were truncated (1.7 -> class 1) and
        # negative ones wrapped around; both are a ValueError naming labels now.
        labels = check_index_labels(labels, "labels", num_classes=len(self.weights))
        return RF.class_weighted_mean(losses, self.weights, labels.to(losses.device)[sample_idx])

    def element_reduction(self, losses, loss_indices, embeddings, labels, **kw):  # type: ignore[no-untyped-def]
        return self._reduce_at(losses, loss_indices, labels)

    def pos_pair_reduction(self, losses, loss_indices, embeddings, labels, **kw):  # type: ignore[no-untyped-def]
        return self._reduce_at(losses, loss_indices[0], labels)

    def neg_pair_reduction(self, losses, loss_indices, embeddings, labels, **kw):  # type: ignore[no-untyped-def]
        return self._reduce_at(losses, loss_indices[0], labels)

    def triplet_reduction(self, losses, loss_indices, embeddings, labels, **kw):  # type: ignore[no-untyped-def]
        return self._reduce_at(losses, loss_indices[0], labels)


class DoNothingReducer(BaseReducer):
    """Returns the loss dict unchanged (no reduction, no checks)."""

    def forward(  # type: ignore[override]
        self, loss_dict: Mapping[str, Any], embeddings: Tensor, labels: Tensor | None
    ) -> Mapping[str, Any]:
        return loss_dict
