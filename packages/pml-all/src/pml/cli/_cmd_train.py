"""``pml train``: train an embedding model and evaluate retrieval on held-out data.

Settings: the defaults, then ``--config FILE``, then the options given (see
:mod:`pml.cli._settings`). Everything the user can get wrong (names, arguments, data) is
checked before the run folder is created; a run interrupted later leaves a folder without
the ``COMPLETE`` marker, which ``pml train --resume <run>`` continues exactly.

``--resume RUN`` takes the settings of ``RUN/config.toml``; of the options only ``--epochs``
(train on to a larger count), ``--device``, ``--threads``, ``--num-workers`` and
``--plot-method`` may be given with it. When ``--epochs`` extends a run whose scheduler took
``T_max`` from the epoch count, ``T_max`` stays the original count (written to the config):
the run continues on its own schedule, and its config still repeats it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

from pml.cli import _distributed as dist
from pml.cli._data import load_data
from pml.cli._errors import UsageError
from pml.cli._loading import resolve_device
from pml.cli._run_folder import RunFolder, read_checkpoint
from pml.cli._settings import (
    ARG_TABLES,
    Settings,
    changed_settings,
    load_settings,
    merge_settings,
    read_config,
)
from pml.cli._train_outputs import (
    PML_DISTRIBUTIONS,
    config_header,
    environment,
    finish,
    model_text,
    print_data,
)

__all__ = ["PML_DISTRIBUTIONS", "add_parser", "resolve_device", "run"]

# resolve_device: the one of pml.cli._loading (every command reads --device the same way)

#: settings that ``--resume`` lets the command line change
RESUME_OPTIONS = ("epochs", "device", "threads", "num_workers", "plot_method")
_SMALL_MODEL = 1_000_000

_EPILOG = """\
examples:
  pml train                                   the bundled digits, the default recipe
  pml train --loss ArcFaceLoss --loss-arg margin=28.6 --miner none
  pml train --data photos/ --epochs 20        a folder with one sub-folder per class
  pml train --data features.npz               features and labels of a frozen backbone
  pml train --model mypkg.nets:make_net       your own network (factory(input_shape=...,
                                              embedding_size=...) -> nn.Module)
  pml train --config runs/<run>/config.toml   repeat a run
  pml train --resume runs/<run>               continue an interrupted run
  pml train --nproc-per-node 2                2 processes (DistributedDataParallel; the
                                              same as: torchrun --nproc-per-node 2 -m
                                              pml.cli train)
