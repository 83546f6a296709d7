"""The reference's regularizer mixins of the losses (public names of ``pml.losses``).

``BaseMetricLossFunction`` adds the embedding regularization; losses with learnable class
vectors (proxies) add ``WeightRegularizerMixin``. Each regularization is an already-reduced
sub-loss (``embedding_reg_loss``, ``weight_reg_loss``) beside the loss's own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from pml.losses._arguments import check_real, check_regularizer
from pml.reducers import LossDict

EMBEDDING_REG_LOSS = "embedding_reg_loss"
WEIGHT_REG_LOSS = "weight_reg_loss"


def _regularization_entry(value: Tensor | int) -> dict[str, Any]:
    """The already-reduced entry of a regularization value (0: no regularizer)."""
    return {"losses": value, "indices": None, "reduction_type": "already_reduced"}


class EmbeddingRegularizerMixin:
    """Adds ``embedding_reg_loss = embedding_regularizer(embeddings) * embedding_reg_weight``.

    Args:
        embedding_regularizer: a regularizer module (e.g. ``LpRegularizer()``) or None.
        embedding_reg_weight: multiplier of the regularization value.
    """

    def __init__(
        self,
        embedding_regularizer: nn.Module | None = None,
        embedding_reg_weight: float = 1,
        **kwargs: Any,
    ) -> None:
        check_regularizer("embedding_regularizer", embedding_regularizer)
        check_real("embedding_reg_weight", embedding_reg_weight)
        # Known before the reducer is built (the reducer needs the sub-loss names); a plain
        # attribute can be set before nn.Module.__init__.
        self._has_embedding_regularizer = embedding_regularizer is not None
        super().__init__(**kwargs)
        self.embedding_regularizer = embedding_regularizer
        self.embedding_reg_weight = embedding_reg_weight
        if embedding_regularizer is not None:
            self.add_to_recordable_attributes(name="embedding_reg_weight", is_stat=False)  # type: ignore[attr-defined]

    def embedding_regularization_loss(self, embeddings: Tensor) -> dict[str, Any]:
        """The already-reduced entry of the embedding regularization (0 without a regularizer)."""
        value: Tensor | int = 0
        if self.embedding_regularizer is not None:
            value = self.embedding_regularizer(embeddings) * self.embedding_reg_weight
        return _regularization_entry(value)

    def add_embedding_regularization_to_loss_dict(
        self, loss_dict: LossDict, embeddings: Tensor
    ) -> None:
        """Add ``"embedding_reg_loss"`` to ``loss_dict`` when a regularizer is set."""
        if self.embedding_regularizer is not None:
            loss_dict[EMBEDDING_REG_LOSS] = self.embedding_regularization_loss(embeddings)


class TorchInitWrapper:
    """``w(tensor)`` calls ``init_func(tensor, **kwargs)``: a picklable parameter initialiser.

    Example:
        >>> w = TorchInitWrapper(torch.nn.init.constant_, val=0.5)
        >>> w(torch.empty(2)).tolist()
        [0.5, 0.5]
    """

    def __init__(self, init_func: Callable[..., Any], **kwargs: Any) -> None:
        self.init_func = init_func
        self.kwargs = kwargs

    def __call__(self, tensor: Tensor) -> Any:
        return self.init_func(tensor, **self.kwargs)


class WeightMixin:
    """Holds ``weight_init_func`` (default ``normal_``: mean 0, std 1) for learnable weights."""

    def __init__(self, weight_init_func: Callable[[Tensor], Any] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.weight_init_func = (
            self.get_default_weight_init_func() if weight_init_func is None else weight_init_func
        )

    def get_default_weight_init_func(self) -> Callable[[Tensor], Any]:
        return TorchInitWrapper(torch.nn.init.normal_)


class WeightRegularizerMixin(WeightMixin):
    """Adds ``weight_reg_loss = weight_regularizer(weights) * weight_reg_weight``.

    Losses call :meth:`add_weight_regularization_to_loss_dict` inside ``compute_loss`` with
    their class-vector matrix (rows = classes or proxies).
    """

    def __init__(
        self,
        weight_regularizer: nn.Module | None = None,
        weight_reg_weight: float = 1,
        **kwargs: Any,
    ) -> None:
        check_regularizer("weight_regularizer", weight_regularizer)
        check_real("weight_reg_weight", weight_reg_weight)
        self._has_weight_regularizer = weight_regularizer is not None
        super().__init__(**kwargs)
        self.weight_regularizer = weight_regularizer
        self.weight_reg_weight = weight_reg_weight
        if weight_regularizer is not None:
            self.add_to_recordable_attributes(name="weight_reg_weight", is_stat=False)  # type: ignore[attr-defined]

    def weight_regularization_loss(self, weights: Tensor) -> dict[str, Any]:
        value: Tensor | int = 0
        if self.weight_regularizer is not None:
            value = self.weight_regularizer(weights) * self.weight_reg_weight
        return _regularization_entry(value)

    def add_weight_regularization_to_loss_dict(self, loss_dict: LossDict, weights: Tensor) -> None:
        """Add ``"weight_reg_loss"`` for ``weights`` (``(C, D)`` class vectors) when set."""
        if self.weight_regularizer is not None:
            loss_dict[WEIGHT_REG_LOSS] = self.weight_regularization_loss(weights)


__all__ = [
    "EMBEDDING_REG_LOSS",
    "WEIGHT_REG_LOSS",
    "EmbeddingRegularizerMixin",
    "TorchInitWrapper",
    "WeightMixin",
    "WeightRegularizerMixin",
]
