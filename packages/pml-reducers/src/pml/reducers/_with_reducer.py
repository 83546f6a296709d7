"""Module bases that hold a reducer (and a distance), with the reference's reducer rules."""

from __future__ import annotations

import copy
from typing import Any

import torch

from pml.core.records import ModuleWithRecords
from pml.distances import ModuleWithRecordsAndDistance
from pml.reducers._base import BaseReducer, SumsPlan
from pml.reducers._basic import DoNothingReducer, MeanReducer
from pml.reducers._composite import MultipleReducers


class ModuleWithRecordsAndReducer(ModuleWithRecords):
    """A module holding ``self.reducer``, built by :meth:`set_reducer` at construction.

    Args:
        reducer: None for :meth:`get_default_reducer`; a user reducer is deep-copied (once per
            sub-loss); a :class:`MultipleReducers` or :class:`DoNothingReducer` is used as is.
        collect_stats: see :class:`pml.core.records.ModuleWithRecords`.
    """

    def __init__(self, reducer: BaseReducer | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.set_reducer(reducer)

    def get_default_reducer(self) -> BaseReducer:
        """:class:`MeanReducer` unless overridden."""
        return MeanReducer()

    def sub_loss_names(self) -> list[str]:
        """Names of the sub-losses this module emits (``["loss"]`` by default)."""
        return self._sub_loss_names()

    def _sub_loss_names(self) -> list[str]:
        return ["loss"]

    def reducer_sums_plan(self, name: str = "loss") -> SumsPlan | None:
        """What ``self.reducer`` can finish sub-loss ``name`` from (see :class:`BaseReducer`).

        None (hand it per-element losses) also for a module that is not a :class:`BaseReducer`
        (accepted like the reference), so a loss asks here rather than the reducer itself.
        """
        reducer = self.reducer
        return reducer.sums_plan(name) if isinstance(reducer, BaseReducer) else None

    def set_reducer(self, reducer: BaseReducer | None) -> None:
        """Build ``self.reducer`` following the reference's rules (see class docstring).

        Raises:
            TypeError: ``reducer`` is neither None nor a module instance.
        """
        # compat: any nn.Module instance is accepted (the reference duck-types reducers, and
        # code written for it may pass its own module); classes, strings and numbers are not.
        if reducer is not None and not isinstance(reducer, BaseReducer | torch.nn.Module):
            # fix: the reference fails with "str is not a Module subclass" or at the first
            # forward, without naming the argument
            hint = f" (pass an instance: {reducer.__name__}())" if isinstance(reducer, type) else ""
            raise TypeError(
                "reducer must be a BaseReducer instance such as MeanReducer() or "
                f"AvgNonZeroReducer(); got {type(reducer).__name__} {reducer!r:.80}{hint}"
            )
        if isinstance(reducer, MultipleReducers | DoNothingReducer):
            self.reducer = reducer
            return
        names = self.sub_loss_names()
        if len(names) == 1:
            self.reducer = self.get_default_reducer() if reducer is None else copy.deepcopy(reducer)
            return
        self.reducer = MultipleReducers(
            {
                name: self.get_default_reducer() if reducer is None else copy.deepcopy(reducer)
                for name in names
            }
        )


class ModuleWithRecordsReducerAndDistance(
    ModuleWithRecordsAndReducer, ModuleWithRecordsAndDistance
):
    """A module holding a reducer and a distance (keywords ``reducer``, ``distance``)."""
