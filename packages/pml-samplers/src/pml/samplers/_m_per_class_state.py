"""MPerClassSampler's saved state: what starts a pass, redrawing it, checking a state."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from pml.core.validation import check_int
from pml.samplers._resume import as_numpy, rng_state, set_rng_state

__all__ = ["CONFIG_KEYS", "STATE_KEYS", "check_state", "config_of", "pass_start_of", "replay"]

#: the entries of ``MPerClassSampler.state_dict()``
STATE_KEYS = (
    "num_classes",
    "m",
    "batch_size",
    "length",
    "seed",
    "coverage",
    "order",
    "epoch",
    "position",
    "pass_start",
)
#: the entries that must equal the loading sampler's (built with the same arguments)
CONFIG_KEYS = STATE_KEYS[:6]


def config_of(sampler: Any) -> dict[str, Any]:
    """The entries of :data:`CONFIG_KEYS` for ``sampler`` (``length``: ``len(sampler)``)."""
    return {
        "num_classes": len(sampler._keys),
        "m": sampler.m_per_class,
        "batch_size": sampler.batch_size,
        "length": len(sampler),
        "seed": sampler._shard.seed,
        "coverage": sampler.coverage,
    }


def pass_start_of(sampler: Any, rng: Any) -> dict[str, Any] | None:
    """What draws the pass about to start again (None: a seeded sampler's seed and epoch).

    Without ``seed``: the class order and the global random handle's state.
    """
    if sampler._shard.seed is not None:
        return None
    return {"order": sampler._order.copy(), "rng": rng_state(rng)}


def replay(
    sampler: Any, rng: Any, start: Mapping[str, Any] | None, draw: Callable[[Any], np.ndarray]
) -> np.ndarray:
    """``draw(rng)`` as at the start of the saved pass; the handle's state is kept."""
    if start is None:
        return draw(rng)
    now = rng_state(rng)
    set_rng_state(rng, start["rng"])
    sampler._order[...] = _permutation(start["order"], len(sampler._keys), "pass_start order")
    try:
        return draw(rng)
    finally:
        set_rng_state(rng, now)


def _permutation(value: Any, n: int, name: str) -> np.ndarray:
    arr = as_numpy(value)
    if arr.shape != (n,) or arr.dtype.kind not in "iu":
        raise ValueError(
            f"{name} must be an integer array of shape ({n},) (one entry per class); got "
            f"{arr.dtype} {arr.shape}"
        )
    if not np.array_equal(np.sort(arr), np.arange(n)):
        raise ValueError(f"{name} must be a permutation of 0..{n - 1}")
    return arr.astype(np.int64)


def check_state(sampler: Any, state: Any) -> tuple[np.ndarray, int, dict[str, Any] | None]:
    """``(order, epoch, resume or None)`` of a state for ``sampler``, checked."""
    if not isinstance(state, Mapping):
        raise TypeError(
            f"state must be a dict returned by MPerClassSampler.state_dict(); got "
            f"{type(state).__name__}"
        )
    missing = [k for k in STATE_KEYS if k not in state]
    unknown = sorted(str(k) for k in state if k not in STATE_KEYS)
    if missing or unknown:
        raise ValueError(
            f"state must have the keys {list(STATE_KEYS)}; missing {missing}, unknown {unknown}"
        )
    for key, value in config_of(sampler).items():
        if state[key] != value:
            raise ValueError(
                f"state is from another sampler: its {key} is {state[key]!r}, this sampler's "
                f"is {value!r} (build the sampler with the same labels and arguments)"
            )
    order = _permutation(state["order"], len(sampler._keys), "state['order']")
    epoch: int = check_int("state['epoch']", state["epoch"], min=0)  # type: ignore[assignment]
    position: int = check_int(  # type: ignore[assignment]
        "state['position']", state["position"], min=0, max=len(sampler)
    )
    start = state["pass_start"]
    if position == 0 and start is None:  # no pass under way
        return order, epoch, None
    if sampler._shard.seed is None:
        if not isinstance(start, Mapping) or set(start) != {"order", "rng"}:
            raise ValueError(
                "state['pass_start'] must hold the 'order' and 'rng' of the interrupted pass "
                f"(a sampler without seed, position {position}); got {start!r:.80}"
            )
        _permutation(start["order"], len(sampler._keys), "state['pass_start']['order']")
    else:
        start = None
    return order, epoch, {"position": position, "pass_start": start, "epoch": epoch}
