"""Datasets beyond the reference: an image folder, precomputed features, scikit-learn's digits.

* :class:`ImageFolderDataset` — one sub-folder per class (``root/<class>/**/<image>``).
* :class:`FeaturesDataset` — a ``(N, ...)`` feature array with ``(N,)`` integer labels, from
  memory or from ``.npy``/``.npz`` files (read with ``allow_pickle=False``).
* :class:`DigitsDataset` — the 8x8 digits bundled with scikit-learn (1,797 images, 10
  classes; nothing downloads), split by samples (stratified) or by classes (open set).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from pml.core.validation import (
    check_bool,
    check_callable,
    check_int,
    check_option,
    check_real,
    check_type,
)

__all__ = ["DigitsDataset", "FeaturesDataset", "ImageFolderDataset"]

IMAGE_EXTENSIONS = (
    ".bmp",
    ".gif",
    ".jpeg",
    ".jpg",
    ".pgm",
    ".png",
    ".ppm",
    ".tif",
    ".tiff",
    ".webp",
)


class ImageFolderDataset(Dataset):
    """Images in one sub-folder per class: ``root/<class name>/**/<file>``.

    Class ``k`` is the k-th class folder in sorted name order; files are found recursively
    (hidden files and folders skipped) and listed in sorted path order.

    Args:
        root: the folder holding one sub-folder per class.
        transform: called on each PIL image.
        target_transform: called on each label (an int in ``0..C-1``).
        extensions: the file name endings to keep (case-insensitive), or None for every file.
            Default: the common image formats (``.jpg``, ``.png``, ...).
        mode: a PIL mode to convert each image to (e.g. ``"RGB"``); None (default) returns the
            image as stored, like the reference datasets.
        allow_empty: accept class folders without a matching file (their class index is kept,
            with no samples). Default False: such a folder is an error.

    Attributes:
        classes: the class folder names, sorted (``classes[k]`` is class ``k``).
        class_to_idx: ``{class name: k}``.
        paths: the image files, one per sample.
        labels: the class index of each sample (Python ints).

    Raises:
        FileNotFoundError: ``root`` does not exist, holds no class folder, or a class folder
            holds no matching file (unless ``allow_empty``).
        TypeError: an argument of the wrong type.

    Example:
        >>> ds = ImageFolderDataset("data/flowers", mode="RGB")  # doctest: +SKIP
        >>> ds.classes[:2], ds[0][1]  # doctest: +SKIP
        (['daisy', 'rose'], 0)
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        extensions: Iterable[str] | None = IMAGE_EXTENSIONS,
        mode: str | None = None,
        allow_empty: bool = False,
    ) -> None:
        check_type("root", root, (str, os.PathLike))
        check_callable("transform", transform)
        check_callable("target_transform", target_transform)
        check_type("mode", mode, str, allow_none=True)
        allow_empty = check_bool("allow_empty", allow_empty)
        if isinstance(extensions, str):
            extensions = (extensions,)
        if extensions is not None:
            extensions = tuple(extensions)
            for ext in extensions:
                check_type("extensions", ext, str)
            extensions = tuple(ext.lower() for ext in extensions)
        self.root = os.fspath(root)
        self.transform = transform
        self.target_transform = target_transform
        self.extensions = extensions
        self.mode = mode
        if not os.path.isdir(self.root):
            raise FileNotFoundError(
                f"root {self.root!r} is not a folder; expected one sub-folder per class "
                "(root/<class name>/<image files>)"
            )
        self.classes = sorted(
            e.name for e in os.scandir(self.root) if e.is_dir() and not e.name.startswith(".")
        )
        if not self.classes:
            raise FileNotFoundError(
                f"root {self.root!r} holds no class folder; expected one sub-folder per class "
                "(root/<class name>/<image files>)"
            )
        self.class_to_idx = {name: k for k, name in enumerate(self.classes)}
        self.paths: list[str] = []
        self.labels: list[int] = []
        for k, name in enumerate(self.classes):
            files = _files_under(os.path.join(self.root, name), extensions)
            if not files and not allow_empty:
                raise FileNotFoundError(
                    f"class folder {os.path.join(self.root, name)!r} holds no file ending in "
                    f"{extensions}; pass allow_empty=True to keep the class without samples"
                )
            self.paths.extend(files)
            self.labels.extend([k] * len(files))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, idx: int) -> tuple[Any, Any]:
        img = Image.open(self.paths[idx])
        img.load()
        if self.mode is not None and img.mode != self.mode:
            img = img.convert(self.mode)
        label: Any = self.labels[idx]
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return img, label


