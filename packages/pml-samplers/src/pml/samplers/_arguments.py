"""Count arguments of the samplers: core's ``check_int``, with the reference's assertion."""

from __future__ import annotations

from typing import Any

from pml.core.validation import InvalidArgumentError, check_int


def check_count(name: str, value: Any, *, integral_float: bool = False) -> int:
    """``value`` as an int ``>= 1``.

    Not an int (``True``, ``2.7``, ``"2"``) is a ``TypeError``; below 1 an
    :class:`InvalidArgumentError` (a ``ValueError`` that is also the ``AssertionError`` the
    reference raised for its count checks).

    Args:
        integral_float: take a float of integral value (``2.0``) as that int, for the
            arguments the reference casts with ``int()``.
    """
    out: int = check_int(name, value, integral_float=integral_float)  # type: ignore[assignment]
    if out < 1:
        raise InvalidArgumentError(f"{name} must be >= 1; got {out}")
    return out
