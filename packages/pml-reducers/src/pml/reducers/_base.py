"""BaseReducer: validation of a one-entry loss dict and dispatch on its reduction type."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple, TypeAlias

import torch
from torch import Tensor

from pml.core.functional import zero_loss
from pml.core.records import ModuleWithRecords
from pml.core.validation import InvalidArgumentError

ReductionType: TypeAlias = Literal[
    "element", "pos_pair", "neg_pair", "triplet", "already_reduced", "sums"
]
LossDict: TypeAlias = dict[str, dict[str, Any]]

#: number of index tensors each tuple-like reduction type carries
_TUPLE_SIZES = {"pos_pair": 2, "neg_pair": 2, "triplet": 3}
_KNOWN_KEYS = {"losses", "indices", "reduction_type"}


class SumsPlan(NamedTuple):
    """What a reducer can finish from, when a loss never lists its per-element losses.

    ``kind``: ``"sum"`` (sum of all), ``"mean"`` (sum / number of all) or ``"threshold"``
    (sum / number of the losses strictly inside ``(low, high)``; a None bound is not applied).
    """

    kind: Literal["sum", "mean", "threshold"]
    low: float | None = None
    high: float | None = None


def finish_from_sums(
    kind: str, total: Tensor, count: Tensor, num: Tensor, fallback: Tensor
) -> Tensor:
    """The reduced value from sufficient statistics; ``fallback`` when its denominator is 0.

    ``total`` is the sum of the kept losses (all of them for ``"sum"``/``"mean"``), ``count``
    how many were kept and ``num`` how many there were in all. A NaN ``total`` (what a loss
    hands for non-finite inputs, whose NaN losses no filter keeps) stays NaN. No device sync.
    """
    denom = count if kind == "threshold" else num
    value = total if kind == "sum" else total / denom.clamp(min=1).to(total.dtype)
    return torch.where((denom > 0) | total.isnan(), value.to(fallback.dtype), fallback)


def input_is_zero_loss(losses: Any) -> bool:
    """``True`` for the "no loss" sentinel: a non-tensor equal to 0 (the Python int 0)."""
    return not isinstance(losses, Tensor) and losses == 0


class BaseReducer(ModuleWithRecords):
    """Turns a loss dict ``{name: {"losses", "indices", "reduction_type"}}`` into a scalar.

    Subclasses implement ``element_reduction``, ``pos_pair_reduction``,
    ``neg_pair_reduction`` and ``triplet_reduction``; ``already_reduced`` values pass through.

    **Reducing from sums.** A loss that can compute its reduction without listing every
    per-element loss (all triplets of a large batch, every negative cell) first asks
    :meth:`sums_plan`. If the reducer returns a :class:`SumsPlan`, the loss hands an entry
    ``{"losses": total, "indices": None, "reduction_type": "sums", "count": count, "num": num}``
    (0-dim tensors: the sum of the kept losses in at least float32, how many were kept, how
    many there were) and the reducer finishes the job and records its own statistics, as if it
    had seen every loss. A reducer without a plan (the default, subclasses included) gets
    per-element losses as usual.
    """

    def __init__(self, collect_stats: bool | None = None) -> None:
        super().__init__(collect_stats=collect_stats)
        self.add_to_recordable_attributes(name="losses_size", is_stat=True)

    def forward(
        self, loss_dict: Mapping[str, Mapping[str, Any]], embeddings: Tensor, labels: Tensor | None
    ) -> Tensor:
        """Reduce the single entry of ``loss_dict``.

        Args:
            loss_dict: exactly one ``{name: {"losses", "indices", "reduction_type", ...}}``.
            embeddings: the query embeddings ``(N, D)``; the zero loss is tied to them.
            labels: the query labels ``(N,)`` or None.

        Returns:
            A 0-dim tensor.

        Raises:
            InvalidArgumentError: the dict does not have exactly one entry, or losses and
                indices do not match in type or length.
            ValueError: unknown reduction type.
        """
        self.reset_stats()
        if len(loss_dict) != 1:
            raise InvalidArgumentError(
                f"{type(self).__name__} reduces one sub-loss at a time; loss_dict has "
                f"{len(loss_dict)} entries {list(loss_dict)} (use MultipleReducers)"
            )
        ((_, info),) = loss_dict.items()
        losses, indices = info["losses"], info["indices"]
        reduction_type = info["reduction_type"]
        extra = {k: v for k, v in info.items() if k not in _KNOWN_KEYS}
        if self.collect_stats:
            size = 1 if not isinstance(losses, Tensor) or losses.ndim == 0 else len(losses)
            self.set_stats(losses_size=size)
        if input_is_zero_loss(losses):
            return self.zero_loss(embeddings)
        self._check_sizes(losses, indices, reduction_type)
        match reduction_type:
            case "element":
                return self.element_reduction(losses, indices, embeddings, labels, **extra)
            case "pos_pair":
                return self.pos_pair_reduction(losses, indices, embeddings, labels, **extra)
            case "neg_pair":
                return self.neg_pair_reduction(losses, indices, embeddings, labels, **extra)
            case "triplet":
                return self.triplet_reduction(losses, indices, embeddings, labels, **extra)
            case "already_reduced":
                return self.already_reduced_reduction(losses, indices, embeddings, labels, **extra)
            case "sums":
                return self.sums_reduction(losses, embeddings, **extra)
        raise ValueError(
            "reduction_type must be one of element, pos_pair, neg_pair, triplet, "
            f"already_reduced, sums; got {reduction_type!r}"
        )

    def sums_plan(self, name: str = "loss") -> SumsPlan | None:
        """The statistics this reducer can finish sub-loss ``name`` from; None: it needs losses.

        The default is None, so any reducer (a user's subclass included) gets per-element
        losses unless it says otherwise.
        """
        return None

    def sums_reduction(
        self, total: Tensor, embeddings: Tensor, *, count: Tensor, num: Tensor, **kw: Any
    ) -> Tensor:
        """Finish a ``"sums"`` entry (see the class docstring) and record the statistics.

        Raises:
            TypeError: this reducer has no :meth:`sums_plan` (the loss should have asked).
        """
        plan = self.sums_plan()
        if plan is None:
            raise TypeError(
                f"{type(self).__name__} cannot reduce from sums; hand it per-element losses"
            )
        if self.collect_stats:
            self.set_stats(**self.sums_stats(plan, count, num))
        return finish_from_sums(plan.kind, total, count, num, self.zero_loss(embeddings))

    def sums_stats(self, plan: SumsPlan, count: Tensor, num: Tensor) -> dict[str, Any]:
        """The statistics the reducer would have recorded on the per-element losses."""
        return {"losses_size": num}

    @staticmethod
    def _check_sizes(losses: Any, indices: Any, reduction_type: str) -> None:
        if reduction_type in ("already_reduced", "sums"):
            return
        if not isinstance(losses, Tensor):
            raise InvalidArgumentError(
                f"losses must be a tensor for reduction_type {reduction_type!r}; "
                f"got {type(losses).__name__}"
            )
        n = len(losses)
        if reduction_type == "element":
            if not isinstance(indices, Tensor) or len(indices) != n:
                raise InvalidArgumentError(
                    f"element losses need an indices tensor of length {n}; got {indices!r:.80}"
                )
            return
        size = _TUPLE_SIZES.get(reduction_type)
        if size is None:
            return  # unknown types are reported by the dispatch
        if (
            not isinstance(indices, Sequence)
            or len(indices) != size
            or any(not isinstance(t, Tensor) or len(t) != n for t in indices)
        ):
            raise InvalidArgumentError(
                f"{reduction_type} losses need indices as a tuple of {size} tensors of "
                f"length {n}; got {indices!r:.120}"
            )

    def zero_loss(self, embeddings: Tensor) -> Tensor:
        """``sum(embeddings * 0)``: 0, on the autograd graph of ``embeddings``."""
        return zero_loss(embeddings)

    def input_is_zero_loss(self, losses: Any) -> bool:
        """``True`` for the "no loss" sentinel (the Python int 0)."""
        return input_is_zero_loss(losses)

    def already_reduced_reduction(
        self,
        losses: Tensor,
        loss_indices: Any,
        embeddings: Tensor,
        labels: Tensor | None,
        **kw: Any,
    ) -> Tensor:
        """Pass a 0-dim (or length-1) value through unchanged."""
        if not isinstance(losses, Tensor) or not (losses.ndim == 0 or len(losses) == 1):
            raise InvalidArgumentError(
                "already_reduced losses must be a 0-dim or length-1 tensor; "
                f"got {getattr(losses, 'shape', losses)!r}"
            )
        return losses

    def element_reduction(
        self,
        losses: Tensor,
        loss_indices: Any,
        embeddings: Tensor,
        labels: Tensor | None,
        **kw: Any,
    ) -> Tensor:
        raise NotImplementedError

    def pos_pair_reduction(
        self,
        losses: Tensor,
        loss_indices: Any,
        embeddings: Tensor,
        labels: Tensor | None,
        **kw: Any,
    ) -> Tensor:
        raise NotImplementedError

    def neg_pair_reduction(
        self,
        losses: Tensor,
        loss_indices: Any,
        embeddings: Tensor,
        labels: Tensor | None,
        **kw: Any,
    ) -> Tensor:
        raise NotImplementedError

    def triplet_reduction(
        self,
        losses: Tensor,
        loss_indices: Any,
        embeddings: Tensor,
        labels: Tensor | None,
        **kw: Any,
    ) -> Tensor:
        raise NotImplementedError