def _files_under(folder: str, extensions: tuple[str, ...] | None) -> list[str]:
    """The non-hidden files under ``folder`` (recursively) with a kept ending, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            if extensions is None or name.lower().endswith(extensions):
                found.append(os.path.join(dirpath, name))
    return sorted(found)


class FeaturesDataset(Dataset):
    """Precomputed features with integer labels: ``dataset[i] -> (features[i], labels[i])``.

    Args:
        features: a ``(N, ...)`` array or tensor, or a path: a ``.npz`` file holding the arrays
            ``features_key`` and (unless ``labels`` is given) ``labels_key``, or a ``.npy`` file
            holding the features (then ``labels`` is required). Files are read with
            ``allow_pickle=False``.
        labels: ``(N,)`` integer labels (array, tensor, sequence, or a ``.npy`` path); None
            reads them from the ``.npz`` file.
        features_key: the features' name in a ``.npz`` file.
        labels_key: the labels' name in a ``.npz`` file.
        dtype: the floating dtype of the returned features.
        transform: called on each feature tensor.
        target_transform: called on each label (a Python int).

    Attributes:
        features: ``(N, ...)`` tensor of ``dtype``.
        labels: the labels as Python ints.

    Raises:
        ValueError: ``labels`` missing or of another length than ``features``, a ``.npz``
            without the named array, an empty or 0-dim feature array.
        TypeError: non-integer labels, a non-floating ``dtype``, a file that is neither
            ``.npy`` nor ``.npz``.

    Example:
        >>> ds = FeaturesDataset(np.eye(3, dtype=np.float32), labels=[0, 1, 1])
        >>> x, y = ds[2]
        >>> x.tolist(), y
        ([0.0, 0.0, 1.0], 1)
    """

    def __init__(
        self,
        features: str | os.PathLike[str] | np.ndarray | torch.Tensor,
        labels: str | os.PathLike[str] | np.ndarray | torch.Tensor | Sequence[int] | None = None,
        *,
        features_key: str = "features",
        labels_key: str = "labels",
        dtype: torch.dtype = torch.float32,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
    ) -> None:
        check_type("features_key", features_key, str)
        check_type("labels_key", labels_key, str)
        check_type("dtype", dtype, torch.dtype)
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating dtype; got {dtype}")
        check_callable("transform", transform)
        check_callable("target_transform", target_transform)
        if isinstance(features, (str, os.PathLike)):
            features, stored_labels = _load_arrays(os.fspath(features), features_key, labels_key)
            if labels is None:
                labels = stored_labels
        if isinstance(labels, (str, os.PathLike)):
            labels = _load_arrays(os.fspath(labels), labels_key, None)[0]
        if labels is None:
            raise ValueError(
                "labels are required: pass labels=..., or a .npz file holding "
                f"{labels_key!r} beside {features_key!r}"
            )
        feats = torch.as_tensor(np.asarray(features) if not torch.is_tensor(features) else features)
        if feats.ndim == 0 or feats.shape[0] == 0:
            raise ValueError(
                f"features must have shape (N, ...) with N >= 1; got {tuple(feats.shape)}"
            )
        lab = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels)
        if lab.dtype.is_floating_point or lab.dtype.is_complex or lab.dtype == torch.bool:
            raise TypeError(f"labels must be integers; got dtype {lab.dtype}")
        if lab.ndim != 1 or lab.shape[0] != feats.shape[0]:
            raise ValueError(
                f"labels must have shape (N,) = ({feats.shape[0]},) to match features; "
                f"got {tuple(lab.shape)}"
            )
        self.features = feats.detach().to(device="cpu", dtype=dtype)
        self.labels: list[int] = lab.tolist()
        self.transform = transform
        self.target_transform = target_transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, idx: int) -> tuple[Any, Any]:
        x: Any = self.features[idx]
        y: Any = self.labels[idx]
        if self.transform is not None:
            x = self.transform(x)
        if self.target_transform is not None:
            y = self.target_transform(y)
        return x, y


def _load_arrays(path: str, key: str, labels_key: str | None) -> tuple[np.ndarray, Any]:
    """``(array, labels or None)`` from a ``.npy`` file or a ``.npz`` file's named arrays."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} does not exist")
    lower = path.lower()
    if lower.endswith(".npy"):
        return np.load(path, allow_pickle=False), None
    if not lower.endswith(".npz"):
        raise TypeError(f"expected a .npy or .npz file; got {path!r}")
    with np.load(path, allow_pickle=False) as archive:
        if key not in archive.files:
            raise ValueError(f"{path!r} holds no array {key!r}; it holds {sorted(archive.files)}")
        stored = archive[labels_key] if labels_key in archive.files else None
        return archive[key], stored


