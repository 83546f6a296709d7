"""Run folders of ``pml train`` and loading a trained model back.

A run folder ``<runs_dir>/<YYYYmmdd-HHMMSS>-<name>/`` holds::

    config.toml            the resolved settings (pml train --config config.toml repeats the run)
    env.json               versions of torch and every pml package, seed, device, command line
    metrics.csv            one row per epoch (epoch 0: the untrained model)
    metrics.jsonl          the same rows as JSON lines
    checkpoints/last.pth   the trainer's state after the last finished epoch
    checkpoints/best.pth   the same at the epoch of the best MAP@R on the held-out data
    report.md              data, settings, the epoch table, final metrics, protocol, time, citation
    plots/*.png            loss curve, accuracy curves, 2-D map of the test embeddings
    summary.json           final, best, untrained and raw-input metrics
    COMPLETE               written last: a folder without it is an interrupted run

Every file is written atomically (:func:`pml.core.io.atomic_write`). A checkpoint is the
trainer's ``state_dict()`` (models, loss and miner parameters, optimizers, schedulers, random
generators, sampler position) plus a ``"cli"`` entry: the settings, the input shape and the
metrics so far. Checkpoints load with ``weights_only=True``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pml.cli._errors import UsageError
from pml.cli._settings import Settings, dump_toml, load_settings, merge_settings
from pml.core.io import atomic_write

__all__ = [
    "CHECKPOINT_FORMAT",
    "METRIC_COLUMNS",
    "RunFolder",
    "find_checkpoint",
    "load_model",
    "read_checkpoint",
]

#: the ``state["cli"]["format"]`` of the checkpoints written by ``pml train``
CHECKPOINT_FORMAT = "pml-cli/1"
#: the columns of metrics.csv
METRIC_COLUMNS = (
    "epoch",
    "loss",
    "lr",
    "precision_at_1",
    "r_precision",
    "mean_average_precision_at_r",
    "seconds",
)


class RunFolder:
    """The files of one run (see the module docstring).

    Args:
        path: the run folder.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(os.fspath(path))

    @classmethod
    def create(cls, runs_dir: str | os.PathLike[str], name: str) -> RunFolder:
        """A new, empty run folder ``<runs_dir>/<date>-<time>-<name>`` (suffixed if taken)."""
        base = Path(os.path.expanduser(os.fspath(runs_dir)))
        stamp = time.strftime("%Y%m%d-%H%M%S")
        try:
            base.mkdir(parents=True, exist_ok=True)
            for n in range(1, 1000):
                path = base / (f"{stamp}-{name}" if n == 1 else f"{stamp}-{name}-{n}")
                try:
                    path.mkdir()
                except FileExistsError:
                    continue
                return cls(path)
        except OSError as err:
            raise UsageError(f"cannot create a run folder in {os.fspath(base)!r}: {err}") from None
        raise UsageError(f"cannot find a free run folder name in {os.fspath(base)!r}")

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> RunFolder:
        """An existing run folder (for ``--resume``).

        Raises:
            UsageError: not a folder, or no ``config.toml`` in it.
        """
        run = cls(path)
        if not run.path.is_dir():
            raise UsageError(f"run folder {os.fspath(run.path)!r} does not exist")
        if not run.config.is_file():
            raise UsageError(
                f"{os.fspath(run.path)!r} is not a run folder of pml train (no config.toml)"
            )
        return run

    # ------------------------------------------------------------------ paths
    @property
    def config(self) -> Path:
        return self.path / "config.toml"

    @property
    def env(self) -> Path:
        return self.path / "env.json"

    @property
    def metrics_csv(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def metrics_jsonl(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def last(self) -> Path:
        return self.path / "checkpoints" / "last.pth"

    @property
    def best(self) -> Path:
        return self.path / "checkpoints" / "best.pth"

    @property
    def report(self) -> Path:
        return self.path / "report.md"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    @property
    def complete_marker(self) -> Path:
        return self.path / "COMPLETE"

    def is_complete(self) -> bool:
        return self.complete_marker.is_file()

    # ------------------------------------------------------------------ writing
    def write_text(self, path: Path, text: str) -> None:
        """``text`` to ``path`` atomically (parent folders created)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        data = text.encode("utf-8")
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))

    def write_config(self, settings: Settings, header: str = "") -> None:
        self.write_text(self.config, dump_toml(settings, header))

    def write_env(self, env: Mapping[str, Any]) -> None:
        self.write_text(self.env, json.dumps(env, indent=2) + "\n")

    def write_metrics(self, history: Sequence[Mapping[str, Any]]) -> None:
        """metrics.csv and metrics.jsonl: one row per epoch (rewritten whole)."""
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in METRIC_COLUMNS})
        self.write_text(self.metrics_csv, out.getvalue())
        self.write_text(
            self.metrics_jsonl, "".join(json.dumps(dict(row)) + "\n" for row in history)
        )

    def save_checkpoint(self, state: Mapping[str, Any], best: bool) -> None:
        """``checkpoints/last.pth`` (and ``best.pth`` when ``best``), each atomically."""
        from pml.trainers._checkpoint import save_checkpoint

        save_checkpoint(self.last, state)
        if best:
            save_checkpoint(self.best, state)

    def mark_complete(self) -> None:
        """Write the ``COMPLETE`` marker (last)."""
        self.write_text(self.complete_marker, time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n")

    def unmark_complete(self) -> None:
        """Remove the ``COMPLETE`` marker (a run being extended is incomplete again)."""
        self.complete_marker.unlink(missing_ok=True)


def find_checkpoint(run_or_checkpoint: str | os.PathLike[str]) -> Path:
    """The checkpoint of a run folder (``best.pth``, else ``last.pth``) or the file itself.

    Raises:
        UsageError: no such file or folder, or a run folder without a checkpoint.
    """
    path = Path(os.path.expanduser(os.fspath(run_or_checkpoint)))
    if path.is_dir():
        for candidate in (path / "checkpoints" / "best.pth", path / "checkpoints" / "last.pth"):
            if candidate.is_file():
                return candidate
        runs = sorted(p for p in path.iterdir() if (p / "checkpoints").is_dir())
        if runs:  # a folder of runs (e.g. runs/): name the newest
            raise UsageError(
                f"{os.fspath(path)!r} holds {len(runs)} run folder{'s' * (len(runs) > 1)}, not "
                f"a run; pass one of them, e.g. {os.fspath(runs[-1])!r}"
            )
        raise UsageError(
            f"run folder {os.fspath(path)!r} holds no checkpoints/best.pth or last.pth"
        )
    if not path.is_file():
        raise UsageError(f"{os.fspath(path)!r} is neither a run folder nor a checkpoint file")
    return path


def read_checkpoint(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> dict:
    """A checkpoint of ``pml train`` (weights-only loading).

    Raises:
        UsageError: a file that is not a pml checkpoint or carries code.
    """
    from pml.trainers._checkpoint import CheckpointError, load_checkpoint

    try:
        state = load_checkpoint(path, map_location=device)
    except (CheckpointError, FileNotFoundError) as err:
        raise UsageError(str(err)) from None
    except Exception as err:  # a damaged file: torch raises RuntimeError and others
        raise UsageError(f"cannot read checkpoint {os.fspath(path)!r}: {err}") from None
    cli = state.get("cli")
    if not isinstance(cli, dict) or cli.get("format") != CHECKPOINT_FORMAT:
        raise UsageError(
            f"{os.fspath(path)!r} is not a checkpoint of pml train (no {CHECKPOINT_FORMAT!r} entry)"
        )
    return state


def load_model(
    run_or_checkpoint: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[nn.Module, Settings]:
    """The trained embedding model of a run folder or checkpoint, and its settings.

    A run folder gives ``checkpoints/best.pth`` (else ``last.pth``) and its ``config.toml``;
    a checkpoint file alone carries its settings. The model is ``nn.Sequential(trunk,
    embedder)`` (see :func:`pml.cli._models.build_model`), in eval mode on ``device``.

    Raises:
        UsageError: a missing run or file, a file that is not a checkpoint of ``pml train``,
            weights that do not fit the model of the settings.
    """
    from pml.cli._models import build_model

    file = find_checkpoint(run_or_checkpoint)
    state = read_checkpoint(file)
    config = file.parent.parent / "config.toml"
    if file.parent.name == "checkpoints" and config.is_file():
        settings = load_settings(config)
    else:
        settings = merge_settings([state["cli"]["settings"]], where=[os.fspath(file)])
    model = build_model(settings, tuple(state["cli"]["input_shape"]))
    try:
        model.trunk.load_state_dict(state["models"]["trunk"])
        model.embedder.load_state_dict(state["models"]["embedder"])
    except (KeyError, RuntimeError) as err:
        raise UsageError(
            f"the weights of {os.fspath(file)!r} do not fit the model: {err}"
        ) from None
    return model.to(device).eval(), settings
