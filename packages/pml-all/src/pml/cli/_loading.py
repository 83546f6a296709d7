"""What ``pml eval``, ``pml embed`` and ``pml search`` share: a trained model and data for it.

* :func:`load_trained` loads the embedding model of a run folder or checkpoint (through
  :func:`pml.cli._run_folder.load_model`: weights-only, a file carrying code is refused) and
  the shape of the items it was trained on.
* :func:`load_dataset` loads a data argument with the run's settings (image size, labels
  file), by default the run's held-out split, and :func:`check_fits` refuses items of
  another shape than the model's (a features file of the wrong width, say).
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pml.cli._errors import UsageError

__all__ = [
    "IMAGE_SUFFIXES",
    "TrainedModel",
    "add_device_arguments",
    "add_run_argument",
    "check_fits",
    "embed",
    "label_name",
    "load_dataset",
    "load_queries",
    "load_trained",
    "one_line",
    "resolve_device",
    "run_distance",
    "write_atomically",
]

#: file suffixes read as single query images by :func:`load_queries`
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


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


# ---------------------------------------------------------------------------- data
def load_dataset(trained: TrainedModel, data: str | None, option: str = "--data") -> Any:
    """A data argument read with the run's settings; None: the run's held-out split.

    Args:
        trained: the model (its settings say how images are sized, where labels are).
        data: ``digits[:train|test|train+test]``, an image folder (one sub-folder per
            class), a ``.npz`` features file, or a ``.npy`` one with its labels beside it.
        option: the option that gave ``data`` (for messages).

    Raises:
        UsageError: the data cannot be read (see :func:`pml.cli._data.load_path`), its
            items do not fit the model, or (``data=None``) the run's data is gone.
    """
    from pml.cli._data import load_data, load_path

    if data is None:
        try:
            dataset = load_data(trained.settings).test
        except UsageError as err:
            raise UsageError(
                f"cannot load the run's held-out data ({err}); pass {option} DATA"
            ) from None
        check_fits(trained, dataset, "the run's held-out data")
        return dataset
    dataset = load_path(data, trained.settings)
    check_fits(trained, dataset, f"{option} {data}")
    return dataset


def check_fits(trained: TrainedModel, dataset: Any, what: str) -> None:
    """UsageError unless the items of ``dataset`` have the shape the model was trained on."""
    shape = item_shape(dataset)
    if shape is not None and shape != trained.input_shape:
        raise UsageError(
            f"{what} has items of shape {shape} but the model of {os.fspath(trained.checkpoint)!r} "
            f"takes items of shape {trained.input_shape}; give data like the run's training data"
        )
    if len(dataset) == 0:
        raise UsageError(f"{what} holds no items")


def item_shape(dataset: Any) -> tuple[int, ...] | None:
    """The shape of one item (None for an empty dataset without a data tensor)."""
    data = getattr(dataset, "data", None)
    if isinstance(data, torch.Tensor):
        return tuple(int(s) for s in data.shape[1:])
    if len(dataset) == 0:
        return None
    return tuple(int(s) for s in dataset[0][0].shape)


def load_queries(trained: TrainedModel, items: Sequence[str]) -> Any:
    """The query items of ``pml search``: a data argument, image files, or unlabelled features.

    ``items`` is either one data argument (as :func:`load_dataset`; a ``.npy`` features file
    without labels beside it is read unlabelled), or one or more image files (resized like
    the run's images). The result is a :class:`~pml.cli._data.LabeledData` with ``ids``
    naming each query (a file name, else a row) and ``labelled`` (False: the labels are
    placeholders).

    Raises:
        UsageError: unreadable items, items that do not fit the model.
    """
    from pml.cli._data import LabeledData

    paths = [Path(os.path.expanduser(p)) for p in items]
    if all(p.suffix.lower() in IMAGE_SUFFIXES for p in paths):
        data = _read_images(paths, trained.settings.image_size)
        dataset = LabeledData(data, [-1] * len(paths), {}, "query images")
        dataset.labelled = False  # type: ignore[attr-defined]
        dataset.ids = [os.fspath(p) for p in items]  # type: ignore[attr-defined]
        check_fits(trained, dataset, "the query images")
        return dataset
    if len(items) != 1:
        raise UsageError(
            "--query takes one data argument (a folder, a features file, digits) or image "
            f"files; got {len(items)} arguments of which some are not images"
        )
    path = paths[0]
    if path.suffix.lower() == ".npy" and path.is_file() and not _has_labels(path, trained):
        dataset = _unlabelled_features(path, trained)
    else:
        dataset = load_dataset(trained, items[0], "--query")
        dataset.labelled = True
    dataset.ids = list(range(len(dataset)))  # type: ignore[attr-defined]
    return dataset


def _has_labels(path: Path, trained: TrainedModel) -> bool:
    if getattr(trained.settings, "labels", None):
        return False  # the run's own labels file belongs to its own data
    return any(
        p.is_file()
        for p in (
            path.with_name(f"{path.stem}_labels.npy"),
            path.with_name(f"{path.stem}.labels.npy"),
        )
    )


def _unlabelled_features(path: Path, trained: TrainedModel) -> Any:
    from pml.cli._data import LabeledData

    text = os.fspath(path)
    try:
        features = np.load(path, allow_pickle=False)
    except Exception as err:  # numpy raises ValueError/OSError/EOFError for damaged files
        raise UsageError(f"cannot read features file {text!r}: {err}") from None
    if not np.issubdtype(features.dtype, np.number):
        raise UsageError(f"features in {text!r} must be numbers; got dtype {features.dtype}")
    if features.shape == trained.input_shape:
        features = features[None]  # one item
    data = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    if data.ndim < 2:
        raise UsageError(
            f"features in {text!r} must have shape (items, dims...); got {features.shape}"
        )
    if not bool(torch.isfinite(data).all()):
        raise UsageError(f"features in {text!r} hold NaN or infinite values; clean them")
    dataset = LabeledData(data, [-1] * data.shape[0], {}, f"features {text}")
    dataset.labelled = False  # type: ignore[attr-defined]
    check_fits(trained, dataset, f"--query {text}")
    return dataset


def _read_images(paths: Sequence[Path], size: int) -> torch.Tensor:
    """Images resized to ``size`` x ``size`` RGB, as ``uint8`` ``(N, 3, size, size)``.

    The same decoding as an image folder's (:mod:`pml.cli._data`), so a query image embeds
    exactly as it would inside a folder.
    """
    from pml.trainers import Compose, Resize, ToTensor

    try:
        from PIL import Image
    except ImportError:  # pml-trainers depends on pillow; a broken install may lack it
        raise UsageError("reading images needs pillow: pip install pillow") from None
    transform = Compose([Resize((size, size)), ToTensor(mode="RGB")])
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    for i, path in enumerate(paths):
        if not path.is_file():
            raise UsageError(f"query image {os.fspath(path)!r} does not exist")
        try:
            with Image.open(path) as image:
                image.load()
                tensor = transform(image.convert("RGB"))
        except Exception as err:  # PIL raises many types for damaged or foreign files
            raise UsageError(
                f"cannot read image {os.fspath(path)!r} ({type(err).__name__}: {err})"
            ) from None
        out[i] = tensor.mul(255).round_().to(torch.uint8)
    return out


def label_name(dataset: Any, label: int | None) -> str:
    """The display name of ``label`` in ``dataset`` (its class folder's name for images)."""
    if label is None:
        return ""
    names = getattr(dataset, "class_names", None) or {}
    return str(names.get(int(label), int(label)))


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
