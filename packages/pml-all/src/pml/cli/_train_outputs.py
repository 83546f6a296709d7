"""What ``pml train`` reports and writes around the training: environment, summary, report.

:func:`finish` writes the end of a run (plots, ``report.md``, ``summary.json``, ``env.json``
with the time and peak memory, the ``COMPLETE`` marker) and prints the final lines.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from importlib import metadata
from typing import Any

import torch

from pml.cli._data import DataSplits, dataset_stats
from pml.cli._report import render_report
from pml.cli._run_folder import RunFolder
from pml.cli._settings import Settings, changed_settings

__all__ = [
    "PML_DISTRIBUTIONS",
    "command_text",
    "config_header",
    "environment",
    "finish",
    "model_text",
    "print_data",
]

#: the distributions whose versions go to env.json
PML_DISTRIBUTIONS = (
    "pml-core",
    "pml-distances",
    "pml-reducers",
    "pml-losses",
    "pml-miners",
    "pml-samplers",
    "pml-eval",
    "pml-trainers",
    "pml-all",
)


def model_text(settings: Settings, splits: DataSplits) -> str:
    shape = "x".join(str(s) for s in splits.input_shape)
    if settings.model == "mlp":
        return (
            f"MLP {shape} -> {settings.hidden_size} -> {settings.hidden_size} -> "
            f"{settings.embedding_size}"
        )
    return f"{settings.model} on {shape} inputs"


def print_data(splits: DataSplits, out: Any) -> None:
    print(f"data: {splits.description}", file=out)
    for split, ds in (("train", splits.train), ("test", splits.test)):
        st = dataset_stats(ds)
        line = (
            f"  {split:<5} {st['items']:>6} items, {st['classes']} classes, smallest class "
            f"{st['smallest_class']} ({st['smallest_class_items']} items)"
        )
        if split == "test":
            line += f", {st['lone_queries']} lone queries"
        print(line, file=out)


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PML_DISTRIBUTIONS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def environment(settings: Settings, device: torch.device, threads: int, argv: Any) -> dict:
    import numpy

    env: dict[str, Any] = {
        "pml": _versions(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "seed": settings.seed,
        "split_seed": settings.split_seed,
        "device": str(device),
        "threads": threads,
        "cuda": torch.version.cuda,
        "command": command_text(argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def command_text(argv: Any) -> str:
    args = list(argv) if argv is not None else ["train"]
    return "pml " + shlex.join(args)


def config_header(argv: Any) -> str:
    return (
        f"pml train settings, written by: {command_text(argv)}\n"
        "repeat the run with: pml train --config <this file>"
    )


def _peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB on the GPU"
    try:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if sys.platform == "darwin":
            kib //= 1024
        return f"{kib / 1024:.0f} MiB resident (the whole process)"
    except ImportError:
        return "unknown"


def finish(
    run: RunFolder,
    settings: Settings,
    splits: DataSplits,
    result: Any,
    device: torch.device,
    seconds: float,
    env: dict[str, Any],
    argv: Any,
    out: Any,
) -> None:
    from pml.cli._plots import PlotsUnavailable, plot_run

    history = result.history
    by_epoch = {r["epoch"]: r for r in history}
    best = by_epoch.get(result.best_epoch) if result.best_epoch is not None else None
    last = history[-1]
    untrained = by_epoch.get(0)
    print(
        f"best: epoch {result.best_epoch}, MAP@R {best['mean_average_precision_at_r']:.4f}"
        if best
        else "best: -",
        file=out,
    )
    print(
        f"final: epoch {last['epoch']}, P@1 {last['precision_at_1']:.4f}, R-precision "
        f"{last['r_precision']:.4f}, MAP@R {last['mean_average_precision_at_r']:.4f}"
        + (
            f" (untrained: MAP@R {untrained['mean_average_precision_at_r']:.4f})"
            if untrained
            else ""
        ),
        file=out,
    )
    plots: list[str] = []
    embeddings = result.embeddings
    if embeddings is not None and getattr(result.recipe.distance, "normalize_embeddings", False):
        embeddings = torch.nn.functional.normalize(embeddings.float(), dim=1)
    try:
        names = plot_run(
            run.plots,
            history,
            embeddings,
            splits.test.labels,
            splits.test.class_names,
            settings.plot_method,
            settings.seed,
            title=settings.loss,
            raw_baseline=result.raw_baseline,
        )
        plots = [f"plots/{n}" for n in names]
    except PlotsUnavailable as err:
        print(f"note: {err}", file=out)
    peak = _peak_memory(device)
    env = {**env, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(seconds, 2)}
    env["peak_memory"] = peak
    run.write_env(env)
    info = {
        "name": run.path.name,
        "command": command_text(argv),
        "data": splits.description,
        "stats": {"train": dataset_stats(splits.train), "test": dataset_stats(splits.test)},
        "changed": changed_settings(settings),
        "model": model_text(settings, splits),
        "parameters": result.parameters,
        "history": history,
        "best_epoch": result.best_epoch,
        "raw_baseline": result.raw_baseline,
        "loss": settings.loss,
        "miner": settings.miner,
        "distance": _distance_text(result.recipe.distance),
        "seconds": seconds,
        "peak_memory": peak,
        "device": str(device),
        "plots": plots,
    }
    run.write_text(run.report, render_report(info))
    run.write_text(run.path / "summary.json", json.dumps(_summary(result), indent=2) + "\n")
    run.mark_complete()
    print(f"time: {seconds:.1f} s; peak memory: {peak}", file=out)
    print(f"run folder: {os.fspath(run.path)}", file=out)


def _distance_text(distance: Any) -> str:
    name = type(distance).__name__
    if getattr(distance, "normalize_embeddings", False):
        return f"{name} of L2-normalised embeddings"
    return name


def _summary(result: Any) -> dict[str, Any]:
    by_epoch = {r["epoch"]: r for r in result.history}
    return {
        "final": result.history[-1],
        "best_epoch": result.best_epoch,
        "best": by_epoch.get(result.best_epoch),
        "untrained": by_epoch.get(0),
        "raw_inputs": result.raw_baseline,
    }