"""


def add_parser(subparsers: Any) -> None:
    """Add the ``train`` sub-command to ``subparsers``."""
    p = subparsers.add_parser(
        "train",
        help="train an embedding model and evaluate retrieval on held-out data",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    d = Settings()
    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        metavar="DATA",
        help=f"digits, a folder of class folders of images, or a .npy/.npz features file "
        f"(default {d.data})",
    )
    g.add_argument("--test-data", metavar="DATA", help="held-out data (default: split --data)")
    g.add_argument(
        "--data-protocol",
        choices=("samples", "classes"),
        help="split --data by samples (stratified) or by classes (default samples)",
    )
    g.add_argument(
        "--test-size", type=float, metavar="F", help=f"held-out fraction (default {d.test_size})"
    )
    g.add_argument(
        "--split-seed", type=int, metavar="N", help=f"seed of the split (default {d.split_seed})"
    )
    g.add_argument(
        "--labels",
        metavar="FILE",
        help="labels .npy of a .npy features file (default <stem>_labels.npy beside it)",
    )
    g.add_argument(
        "--image-size",
        type=int,
        metavar="N",
        help=f"images resized to N x N (default {d.image_size})",
    )
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        metavar="SPEC",
        help="mlp, or package.module:factory returning an nn.Module (default mlp)",
    )
    g.add_argument(
        "--hidden-size", type=int, metavar="N", help=f"MLP width (default {d.hidden_size})"
    )
    g.add_argument("--embedding-size", type=int, metavar="N", help=f"default {d.embedding_size}")
    g = p.add_argument_group(
        "recipe (class names of pml.losses, pml.miners, ...; KEY=VALUE "
        "arguments are Python literals)"
    )
    _name_and_args(g, "loss", d.loss, "pml.losses")
    _name_and_args(g, "miner", d.miner, "pml.miners; none for no miner")
    _name_and_args(g, "sampler", d.sampler, "pml.samplers; none for shuffled batches")
    g.add_argument("--distance", metavar="NAME", help="pml.distances class for loss and miner")
    g.add_argument("--reducer", metavar="NAME", help="pml.reducers class for the loss")
    _name_and_args(g, "optimizer", d.optimizer, "torch.optim")
    _name_and_args(g, "scheduler", d.scheduler, "torch.optim.lr_scheduler, stepped per epoch; none")
    g.add_argument("--lr", type=float, metavar="F", help=f"learning rate (default {d.lr})")
    g.add_argument("--epochs", type=int, metavar="N", help=f"default {d.epochs}")
    g.add_argument("--batch-size", type=int, metavar="N", help=f"default {d.batch_size}")
    g.add_argument("--seed", type=int, metavar="N", help=f"default {d.seed}")
    g = p.add_argument_group("run")
    g.add_argument("--device", metavar="DEV", help="auto, cpu, cuda or cuda:N (default auto)")
    g.add_argument("--mixed-precision", choices=("none", "bf16", "fp16"), help="default none")
    g.add_argument(
        "--threads", type=int, metavar="N", help="CPU threads (default 0: 1 for small models)"
    )
    g.add_argument("--num-workers", type=int, metavar="N", help="DataLoader workers (default 0)")
    g.add_argument("--config", metavar="FILE", help="TOML or YAML settings; options override it")
    g.add_argument("--name", metavar="NAME", help="run name (default <data>-<loss>)")
    g.add_argument("--runs-dir", metavar="DIR", help=f"where run folders go (default {d.runs_dir})")
    g.add_argument("--resume", metavar="RUN", help="continue an interrupted run folder")
    g.add_argument(
        "--plot-method", choices=("pca", "tsne"), help="2-D map of the test embeddings (pca)"
    )
    g.add_argument(
        dist.OPTION,
        type=int,
        metavar="N",
        dest="nproc_per_node",
        help="train in N processes on torch.distributed (gloo on CPU, nccl on CUDA); "
        "--batch-size stays the global batch",
    )
    g.add_argument("--stop-after-epoch", type=int, help=argparse.SUPPRESS)
    p.set_defaults(run=run)


def _name_and_args(group: Any, kind: str, default: str | None, where: str) -> None:
    flag = f"--{kind}"
    group.add_argument(flag, metavar="NAME", help=f"{where} (default {default})")
    group.add_argument(
        f"{flag}-arg",
        dest=ARG_TABLES[kind],
        action="append",
        metavar="KEY=VALUE",
        help=f"keyword argument of the {kind} (repeatable)",
    )


# ---------------------------------------------------------------------------- the command
def run(args: argparse.Namespace) -> int:
    """Run ``pml train`` with parsed ``args``; returns the exit status."""
    given = {
        k: v
        for k, v in vars(args).items()
        if k
        not in ("command", "run", "config", "resume", "stop_after_epoch", "argv", "nproc_per_node")
    }
    group = dist.from_environment()
    nproc = getattr(args, "nproc_per_node", None)
    if nproc is not None and nproc < 1:
        raise UsageError(f"{dist.OPTION} must be at least 1; got {nproc}")
    if nproc is not None and nproc > 1:
        if group.distributed:
            raise UsageError(
                f"{dist.OPTION} cannot be given under torchrun (it sets the processes)"
            )
        argv = getattr(args, "argv", None)
        return dist.launch(nproc, list(argv) if argv is not None else ["train"])
    if not group.distributed:
        return _run(args, given)
    try:
        status = _run(args, given, group)
        dist.barrier()  # leave together (see _distributed.barrier)
    except UsageError:
        if group.main:
            raise
        return 2  # rank 0 reports it
    finally:
        dist.destroy_process_group()
    dist.exit_worker(status)
    return status


def _run(args: argparse.Namespace, given: dict[str, Any], group: Any = None) -> int:
    stop_after = getattr(args, "stop_after_epoch", None)
    argv = getattr(args, "argv", None)
    resume_path = getattr(args, "resume", None)
    if resume_path is not None:
        return _resume(resume_path, given, stop_after, argv, getattr(args, "config", None), group)
    layers, where = [], []
    if getattr(args, "config", None) is not None:
        layers.append(read_config(args.config))
        where.append(args.config)
    layers.append(given)
    where.append("the options")
    settings = merge_settings(layers, where=where)
    return _train(settings, None, None, stop_after, argv, group)


def _resume(
    path: str,
    given: dict[str, Any],
    stop_after: int | None,
    argv: Any,
    config: Any,
    group: Any = None,
) -> int:
    if config is not None:
        raise UsageError("--resume takes the run's own config.toml; do not pass --config")
    run = RunFolder.open(path)
    other = sorted(k for k in given if k not in RESUME_OPTIONS)
    if other:
        flags = ", ".join("--" + k.replace("_", "-") for k in other)
        raise UsageError(
            f"{flags} cannot change when resuming (the run's config.toml fixes it); start a "
            f"new run with --config {os.fspath(run.config)} instead"
        )
    saved = load_settings(run.config)
    settings = merge_settings([given], base=saved, where=["the options"])
    state = read_checkpoint(run.last) if run.last.is_file() else None
    done = int(state["epoch"]) if state is not None else 0
    if settings.epochs < done:
        raise UsageError(f"--epochs {settings.epochs} is fewer than the {done} epochs already run")
    if run.is_complete() and settings.epochs == done:
        raise UsageError(
            f"run {os.fspath(run.path)!r} is complete ({done} of {done} epochs); pass --epochs "
            f"N (more than {done}) to train on"
        )
    if settings.epochs != saved.epochs and settings.scheduler is not None:
        from pml.cli import _registry as registry
        from pml.cli._recipe import accepts

        cls = registry.resolve("scheduler", settings.scheduler)
        if "T_max" not in settings.scheduler_args and accepts(cls, "T_max"):
            settings.scheduler_args = {**settings.scheduler_args, "T_max": saved.epochs}
    return _train(settings, run, state, stop_after, argv, group)


def _choose_threads(settings: Settings, device: torch.device, parameters: int, default: int) -> int:
    """Set and return PyTorch's CPU threads (``threads = 0``: 1 for small models on CPU)."""
    n = settings.threads
    if n == 0:
        n = 1 if device.type == "cpu" and parameters < _SMALL_MODEL else default
    torch.set_num_threads(n)
    return n


