"""What ``pml eval``, ``pml embed`` and ``pml search`` share: a trained model and data for it.

* :func:`load_trained` loads the embedding model of a run folder or checkpoint (through
  :func:`pml.cli._run_folder.load_model`: weights-only, a file carrying code is refused) and
  the shape of the items it was trained on.
* the items a command reads (datasets, query files) are in :mod:`pml.cli._items`.
* :func:`embed` embeds a dataset in batches through :class:`pml.eval.InferenceModel`.
* :func:`run_distance` is the distance the run was evaluated with (the loss's, as
  ``pml train`` evaluates), :func:`resolve_device` reads ``--device``.

Every problem a user can fix raises :class:`~pml.cli._errors.UsageError` (one line, exit 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pml.cli._errors import UsageError

__all__ = [
    "TrainedModel",
    "add_device_arguments",
    "add_run_argument",
    "embed",
    "load_trained",
    "one_line",
    "resolve_device",
    "run_distance",
    "write_atomically",
]


@dataclasses.dataclass
class TrainedModel:
    """A trained embedding model and what it was trained with.

    Attributes:
        model: ``nn.Sequential(trunk, embedder)`` in eval mode on the chosen device.
        settings: the run's :class:`~pml.cli._settings.Settings`.
        checkpoint: the checkpoint file that was loaded.
        input_shape: the shape of one item the model takes.
        num_classes: the number of training classes (None when the checkpoint lacks it).
        epoch: the epoch the checkpoint was saved after (None when unknown).
    """

    model: nn.Module
    settings: Any
    checkpoint: Path
    input_shape: tuple[int, ...]
    num_classes: int | None
    epoch: int | None

    def describe(self) -> str:
        """``<checkpoint> (epoch N)`` for the commands' first line."""
        epoch = f" (epoch {self.epoch})" if self.epoch is not None else ""
        return f"{os.fspath(self.checkpoint)}{epoch}"


# ---------------------------------------------------------------------------- arguments
def add_run_argument(parser: argparse.ArgumentParser) -> None:
    """The positional ``RUN`` (``args.source``): a run folder or a checkpoint file."""
    parser.add_argument(
        "source",
        metavar="RUN",
        help="a run folder of pml train (its checkpoints/best.pth, else last.pth) or a "
        "checkpoint file",
    )


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--batch-size``."""
    parser.add_argument(
        "--device",
        default="auto",
        help="where the model runs: auto (CUDA when available), cpu, cuda or cuda:N "
        "(default: auto)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=256,
        metavar="N",
        help="items embedded at a time (default: 256)",
    )


def resolve_device(text: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else the CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"``.

    Raises:
        UsageError: another value, or CUDA asked for where it is not available.
    """
    value = str(text).strip().lower()
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if value == "cpu":
        return torch.device("cpu")
    if value == "cuda" or (value.startswith("cuda:") and value[5:].isdigit()):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {text}: CUDA is not available here; pass --device cpu")
        index = int(value[5:]) if ":" in value else 0
        if index >= torch.cuda.device_count():
            raise UsageError(f"--device {text}: there are {torch.cuda.device_count()} CUDA devices")
        return torch.device(value)
    raise UsageError(f"--device must be auto, cpu, cuda or cuda:N; got {text!r}")


def check_batch_size(value: int) -> int:
    """``--batch-size`` as a positive int (UsageError otherwise)."""
    if value < 1:
        raise UsageError(f"--batch-size must be >= 1; got {value}")
    return value


