"""Reducers built from other reducers: MultipleReducers and PerAnchorReducer."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from pml.reducers import functional as RF
from pml.reducers._base import BaseReducer, SumsPlan
from pml.reducers._basic import MeanReducer


class MultipleReducers(BaseReducer):
    """Reduce each sub-loss with its own reducer and sum the results.

    Args:
        reducers: sub-loss name -> reducer.
        default_reducer: for names not in ``reducers`` (default :class:`MeanReducer`).

    The result has the embeddings' dtype and device.
    """

    def __init__(
        self,
        reducers: Mapping[str, BaseReducer],
        default_reducer: BaseReducer | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.reducers = nn.ModuleDict(dict(reducers))
        self.default_reducer = MeanReducer() if default_reducer is None else default_reducer

    def forward(  # type: ignore[override]
        self, loss_dict: Mapping[str, Mapping[str, Any]], embeddings: Tensor, labels: Tensor | None
    ) -> Tensor:
        self.reset_stats()
        sub_losses = torch.zeros(len(loss_dict), dtype=embeddings.dtype, device=embeddings.device)
        for i, (name, info) in enumerate(loss_dict.items()):
            value = self.reducer_for(name)({name: info}, embeddings, labels)
            sub_losses[i] = value.reshape(()) if isinstance(value, Tensor) else value
        return self.sub_loss_reduction(sub_losses, embeddings, labels)

    def reducer_for(self, name: str) -> BaseReducer:
        """The reducer of sub-loss ``name`` (``default_reducer`` for names not listed)."""
        return self.reducers[name] if name in self.reducers else self.default_reducer  # noqa: SIM401

    def sums_plan(self, name: str = "loss") -> SumsPlan | None:
        """The plan of the reducer of sub-loss ``name`` (see :meth:`BaseReducer.sums_plan`)."""
        sub = self.reducer_for(name)
        return sub.sums_plan(name) if isinstance(sub, BaseReducer) else None

    def sub_loss_reduction(
        self, sub_losses: Tensor, embeddings: Tensor | None = None, labels: Tensor | None = None
    ) -> Tensor:
        """Combine the per-sub-loss values (their sum)."""
        return torch.sum(sub_losses)


AggregationFunc = Callable[[Tensor, Tensor], Tensor]


class PerAnchorReducer(BaseReducer):
    """Average pair losses per anchor, then hand the per-anchor values to ``reducer``.

    Anchors without pairs contribute 0 (so a mean over anchors counts them).

    Args:
        reducer: inner reducer of the per-anchor (element) losses; default MeanReducer.
        aggregation_func: None (default) averages the pairs of each anchor with a scatter,
            in ``O(pairs + N)`` memory, for references of any size, counting duplicate pairs.
            A callable ``f(x, num_per_row)`` gets the reference's dense ``(N, M)`` matrix
            (missing pairs 0) and the number of pairs per row instead.
    """

    def __init__(
        self,
        reducer: BaseReducer | None = None,
        aggregation_func: AggregationFunc | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.reducer = MeanReducer() if reducer is None else reducer
        self.aggregation_func = aggregation_func

    def element_reduction(self, losses, loss_indices, embeddings, labels, **kw):  # type: ignore[no-untyped-def]
        loss_dict = {
            "loss": {"losses": losses, "indices": loss_indices, "reduction_type": "element"}
        }
        return self.reducer(loss_dict, embeddings, labels)

    def _pair_reduction(
        self, losses: Tensor, loss_indices: Any, embeddings: Tensor, labels: Tensor | None
    ) -> Tensor:
        num_anchors = embeddings.shape[0]
        anchors, others = loss_indices[0].long(), loss_indices[1].long()
        if self.aggregation_func is None:
            per_anchor = RF.mean_per_anchor(losses, anchors, num_anchors)
        else:
            width = num_anchors if len(others) == 0 else max(num_anchors, int(others.max()) + 1)
            dense = losses.new_zeros(num_anchors, width)
            present = torch.zeros(num_anchors, width, dtype=torch.bool, device=losses.device)
            dense = dense.index_put((anchors, others), losses)
            present[anchors, others] = True
            per_anchor = self.aggregation_func(dense, present.sum(dim=1))
        arange = torch.arange(num_anchors, device=losses.device)
        return self.element_reduction(per_anchor, arange, embeddings, labels)

    def pos_pair_reduction(self, losses, loss_indices, embeddings, labels, **kw):  # type: ignore[no-untyped-def]
        return self._pair_reduction(losses, loss_indices, embeddings, labels)

    def neg_pair_reduction(self, losses, loss_indices, embeddings, labels, **kw):  # type: ignore[no-untyped-def]
        return self._pair_reduction(losses, loss_indices, embeddings, labels)

    def triplet_reduction(self, losses, loss_indices, embeddings, labels, **kw):  # type: ignore[no-untyped-def]
        raise NotImplementedError("PerAnchorReducer does not support triplet losses")
