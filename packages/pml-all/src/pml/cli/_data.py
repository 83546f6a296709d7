"""The data of the ``pml`` command: the bundled digits, a folder of images, a features file.

* :func:`load_path` reads one data argument: ``"digits"`` (``"digits:train"``,
  ``"digits:test"``, ``"digits:train+test"``), a folder with one sub-folder of images per
  class, or a ``.npz`` file (``features`` and ``labels`` arrays) / ``.npy`` file (features;
  labels from ``--labels`` or ``<stem>_labels.npy`` beside it).
* :func:`load_data` gives the train and held-out splits of the settings: ``test_data`` when
  given, else ``data`` split by samples (stratified: every class in both splits) or by
  classes, seeded with ``split_seed``.

Every dataset returned has a ``labels`` list (Python ints) and ``class_names`` (label ->
name), and its items are ``(float tensor, int label)``. Images are decoded once, resized to
``image_size`` (RGB) and kept in memory as bytes, so a bad file is found before training
starts. Bad input raises :class:`~pml.cli._errors.UsageError` saying what to fix.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pml.cli._errors import UsageError

__all__ = ["DataSplits", "LabeledData", "dataset_stats", "labels_of", "load_data", "load_path"]

_NPZ_KEY_PAIRS = (("features", "labels"), ("embeddings", "labels"), ("x", "y"), ("X", "y"))
_DIGITS_SPLITS = ("train", "test", "train+test")


class LabeledData(Dataset):
    """Items ``(data[i] as float, labels[i])`` of an in-memory tensor.

    Args:
        data: ``(N, ...)`` tensor; ``uint8`` data (decoded images) is divided by 255.
        labels: ``N`` Python ints.
        class_names: label -> display name.
        source: what the data came from (for messages and reports).
    """

    def __init__(
        self,
        data: torch.Tensor,
        labels: Sequence[int],
        class_names: dict[int, str],
        source: str,
    ) -> None:
        self.data = data
        self.labels = [int(v) for v in labels]
        self.class_names = class_names
        self.source = source

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, int]:
        x = self.data[idx]
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x
        return x, self.labels[idx]

    def subset(self, index: np.ndarray, source: str) -> LabeledData:
        """The items at ``index`` (in that order)."""
        idx = torch.as_tensor(index, dtype=torch.long)
        labels = [self.labels[i] for i in index.tolist()]
        names = {k: v for k, v in self.class_names.items() if k in set(labels)}
        return LabeledData(self.data[idx], labels, names, source)


@dataclasses.dataclass
class DataSplits:
    """The training and held-out datasets of a run.

    Attributes:
        train: the training items ``(tensor, int label)``.
        test: the held-out items (queries and references of the evaluation).
        input_shape: the shape of one item's tensor.
        num_classes: the number of distinct training labels.
        description: one line: what the data is and how it was split.
    """

    train: LabeledData
    test: LabeledData
    input_shape: tuple[int, ...]
    num_classes: int
    description: str


def labels_of(dataset: Any) -> list[int]:
    """The labels of a dataset (its ``labels`` attribute, else every item's second value)."""
    labels = getattr(dataset, "labels", None)
    if labels is not None:
        return [int(v) for v in labels]
    return [int(dataset[i][1]) for i in range(len(dataset))]


def load_path(path: str | os.PathLike[str], settings: Any) -> LabeledData:
    """One data argument as a dataset (see the module docstring).

    Args:
        path: ``"digits[:train|test|train+test]"``, an image folder, or a features file.
        settings: the :class:`~pml.cli._settings.Settings` (``image_size``, ``labels``,
            and for the digits ``data_protocol``, ``test_size``, ``split_seed``).

    Raises:
        UsageError: a missing path, an empty class folder, an unreadable image or features
            file, features and labels of different lengths, non-integer labels.
    """
    text = os.fspath(path)
    name, _, split = text.partition(":")
    if name == "digits" and not os.path.exists(text):
        return _digits(split or "train+test", settings)
    file = Path(os.path.expanduser(text))
    if file.is_dir():
        return _image_folder(file, settings)
    if file.suffix.lower() in (".npz", ".npy"):
        if not file.is_file():
            raise UsageError(f"features file {text!r} does not exist")
        return _features(file, settings)
    if not file.exists():
        raise UsageError(
            f"data {text!r} does not exist; pass digits, a folder with one sub-folder of "
            "images per class, or a .npy/.npz features file"
        )
    raise UsageError(
        f"data {text!r} is neither a folder of class folders nor a .npy/.npz features file"
    )


def load_data(settings: Any) -> DataSplits:
    """The training and held-out splits of ``settings`` (see the module docstring).

    Raises:
        UsageError: bad data (see :func:`load_path`), a class with a single sample, too
            few classes to split by classes.
    """
    data_name, _, data_split = settings.data.partition(":")
    bundled = data_name == "digits" and not data_split and not os.path.exists(settings.data)
    if settings.test_data is None and bundled:
        train = _digits("train", settings)
        test = _digits("test", settings)
        how = _how(settings)
        if settings.data_protocol == "classes":
            how = "split by classes (digits 0-4 train, 5-9 held out)"
        return _splits(train, test, f"digits (scikit-learn's 8x8 digits), {how}")
    full = load_path(settings.data, settings)
    _require_two_per_class(full, settings.data)
    if settings.test_data is not None:
        test = load_path(settings.test_data, settings)
        train = full
        description = f"{full.source}; held out: {test.source}"
    else:
        train_idx, test_idx = split_indices(
            full.labels, settings.data_protocol, settings.test_size, settings.split_seed
        )
        train = full.subset(train_idx, full.source)
        test = full.subset(test_idx, full.source)
        description = f"{full.source}, {_how(settings)}"
    if train.data.shape[1:] != test.data.shape[1:]:
        raise UsageError(
            f"the held-out items have shape {tuple(test.data.shape[1:])} but the training "
            f"items {tuple(train.data.shape[1:])}; they must match"
        )
    return _splits(train, test, description)


def _how(settings: Any) -> str:
    pct = f"{settings.test_size * 100:g}%"
    if settings.data_protocol == "classes":
        return f"split by classes ({pct} of the classes held out, split seed {settings.split_seed})"
    return f"split by samples (stratified, {pct} held out, split seed {settings.split_seed})"


def _splits(train: LabeledData, test: LabeledData, description: str) -> DataSplits:
    if len(test) == len(set(test.labels)):
        raise UsageError(
            f"the held-out data ({test.source}, {len(test)} items) has no two items of one "
            "class, so retrieval cannot be measured; give it at least 2 items of some classes"
        )
    return DataSplits(
        train=train,
        test=test,
        input_shape=tuple(train.data.shape[1:]),
        num_classes=len(set(train.labels)),
        description=description,
    )


def split_indices(
    labels: Sequence[int], protocol: str, test_size: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices (sorted) of a split by samples or by classes.

    By samples, each class of ``n`` items puts ``round(n * test_size)`` of them in the test
    split, at least one and at most ``n - 1``; a class of 4 items or more puts 2 to ``n - 2``
    there (a single held-out item of a class could not be retrieved by the others). By classes, ``round(C * test_size)`` classes
    (at least one, at most ``C - 1``) go to the test split.
    """
    y = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    if protocol == "classes":
        if len(classes) < 2:
            raise UsageError(
                f"splitting by classes needs at least 2 classes; the data has {len(classes)}"
            )
        n_test = min(max(1, round(len(classes) * test_size)), len(classes) - 1)
        test_classes = rng.permutation(len(classes))[:n_test]
        in_test = np.isin(inverse, test_classes)
    else:
        # a random rank of each item inside its class; the lowest ranks go to the test split
        order = np.lexsort((rng.random(len(y)), inverse))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.empty(len(y), dtype=np.int64)
        rank[order] = np.arange(len(y)) - np.repeat(starts, counts)
        low = np.where(counts >= 4, 2, 1)
        high = np.where(counts >= 4, counts - 2, counts - 1)
        n_test = np.clip(np.round(counts * test_size).astype(np.int64), low, high)
        in_test = rank < n_test[inverse]
    index = np.arange(len(y))
    return index[~in_test], index[in_test]


def _require_two_per_class(data: LabeledData, what: str) -> None:
    counts = Counter(data.labels)
    lone = sorted(k for k, c in counts.items() if c < 2)
    if lone:
        names = ", ".join(repr(data.class_names.get(k, str(k))) for k in lone[:5])
        more = f" and {len(lone) - 5} more" if len(lone) > 5 else ""
        raise UsageError(
            f"class {names}{more} of {what!r} has a single sample; every class needs at least "
            "2 (add samples or remove the class)"
        )


def dataset_stats(dataset: Any) -> dict[str, Any]:
    """Items, classes, the smallest and largest class, and lone queries of a dataset.

    A lone query is an item whose class has no other item in the dataset: it has no
    positive to retrieve, so retrieval metrics skip it.
    """
    labels = labels_of(dataset)
    counts = Counter(labels)
    names = getattr(dataset, "class_names", {}) or {}
    smallest = min(counts.items(), key=lambda kv: (kv[1], kv[0])) if counts else (None, 0)
    largest = max(counts.items(), key=lambda kv: (kv[1], -kv[0])) if counts else (None, 0)
    return {
        "items": len(labels),
        "classes": len(counts),
        "smallest_class": names.get(smallest[0], str(smallest[0])),
        "smallest_class_items": smallest[1],
        "largest_class": names.get(largest[0], str(largest[0])),
        "largest_class_items": largest[1],
        "lone_queries": sum(1 for c in counts.values() if c == 1),
    }


# ---------------------------------------------------------------------------- sources
def _digits(split: str, settings: Any) -> LabeledData:
    from pml.trainers import DigitsDataset

    if split not in _DIGITS_SPLITS:
        raise UsageError(f"digits split must be one of {', '.join(_DIGITS_SPLITS)}; got {split!r}")
    ds = DigitsDataset(
        split,  # type: ignore[arg-type]
        protocol=settings.data_protocol,
        test_size=settings.test_size,
        seed=settings.split_seed,
    )
    names = {k: str(k) for k in ds.classes}
    return LabeledData(ds.data, ds.labels, names, f"digits:{split}")


def _image_folder(root: Path, settings: Any) -> LabeledData:
    from pml.trainers import Compose, ImageFolderDataset, Resize, ToTensor

    size = settings.image_size
    transform = Compose([Resize((size, size)), ToTensor(mode="RGB")])
    try:
        ds = ImageFolderDataset(root, transform=transform, allow_empty=True)
    except FileNotFoundError:
        raise UsageError(
            f"data folder {os.fspath(root)!r} holds no class folder; put the images of each "
            f"class in a sub-folder ({os.fspath(root / '<class name>')}/...)"
        ) from None
    counts = Counter(ds.labels)
    empty = [name for k, name in enumerate(ds.classes) if counts[k] == 0]
    if empty:
        raise UsageError(
            f"class folder {os.fspath(root / empty[0])!r} holds no image (.png, .jpg, ...); "
            "add images or remove the folder"
        )
    pixels = torch.empty((len(ds), 3, size, size), dtype=torch.uint8)
    for i, file in enumerate(ds.paths):
        try:
            image, _ = ds[i]
        except Exception as err:  # PIL raises many types for damaged or foreign files
            raise UsageError(
                f"cannot read image {file!r} ({type(err).__name__}: {err}); fix or remove the file"
            ) from None
        pixels[i] = image.mul(255).round_().to(torch.uint8)
    names = dict(enumerate(ds.classes))
    return LabeledData(pixels, ds.labels, names, f"image folder {os.fspath(root)}")


def _features(file: Path, settings: Any) -> LabeledData:
    text = os.fspath(file)
    try:
        if file.suffix.lower() == ".npz":
            with np.load(file, allow_pickle=False) as archive:
                keys = _npz_keys(archive.files, text)
                features, labels = archive[keys[0]], archive[keys[1]]
        else:
            features = np.load(file, allow_pickle=False)
            labels = np.load(_labels_file(file, settings), allow_pickle=False)
    except UsageError:
        raise
    except Exception as err:  # numpy raises ValueError/OSError/EOFError for damaged files
        raise UsageError(f"cannot read features file {text!r}: {err}") from None
    if features.ndim < 2 or features.shape[0] == 0:
        raise UsageError(
            f"features in {text!r} must have shape (items, dims...); got {features.shape}"
        )
    if not (np.issubdtype(features.dtype, np.number) or features.dtype == np.bool_):
        raise UsageError(f"features in {text!r} must be numbers; got dtype {features.dtype}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
        raise UsageError(
            f"features file {text!r} has {features.shape[0]} feature rows but labels of shape "
            f"{labels.shape}: give exactly one label per row"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise UsageError(f"labels of {text!r} must be integers; got dtype {labels.dtype}")
    data = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    bad = int((~torch.isfinite(data)).sum())
    if bad:
        raise UsageError(f"features in {text!r} hold {bad} NaN or infinite values; clean them")
    values = labels.astype(np.int64).tolist()
    names = {k: str(k) for k in set(values)}
    return LabeledData(data, values, names, f"features {text}")


def _npz_keys(files: list[str], text: str) -> tuple[str, str]:
    for pair in _NPZ_KEY_PAIRS:
        if pair[0] in files and pair[1] in files:
            return pair
    if len(files) == 2 and "labels" in files:
        return next(f for f in files if f != "labels"), "labels"
    raise UsageError(
        f"features file {text!r} holds the arrays {sorted(files)}; expected 'features' and "
        "'labels' (np.savez(path, features=..., labels=...))"
    )


def _labels_file(file: Path, settings: Any) -> Path:
    if getattr(settings, "labels", None):
        labels = Path(os.path.expanduser(settings.labels))
        if not labels.is_file():
            raise UsageError(f"labels file {os.fspath(labels)!r} does not exist")
        return labels
    for candidate in (
        file.with_name(f"{file.stem}_labels.npy"),
        file.with_name(f"{file.stem}.labels.npy"),
    ):
        if candidate.is_file():
            return candidate
    raise UsageError(
        f"features file {os.fspath(file)!r} comes without labels: pass --labels FILE.npy, put "
        f"them beside it as {file.stem}_labels.npy, or save both in a .npz "
        "(np.savez(path, features=..., labels=...))"
    )
