"""The trainer hooks of ``pml train``: progress, per-epoch evaluation, checkpoints, the table.

:class:`EpochMonitor` is the ``end_of_iteration_hook`` / ``end_of_epoch_hook`` pair of one
process's :class:`~pml.cli._training.Training`: it draws the progress bar, evaluates the
held-out split at epoch 0 and after every epoch (rank 0; the others get its numbers), keeps
the history and the best epoch, and (rank 0, with a run folder) writes the checkpoints and
the metrics files.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pml.cli import _distributed as dist
from pml.cli._progress import Progress
from pml.cli._report import format_row
from pml.cli._run_folder import CHECKPOINT_FORMAT

if TYPE_CHECKING:
    from pml.cli._training import Evaluator, TrainJob

__all__ = ["EpochMonitor", "best_epoch"]


def best_epoch(history: list[dict[str, Any]]) -> int | None:
    best, best_value = None, -math.inf
    for row in history:
        value = row.get("mean_average_precision_at_r")
        if row["epoch"] > 0 and value is not None and value > best_value:
            best, best_value = row["epoch"], value
    return best


class EpochMonitor:
    """The trainer's hooks: progress, per-epoch evaluation, checkpoints, metrics, table."""

    def __init__(
        self,
        job: TrainJob,
        model: nn.Module,
        evaluator: Evaluator,
        group: dist.Group,
        parts: dict[str, dict[str, Any]] | None,
    ):
        self.job = job
        self.model = model
        self.evaluator = evaluator
        self.group = group
        self.main = group.main
        self.parts = parts
        self.history: list[dict[str, Any]] = []
        self.best_epoch: int | None = None
        self.raw_baseline: dict[str, float] | None = None
        self.embeddings: torch.Tensor | None = None
        self.seconds_before = 0.0
        self.started = time.perf_counter()
        self.epoch_started = self.started
        self.progress: Progress | None = None
        self.loss_sum: Any = 0.0
        self.batches = 0
        self.stopped = False

    # ------------------------------------------------------------------ epoch 0
    def baseline(self, trainer: Any) -> None:
        """Evaluate the raw inputs and the untrained model (epoch 0)."""
        metrics = None
        if self.main:  # rank 0 evaluates; the others get its numbers
            self.raw_baseline = self.evaluator.raw()
            metrics, self.embeddings = self.evaluator.model(self.model)
        metrics = dist.broadcast(metrics, self.group)
        self.history = [{"epoch": 0, "loss": None, "lr": _lr(trainer), **metrics, "seconds": None}]
        if self.main:
            out = self.job.stream
            print("baseline (held-out retrieval before training):", file=out)
            if self.raw_baseline is not None:
                print(f"  raw inputs       {_metrics_text(self.raw_baseline)}", file=out)
            print(f"  untrained model  {_metrics_text(metrics)}", file=out)

    def rewrite_after_resume(self, trainer: Any) -> None:
        """Metrics files from the checkpoint; best.pth when the last epoch is the best."""
        run = self.job.run
        if run is None:
            return
        run.write_metrics(self.history)
        if self.best_epoch is not None and self.best_epoch == self.history[-1]["epoch"]:
            run.save_checkpoint(self._state(trainer), best=True)

    # ------------------------------------------------------------------ hooks
    def on_iteration(self, trainer: Any) -> None:
        total = trainer.losses["total_loss"]
        self.loss_sum = self.loss_sum + (
            total.detach().float() if torch.is_tensor(total) else total
        )
        self.batches += 1
        if not self.main:
            return
        if self.progress is None:
            self.progress = Progress(
                f"epoch {trainer.epoch}/{self.job.settings.epochs}",
                trainer.iterations_per_epoch,
                self.job.stream,
            )
        postfix = None
        if self.progress.due():  # the running loss costs a device sync: only when drawn
            loss = float(self.loss_sum) / self.batches / self.group.world_size
            postfix = f"loss {loss:.4g}"
        self.progress.update(1, postfix)

    def on_epoch(self, trainer: Any) -> bool:
        if self.progress is not None:
            self.progress.close()
            self.progress = None
        # in a group, every rank's loss is world_size times the global batch's loss
        loss = float(self.loss_sum) / max(1, self.batches) / self.group.world_size
        self.loss_sum, self.batches = 0.0, 0
        metrics = None
        if self.main:
            metrics, self.embeddings = self.evaluator.model(self.model)
        metrics = dist.broadcast(metrics, self.group)
        trainer.step_lr_plateau_schedulers(metrics["mean_average_precision_at_r"])
        now = time.perf_counter()
        row = {
            "epoch": trainer.epoch,
            "loss": loss,
            "lr": _lr(trainer),
            **metrics,
            "seconds": round(now - self.epoch_started, 3),
        }
        self.epoch_started = now
        self.history.append(row)
        previous = next((r for r in self.history if r["epoch"] == self.best_epoch), None)
        value = row["mean_average_precision_at_r"]
        is_best = previous is None or value > previous["mean_average_precision_at_r"]
        if is_best:
            self.best_epoch = row["epoch"]
        if self.main:
            if self.job.run is not None:
                self.job.run.save_checkpoint(self._state(trainer), best=is_best)
                self.job.run.write_metrics(self.history)
            print(format_row(row, "*" if is_best else ""), file=self.job.stream)
            self.job.stream.flush()
        stop = self.job.stop_after_epoch
        if stop is not None and trainer.epoch >= stop and trainer.epoch < self.job.settings.epochs:
            self.stopped = True
            return False
        return True

    def _state(self, trainer: Any) -> dict[str, Any]:
        state = trainer.state_dict()
        if self.parts is not None:  # the unwrapped models and loss: resumable anywhere
            dist.portable_state(state, self.parts)
        state["cli"] = {
            "format": CHECKPOINT_FORMAT,
            "settings": self.job.settings.to_dict(),
            "input_shape": list(self.job.splits.input_shape),
            "num_classes": self.job.splits.num_classes,
            "history": [dict(r) for r in self.history],
            "best_epoch": self.best_epoch,
            "raw_baseline": self.raw_baseline,
            "seconds": self.seconds_before + time.perf_counter() - self.started,
        }
        return state


def _lr(trainer: Any) -> float | None:
    for opt in trainer.optimizers.values():
        return float(opt.param_groups[0]["lr"])
    return None


def _metrics_text(metrics: Mapping[str, float]) -> str:
    return (
        f"P@1 {metrics['precision_at_1']:.4f}  R-prec {metrics['r_precision']:.4f}  "
        f"MAP@R {metrics['mean_average_precision_at_r']:.4f}"
    )
