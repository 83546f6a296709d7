"""The reference's ``utils.logging_presets`` module path, for scripts that import it.

``import pml.trainers.logging_presets as logging_presets`` gives the same names as
``pytorch_metric_learning.utils.logging_presets``: :func:`get_record_keeper`,
:func:`get_hook_container`, :class:`HookContainer` and :class:`EmptyContainer` (also
importable from ``pml.trainers``).
"""

from pml.trainers._hooks import EmptyContainer, HookContainer, get_hook_container, get_record_keeper

__all__ = ["EmptyContainer", "HookContainer", "get_hook_container", "get_record_keeper"]
