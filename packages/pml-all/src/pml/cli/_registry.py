"""Classes by name: losses, miners, samplers, distances, reducers, regularizers, optimizers.

``pml train --loss ArcFaceLoss --loss-arg margin=28.6`` resolves ``ArcFaceLoss`` in
``pml.losses`` and builds it with ``margin=28.6``. Unknown names suggest the closest ones;
keyword arguments a class rejects name the class and the keyword.
"""

from __future__ import annotations

import ast
import difflib
import inspect
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import Any

import torch

import pml.distances
import pml.losses
import pml.miners
import pml.reducers
import pml.regularizers
import pml.samplers
from pml.cli._errors import UsageError

__all__ = ["KINDS", "build", "keywords", "names", "parse_kwargs", "resolve"]

#: kind -> (module, base class that every entry must subclass or None, what to skip)
KINDS: dict[str, tuple[ModuleType, type | None]] = {
    "loss": (pml.losses, torch.nn.Module),
    "miner": (pml.miners, torch.nn.Module),
    "sampler": (pml.samplers, torch.utils.data.Sampler),
    "distance": (pml.distances, torch.nn.Module),
    "reducer": (pml.reducers, torch.nn.Module),
    "regularizer": (pml.regularizers, torch.nn.Module),
    "optimizer": (torch.optim, torch.optim.Optimizer),
    "scheduler": (torch.optim.lr_scheduler, None),
}

#: keyword arguments whose string value names an object of another kind
_NESTED_KINDS = {
    "distance": "distance",
    "reducer": "reducer",
    "embedding_regularizer": "regularizer",
    "weight_regularizer": "regularizer",
}

_OBJECT_ARGUMENT = "it takes another {} object, which options cannot give"
_WRAPPED_BY_PML = "pml train wraps the {} in it by itself under --nproc-per-node"

#: classes of a kind that exist but cannot work in ``pml train`` (bases to subclass,
#: wrappers of other objects, ...), with the reason; they are not offered as choices
_UNSUPPORTED: dict[str, dict[str, str]] = {
    "distance": {"BatchedDistance": _OBJECT_ARGUMENT.format("distance")},
    "loss": {
        "GenericPairLoss": "it is the base class of the pair losses",
        "CrossBatchMemory": _OBJECT_ARGUMENT.format("loss"),
        "MultipleLosses": _OBJECT_ARGUMENT.format("loss"),
        "SelfSupervisedLoss": _OBJECT_ARGUMENT.format("loss"),
        "DistributedLossWrapper": _WRAPPED_BY_PML.format("loss"),
        "VICRegLoss": "it compares two augmented views of each item (embeddings and "
        "ref_emb) and takes no labels, and pml train makes one view with labels",
    },
    "miner": {
        "DistributedMinerWrapper": _WRAPPED_BY_PML.format("miner"),
        "EmbeddingsAlreadyPackagedAsTriplets": "it needs batches of consecutive (anchor, "
        "positive, negative) rows, which pml train's samplers do not make",
    },
    "sampler": {
        "TuplesToWeightsSampler": "it takes a miner object and a dataset, which options "
        "cannot give",
    },
    "reducer": {
        "DoNothingReducer": "it returns the unreduced losses, and training needs one number",
    },
    "optimizer": {
        "LBFGS": "it needs a closure that re-evaluates the loss at every step, which the "
        "trainer does not pass",
        "SparseAdam": "it takes sparse gradients only, and the models here have dense ones",
    },
    "scheduler": {
        "LRScheduler": "it is the base class of the schedulers",
        "LambdaLR": "it takes a Python function (lr_lambda), which options cannot give",
        "MultiplicativeLR": "it takes a Python function (lr_lambda), which options cannot give",
        "SequentialLR": "it takes other scheduler objects, which options cannot give",
        "ChainedScheduler": "it takes other scheduler objects, which options cannot give",
    },
}

#: kinds with their own ``--<kind>-arg`` option
_OPTION_KINDS = {"loss", "miner", "sampler", "optimizer", "scheduler"}


def names(kind: str) -> list[str]:
    """The constructible class names of ``kind`` (sorted)."""
    module, base = _kind(kind)
    out = []
    for name in getattr(module, "__all__", dir(module)):
        obj = getattr(module, name, None)
        if not inspect.isclass(obj) or inspect.isabstract(obj) or name.startswith("_"):
            continue
        if name.endswith("Mixin") or name.startswith(("Base", "ModuleWith")):
            continue
        if base is not None and (obj is base or not issubclass(obj, base)):
            continue
        if name in _UNSUPPORTED.get(kind, {}):
            continue
        out.append(name)
    return sorted(out)


