"""The training recipe of the settings: loss, miner, sampler, optimizers, schedulers.

Every class is found by name through :mod:`pml.cli._registry` (unknown names suggest the
closest; rejected keyword arguments name the class). Arguments the user did not give are
filled in where the class declares them:

* loss: ``num_classes`` and ``embedding_size`` (classification losses such as ArcFaceLoss),
  ``descriptors_dim`` (P2SGradLoss), ``class_counts`` (DynamicArcFaceLoss: the training
  items per class), ``distance`` / ``reducer`` from ``--distance`` / ``--reducer``;
* miner: ``distance`` from ``--distance``;
* sampler: the training labels (first argument), ``batch_size``, ``length_before_new_iter``
  or ``num_batches`` (one epoch = one pass over the training items; not with
  ``coverage=True``, whose pass covers every item), ``seed``, and ``m`` for MPerClassSampler
  (a divisor of the batch size whose batches fit the classes: see :func:`choose_m`);
* optimizer: ``lr``; one optimizer per trained part (``trunk``, ``embedder``, and
  ``metric_loss`` when the loss has trainable parameters, e.g. ArcFace's class weights);
* scheduler (one per optimizer, stepped each epoch): ``T_max = epochs``; a
  ``ReduceLROnPlateau`` follows the held-out MAP@R (``mode = "max"``).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from pml.cli import _registry as registry
from pml.cli._errors import UsageError

__all__ = ["Recipe", "accepts", "build_recipe", "check_names", "choose_m", "describe"]


@dataclasses.dataclass
class Recipe:
    """The built objects of a run (see :func:`build_recipe`)."""

    loss: nn.Module
    miner: Any
    sampler: Any
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, Any]
    distance: Any
    text: str


def accepts(cls: Any, name: str) -> bool:
    """Whether ``cls(...)`` takes the keyword argument ``name`` (True when unknowable)."""
    accepted = registry.keywords(cls)
    return accepted is None or name in accepted


def choose_m(batch_size: int, class_sizes: list[int]) -> int:
    """MPerClassSampler's ``m`` for ``batch_size`` and the training classes' sizes.

    ``m`` must divide the batch size and fill a batch from the classes (``m * classes >=
    batch_size``); among those, values no larger than the smallest class are preferred (no
    duplicates within a batch), and of these the smallest at least 4 (else the largest).
    """
    fits = [
        m
        for m in range(2, batch_size + 1)
        if batch_size % m == 0 and m * len(class_sizes) >= batch_size
    ]
    pool = [m for m in fits if m <= min(class_sizes)] or fits
    large = [m for m in pool if m >= 4]
    return large[0] if large else pool[-1]


def describe(name: str, kwargs: Mapping[str, Any]) -> str:
    """``Name(key=value, ...)`` for messages and reports."""
    inner = ", ".join(f"{k}={_short(v)}" for k, v in kwargs.items())
    return f"{name}({inner})"


def _short(value: Any) -> str:
    if isinstance(value, (list, tuple)) and len(value) > 6:
        return f"[{len(value)} items]"
    if isinstance(value, nn.Module):
        return type(value).__name__
    return repr(value)


def build_recipe(
    settings: Any,
    model: nn.Module,
    train_labels: list[int],
    num_classes: int,
    embedding_dim: int,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
) -> Recipe:
    """Build the loss, miner, sampler, optimizers and schedulers of ``settings``.

    Args:
        settings: the :class:`~pml.cli._settings.Settings`.
        model: ``nn.Sequential(trunk, embedder)`` already on ``device``.
        train_labels: the training labels (for the sampler).
        num_classes: distinct training labels (for classification losses).
        embedding_dim: the model's output size (for classification losses).
        device: where the loss's parameters go.
        rank, world_size: this process's place in a process group: the sampler yields
            this rank's shard of batches of ``batch_size / world_size`` (same ``m``).

    Raises:
        UsageError: unknown names, rejected arguments, a batch size that does not fit.
    """
    if settings.batch_size > len(train_labels):
        raise UsageError(
            f"batch size {settings.batch_size} is larger than the training split "
            f"({len(train_labels)} items); pass --batch-size {len(train_labels)} or less"
        )
    parts = []
    loss_cls = registry.resolve("loss", settings.loss)
    loss_kwargs = dict(settings.loss_args)
    shown = dict(loss_kwargs)
    if settings.distance is not None and "distance" not in loss_kwargs:
        loss_kwargs["distance"] = _nested(loss_cls, "distance", settings.distance, "--distance")
    if settings.reducer is not None and "reducer" not in loss_kwargs:
        loss_kwargs["reducer"] = _nested(loss_cls, "reducer", settings.reducer, "--reducer")
    filled = {
        "num_classes": lambda: num_classes,
        "embedding_size": lambda: embedding_dim,
        "descriptors_dim": lambda: embedding_dim,
        "class_counts": lambda: _class_counts(train_labels, num_classes),
    }
    if _declares(loss_cls, "class_counts"):
        del filled["num_classes"]  # the length of class_counts
    for key, value in filled.items():
        if key not in loss_kwargs and _declares(loss_cls, key):
            loss_kwargs[key] = value()
    loss = registry.build("loss", loss_cls.__name__, loss_kwargs).to(device)
    parts.append(describe(loss_cls.__name__, shown))

    miner = None
    if settings.miner is not None:
        miner_cls = registry.resolve("miner", settings.miner)
        miner_kwargs = dict(settings.miner_args)
        shown = dict(miner_kwargs)
        distance_given = settings.distance is not None and "distance" not in miner_kwargs
        if distance_given and accepts(miner_cls, "distance"):
            miner_kwargs["distance"] = registry.build("distance", settings.distance)
        miner = registry.build("miner", miner_cls.__name__, miner_kwargs)
        parts[-1] += " + " + describe(miner_cls.__name__, shown)

    sampler = None
    if settings.sampler is not None:
        sampler_cls = registry.resolve("sampler", settings.sampler)
        sampler_kwargs = dict(settings.sampler_args)
        auto: dict[str, Any] = {
            "batch_size": settings.batch_size // world_size,
            "seed": settings.seed,
        }
        if not sampler_kwargs.get("coverage"):  # a coverage pass has its own length
            # one epoch = one pass over the training items
            auto["length_before_new_iter"] = len(train_labels)
            # a batch sampler: as many batches of this rank's size as one process trains on
            auto["num_batches"] = max(1, len(train_labels) // auto["batch_size"])
        if world_size > 1:
            if not _declares(sampler_cls, "num_replicas"):
                raise UsageError(
                    f"--sampler {sampler_cls.__name__} cannot shard its batches over "
                    f"{world_size} processes (it takes no num_replicas/rank); use "
                    "MPerClassSampler or --sampler none"
                )
            auto |= {"num_replicas": world_size, "rank": rank}
        if "m" not in sampler_kwargs and _declares(sampler_cls, "m"):
            sizes = list(Counter(train_labels).values())
            auto["m"] = choose_m(settings.batch_size, sizes)
            if auto["batch_size"] % auto["m"]:
                raise UsageError(
                    f"--batch-size {settings.batch_size} over {world_size} processes gives "
                    f"{auto['batch_size']} items per process, not a multiple of m = "
                    f"{auto['m']}; pass a batch size divisible by {auto['m'] * world_size}"
                )
        for key, value in auto.items():
            if key not in sampler_kwargs and _declares(sampler_cls, key):
                sampler_kwargs[key] = value
        sampler = registry.build("sampler", sampler_cls.__name__, sampler_kwargs, train_labels)
        shown = {
            k: v for k, v in sampler_kwargs.items() if k in ("m",) or k in settings.sampler_args
        }
        parts.append(describe(sampler_cls.__name__, shown))
    elif world_size > 1:
        from torch.utils.data import DistributedSampler

        # shuffled batches: each rank a distinct shard of each pass (set_epoch per pass)
        sampler = DistributedSampler(
            train_labels, num_replicas=world_size, rank=rank, shuffle=True, seed=settings.seed
        )

    if "lr" in settings.optimizer_args:
        raise UsageError("give the learning rate with --lr, not --optimizer-arg lr=...")
    opt_kwargs = {**settings.optimizer_args, "lr": settings.lr}
    groups = {"trunk": model.trunk, "embedder": model.embedder, "metric_loss": loss}
    optimizers = {}
    for key, module in groups.items():
        params = [p for p in module.parameters() if p.requires_grad]
        if params:
            optimizers[f"{key}_optimizer"] = registry.build(
                "optimizer", settings.optimizer, opt_kwargs, params
            )
    if not optimizers:
        raise UsageError("the model has no trainable parameters")
    parts.append(describe(settings.optimizer, opt_kwargs))

    schedulers = {}
    if settings.scheduler is not None:
        sched_cls = registry.resolve("scheduler", settings.scheduler)
        sched_kwargs = dict(settings.scheduler_args)
        plateau = sched_cls is torch.optim.lr_scheduler.ReduceLROnPlateau
        if plateau:
            sched_kwargs.setdefault("mode", "max")
        elif "T_max" not in sched_kwargs and _declares(sched_cls, "T_max"):
            sched_kwargs["T_max"] = settings.epochs
        suffix = "_scheduler_by_plateau" if plateau else "_scheduler_by_epoch"
        for key, opt in optimizers.items():
            schedulers[key.removesuffix("_optimizer") + suffix] = registry.build(
                "scheduler", sched_cls.__name__, sched_kwargs, opt
            )
        parts.append(describe(sched_cls.__name__, sched_kwargs))
    distance = getattr(loss, "distance", None)
    if distance is None:
        from pml.distances import LpDistance

        distance = LpDistance()
    return Recipe(loss, miner, sampler, optimizers, schedulers, distance, "; ".join(parts))


def check_names(settings: Any) -> None:
    """Resolve every class name of ``settings`` (fail fast, before any data is read).

    Raises:
        UsageError: an unknown name (with the closest names).
    """
    for kind in ("loss", "miner", "sampler", "distance", "reducer", "optimizer", "scheduler"):
        name = getattr(settings, kind)
        if name is not None:
            registry.resolve(kind, name)


def _class_counts(train_labels: list[int], num_classes: int) -> list[int]:
    """Training items per class ``0 .. num_classes - 1``."""
    counts = torch.bincount(torch.as_tensor(train_labels), minlength=num_classes).tolist()
    missing = [c for c, n in enumerate(counts) if n == 0]
    if missing:
        raise UsageError(
            f"classes {missing[:5]} have no training items, so their class_counts are 0; "
            "pass --loss-arg class_counts=[...]"
        )
    return counts


def _declares(cls: Any, name: str) -> bool:
    accepted = registry.keywords(cls)
    return accepted is not None and name in accepted


def _nested(cls: Any, key: str, name: str, option: str) -> Any:
    if not accepts(cls, key):
        raise UsageError(f"{option} {name}: {cls.__name__} takes no {key}")
    return registry.build(key, name)
