"""HookContainer's checkpoint files, written, pruned and loaded.

``checkpoint_<suffix>.pth`` holds the trainer's whole state (exact resume); the reference's
per-object ``<key>_<suffix>.pth`` files are written beside it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pml.core import config
from pml.core.io import atomic_write
from pml.trainers._checkpoint import load_checkpoint, save_checkpoint

__all__ = ["load_latest_checkpoint", "save_checkpoint_files", "saveable_objects", "unwrap"]

_CHECKPOINT = "checkpoint"
_HOOKS_KEY = "hooks"
_SUFFIX = re.compile(r"^(best)?(\d+)$")


def unwrap(obj: Any) -> Any:
    """The module inside ``DataParallel``/``DistributedDataParallel``."""
    if isinstance(obj, nn.DataParallel | nn.parallel.DistributedDataParallel):
        return obj.module
    return obj


def saveable_objects(trainer: Any, names: list[str]) -> dict[str, Any]:
    """Key -> object of the trainer's dicts ``names`` whose objects have a ``state_dict``."""
    objects: dict[str, Any] = {}
    for name in names:
        for key, obj in (getattr(trainer, name, None) or {}).items():
            if callable(getattr(unwrap(obj), "state_dict", None)):
                objects[key] = obj
    return objects


def save_checkpoint_files(
    trainer: Any,
    model_folder: str | os.PathLike[str],
    curr_suffix: int | str,
    objects: dict[str, Any],
    writer: Any,
) -> None:
    """Write checkpoint ``curr_suffix`` and delete the one it replaces.

    Writes ``checkpoint_<suffix>.pth`` (``trainer.state_dict()``, if the trainer has it,
    plus the row counts of ``writer``'s tables, which make a resume continue the logs
    exactly) and ``<key>_<suffix>.pth`` (each object's ``state_dict()``) for every entry
    of ``objects`` (:func:`saveable_objects`). Then deletes the files of the same series
    (numbered, or ``best``-numbered) other than ``curr_suffix``. Write errors are logged,
    not raised.
    """
    folder = Path(os.fspath(model_folder))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if callable(getattr(trainer, "state_dict", None)):
            state = dict(trainer.state_dict())
            counts = {} if writer is None else writer.row_counts()
            state[_HOOKS_KEY] = {"record_counts": counts}
            save_checkpoint(folder / f"{_CHECKPOINT}_{curr_suffix}.pth", state)
        for key, obj in objects.items():
            state_dict = unwrap(obj).state_dict()
            path = folder / f"{key}_{curr_suffix}.pth"
            atomic_write(path, lambda tmp, sd=state_dict: torch.save(sd, tmp))
    except OSError as err:
        config.LOGGER.warning("could not save models to %s: %s", os.fspath(folder), err)
        return
    keep = str(curr_suffix)
    series_is_best = keep.startswith("best")
    for key in [_CHECKPOINT, *objects]:
        for path in folder.glob(f"{key}_*.pth"):
            match = _SUFFIX.match(path.name[len(key) + 1 : -len(".pth")])
            if match is None or bool(match.group(1)) != series_is_best:
                continue
            if path.name[len(key) + 1 : -len(".pth")] != keep:
                try:
                    path.unlink()
                except OSError as err:
                    config.LOGGER.warning("could not delete %s: %s", os.fspath(path), err)


def load_latest_checkpoint(
    trainer: Any,
    model_folder: str | os.PathLike[str],
    device: torch.device | str | None,
    best: bool,
    objects: dict[str, Any],
    writer: Any,
) -> int:
    """Load the latest (or best) checkpoint in ``model_folder`` into ``trainer``.

    Prefers ``checkpoint_<suffix>.pth`` (the whole trainer state: exact resume; records
    written after it are dropped so the resumed logs continue without duplicates), else
    the per-object ``<key>_<suffix>.pth`` files (missing ones are skipped with a
    warning; a ``module.`` prefix from DataParallel is stripped if needed).

    Returns:
        the epoch to resume from: the checkpoint's epoch + 1 (1 when there is none).
    """
    folder = Path(os.fspath(model_folder))
    versions: dict[int, set[str]] = {}
    for key in (_CHECKPOINT, "trunk"):
        for path in folder.glob(f"{key}_*.pth"):
            match = _SUFFIX.match(path.name[len(key) + 1 : -len(".pth")])
            if match is not None and bool(match.group(1)) == best:
                versions.setdefault(int(match.group(2)), set()).add(key)
    if not versions:
        config.LOGGER.warning(
            "no saved %smodels in %s; starting at epoch 1",
            "best " if best else "",
            os.fspath(folder),
        )
        return 1
    version = max(versions)
    suffix = f"best{version}" if best else str(version)
    if _CHECKPOINT in versions[version] and callable(getattr(trainer, "load_state_dict", None)):
        state = load_checkpoint(folder / f"{_CHECKPOINT}_{suffix}.pth", map_location=device)
        hooks_state = state.pop(_HOOKS_KEY, None) or {}
        trainer.load_state_dict(state)
        counts = hooks_state.get("record_counts")
        if counts and writer is not None and not best:
            writer.truncate(counts)
    else:
        _load_per_object(objects, folder, suffix, device)
    config.LOGGER.info("loaded checkpoint %s from %s", suffix, os.fspath(folder))
    return version + 1


def _load_per_object(
    objects: dict[str, Any], folder: Path, suffix: str, device: torch.device | str | None
) -> None:
    for key, obj in objects.items():
        path = folder / f"{key}_{suffix}.pth"
        if not path.is_file():
            config.LOGGER.warning("%s not found; %s is not loaded", os.fspath(path), key)
            continue
        state_dict = torch.load(path, map_location=device, weights_only=True)
        target = unwrap(obj)
        try:
            target.load_state_dict(state_dict)
        except (KeyError, RuntimeError):
            stripped = {
                (k[len("module.") :] if k.startswith("module.") else k): v
                for k, v in state_dict.items()
            }
            target.load_state_dict(stripped)
