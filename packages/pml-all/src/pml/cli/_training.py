"""The training loop of ``pml train``, callable once per process (rank 0 writes, others don't).

:func:`fit` builds the model and the recipe from the settings, evaluates the untrained
model (epoch 0), and trains with :class:`pml.trainers.MetricLossOnly`. At the end of every
epoch it evaluates retrieval on the held-out split, prints a row of the epoch table, and
(rank 0, with a run folder) writes ``checkpoints/last.pth`` (``best.pth`` on a new best
MAP@R) and the metrics files. A checkpoint is the trainer's ``state_dict()`` plus a
``"cli"`` entry (settings, input shape, the metrics so far): resuming it continues the run
bit for bit on CPU.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

import numpy as np
import torch
from torch import nn

from pml.cli import _distributed as dist
from pml.cli._data import DataSplits
from pml.cli._epoch_monitor import EpochMonitor, best_epoch
from pml.cli._errors import UsageError
from pml.cli._first_batch import check_first_batch
from pml.cli._models import build_model, embed_dataset
from pml.cli._recipe import Recipe, build_recipe
from pml.cli._report import format_row, table_header
from pml.cli._run_folder import RunFolder
from pml.cli._settings import Settings

__all__ = ["METRICS", "Evaluator", "TrainJob", "TrainResult", "Training", "fit", "seed_everything"]

#: the retrieval metrics of the epoch table
METRICS = ("precision_at_1", "r_precision", "mean_average_precision_at_r")
_EVAL_BATCH = 512


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's global generator and Python's ``random``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Evaluator:
    """Retrieval on one dataset: each item queries all the others (itself excluded).

    Args:
        dataset: the held-out items (``labels`` attribute, ``(tensor, label)`` items).
        distance: the pml distance that ranks the neighbours (the loss's).
        device: where the embeddings are computed.
    """

    def __init__(self, dataset: Any, distance: Any, device: torch.device) -> None:
        from pml.eval import AccuracyCalculator, CustomKNN

        self.dataset = dataset
        self.device = device
        self.labels = torch.as_tensor(dataset.labels)
        self.calculator = AccuracyCalculator(
            include=METRICS, k="max_bin_count", knn_func=CustomKNN(distance)
        )

    def metrics(self, embeddings: torch.Tensor) -> dict[str, float]:
        """P@1, R-precision and MAP@R of ``embeddings`` (one row per item)."""
        out = self.calculator.get_accuracy(embeddings, self.labels.to(embeddings.device))
        return {k: float(out[k]) for k in METRICS}

    def model(self, model: nn.Module) -> tuple[dict[str, float], torch.Tensor]:
        """The metrics of ``model``'s embeddings (eval mode) and the embeddings."""
        embeddings = embed_dataset(model, self.dataset, self.device, _EVAL_BATCH)
        return self.metrics(embeddings), embeddings

    def raw(self, max_features: int = 4096) -> dict[str, float] | None:
        """The metrics of the raw inputs, flattened (None above ``max_features`` values)."""
        data = getattr(self.dataset, "data", None)
        if not isinstance(data, torch.Tensor) or math.prod(data.shape[1:]) > max_features:
            return None
        x = data.flatten(1)
        x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
        return self.metrics(x.to(self.device))


@dataclasses.dataclass
class TrainJob:
    """What one process of ``pml train`` needs.

    Attributes:
        settings: the resolved settings.
        splits: the training and held-out data.
        device: the torch device of this process.
        run: the run folder to write (rank 0), or None (write nothing).
        resume: the checkpoint state to continue from, or None (a new run).
        stop_after_epoch: stop after this epoch (the run stays incomplete; for tests of
            ``--resume``), or None.
        stream: where the console output goes (rank 0).
    """

    settings: Settings
    splits: DataSplits
    device: torch.device
    run: RunFolder | None = None
    resume: Mapping[str, Any] | None = None
    stop_after_epoch: int | None = None
    stream: TextIO = dataclasses.field(default_factory=lambda: sys.stdout)


@dataclasses.dataclass
class TrainResult:
    """What :func:`fit` returns."""

    model: nn.Module
    recipe: Recipe
    history: list[dict[str, Any]]
    best_epoch: int | None
    raw_baseline: dict[str, float] | None
    embeddings: torch.Tensor | None
    finished: bool
    seconds_before: float
    parameters: int


class Training:
    """One process's training of a run: everything is built (and checked) on construction.

    Construction seeds the generators, builds the model and the recipe, evaluates nothing
    and writes nothing: a :class:`~pml.cli._errors.UsageError` raised here leaves no trace.
    :meth:`run` evaluates the untrained model (or loads the checkpoint's history) and trains.

    Args:
        job: the run to train; ``job.run`` may be set after construction.
        rank: this process's rank (0 prints and writes).
        world_size: the number of processes.

    Raises:
        UsageError: a recipe that cannot be built, a checkpoint that does not match.
    """

    def __init__(self, job: TrainJob, rank: int = 0, world_size: int = 1) -> None:
        settings, splits, device = job.settings, job.splits, job.device
        self.job = job
        self.group = dist.Group(rank, world_size)
        self.main = rank == 0
        self.world_size = world_size
        if settings.batch_size % world_size:
            raise UsageError(
                f"--batch-size {settings.batch_size} (the global batch) must be divisible by "
                f"the {world_size} processes"
            )
        seed_everything(settings.seed)
        self.model = build_model(settings, splits.input_shape).to(device)
        self.parameters = sum(p.numel() for p in self.model.parameters())
        embedding_dim = _output_size(self.model, splits.train, device)
        self.recipe = build_recipe(
            settings,
            self.model,
            splits.train.labels,
            splits.num_classes,
            embedding_dim,
            device,
            rank,
            world_size,
        )
        check_first_batch(
            self.model,
            self.recipe.loss,
            self.recipe.miner,
            splits.train,
            device,
            settings.batch_size,
        )
        models = {"trunk": self.model.trunk, "embedder": self.model.embedder}
        loss, miner, parts = self.recipe.loss, self.recipe.miner, None
        if self.group.distributed:
            wrapped = dist.wrap_for_ddp(self.model, loss, miner, device, self.group)
            models, loss, miner, parts = wrapped.models, wrapped.loss, wrapped.miner, wrapped.parts
        self.evaluator = Evaluator(splits.test, self.recipe.distance, device)
        self.monitor = EpochMonitor(job, self.model, self.evaluator, self.group, parts)
        self.trainer = _make_trainer(
            settings, models, loss, miner, self.recipe, splits, device, self.monitor, world_size
        )
        self.batches = _batches(self.recipe.sampler, splits, settings, world_size)
        self.start_epoch = 1
        if job.resume is not None:
            resume = dict(job.resume)
            try:
                if parts is not None:
                    resume = dist.load_parts(resume, parts)
                self.trainer.load_state_dict(resume)
            except (ValueError, KeyError, RuntimeError) as err:
                raise UsageError(
                    f"the checkpoint does not match the run's settings ({err}); resume with "
                    "the settings of its config.toml"
                ) from None
            cli = job.resume["cli"]
            self.monitor.history = [dict(r) for r in cli["history"]]
            self.monitor.raw_baseline = cli.get("raw_baseline")
            self.monitor.seconds_before = float(cli.get("seconds", 0.0))
            self.monitor.best_epoch = best_epoch(self.monitor.history)
            self.start_epoch = int(job.resume["epoch"]) + 1

    def run(self) -> TrainResult:
        """Evaluate epoch 0 (a new run) and train up to ``settings.epochs``."""
        job, monitor, settings = self.job, self.monitor, self.job.settings
        out = job.stream
        monitor.started = time.perf_counter()
        if job.resume is None:
            monitor.baseline(self.trainer)
        elif self.main:
            print(f"resuming after epoch {self.start_epoch - 1}", file=out)
            monitor.rewrite_after_resume(self.trainer)
        if self.main:
            print(table_header(), file=out)
            for row in monitor.history:
                mark = "*" if row["epoch"] == monitor.best_epoch else ""
                print(format_row(row, mark), file=out)
            out.flush()
        monitor.epoch_started = time.perf_counter()
        if self.start_epoch <= settings.epochs:
            self.trainer.train(start_epoch=self.start_epoch, num_epochs=settings.epochs)
        return TrainResult(
            model=self.model,
            recipe=self.recipe,
            history=monitor.history,
            best_epoch=monitor.best_epoch,
            raw_baseline=monitor.raw_baseline,
            embeddings=monitor.embeddings,
            finished=monitor.history[-1]["epoch"] >= settings.epochs,
            seconds_before=monitor.seconds_before,
            parameters=self.parameters,
        )


def fit(job: TrainJob, rank: int = 0, world_size: int = 1) -> TrainResult:
    """Build and train the run of ``job`` in this process (see :class:`Training`)."""
    return Training(job, rank, world_size).run()


def _batches(sampler: Any, splits: DataSplits, settings: Settings, world_size: int) -> str:
    from pml.trainers._trainer_data import is_batch_sampler

    batch = settings.batch_size // world_size
    try:
        if sampler is None:
            return str(len(splits.train) // batch)
        if is_batch_sampler(sampler):
            return str(len(sampler))
        return str(len(sampler) // batch)
    except TypeError:
        return "?"


def _output_size(model: nn.Module, dataset: Any, device: torch.device) -> int:
    was_training = model.training
    x = torch.stack([dataset[i][0] for i in range(min(2, len(dataset)))]).to(device)
    with torch.no_grad():
        model.eval()
        out = model(x)
    model.train(was_training)
    if out.ndim != 2:
        raise UsageError(
            f"the model must return embeddings of shape (batch, size); got {tuple(out.shape)}"
        )
    return int(out.shape[1])


class _OptimizerWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "embedder_optimizer" not in record.getMessage()


def _make_trainer(
    settings: Settings,
    models: dict[str, nn.Module],
    loss: nn.Module,
    miner: Any,
    recipe: Recipe,
    splits: DataSplits,
    device: torch.device,
    monitor: EpochMonitor,
    world_size: int,
) -> Any:
    from pml.core import config
    from pml.trainers import MetricLossOnly

    mixed = None if settings.mixed_precision == "none" else settings.mixed_precision
    quiet = _OptimizerWarnings()  # an identity embedder (a user's model) has no optimizer
    config.LOGGER.addFilter(quiet)
    try:
        trainer = MetricLossOnly(
            models=models,
            optimizers=recipe.optimizers,
            batch_size=settings.batch_size // world_size,
            loss_funcs={"metric_loss": loss},
            mining_funcs={"tuple_miner": miner} if miner is not None else {},
            dataset=splits.train,
            sampler=recipe.sampler,
            data_device=device,
            lr_schedulers=recipe.schedulers,
            dataloader_num_workers=settings.num_workers,
            dataset_labels=splits.train.labels,
            set_min_label_to_zero=True,
            end_of_iteration_hook=monitor.on_iteration,
            end_of_epoch_hook=monitor.on_epoch,
            mixed_precision=mixed,
        )
    except (ValueError, TypeError) as err:
        raise UsageError(f"cannot set up training: {err}") from None
    finally:
        config.LOGGER.removeFilter(quiet)
    return trainer