# ---------------------------------------------------------------------------- the model
def load_trained(run_or_checkpoint: str, device: torch.device) -> TrainedModel:
    """The model of a run folder or checkpoint file (see :class:`TrainedModel`).

    Raises:
        UsageError: a missing run or file, a file that is not a checkpoint of ``pml train``
            or that carries pickled code, weights that do not fit the run's model.
    """
    from pml.cli._run_folder import find_checkpoint, load_model

    file = find_checkpoint(run_or_checkpoint)
    try:
        model, settings = load_model(file, device=device)
    except UsageError as err:
        raise UsageError(one_line(str(err))) from None
    # load_model validated the file (weights only); read its "cli" entry without copying
    # the weights again (memory-mapped)
    try:
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # a file of torch's legacy (non-zip) format cannot be mapped
        state = torch.load(file, map_location="cpu", weights_only=True)
    cli = state.get("cli", {})
    epoch = state.get("epoch")
    num_classes = cli.get("num_classes")
    return TrainedModel(
        model=model,
        settings=settings,
        checkpoint=file,
        input_shape=tuple(int(s) for s in cli["input_shape"]),
        num_classes=None if num_classes is None else int(num_classes),
        epoch=None if epoch is None else int(epoch),
    )


def one_line(message: str) -> str:
    """``message`` on one line; torch's multi-line explanation of a refused file cut off."""
    cut = message.find("Weights only load failed")
    if cut >= 0:
        message = message[:cut].rstrip(" (:") + (
            ": it holds pickled objects other than tensors and plain containers; refused "
            "(weights-only loading), nothing in it was run)"
        )
    cut = message.find(" (weights_only load failed")
    if cut >= 0:
        message = message[:cut] + " (weights-only loading refused it; nothing in it was run)"
    return " ".join(message.split())


def run_distance(trained: TrainedModel) -> Any:
    """The distance the run ranks neighbours with: its loss's (as ``pml train`` evaluates).

    ``--distance`` of the run when it was given, else the distance the loss builds with the
    run's loss arguments (``LpDistance()`` for losses without one).

    Raises:
        UsageError: the run names a loss or distance this installation does not have.
    """
    from pml.cli import _registry as registry
    from pml.distances import LpDistance

    settings = trained.settings
    if settings.distance is not None:
        return registry.build("distance", settings.distance)
    loss_cls = registry.resolve("loss", settings.loss)
    kwargs = dict(settings.loss_args)
    try:
        params = inspect.signature(loss_cls).parameters
    except (TypeError, ValueError):
        params = {}
    embedding_size = getattr(settings, "embedding_size", None)
    for key, value in (("num_classes", trained.num_classes), ("embedding_size", embedding_size)):
        if key in params and key not in kwargs and value is not None:
            kwargs[key] = value
    loss = registry.build("loss", loss_cls.__name__, kwargs)
    distance = getattr(loss, "distance", None)
    return LpDistance() if distance is None else distance


# ---------------------------------------------------------------------------- embeddings
def inference_model(
    trained: TrainedModel, device: torch.device, normalize: bool, knn_func: Any = None
) -> Any:
    """A :class:`pml.eval.InferenceModel` around the trained model."""
    from pml.eval import InferenceModel

    return InferenceModel(
        trained.model,
        normalize_embeddings=normalize,
        knn_func=knn_func,
        data_device=device,
    )


def embed(
    trained: TrainedModel,
    dataset: Any,
    device: torch.device,
    batch_size: int,
    normalize: bool = False,
    inference: Any = None,
) -> torch.Tensor:
    """The embeddings ``(N, D)`` (float32, CPU) of every item of ``dataset``, in order.

    Raises:
        UsageError: the model fails on the items or gives NaN/inf embeddings.
    """
    inference = inference or inference_model(trained, device, normalize)
    try:
        emb = inference.get_embeddings_from_tensor_or_dataset(dataset, check_batch_size(batch_size))
    except ValueError as err:  # NaN/inf embeddings
        raise UsageError(f"the model's embeddings are unusable: {err}") from None
    except RuntimeError as err:  # shape errors inside a user's model
        raise UsageError(
            f"the model of {os.fspath(trained.checkpoint)!r} fails on the items: {err}"
        ) from None
    return emb.detach().to("cpu", torch.float32)


def write_atomically(path: Path, write: Any) -> None:
    """``write(file object)`` to ``path`` at once (temp file + rename; parents created).

    Raises:
        UsageError: the folder cannot be created or written.
    """
    from pml.core.io import atomic_write

    def _write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            write(fh)

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, _write)
    except OSError as err:
        raise UsageError(f"cannot write {os.fspath(path)!r}: {err}") from None
