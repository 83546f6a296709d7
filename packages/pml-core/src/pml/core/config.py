"""Process-wide settings: the default of ``collect_stats`` and the library logger.

``COLLECT_STATS`` is read when a module is *constructed* (``collect_stats=None`` means "use the
global flag"), exactly like the reference's module-level flag. Set it with
:func:`set_collect_stats` (or assign ``pml.core.config.COLLECT_STATS = True``).
"""

from __future__ import annotations

import logging

from pml.core.validation import check_bool, check_type

__all__ = ["COLLECT_STATS", "LOGGER", "LOGGER_NAME", "set_collect_stats", "set_logger_name"]

COLLECT_STATS: bool = False
LOGGER_NAME: str = "PML"
LOGGER: logging.Logger = logging.getLogger(LOGGER_NAME)


def set_collect_stats(value: bool) -> None:
    """Set the default ``collect_stats`` of modules constructed from now on."""
    global COLLECT_STATS
    COLLECT_STATS = check_bool("value", value)


def set_logger_name(name: str) -> None:
    """Rename the library logger (``LOGGER``)."""
    global LOGGER, LOGGER_NAME
    LOGGER_NAME = check_type("name", name, str)
    LOGGER = logging.getLogger(name)
