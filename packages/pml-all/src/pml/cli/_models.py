"""The embedding model of the ``pml`` command: the default MLP or a user's factory.

:func:`build_model` returns ``nn.Sequential(trunk, embedder)`` with the children named
``"trunk"`` and ``"embedder"`` (the trainers' model keys: a checkpoint holds their weights
under ``state["models"]["trunk"]`` and ``state["models"]["embedder"]``).

* ``model = "mlp"``: trunk = flatten, then two hidden layers (linear, batch norm, ReLU) of
  ``hidden_size``; embedder = a linear layer to ``embedding_size``. Meant for vectors and
  small images (the default recipe on the 8x8 digits).
* ``model = "package.module:factory"`` (or ``"path/to/file.py:factory"``): ``factory()``
  returns the whole network (the trunk; the embedder is an identity). It is called with the
  keyword arguments it declares among ``input_shape`` (a tuple: the shape of one item) and
  ``embedding_size``. The current folder is importable, as with ``python -m``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import os
import sys
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pml.cli._errors import UsageError

__all__ = ["build_model", "default_mlp", "embed_dataset", "load_factory"]


def build_model(settings: Any, input_shape: Sequence[int]) -> nn.Sequential:
    """The embedding model of ``settings`` for items of shape ``input_shape``.

    Args:
        settings: the :class:`~pml.cli._settings.Settings` (``model``, ``hidden_size``,
            ``embedding_size``).
        input_shape: the shape of one item (``(64,)`` for the digits, ``(3, 32, 32)`` for
            images).

    Returns:
        ``nn.Sequential`` with children ``trunk`` and ``embedder``.

    Raises:
        UsageError: a factory that cannot be imported, is not callable, fails, or returns
            something other than an ``nn.Module``.
    """
    shape = tuple(int(s) for s in input_shape)
    if settings.model == "mlp":
        trunk, embedder = default_mlp(shape, settings.hidden_size, settings.embedding_size)
    else:
        factory = load_factory(settings.model)
        trunk = _call_factory(factory, settings.model, shape, settings.embedding_size)
        embedder = nn.Identity()
    return nn.Sequential(OrderedDict(trunk=trunk, embedder=embedder))


def default_mlp(
    input_shape: Sequence[int], hidden_size: int, embedding_size: int
) -> tuple[nn.Module, nn.Module]:
    """``(trunk, embedder)`` of the default MLP for flattened items of ``input_shape``."""
    features = math.prod(input_shape)
    trunk = nn.Sequential(
        nn.Flatten(),
        nn.Linear(features, hidden_size),
        nn.BatchNorm1d(hidden_size),
        nn.ReLU(),
        nn.Linear(hidden_size, hidden_size),
        nn.BatchNorm1d(hidden_size),
        nn.ReLU(),
    )
    return trunk, nn.Linear(hidden_size, embedding_size)


def load_factory(spec: str) -> Any:
    """The callable named by ``"package.module:factory"`` or ``"file.py:factory"``.

    Raises:
        UsageError: a malformed spec, a module that does not import, a missing attribute.
    """
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr.isidentifier():
        raise UsageError(
            f"--model must be mlp or package.module:factory (or file.py:factory); got {spec!r}"
        )
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        if module_name.endswith(".py"):
            if not os.path.isfile(module_name):
                raise UsageError(f"--model file {module_name!r} does not exist")
            name = "_pml_user_model_" + os.path.splitext(os.path.basename(module_name))[0]
            loader_spec = importlib.util.spec_from_file_location(name, module_name)
            module = importlib.util.module_from_spec(loader_spec)  # type: ignore[arg-type]
            loader_spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            module = importlib.import_module(module_name)
    except UsageError:
        raise
    except Exception as err:  # the user's module may raise anything on import
        raise UsageError(
            f"cannot import {module_name!r} for --model {spec}: {type(err).__name__}: {err}"
        ) from None
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        what = "is not callable" if factory is not None else "does not exist"
        raise UsageError(f"--model {spec}: {module_name}.{attr} {what}")
    return factory


def _call_factory(
    factory: Any, spec: str, input_shape: tuple[int, ...], embedding_size: int
) -> nn.Module:
    offered = {"input_shape": input_shape, "embedding_size": embedding_size}
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in offered.items() if takes_all or k in params}
    try:
        model = factory(**kwargs)
    except Exception as err:  # the user's code may raise anything
        raise UsageError(
            f"--model {spec} failed with {sorted(kwargs)}: {type(err).__name__}: {err}"
        ) from None
    if not isinstance(model, nn.Module):
        raise UsageError(
            f"--model {spec} must return a torch.nn.Module; got {type(model).__name__}"
        )
    return model


@torch.no_grad()
def embed_dataset(
    model: nn.Module,
    dataset: Any,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
) -> torch.Tensor:
    """The embeddings ``(N, D)`` of every item of ``dataset``, in order (eval mode, float32).

    The model is put in eval mode and left there. ``dataset`` is a
    :class:`~pml.cli._data.LabeledData` (sliced directly) or any dataset of
    ``(tensor, label)`` items. No random generator is touched.
    """
    model.eval()
    out = []
    data = getattr(dataset, "data", None)
    for start in range(0, len(dataset), batch_size):
        stop = min(start + batch_size, len(dataset))
        if isinstance(data, torch.Tensor):
            x = data[start:stop]
            x = x.float().div_(255.0) if x.dtype == torch.uint8 else x
        else:
            x = torch.stack([dataset[i][0] for i in range(start, stop)])
        out.append(model(x.to(device)).float())
    if not out:
        return torch.empty(0, 0)
    return torch.cat(out)
