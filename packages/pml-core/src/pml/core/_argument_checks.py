"""The argument vocabulary: scalar hyper-parameters and options (re-exported by ``validation``).

A wrong type is a ``TypeError``, a wrong value a ``ValueError``; messages name the argument,
then say what was expected and what was given.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any

import torch

__all__ = [
    "InvalidArgumentError",
    "UnsupportedLossError",
    "check_bool",
    "check_callable",
    "check_device",
    "check_int",
    "check_option",
    "check_real",
    "check_type",
]


class InvalidArgumentError(ValueError, AssertionError):
    """A bad argument where the reference raised ``AssertionError``.

    Catchable as ``ValueError`` (what a user of a library expects) and as
    ``AssertionError`` (what code written against the reference catches).
    """


class UnsupportedLossError(TypeError):
    """A loss wrapper was given a loss it does not support."""


def check_option(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``allowed``, else ``ValueError``.

    Example:
        >>> check_option("mode", "all", ["all", "hard"])
        'all'
    """
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}; got {value!r}")
    return value


def _range_text(low: Any, high: Any, low_open: bool, high_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"> {low}" if low_open else f">= {low}")
    if high is not None:
        parts.append(f"< {high}" if high_open else f"<= {high}")
    return " and ".join(parts)


def _check_range(
    name: str, value: Any, low: Any, high: Any, low_open: bool, high_open: bool
) -> None:
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        raise ValueError(
            f"{name} must be {_range_text(low, high, low_open, high_open)}; got {value!r}"
        )


def _is_integral_float(value: Any) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, numbers.Integral)
        and math.isfinite(value)
        and float(value).is_integer()
    )


def check_int(
    name: str,
    value: Any,
    *,
    min: int | None = None,
    max: int | None = None,
    allow_none: bool = False,
    integral_float: bool = False,
) -> int | None:
    """Return ``value`` as a Python int after checking its type and range.

    Accepts Python and numpy integers and 0-dim integer tensors; rejects bool (``True`` is
    not a count), floats (``2.7`` is never silently ``2``) and everything else. With
    ``integral_float`` a float of integral value (``2.0``, also a 0-dim float tensor) is
    taken as that int: use it where the reference casts with ``int()`` (mark the call
    ``# compat:``); ``2.7`` stays a ``TypeError``.

    Raises:
        TypeError: not an integer (or None when ``allow_none``).
        ValueError: outside ``[min, max]``.

    Example:
        >>> check_int("m", 4, min=1)
        4
        >>> check_int("m", 4.0, integral_float=True)
        4
    """
    if value is None and allow_none:
        return None
    if (
        isinstance(value, torch.Tensor)
        and value.ndim == 0
        and (integral_float or not value.dtype.is_floating_point)
    ):
        value = value.item()
    if integral_float and _is_integral_float(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int; got {type(value).__name__} {value!r}")
    out = int(value)
    _check_range(name, out, min, max, False, False)
    return out


def check_real(
    name: str,
    value: Any,
    *,
    min: float | None = None,
    max: float | None = None,
    min_open: bool = False,
    max_open: bool = False,
    allow_none: bool = False,
) -> float | None:
    """Return ``value`` as a Python float after checking its type and range.

    Accepts ints, floats, numpy scalars and 0-dim tensors; rejects bool, strings and NaN.
    ``min_open``/``max_open`` make a bound exclusive (``min=0, min_open=True``: ``> 0``).

    Raises:
        TypeError: not a real number (or None when ``allow_none``).
        ValueError: NaN, or outside the range.

    Example:
        >>> check_real("temperature", 0.07, min=0, min_open=True)
        0.07
    """
    if value is None and allow_none:
        return None
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.dtype.is_complex:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__} {value!r}")
    out = float(value)
    if math.isnan(out):
        raise ValueError(f"{name} must be a number; got nan")
    _check_range(name, out, min, max, min_open, max_open)
    return out


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` if it is a bool (numpy bools too); else ``TypeError``.

    Example:
        >>> check_bool("normalize_embeddings", True)
        True
    """
    if isinstance(value, bool):
        return value
    if type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_"):
        return bool(value)
    raise TypeError(f"{name} must be a bool; got {type(value).__name__} {value!r}")


def check_callable(name: str, value: Any, *, allow_none: bool = True) -> Callable[..., Any] | None:
    """Return ``value`` if it is callable (or None when allowed), else ``TypeError``.

    For hooks and plug-in functions (``collate_fn``, ``knn_func``, ``transform``, ...).

    Example:
        >>> check_callable("transform", None) is None
        True
    """
    if value is None and allow_none:
        return None
    if not callable(value):
        expected = "callable or None" if allow_none else "callable"
        raise TypeError(f"{name} must be {expected}; got {type(value).__name__} {value!r:.80}")
    return value


def check_device(name: str, value: Any) -> torch.device:
    """``value`` as a ``torch.device``; None picks CUDA when available, else the CPU.

    Raises:
        TypeError: not a device, a string or an int.
        ValueError: a string or index torch does not take (``"gpu"``, ``-1``).

    Example:
        >>> check_device("device", "cpu")
        device(type='cpu')
    """
    if value is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    expected = "a torch.device, a device string such as 'cpu' or 'cuda:0', or None"
    if isinstance(value, bool) or not isinstance(value, torch.device | str | int):
        raise TypeError(f"{name} must be {expected}; got {type(value).__name__} {value!r:.80}")
    try:
        return torch.device(value)
    except (RuntimeError, TypeError, ValueError) as err:
        raise ValueError(f"{name} must be {expected}; got {value!r:.80} ({err})") from None


def check_type(
    name: str, value: Any, types: type | tuple[type, ...], *, allow_none: bool = False
) -> Any:
    """Return ``value`` if it is an instance of ``types`` (None when allowed), else TypeError.

    Example:
        >>> check_type("distance", None, object, allow_none=True)
    """
    if value is None and allow_none:
        return None
    if not isinstance(value, types):
        names = (
            types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
        )
        raise TypeError(f"{name} must be {names}; got {type(value).__name__} {value!r:.80}")
    return value
