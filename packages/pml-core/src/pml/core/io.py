"""Files written all at once: :func:`atomic_write` (temp file + fsync + rename).

Used by pml-eval (k-NN indexes) and pml-trainers (checkpoints, records): a crash mid-write
never leaves a half-written file in place of a good one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write"]


def _create_temp(target: Path) -> Path:
    """A new empty file beside ``target``, created with mode 0o666 (the umask applies)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"could not create a temporary file beside {os.fspath(target)!r}")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; best effort, errors ignored)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(filename: str | os.PathLike[str], write: Callable[[str], Any]) -> None:
    """Write ``filename`` all at once: ``write(tmp_path)``, then rename over ``filename``.

    The temporary file is created in the same directory with mode ``0o666`` minus the umask
    (what ``open(filename, "w")`` would give, not ``mkstemp``'s 0600), synced to disk
    before the rename, and the directory is synced after it (POSIX, best effort). On any
    failure the temporary file is removed and an existing ``filename`` is left intact.

    Args:
        filename: the file to (re)place.
        write: ``fn(path)`` writing the whole content to ``path`` (e.g. ``torch.save``).
    """
    target = Path(os.fspath(filename))
    tmp = _create_temp(target)
    try:
        write(os.fspath(tmp))
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(target.parent)
