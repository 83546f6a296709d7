"""Multi-process ``pml train`` on torch.distributed (DistributedDataParallel).

``pml train --nproc-per-node N`` re-runs the same command under ``torchrun``
(``python -m torch.distributed.run --standalone --nproc-per-node N -m pml.cli train ...``);
a command started by ``torchrun`` (one node or several, with torchrun's own arguments) finds
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in its environment and joins the process group: gloo
on CPU, nccl on CUDA (each process on ``cuda:LOCAL_RANK``).

In a group of ``W`` processes:

* ``--batch-size`` stays the **global** batch: each process trains on ``batch_size / W``
  items per step, from its own shard of the sampler's stream (MPerClassSampler keeps the
  single-process ``m``, so a step sees the same classes-per-batch recipe);
* BatchNorm layers become SyncBatchNorm on CUDA (statistics of the global batch); on CPU,
  where SyncBatchNorm does not run, each process normalises over its own share;
* the loss and the miner are wrapped in DistributedLossWrapper / DistributedMinerWrapper
  (they see the whole global batch), the trunk and embedder in DistributedDataParallel, so a
  step's gradients are those of one process on the global batch; the gradients of a loss's
  own parameters (e.g. ArcFace's class weights), which every process computes on the whole
  batch, are divided by ``W`` (the wrapper multiplies the loss by ``W``);
* rank 0 evaluates the held-out split and sends the metrics to the others; only rank 0
  prints and writes the run folder. Checkpoints hold the unwrapped models and loss, so a
  run trained on ``W`` processes resumes (or evaluates) on any number.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from pml.cli._errors import UsageError

__all__ = [
    "Group",
    "barrier",
    "broadcast",
    "exit_worker",
    "from_environment",
    "launch",
    "load_parts",
    "portable_state",
    "process_group",
    "strip_launch_option",
    "wrap_for_ddp",
]

#: the option that starts the processes (removed from the command the processes run)
OPTION = "--nproc-per-node"


@dataclasses.dataclass(frozen=True)
class Group:
    """This process's place in the process group (``world_size = 1``: no group)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that prints, evaluates and writes."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def from_environment(environ: Mapping[str, str] | None = None) -> Group:
    """The group described by torchrun's variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``).

    Raises:
        UsageError: a variable that is not a number, or a rank outside the world.
    """
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise UsageError(
            "RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them); got "
            f"RANK={env.get('RANK')!r}, WORLD_SIZE={env.get('WORLD_SIZE')!r}, "
            f"LOCAL_RANK={env.get('LOCAL_RANK')!r}"
        ) from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise UsageError(f"RANK={rank} is not in [0, WORLD_SIZE={world})")
    return Group(rank, world, local)


