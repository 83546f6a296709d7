"""BaseRegularizer: a reducer-and-distance module mapping rows ``(N, D)`` to a scalar."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pml.core.validation import check_embeddings
from pml.reducers import LossDict, ModuleWithRecordsReducerAndDistance


class BaseRegularizer(ModuleWithRecordsReducerAndDistance):
    """Base of regularizers: ``forward(x) = reducer(compute_loss(x), x, arange(N))``.

    ``x`` holds embeddings (as an embedding regularizer) or class vectors (as a weight
    regularizer, e.g. ``W.t()``). Row indices are passed to the reducer as labels, so a
    :class:`~pml.reducers.ClassWeightedReducer` weights rows.
    """

    def forward(self, x: Tensor) -> Tensor:
        """Regularization value of the rows of ``x`` (shape ``(N, D)``), a 0-dim tensor."""
        self.reset_stats()
        check_embeddings(x, "x")
        loss_dict = self.compute_loss(x)
        return self.reducer(loss_dict, x, torch.arange(x.shape[0], device=x.device))

    def compute_loss(self, x: Tensor) -> LossDict:
        raise NotImplementedError

    @staticmethod
    def element_loss(losses: Tensor, **extra: Any) -> LossDict:
        """``{"loss": {losses, arange indices, "element", **extra}}``."""
        idx = torch.arange(len(losses), device=losses.device)
        return {"loss": {"losses": losses, "indices": idx, "reduction_type": "element", **extra}}
