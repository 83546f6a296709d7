"""The command's error type: a one-line message, exit status 2, no traceback."""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(Exception):
    """Bad input a user can fix (a name, an argument, a file): printed as one line, exit 2."""
