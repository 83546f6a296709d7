"""LossTracker: the current iteration's losses, their weights and their weighted total."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["LossTracker"]


class LossTracker:
    """Holds ``losses`` (name -> value of this iteration) and ``loss_weights``.

    ``"total_loss"`` is appended to ``loss_names`` when absent (the list is mutated, like the
    reference). After :meth:`update`, every loss holds its **weighted** value and
    ``losses["total_loss"]`` their sum.

    Args:
        loss_names: the names of the losses (a list; ``"total_loss"`` is appended).

    Example:
        >>> tracker = LossTracker(["a", "b"])
        >>> tracker.losses.update(a=2.0, b=3.0)
        >>> tracker.update({"a": 0.5})
        >>> tracker.losses
        {'a': 1.0, 'b': 3.0, 'total_loss': 4.0}
    """

    def __init__(self, loss_names: list[str]) -> None:
        if "total_loss" not in loss_names:
            loss_names.append("total_loss")
        self.losses: dict[str, Any] = {name: 0 for name in loss_names}
        self.loss_weights: dict[str, float] = {name: 1 for name in loss_names}

    def weight_the_losses(self, exclude_loss: Iterable[str] = ("total_loss",)) -> None:
        """Multiply every loss (except ``exclude_loss``) by its weight, in place."""
        excluded = set(exclude_loss)
        for name in self.losses:
            if name not in excluded:
                self.losses[name] = self.losses[name] * self.loss_weights[name]

    def get_total_loss(self, exclude_loss: Iterable[str] = ("total_loss",)) -> None:
        """Set ``losses["total_loss"]`` to the sum of the other losses."""
        excluded = set(exclude_loss)
        total: Any = 0
        for name, value in self.losses.items():
            if name not in excluded:
                total = total + value
        self.losses["total_loss"] = total

    def set_loss_weights(self, loss_weight_dict: Mapping[str, float]) -> None:
        """Weight of every loss: ``loss_weight_dict[name]`` if present, else 1."""
        for name in self.losses:
            self.loss_weights[name] = loss_weight_dict.get(name, 1.0)

    def update(self, loss_weight_dict: Mapping[str, float]) -> None:
        """Set the weights, weight the losses and compute their total."""
        self.set_loss_weights(loss_weight_dict)
        self.weight_the_losses()
        self.get_total_loss()
