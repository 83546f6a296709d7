"""The items ``pml eval``, ``pml embed`` and ``pml search`` read, for a trained model.

* :func:`load_dataset` loads a data argument with the run's settings (image size, labels
  file), by default the run's held-out split, and :func:`check_fits` refuses items of
  another shape than the model's (a features file of the wrong width, say).
* :func:`load_queries` reads ``pml search``'s queries: image files, or one data argument
  (labelled or not).

Every problem a user can fix raises :class:`~pml.cli._errors.UsageError` (one line, exit 2).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pml.cli._errors import UsageError
from pml.cli._loading import TrainedModel

__all__ = [
    "IMAGE_SUFFIXES",
    "check_fits",
    "item_shape",
    "label_name",
    "load_dataset",
    "load_queries",
]

#: file suffixes read as single query images by :func:`load_queries`
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


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
