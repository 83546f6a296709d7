"""Constructor-argument checks of the losses: core's vocabulary plus the reference's casts.

``check_real``/``check_count`` are :func:`pml.core.validation.check_real`/``check_int`` that
also take what the reference accepts: a one-element tensor hyper-parameter and, for counts,
an integral float (``7.0``). ``check_int``/``check_bool`` are core's (re-exported).
``check_regularizer`` is the losses' own.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from pml.core.validation import check_bool, check_int
from pml.core.validation import check_real as _core_check_real

__all__ = ["check_bool", "check_count", "check_int", "check_real", "check_regularizer"]


def _scalar(value: Any) -> Any:
    """A one-element tensor as a 0-dim one (detached); anything else unchanged."""
    if isinstance(value, Tensor) and value.numel() == 1:
        return value.detach().reshape(())
    return value


def check_real(name: str, value: Any, **bounds: Any) -> float | None:
    """:func:`pml.core.validation.check_real` that also takes a one-element tensor.

    Args:
        name: the argument's name, for the message.
        value: the value given.
        **bounds: ``min``, ``max``, ``min_open``, ``max_open``, ``allow_none`` of
            :func:`pml.core.validation.check_real`.

    Raises:
        TypeError: not a real number (bool and strings included).
        ValueError: NaN, or outside the bounds.
    """
    return _core_check_real(name, _scalar(value), **bounds)  # compat: tensor hyper-parameters


def check_count(name: str, value: Any, *, min: int = 1, allow_none: bool = False) -> int | None:
    """``value`` as an int ``>= min``; an integral float (``7.0``) is taken, ``2.5`` is not.

    Raises:
        TypeError: not an integer (bool, a fractional or non-finite float, a string).
        ValueError: below ``min``.
    """
    # compat: the reference casts counts with int() and accepts tensor hyper-parameters
    return check_int(name, _scalar(value), min=min, allow_none=allow_none, integral_float=True)


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