def strip_launch_option(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--nproc-per-node N`` / ``--nproc-per-node=N``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == OPTION:
            skip = True
        elif not arg.startswith(OPTION + "="):
            out.append(arg)
    return out


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``pml <argv>`` in ``nproc`` processes under torchrun; returns its exit status."""
    if nproc < 1:
        raise UsageError(f"{OPTION} must be at least 1; got {nproc}")
    env = dict(os.environ)
    # torchrun would set 1 and print a notice; pml picks the threads itself (--threads)
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "pml.cli",
        *strip_launch_option(argv),
    ]
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 130


def init_process_group(group: Group, device: torch.device) -> None:
    """Join the default process group (nccl on CUDA, gloo on CPU) unless already joined."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=group.rank, world_size=group.world_size)


def barrier() -> None:
    """Wait for every rank (nothing without a process group).

    The ranks leave together: a rank that tears its gloo connections down while rank 0 is
    still writing the run folder can make the other side abort.
    """
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def exit_worker(status: int) -> None:
    """End a torchrun worker now (``os._exit``) after flushing; nothing outside torchrun.

    A finished worker's normal interpreter exit could abort ("terminate called without an
    active exception", SIGABRT) while torch's C++ threads were torn down, about once in ten
    2-process runs on CPU; the run folder is complete by then, but torchrun reported the
    run as failed. Everything is written and flushed before this is called.
    """
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def destroy_process_group() -> None:
    """Leave the default process group (nothing when none was joined)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast(value: Any, group: Group) -> Any:
    """Rank 0's ``value`` on every rank (a picklable object: metrics, a flag)."""
    if not group.distributed:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@dataclasses.dataclass
class Wrapped:
    """What the trainer gets in a process group, and the unwrapped parts behind it."""

    models: dict[str, nn.Module]
    loss: nn.Module
    miner: Any
    parts: dict[str, dict[str, Any]]


def wrap_for_ddp(
    model: nn.Module, loss: nn.Module, miner: Any, device: torch.device, group: Group
) -> Wrapped:
    """DDP trunk/embedder, the distributed loss and miner wrappers (see the module doc).

    ``model`` is ``nn.Sequential(trunk, embedder)``; a part without trainable parameters
    (an identity embedder) is not wrapped.
    """
    from torch.nn.parallel import DistributedDataParallel as DDP

    from pml.losses import DistributedLossWrapper
    from pml.miners import DistributedMinerWrapper

    ids = [device.index] if device.type == "cuda" else None
    models: dict[str, nn.Module] = {}
    for key in ("trunk", "embedder"):
        if device.type == "cuda":
            # batch statistics over the global batch (the same parameter objects, so the
            # optimizers stay valid); SyncBatchNorm needs CUDA: on CPU each rank its own
            setattr(model, key, nn.SyncBatchNorm.convert_sync_batchnorm(getattr(model, key)))
        part = getattr(model, key)
        trained = any(p.requires_grad for p in part.parameters())
        models[key] = DDP(part, device_ids=ids) if trained else part
    for p in loss.parameters():
        if p.requires_grad:
            # every rank computes the loss of the whole gathered batch, times world_size
            p.register_hook(lambda g, w=group.world_size: g / w)
    wrapped_miner = None if miner is None else DistributedMinerWrapper(miner)
    parts: dict[str, dict[str, Any]] = {
        "models": {"trunk": model.trunk, "embedder": model.embedder},
        "loss_funcs": {"metric_loss": loss},
        "mining_funcs": {} if miner is None else {"tuple_miner": miner},
    }
    return Wrapped(models, DistributedLossWrapper(loss), wrapped_miner, parts)


def portable_state(state: dict[str, Any], parts: Mapping[str, Mapping[str, Any]]) -> None:
    """Replace the wrapped entries of a trainer state by the unwrapped parts' states."""
    for name, objects in parts.items():
        for key, obj in objects.items():
            get = getattr(obj, "state_dict", None)
            state[name][key] = get() if callable(get) else None


def load_parts(state: Mapping[str, Any], parts: Mapping[str, Mapping[str, Any]]) -> dict:
    """Load a portable state's entries into the unwrapped parts; the rest of the state.

    Returns a copy of ``state`` whose entries for the loaded parts are None (so that the
    trainer's ``load_state_dict`` loads everything else).
    """
    rest = dict(state)
    for name, objects in parts.items():
        rest[name] = dict(state[name])
        for key, obj in objects.items():
            if key in rest[name]:
                if rest[name][key] is not None:
                    obj.load_state_dict(rest[name][key])
                rest[name][key] = None
    return rest


@contextlib.contextmanager
def process_group(device: Any) -> Iterator[tuple[int, int]]:
    """``(rank, world size)`` of the process group ``pml eval`` runs in.

    The caller's group, one made for a ``torchrun`` launch (``WORLD_SIZE > 1``; destroyed
    afterwards), or ``(0, 1)``.
    """
    import torch.distributed as dist

    if not dist.is_available():
        yield 0, 1
        return
    if dist.is_initialized():
        yield dist.get_rank(), dist.get_world_size()
        return
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1 or "MASTER_ADDR" not in os.environ:
        yield 0, 1
        return
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield dist.get_rank(), dist.get_world_size()
        dist.barrier()  # leave together (see barrier)
    finally:
        dist.destroy_process_group()