def resolve(kind: str, name: str) -> type:
    """The class called ``name`` of ``kind``.

    Raises:
        UsageError: no such class (the message suggests the closest names), or one that
            cannot work here (e.g. the LBFGS optimizer; the message says why).
    """
    options = names(kind)
    if name in options:
        return getattr(_kind(kind)[0], name)
    if name in _UNSUPPORTED.get(kind, {}):
        raise UsageError(
            f"{kind} {name} is not supported by pml train: {_UNSUPPORTED[kind][name]}; "
            f"choose from {', '.join(options)}"
        )
    lowered = {n.lower(): n for n in options}
    if name.lower() in lowered:
        return getattr(_kind(kind)[0], lowered[name.lower()])
    close = difflib.get_close_matches(name, options, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; choose from {', '.join(options)}"
    raise UsageError(f"unknown {kind} {name!r}{hint}")


def parse_kwargs(items: Iterable[str] | Mapping[str, Any] | None, option: str) -> dict[str, Any]:
    """``["margin=0.2", "type_of_triplets='hard'"]`` -> ``{"margin": 0.2, ...}``.

    Values are Python literals (numbers, strings, booleans, None, lists, tuples, dicts);
    anything else stays a string. A mapping (from a config file) is copied.

    Raises:
        UsageError: an item without ``=`` (naming ``option``).
    """
    if items is None:
        return {}
    if isinstance(items, Mapping):
        return dict(items)
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise UsageError(f"{option} expects key=value; got {item!r}")
        try:
            out[key] = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            out[key] = raw.strip()
    return out


def build(kind: str, name: str, kwargs: Mapping[str, Any] | None = None, *args: Any) -> Any:
    """``resolve(kind, name)(*args, **kwargs)``; nested names are built too.

    A string value of ``distance``/``reducer``/``*_regularizer`` names a class of that kind
    (``distance="CosineSimilarity"``); a dict ``{"name": ..., **kwargs}`` builds it with
    arguments.

    Raises:
        UsageError: an unknown name, or arguments the class rejects (naming the class).
    """
    cls = resolve(kind, name)
    kwargs = dict(kwargs or {})
    for key, nested_kind in _NESTED_KINDS.items():
        value = kwargs.get(key)
        if isinstance(value, str):
            kwargs[key] = build(nested_kind, value)
        elif isinstance(value, Mapping) and "name" in value:
            spec = dict(value)
            kwargs[key] = build(nested_kind, spec.pop("name"), spec)
    _check_keywords(cls, kwargs, len(args))
    _check_required(kind, cls, kwargs, len(args))
    try:
        return cls(*args, **kwargs)
    except TypeError as err:
        raise UsageError(f"{cls.__name__} rejects the arguments {sorted(kwargs)} ({err})") from None
    except ValueError as err:
        raise UsageError(f"{cls.__name__}: {err}") from None


def keywords(cls: type) -> set[str] | None:
    """The keyword arguments ``cls(...)`` accepts, or None when they cannot be listed.

    Follows ``**kwargs`` up the class hierarchy (a subclass handing them to its base) and
    stops at ``torch.nn.Module``, which takes none.
    """
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is torch.nn.Module or klass is object:
            return names
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            params = list(inspect.signature(init).parameters.values())[1:]
        except (TypeError, ValueError):
            return None
        open_ended = False
        for p in params:
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                open_ended = True
            elif p.kind in (
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                inspect.Parameter.KEYWORD_ONLY,
            ):
                names.add(p.name)
        if not open_ended:
            return names
    return None


def _check_keywords(cls: type, kwargs: Mapping[str, Any], positional: int) -> None:
    accepted = keywords(cls)
    if accepted is None:
        return
    for key in kwargs:
        if key not in accepted:
            close = difflib.get_close_matches(key, sorted(accepted), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}? " if close else ""
            raise UsageError(
                f"{cls.__name__} takes no argument {key!r}; {hint}it takes "
                f"{', '.join(sorted(accepted)) or 'none'}"
            )


def _check_required(kind: str, cls: type, kwargs: Mapping[str, Any], positional: int) -> None:
    """A required constructor argument that neither ``args`` nor ``kwargs`` gives."""
    try:
        params = list(inspect.signature(cls).parameters.values())[positional:]
    except (TypeError, ValueError):
        return
    missing = [
        p.name
        for p in params
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and p.name not in kwargs
    ]
    if missing:
        how = f"; pass --{kind}-arg {missing[0]}=VALUE" if kind in _OPTION_KINDS else ""
        raise UsageError(f"{cls.__name__} needs {', '.join(missing)}{how}")


def _kind(kind: str) -> tuple[ModuleType, type | None]:
    if kind not in KINDS:
        raise UsageError(f"unknown kind {kind!r}; choose from {', '.join(sorted(KINDS))}")
    return KINDS[kind]
