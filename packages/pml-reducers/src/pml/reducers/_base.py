"""BaseReducer: validation of a one-entry loss dict and dispatch on its reduction type."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeAlias

from torch import Tensor

from pml.core.functional import zero_loss
from pml.core.records import ModuleWithRecords
from pml.core.validation import InvalidArgumentError

ReductionType: TypeAlias = Literal["element", "pos_pair", "neg_pair", "triplet", "already_reduced"]
LossDict: TypeAlias = dict[str, dict[str, Any]]

#: number of index tensors each tuple-like reduction type carries
_TUPLE_SIZES = {"pos_pair": 2, "neg_pair": 2, "triplet": 3}
_KNOWN_KEYS = {"losses", "indices", "reduction_type"}


def input_is_zero_loss(losses: Any) -> bool:
    """``True`` for the "no loss" sentinel: a non-tensor equal to 0 (the Python int 0)."""
    return not isinstance(losses, Tensor) and losses == 0


class BaseReducer(ModuleWithRecords):
    """Turns a loss dict ``{name: {"losses", "indices", "reduction_type"}}`` into a scalar.

    Subclasses implement ``element_reduction``, ``pos_pair_reduction``,
    ``neg_pair_reduction`` and ``triplet_reduction``; ``already_reduced`` values pass through.
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
        raise ValueError(
            "reduction_type must be one of element, pos_pair, neg_pair, triplet, "
            f"already_reduced; got {reduction_type!r}"
        )

    @staticmethod
    def _check_sizes(losses: Any, indices: Any, reduction_type: str) -> None:
        if reduction_type == "already_reduced":
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
