"""Recordable attributes: hyper-parameters and per-forward statistics of modules.

External record keepers and logging hooks walk a module tree and read the attribute names
listed in ``_record_these`` (configuration) and ``_record_these_stats`` (statistics). These
two list names are part of the public contract (:func:`list_of_recordable_attributes_list_names`).

Statistics are registered only when ``collect_stats`` is on, reset to 0 at the start of every
forward, and written through :meth:`ModuleWithRecords.set_stats`, which rejects names that
were never declared (so a typo cannot silently create a new, never-reset attribute).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from pml.core import config

__all__ = ["ModuleWithRecords", "list_of_recordable_attributes_list_names"]

_CONFIG_LIST = "_record_these"
_STATS_LIST = "_record_these_stats"


def list_of_recordable_attributes_list_names() -> list[str]:
    """Names of the attribute lists that hold recordable attribute names.

    Example:
        >>> list_of_recordable_attributes_list_names()
        ['_record_these', '_record_these_stats']
    """
    return [_CONFIG_LIST, _STATS_LIST]


class ModuleWithRecords(nn.Module):
    """``nn.Module`` with recordable hyper-parameters and statistics.

    Args:
        collect_stats: compute per-forward statistics. ``None`` uses the global default
            ``pml.core.config.COLLECT_STATS`` as it is when the module is constructed.
    """

    def __init__(self, collect_stats: bool | None = None) -> None:
        super().__init__()
        self.collect_stats: bool = (
            config.COLLECT_STATS if collect_stats is None else bool(collect_stats)
        )
        # Every stat name ever declared, registered or not: what set_stats accepts.
        self._declared_stats: set[str] = set()

    def add_to_recordable_attributes(
        self,
        name: str | None = None,
        list_of_names: Iterable[str] | None = None,
        is_stat: bool = False,
    ) -> None:
        """Register attribute names as recordable.

        A missing attribute is created with value 0; an existing value is kept
        (hyper-parameters are assigned before they are registered). Stats are only
        registered when ``collect_stats`` is on.

        Args:
            name: one attribute name.
            list_of_names: several attribute names.
            is_stat: ``True`` for per-forward statistics, ``False`` for configuration.
        """
        names = ([name] if name is not None else []) + list(list_of_names or [])
        if is_stat:
            self._declared_stats.update(names)
            if not self.collect_stats:
                return
        list_name = _STATS_LIST if is_stat else _CONFIG_LIST
        if not hasattr(self, list_name):
            setattr(self, list_name, [])
        registered: list[str] = getattr(self, list_name)
        for n in names:
            if n not in registered:
                registered.append(n)
            if not hasattr(self, n):
                setattr(self, n, 0)

    def reset_stats(self) -> None:
        """Set every registered statistic to 0."""
        for n in getattr(self, _STATS_LIST, ()):
            setattr(self, n, 0)

    def set_stats(self, **values: Any) -> None:
        """Store statistics (tensors become Python numbers) when ``collect_stats`` is on.

        Raises:
            ValueError: if a name was never declared as a statistic of this module.
        """
        unknown = sorted(set(values) - self._declared_stats)
        if unknown:
            raise ValueError(
                f"{type(self).__name__} has no statistic named {unknown}; "
                f"declared: {sorted(self._declared_stats)}"
            )
        if not self.collect_stats:
            return
        for n, v in values.items():
            if isinstance(v, torch.Tensor):
                v = v.item()
            setattr(self, n, v)