class DigitsDataset(Dataset):
    """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), bundled: no download.

    Two protocols:

    * ``"samples"`` (default): every class in both splits; a stratified, seeded
      ``train_test_split`` with ``test_size`` of the samples in ``"test"``.
    * ``"classes"`` (open set, as in metric learning): ``"train"`` holds the samples of
      ``train_classes``, ``"test"`` those of the other classes (``test_size`` is unused).

    Samples keep the order of ``load_digits()`` within a split; labels are the digits 0..9
    (not remapped: the test split of the class protocol has labels 5..9 by default).

    Args:
        split: ``"train"``, ``"test"`` or ``"train+test"`` (every sample).
        protocol: ``"samples"`` or ``"classes"``.
        test_size: the fraction of samples in ``"test"`` (protocol ``"samples"``), in (0, 1).
        seed: the split's random seed (protocol ``"samples"``).
        train_classes: the digits of ``"train"`` (protocol ``"classes"``); the rest are test.
        as_image: return ``(1, 8, 8)`` tensors instead of ``(64,)`` vectors.
        transform: called on each feature tensor.
        target_transform: called on each label (a Python int).

    Attributes:
        data: ``(N, 64)`` or ``(N, 1, 8, 8)`` float32 tensor, pixel values in [0, 1] (the
            dataset's 0..16 divided by 16).
        labels: the digits as Python ints.
        classes: the digits present in the split, sorted.

    Raises:
        ValueError: an unknown ``split``/``protocol``, ``test_size`` outside (0, 1), or
            ``train_classes`` empty, all ten, repeated or outside 0..9.

    Example:
        >>> train = DigitsDataset("train")
        >>> test = DigitsDataset("test")
        >>> len(train) + len(test), train[0][0].shape, train.classes == test.classes
        (1797, torch.Size([64]), True)
        >>> DigitsDataset("test", protocol="classes").classes
        [5, 6, 7, 8, 9]
    """

    def __init__(
        self,
        split: Literal["train", "test", "train+test"] = "train",
        protocol: Literal["samples", "classes"] = "samples",
        test_size: float = 0.3,
        seed: int = 0,
        train_classes: Sequence[int] = (0, 1, 2, 3, 4),
        as_image: bool = False,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
    ) -> None:
        from sklearn.datasets import load_digits

        check_option("split", split, ["train", "test", "train+test"])
        check_option("protocol", protocol, ["samples", "classes"])
        test_size = check_real("test_size", test_size, min=0, max=1, min_open=True, max_open=True)
        seed = check_int("seed", seed, min=0)
        as_image = check_bool("as_image", as_image)
        check_callable("transform", transform)
        check_callable("target_transform", target_transform)
        train_classes = _check_train_classes(train_classes)
        digits = load_digits()
        data = digits.data.astype(np.float32) / 16.0
        targets = digits.target.astype(np.int64)
        index = np.arange(len(targets))
        if split != "train+test" and protocol == "samples":
            from sklearn.model_selection import train_test_split

            train_idx, test_idx = train_test_split(
                index, test_size=test_size, random_state=seed, stratify=targets
            )
            index = np.sort(train_idx if split == "train" else test_idx)
        elif split != "train+test":
            in_train = np.isin(targets, train_classes)
            index = index[in_train if split == "train" else ~in_train]
        self.split = split
        self.protocol = protocol
        self.data = torch.from_numpy(data[index])
        if as_image:
            self.data = self.data.reshape(-1, 1, 8, 8)
        self.labels: list[int] = targets[index].tolist()
        self.classes: list[int] = sorted(set(self.labels))
        self.transform = transform
        self.target_transform = target_transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, idx: int) -> tuple[Any, Any]:
        x: Any = self.data[idx]
        y: Any = self.labels[idx]
        if self.transform is not None:
            x = self.transform(x)
        if self.target_transform is not None:
            y = self.target_transform(y)
        return x, y


def _check_train_classes(train_classes: Any) -> list[int]:
    if isinstance(train_classes, (str, bytes)) or not isinstance(train_classes, Iterable):
        raise TypeError(
            f"train_classes must be a sequence of digits; got {type(train_classes).__name__}"
        )
    out = [check_int("train_classes", c, min=0, max=9) for c in train_classes]
    if len(set(out)) != len(out):
        raise ValueError(f"train_classes must not repeat a digit; got {out}")
    if not 1 <= len(out) <= 9:
        raise ValueError(
            f"train_classes must hold 1 to 9 of the digits 0..9 (the rest are the test "
            f"classes); got {out}"
        )
    return out
