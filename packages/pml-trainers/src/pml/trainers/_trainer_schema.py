"""The trainers' key schema and the checks of their dicts against each other (spec §1).

* :func:`base_schema`: the allowed, important and essential keys of every dict a
  :class:`~pml.trainers.BaseTrainer` takes (subclasses adjust it in ``modify_schema``);
* :func:`check_freeze_these_keys`: ``freeze_these`` names allowed model or loss keys;
* :func:`check_trainable_loss_parameters`: every trainable parameter of a loss is held by
  an optimizer.

Example:
    >>> schema = base_schema(["metric_loss", "total_loss"], ["trunk"], LR_SCHEDULER_SUFFIXES)
    >>> schema.keys_of("optimizers")
    ['trunk_optimizer', 'embedder_optimizer', 'metric_loss_optimizer']
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from torch import nn

from pml.core import config
from pml.core.validation import InvalidArgumentError
from pml.trainers._key_checker import KeyChecker, KeyCheckerDict

__all__ = [
    "LR_SCHEDULER_SUFFIXES",
    "base_schema",
    "check_freeze_these_keys",
    "check_trainable_loss_parameters",
]

#: the key suffixes of the trainer's ``lr_schedulers``, by when they are stepped
LR_SCHEDULER_SUFFIXES = {
    "iteration": "_scheduler_by_iteration",
    "epoch": "_scheduler_by_epoch",
    "plateau": "_scheduler_by_plateau",
}


def _model_and_loss_keys(schema: KeyCheckerDict) -> list[str]:
    return schema.keys_of("models") + schema.keys_of("loss_funcs")


def base_schema(
    loss_names: list[str], model_keys: Iterable[str], lr_scheduler_suffixes: Mapping[str, str]
) -> KeyCheckerDict:
    """The base key schema (spec §1).

    Args:
        loss_names: the trainer's loss names (every one needs a ``loss_weights`` entry).
        model_keys: the keys given in ``models`` (their optimizers are worth a warning).
        lr_scheduler_suffixes: the allowed ``lr_schedulers`` key suffixes.

    The optimizer, scheduler and clipper keys follow the allowed model and loss keys at
    verification time, so that ``modify_schema`` can extend those.
    """
    suffixes = list(lr_scheduler_suffixes.values())
    return KeyCheckerDict(
        {
            "models": KeyChecker(["trunk", "embedder"], essential=["trunk"]),
            "loss_funcs": KeyChecker(["metric_loss"]),
            "mining_funcs": KeyChecker(
                ["subset_batch_miner", "tuple_miner"], warn_empty=False, important=[]
            ),
            "loss_weights": KeyChecker(loss_names, warn_empty=False, essential=loss_names),
            "optimizers": KeyChecker(
                lambda s, d: [k + "_optimizer" for k in _model_and_loss_keys(d)],
                important=[k + "_optimizer" for k in model_keys],
            ),
            "lr_schedulers": KeyChecker(
                lambda s, d: [k + x for k in _model_and_loss_keys(d) for x in suffixes],
                warn_empty=False,
                important=[],
            ),
            "gradient_clippers": KeyChecker(
                lambda s, d: [k + "_grad_clipper" for k in _model_and_loss_keys(d)],
                warn_empty=False,
                important=[],
            ),
        }
    )


def check_freeze_these_keys(
    freeze_these: Sequence[str], schema: KeyCheckerDict, optimizers: Mapping[str, Any]
) -> None:
    """Every name of ``freeze_these`` must be an allowed model or loss key.

    A frozen name with an optimizer is worth a warning.

    Raises:
        InvalidArgumentError: a name no model or loss pattern allows.
    """
    allowed = _model_and_loss_keys(schema)
    for name in freeze_these:
        if not any(re.match(p, name) for p in allowed):
            raise InvalidArgumentError(
                f"freeze_these keys must be one of {', '.join(allowed)}; got {name!r}"
            )
        if f"{name}_optimizer" in optimizers:
            config.LOGGER.warning(
                f"You have passed in an optimizer for {name}, but are freezing its parameters."
            )


def check_trainable_loss_parameters(
    loss_funcs: Mapping[str, Any], optimizers: Mapping[str, Any], freeze_these: Sequence[str]
) -> None:
    """Every trainable parameter of a (not frozen) loss must be held by an optimizer.

    Raises:
        ValueError: naming the loss and the optimizer key to add.
    """
    held = {id(p) for opt in optimizers.values() for g in opt.param_groups for p in g["params"]}
    for key, loss in loss_funcs.items():
        if key in freeze_these or not isinstance(loss, nn.Module):
            continue
        orphans = [n for n, p in loss.named_parameters() if p.requires_grad and id(p) not in held]
        if orphans:
            # fix: the reference silently never trains these parameters
            raise ValueError(
                f'loss_funcs["{key}"] ({type(loss).__name__}) has trainable parameters '
                f'{orphans} that no optimizer holds: pass optimizers["{key}_optimizer"] = '
                f'an optimizer of loss_funcs["{key}"].parameters(), or put "{key}" in '
                "freeze_these"
            )
