"""Key checking of the trainers' dictionaries (models, loss_funcs, optimizers, ...).

A :class:`KeyChecker` lists the allowed keys of one dictionary as regular expressions matched
at the start of the key (Python's ``re.match``, like the reference: ``"metric_lossX"``
passes the pattern ``"metric_loss"``), the keys whose absence is worth a warning
(``important``) and those whose absence is an error (``essential``). A
:class:`KeyCheckerDict` holds one checker per trainer attribute and verifies them all.

Example:
    >>> schema = KeyCheckerDict({"models": KeyChecker(["trunk", "embedder"], essential=["trunk"])})
    >>> class Holder:
    ...     models = {"trunk": None, "embedder": None}
    >>> schema.verify(Holder())
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from pml.core import config
from pml.core.validation import InvalidArgumentError

__all__ = ["KeyChecker", "KeyCheckerDict", "default_important"]

#: a list of key patterns, or a callable ``(checker, schema) -> list`` computed at verification
KeySpec = list[str] | Callable[["KeyChecker", "KeyCheckerDict"], list[str]]


def default_important(checker: KeyChecker, schema: KeyCheckerDict) -> list[str]:
    """The default ``important`` keys: every allowed key that is not essential."""
    essential = checker.resolve("essential", schema)
    return [k for k in checker.resolve("keys", schema) if k not in essential]


class KeyChecker:
    """The allowed, important and essential keys of one dictionary.

    Args:
        keys: allowed key patterns (regular expressions matched at the start of a key), or a
            callable ``(checker, schema) -> list`` evaluated at verification time.
        warn_empty: log a warning when the dictionary is None or empty.
        important: patterns whose absence is logged as a warning (default: every allowed
            key that is not essential); a list or a callable like ``keys``.
        essential: patterns whose absence is an error (default: none); a list or a callable.
    """

    def __init__(
        self,
        keys: KeySpec,
        warn_empty: bool = True,
        important: KeySpec = default_important,
        essential: KeySpec | None = None,
    ) -> None:
        self.keys = keys
        self.warn_empty = warn_empty
        self.important = important
        self.essential = [] if essential is None else essential

    def resolve(self, what: str, schema: KeyCheckerDict) -> list[str]:
        """The list behind ``keys``/``important``/``essential`` (callables are evaluated)."""
        value = {"keys": self.keys, "important": self.important, "essential": self.essential}[what]
        if callable(value):
            value = value(self, schema)
        return list(value)


class KeyCheckerDict:
    """One :class:`KeyChecker` per trainer attribute (``schema["models"]``, ...).

    Args:
        children: attribute name -> checker.
    """

    def __init__(self, children: Mapping[str, KeyChecker]) -> None:
        self.children: dict[str, KeyChecker] = dict(children)

    def __getitem__(self, name: str) -> KeyChecker:
        return self.children[name]

    def __setitem__(self, name: str, checker: KeyChecker) -> None:
        self.children[name] = checker

    def __contains__(self, name: object) -> bool:
        return name in self.children

    def keys_of(self, name: str) -> list[str]:
        """The allowed key patterns of ``name`` (callables evaluated)."""
        return self.children[name].resolve("keys", self)

    def verify(self, obj: Any) -> None:
        """Check ``getattr(obj, name)`` against every child checker.

        Raises:
            InvalidArgumentError: a key matches no allowed pattern, or an essential
                pattern has no matching key (catchable as ``ValueError`` and as the
                reference's ``AssertionError``).
        """
        for name, checker in self.children.items():
            self._verify_prop(obj, name, checker)

    def _verify_prop(self, obj: Any, obj_name: str, checker: KeyChecker) -> None:
        value = getattr(obj, obj_name, None)
        if checker.warn_empty and (value is None or (isinstance(value, Mapping) and not value)):
            config.LOGGER.warning(f"{obj_name} is empty")
        if value is None:
            return
        keys = list(value.keys())
        allowed = checker.resolve("keys", self)
        for key in keys:
            if not isinstance(key, str) or not any(re.match(p, key) for p in allowed):
                raise InvalidArgumentError(
                    f"{obj_name} keys must be one of {', '.join(allowed)}; got the key "
                    f"{key!r} in {obj_name}"
                )
            if not any(re.fullmatch(p, key) for p in allowed):
                # compat: spec §1 (prefix matching is kept; a misspelt key is worth a warning)
                prefix = next(p for p in allowed if re.match(p, key))
                config.LOGGER.warning(
                    f"{obj_name} key {key!r} is not one of {', '.join(allowed)}; it is accepted "
                    f"because it starts with {prefix!r} (a misspelling?)"
                )
        for pattern in checker.resolve("important", self):
            if not any(isinstance(k, str) and re.match(pattern, k) for k in keys):
                config.LOGGER.warning(f'{obj_name} is missing "{pattern}"')
        for pattern in checker.resolve("essential", self):
            if not any(isinstance(k, str) and re.match(pattern, k) for k in keys):
                raise InvalidArgumentError(
                    f'{obj_name} must contain "{pattern}"; got the keys {keys} (allowed: '
                    f"{', '.join(allowed)})"
                )
