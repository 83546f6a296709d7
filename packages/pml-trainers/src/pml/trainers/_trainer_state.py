"""Trainer state as plain data: gathering and restoring it, and the samplers' own states.

A checkpoint must load with ``torch.load(weights_only=True)``; :func:`to_plain` converts
numpy values (scalars, arrays: a scheduler or sampler of one's own may hold them) and
rejects anything else by name, at save time rather than at load time.

A sampler's state is what makes its next batches identical after a restart:

* ``state_dict()``/``load_state_dict()`` when the sampler has them
  (``pml.samplers.MPerClassSampler`` saves the class order it reshuffles pass after pass
  that way; checkpoints of older versions hold that order as ``class_order``);
* the state of every random generator it holds (``torch.Generator``, numpy ``Generator`` or
  ``RandomState`` attributes);
* samplers with ``set_epoch`` get the trainer's pass count (so seeded samplers draw a new
  order each pass and the same one after a restart); samplers drawing from the global
  random generators are covered by the RNG states of the checkpoint.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from pml.core import config
from pml.samplers import MPerClassSampler
from pml.trainers._checkpoint import rng_state, set_rng_state

__all__ = [
    "STATE_DICTS",
    "STATE_FORMAT",
    "load_trainer_state",
    "restore_sampler_objects",
    "snapshot_sampler_objects",
    "to_plain",
    "trainer_state",
]

_ATOMS = (
    torch.Tensor,
    str,
    bytes,
    bool,
    int,
    float,
    complex,
    type(None),
    torch.dtype,
    torch.device,
    torch.Size,
)


def to_plain(obj: Any, where: str) -> Any:
    """``obj`` with numpy values converted; ``TypeError`` naming ``where`` for other objects.

    Containers whose items need no conversion are returned as they are (a module's
    ``OrderedDict`` state keeps its ``_metadata``).
    """
    if isinstance(obj, np.generic):  # before the atoms: np.float64 is a float
        return obj.item()
    if isinstance(obj, _ATOMS):
        return obj
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.array(obj))
    if isinstance(obj, dict):
        items = {k: to_plain(v, f"{where}[{k!r}]") for k, v in obj.items()}
        if all(items[k] is v for k, v in obj.items()):
            return obj
        out = collections.OrderedDict() if isinstance(obj, collections.OrderedDict) else {}
        out.update(items)
        return out
    if isinstance(obj, (list, tuple, set, frozenset)):
        values = [to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        if all(a is b for a, b in zip(values, obj, strict=True)):
            return obj
        return type(obj)(values) if not hasattr(obj, "_fields") else type(obj)(*values)
    raise TypeError(
        f"{where} holds a {type(obj).__name__} ({obj!r:.60}); a checkpoint can hold only "
        "tensors, numbers, strings, None and lists/tuples/dicts of those (it is read with "
        "torch.load(weights_only=True))"
    )


def _generator_state(gen: Any) -> Any:
    if isinstance(gen, torch.Generator):
        return gen.get_state()
    if isinstance(gen, np.random.Generator):
        return gen.bit_generator.state
    if isinstance(gen, np.random.RandomState):
        kind, keys, pos, has_gauss, cached = gen.get_state()
        return [str(kind), torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached]
    return None


def _set_generator_state(gen: Any, state: Any) -> None:
    if isinstance(gen, torch.Generator):
        gen.set_state(state)
    elif isinstance(gen, np.random.Generator):
        gen.bit_generator.state = state
    elif isinstance(gen, np.random.RandomState):
        kind, keys, pos, has_gauss, cached = state
        gen.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def _snapshot_one(obj: Any) -> dict[str, Any]:
    snap: dict[str, Any] = {}
    state_dict = getattr(obj, "state_dict", None)
    if callable(state_dict) and callable(getattr(obj, "load_state_dict", None)):
        snap["state_dict"] = state_dict()
    generators = {}
    for name, value in sorted(getattr(obj, "__dict__", {}).items()):
        state = _generator_state(value)
        if state is not None:
            generators[name] = state
    if generators:
        snap["generators"] = generators
    return snap


def snapshot_sampler_objects(chain: list[Any]) -> list[dict[str, Any]]:
    """The state of each sampler of ``chain`` (wrappers first), as plain data."""
    return [to_plain(_snapshot_one(obj), f"sampler state of {type(obj).__name__}") for obj in chain]


def restore_sampler_objects(chain: list[Any], states: list[Mapping[str, Any]]) -> None:
    """Restore what :func:`snapshot_sampler_objects` returned onto the same chain.

    Raises:
        ValueError: the chain has another length than the saved one (another sampler).
    """
    if len(chain) != len(states):
        raise ValueError(
            f"the checkpoint's sampler state has {len(states)} level(s) but the trainer's "
            f"sampler {[type(s).__name__ for s in chain]} has {len(chain)}: resume with the "
            "same kind of sampler"
        )
    for obj, snap in zip(chain, states, strict=True):
        if "state_dict" in snap:
            obj.load_state_dict(snap["state_dict"])
        for name, state in snap.get("generators", {}).items():
            _set_generator_state(getattr(obj, name, None), state)
        if "class_order" in snap and isinstance(obj, MPerClassSampler):
            # a checkpoint of an MPerClassSampler saved before it had a state_dict
            obj.load_state_dict({**obj.state_dict(), "order": snap["class_order"]})


#: the ``"format"`` entry of a trainer's state
STATE_FORMAT = "pml-trainers/1"
#: the trainer's dicts whose entries' ``state_dict()`` are saved
STATE_DICTS = ("models", "loss_funcs", "mining_funcs", "optimizers", "lr_schedulers")


def trainer_state(trainer: Any) -> dict[str, Any]:
    """``trainer.state_dict()``: see :meth:`pml.trainers.BaseTrainer.state_dict`."""
    state: dict[str, Any] = {}
    for name in STATE_DICTS:
        state[name] = {}
        for key, obj in getattr(trainer, name).items():
            get = getattr(obj, "state_dict", None)
            state[name][key] = get() if callable(get) else None
    scaler = trainer.grad_scaler
    state["grad_scaler"] = None if scaler is None else scaler.state_dict()
    state["rng"] = rng_state()
    state["sampler"] = trainer._stream.state_dict()
    state["epoch"] = trainer._finished_epoch
    state["format"] = STATE_FORMAT
    return to_plain(state, "state")


def load_trainer_state(trainer: Any, state: Mapping[str, Any]) -> None:
    """``trainer.load_state_dict(state)``: see :meth:`pml.trainers.BaseTrainer.load_state_dict`."""
    if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
        got = state.get("format") if isinstance(state, Mapping) else type(state).__name__
        raise ValueError(f"state must be a trainer state of format {STATE_FORMAT!r}; got {got!r}")
    for name in STATE_DICTS:
        mine, saved = getattr(trainer, name), state[name]
        if set(mine) != set(saved):
            raise ValueError(
                f"the checkpoint's {name} keys {sorted(saved)} differ from this trainer's "
                f"{sorted(mine)}"
            )
    for name in STATE_DICTS:
        for key, obj in getattr(trainer, name).items():
            if state[name][key] is not None:
                obj.load_state_dict(state[name][key])
    if state["grad_scaler"] is not None:
        if trainer.grad_scaler is None:
            config.LOGGER.warning(
                "the checkpoint holds a GradScaler state; this trainer has none "
                '(mixed_precision != "fp16"): ignored'
            )
        else:
            trainer.grad_scaler.load_state_dict(state["grad_scaler"])
    set_rng_state(state["rng"])
    if state["sampler"] is not None:
        trainer._stream.load_state_dict(state["sampler"])
    trainer._finished_epoch = int(state["epoch"])
    trainer.epoch = trainer._finished_epoch
