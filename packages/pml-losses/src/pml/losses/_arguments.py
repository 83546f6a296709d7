"""Constructor-argument checks shared by the losses (TypeError/ValueError naming the argument).

``check_real`` is :func:`pml.core.validation.check_real` that also takes a one-element tensor
(the reference accepts tensor hyperparameters); ``check_count`` is ``check_int`` that also
takes an integral float (``7.0``); ``check_int``/``check_bool`` are core's.
"""

from __future__ import annotations

import numbers
from typing import Any

from torch import Tensor

from pml.core.validation import check_bool, check_int
from pml.core.validation import check_real as _core_check_real

__all__ = ["check_bool", "check_count", "check_int", "check_real", "check_regularizer"]


def check_real(name: str, value: Any, **bounds: Any) -> None:
    """Raise unless ``value`` is a real number (or a one-element tensor) within ``bounds``.

    Args:
        name: the argument's name, for the message.
        value: the value given.
        **bounds: ``min``, ``max``, ``min_open``, ``max_open``, ``allow_none`` of
            :func:`pml.core.validation.check_real`.

    Raises:
        TypeError: not a real number (bool and strings included).
        ValueError: NaN, or outside the bounds.
    """
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.detach().reshape(())
    _core_check_real(name, value, **bounds)


def check_count(name: str, value: Any, *, min: int = 1, allow_none: bool = False) -> int | None:
    """``value`` as an int ``>= min``; an integral float (``7.0``) is taken, ``2.5`` is not.

    Raises:
        TypeError: not an integer (bool, a fractional or non-finite float, a string).
        ValueError: below ``min``.
    """
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.detach().reshape(()).item()
    if (
        isinstance(value, numbers.Real)
        and not isinstance(value, numbers.Integral)
        and float(value).is_integer()
    ):
        value = int(value)
    return check_int(name, value, min=min, allow_none=allow_none)


def check_regularizer(name: str, value: Any) -> None:
    """Raise ``TypeError`` unless ``value`` is None, a regularizer instance or a callable.

    A class (``LpRegularizer`` instead of ``LpRegularizer()``), a string or a number is
    rejected; the reference failed at the first forward.
    """
    if value is None or (callable(value) and not isinstance(value, type)):
        return
    hint = f" (pass an instance: {value.__name__}())" if isinstance(value, type) else ""
    raise TypeError(
        f"{name} must be a regularizer instance such as LpRegularizer() (or a callable "
        f"returning a 0-dim tensor); got {type(value).__name__} {value!r:.80}{hint}"
    )