def _default_name(settings: Settings) -> str:
    data = settings.data.partition(":")[0]
    if data != "digits" or os.path.exists(settings.data):
        path = Path(settings.data)
        data = path.stem if path.suffix.lower() in (".npz", ".npy") else path.name
    return f"{data or 'data'}-{settings.loss}"


def _train(
    settings: Settings,
    run: RunFolder | None,
    state: dict[str, Any] | None,
    stop_after: int | None,
    argv: Any,
    group: dist.Group | None = None,
) -> int:
    group = group or dist.Group()
    # in a process group only rank 0 prints and writes
    out = sys.stdout if group.main else open(os.devnull, "w")  # noqa: SIM115
    try:
        return _train_in(settings, run, state, stop_after, argv, group, out)
    finally:
        if out is not sys.stdout:
            out.close()


def _train_in(
    settings: Settings,
    run: RunFolder | None,
    state: dict[str, Any] | None,
    stop_after: int | None,
    argv: Any,
    group: dist.Group,
    out: Any,
) -> int:
    from pml.cli._recipe import check_names
    from pml.cli._training import Training, TrainJob

    started = time.perf_counter()
    check_names(settings)
    if run is None:
        changed = changed_settings(settings)
        if changed:
            print("settings (differing from the defaults):", file=out)
            for key, value in changed.items():
                print(f"  {key} = {value!r}", file=out)
        else:
            print("settings: the defaults (pml train --help lists them)", file=out)
    else:
        print(f"resuming {os.fspath(run.path)}", file=out)
    device = resolve_device(settings.device)
    if group.distributed and device.type == "cuda":
        device = torch.device("cuda", group.local_rank)
    splits = load_data(settings)
    print_data(splits, out)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.cuda.reset_peak_memory_stats(device)
    if group.distributed:
        dist.init_process_group(group, device)
    job = TrainJob(settings, splits, device, None, state, stop_after, out)
    before = torch.get_num_threads()
    try:
        # everything the user can get wrong is checked by the end of Training(): only then
        # is the run folder created
        training = Training(job, group.rank, group.world_size)
        threads = _choose_threads(settings, device, training.parameters, before)
        cpu = f" ({threads} CPU thread{'s' * (threads > 1)})" if device.type == "cpu" else ""
        print(
            f"model: {model_text(settings, splits)}, {training.parameters:,} parameters; "
            f"device {device}{cpu}",
            file=out,
        )
        print(f"recipe: {training.recipe.text}", file=out)
        per = ""
        if group.distributed:
            per = (
                f" ({group.world_size} processes x {settings.batch_size // group.world_size}, "
                "DistributedDataParallel)"
            )
        print(
            f"training: {settings.epochs} epochs of {training.batches} batches of "
            f"{settings.batch_size}{per}",
            file=out,
        )
        if not group.main:
            training.run()
            return 0
        if run is None:
            run = RunFolder.create(settings.runs_dir, settings.name or _default_name(settings))
        job.run = run
        run.unmark_complete()
        run.write_config(settings, header=config_header(argv))
        env = environment(settings, device, threads, argv)
        env["processes"] = group.world_size
        if state is not None:
            env["resumed_after_epoch"] = int(state["epoch"])
        run.write_env(env)
        print(f"run folder: {os.fspath(run.path)}", file=out)
        try:
            result = training.run()
        except KeyboardInterrupt:
            where = shlex.quote(os.fspath(run.path))
            print(f"\ninterrupted; continue with: pml train --resume {where}", file=out)
            raise
    finally:
        torch.set_num_threads(before)
    if not result.finished:
        print(
            f"stopped after epoch {result.history[-1]['epoch']} of {settings.epochs} (the run "
            f"is incomplete); continue with: pml train --resume "
            f"{shlex.quote(os.fspath(run.path))}",
            file=out,
        )
        return 0
    seconds = result.seconds_before + (time.perf_counter() - started)
    finish(run, settings, splits, result, device, seconds, env, argv, out)
    return 0
