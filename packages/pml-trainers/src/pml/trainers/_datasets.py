"""BaseDataset: the reference's dataset base class, reading files that are already on disk.

A dataset lists its images in ``paths`` and their labels in ``labels`` (Python lists, filled by
``generate_split``); ``dataset[i]`` opens ``paths[i]`` with Pillow (the image is **not**
converted: greyscale files stay mode ``"L"``) and returns ``(transform(image),
target_transform(label))``.

pml never downloads a dataset (no network access is assumed, and the archives' hosts move):
``download=True`` on a missing or empty ``root`` raises an error saying where to get the files
and which paths must exist under ``root``. A subclass that implements ``download_and_remove``
itself (as code written for the reference does) is called exactly like the reference calls it.

The four reference datasets live in ``_datasets_reference.py``.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

from PIL import Image
from torch.utils.data import Dataset

from pml.core.validation import check_bool, check_callable, check_option, check_type

__all__ = ["BaseDataset"]


class BaseDataset(ABC, Dataset):
    """Base of the image datasets: ``paths``/``labels`` lists, split selection, file checks.

    Subclasses implement :meth:`generate_split` (fill ``self.paths`` and ``self.labels`` for
    ``self.split``) and may declare the index files they read in ``required_files`` (paths
    relative to ``root``): they are checked before ``generate_split`` runs, and a missing one is
    a ``FileNotFoundError`` that lists every expected path. ``source`` and ``layout`` (class
    attributes, text) say where the files come from and where the images go; the errors quote
    them.

    Args:
        root: the folder holding the dataset's files.
        split: one of :meth:`get_available_splits` (``"train"``, ``"test"``, ``"train+test"``).
        transform: called on each PIL image (not converted to RGB: transforms must cope with
            greyscale images, e.g. ``ToTensor(mode="RGB")``).
        target_transform: called on each label (a Python int, the dataset's raw class id).
        download: the reference downloads the archive when ``root`` is missing or empty. pml
            does not: the built-in datasets raise ``FileNotFoundError`` saying where to get the
            files and where to put them. A non-empty ``root`` is read as with
            ``download=False``. Subclasses that implement :meth:`download_and_remove` are
            called as in the reference (``root`` created first).

    Attributes:
        root: ``root`` as a string.
        split: the selected split.
        paths: image file paths (``root`` joined), one per sample.
        labels: the raw class ids (Python ints), one per sample.

    Raises:
        ValueError: ``root`` does not exist (and ``download=False``), is not a folder, or
            ``split`` is not supported (the message lists the supported splits).
        FileNotFoundError: a file of ``required_files`` is missing (all expected paths are
            listed), or ``download=True`` on a missing/empty ``root`` of a dataset pml cannot
            download.
        TypeError: ``transform``/``target_transform`` not callable, ``download`` not a bool.
    """

    required_files: ClassVar[tuple[str, ...]] = ()
    """Index files read by :meth:`generate_split`, relative to ``root``."""
    source: ClassVar[str] = ""
    """Where to get the dataset (quoted in the errors)."""
    layout: ClassVar[str] = ""
    """Where the images go under ``root`` (quoted in the errors)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train+test",
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        download: bool = False,
    ) -> None:
        check_type("root", root, (str, os.PathLike))
        check_type("split", split, str)
        check_callable("transform", transform)
        check_callable("target_transform", target_transform)
        download = check_bool("download", download)
        self.root = os.fspath(root)
        self.transform = transform
        self.target_transform = target_transform
        self.split = split
        # Checked before any download: a typo in split never costs one.
        check_option("split", split, self.get_available_splits())
        if download and (not os.path.isdir(self.root) or not os.listdir(self.root)):
            if type(self).download_and_remove is not BaseDataset.download_and_remove:
                os.makedirs(self.root, exist_ok=True)
            self.download_and_remove()
        elif not os.path.exists(self.root):
            raise ValueError(
                f"root {self.root!r} does not exist. {self._where_files_go()}"
                + self._download_hint()
            )
        if not os.path.isdir(self.root):
            raise ValueError(f"root must be a folder; {self.root!r} is a file")
        self._check_required_files()
        self.paths: list[str] = []
        self.labels: list[int] = []
        self.generate_split()

    def get_available_splits(self) -> list[str]:
        """The values ``split`` accepts: ``["train", "test", "train+test"]``."""
        return ["train", "test", "train+test"]

    @abstractmethod
    def generate_split(self) -> None:
        """Fill ``self.paths`` and ``self.labels`` for ``self.split``."""

    def download_and_remove(self) -> None:
        """Download the archive into ``root``, extract it and delete it (reference API).

        pml's built-in datasets do not download: this raises ``FileNotFoundError`` saying where
        to get the files and which paths must exist under ``root``. Override it to download.

        Raises:
            FileNotFoundError: always (unless overridden).
        """
        raise FileNotFoundError(
            f"{type(self).__name__}(download=True): pml does not download datasets, and root "
            f"{self.root!r} is missing or empty. {self._where_files_go()}"
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, idx: int) -> tuple[Any, Any]:
        """Return ``(image, label)``: the PIL image as stored (no RGB conversion), transformed.

        Raises:
            FileNotFoundError: the image file is missing (the message names its path).
        """
        path, label = self.paths[idx], self.labels[idx]
        img = Image.open(path)
        img.load()  # read now, so the file is closed (no descriptor held per sample)
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return img, label

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={self.root!r}, split={self.split!r}, {len(self)} images)"
        )

    def _where_files_go(self, missing: tuple[str, ...] = ()) -> str:
        """The expected paths under ``root`` (``missing`` ones marked), layout and source."""
        name = type(self).__name__
        parts = []
        if self.required_files:
            listed = "\n".join(
                f"  {os.path.join(self.root, rel)}" + ("  (missing)" if rel in missing else "")
                for rel in self.required_files
            )
            parts.append(f"{name} expects these files:\n{listed}")
        if self.layout:
            parts.append(f"Images: {self.layout}.")
        if self.source:
            parts.append(f"Get the dataset from {self.source} and extract it into root.")
        return "\n".join(parts)

    def _download_hint(self) -> str:
        if type(self).download_and_remove is BaseDataset.download_and_remove:
            return ""
        return "\nYou should probably initialize the dataset with download=True."

    def _check_required_files(self) -> None:
        missing = tuple(
            rel for rel in self.required_files if not os.path.isfile(os.path.join(self.root, rel))
        )
        if missing:
            raise FileNotFoundError(
                f"{type(self).__name__}: {len(missing)} of its files are missing under root "
                f"{self.root!r}. {self._where_files_go(missing)}"
            )


def read_index_lines(path: str) -> list[tuple[int, str]]:
    """The non-blank lines of a text file as ``(line number (1-based), stripped text)``."""
    with open(path, encoding="utf-8") as f:
        return [(n, text.strip()) for n, text in enumerate(f, start=1) if text.strip()]


def parse_int(text: str, path: str, line: int, what: str) -> int:
    """``int(text)``, or a ``ValueError`` naming the file, the line and the field."""
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{path}, line {line}: {what} must be an integer; got {text!r}") from None


def split_fields(text: str, path: str, line: int, names: tuple[str, ...]) -> list[str]:
    """Split ``text`` at whitespace into ``len(names)`` fields (the last keeps any spaces)."""
    fields = text.split(None, len(names) - 1)
    if len(fields) < len(names):
        raise ValueError(
            f"{path}, line {line}: expected {len(names)} fields ({', '.join(names)}); got {text!r}"
        )
    return [f.strip() for f in fields]
