"""Reading k-NN index files: TorchKNN's tensor files and faiss's flat L2 files (no faiss).

An index saved by ``FaissKNN`` (``IndexFlatL2``, InferenceModel's default where faiss is
installed) loads into ``TorchKNN`` (the default where it is not), and a ``TorchKNN`` file
loads into ``FaissKNN``. Anything else gets a ``ValueError`` naming the file and saying why.
"""

from __future__ import annotations

import os
import pickle
import struct
import zipfile
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["TORCH_FORMAT", "file_kind", "read_faiss_flat_l2", "read_torch_index"]

TORCH_FORMAT = "pml.eval.TorchKNN"

_ZIP_MAGIC = b"PK\x03\x04"
#: faiss ``IndexFlatL2``: magic, d (int32), ntotal (int64), two int64 fields, is_trained
#: (uint8), metric type (int32, 1 = L2), number of floats (int64), then the float32 rows.
_FLAT_L2_MAGIC = b"IxF2"
_FLAT_HEADER = struct.Struct("<4siqqqBiq")
_METRIC_L2 = 1


def _name(filename: str | os.PathLike[str]) -> str:
    return repr(os.fspath(filename))


def file_kind(filename: str | os.PathLike[str]) -> str:
    """``"torch"`` (a zip written by ``torch.save``), ``"faiss"`` or ``"unknown"``.

    Raises:
        FileNotFoundError: no such file (and the other ``OSError`` of ``open``).
    """
    with open(filename, "rb") as f:
        magic = f.read(4)
    if magic == _ZIP_MAGIC:
        return "torch"
    if len(magic) == 4 and magic[:1] == b"I" and magic.isascii() and magic.isalnum():
        return "faiss"  # faiss index files start with a four-letter code such as "IxF2"
    return "unknown"


def read_torch_index(filename: str | os.PathLike[str]) -> Tensor:
    """The ``(M, D)`` index tensor of a file written by ``TorchKNN.save``.

    Loaded with ``weights_only=True`` (no code is unpickled).

    Raises:
        ValueError: the file is not a TorchKNN index file (the message names it).
    """
    kind = file_kind(filename)
    if kind != "torch":
        # fix: torch.load's legacy reader raised IndexError/struct.error on short files
        what = "a faiss index file" if kind == "faiss" else "not a torch zip file"
        raise ValueError(f"filename {_name(filename)} is not a {TORCH_FORMAT} index file ({what})")
    try:
        payload: Any = torch.load(filename, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        kind = "a damaged torch file"
        raise ValueError(
            f"filename {_name(filename)} is not a {TORCH_FORMAT} index file ({kind}: {exc})"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != TORCH_FORMAT:
        raise ValueError(f"filename {_name(filename)} is not a {TORCH_FORMAT} index file")
    index = payload.get("index")
    if not isinstance(index, Tensor) or index.ndim != 2 or not index.dtype.is_floating_point:
        got = (
            f"shape {tuple(index.shape)} {index.dtype}"
            if isinstance(index, Tensor)
            else type(index).__name__
        )
        raise ValueError(
            f"filename {_name(filename)} is a damaged {TORCH_FORMAT} index file: its 'index' "
            f"must be a 2-D floating tensor; got {got}"
        )
    return index


def read_faiss_flat_l2(filename: str | os.PathLike[str]) -> Tensor:
    """The ``(ntotal, d)`` float32 rows of a faiss ``IndexFlatL2`` file, without faiss.

    Raises:
        ValueError: another faiss index type or an unexpected layout (the message says that
            faiss is needed to read it).
    """
    with open(filename, "rb") as f:
        header = f.read(_FLAT_HEADER.size)
        size = os.fstat(f.fileno()).st_size
    need_faiss = (
        "only IndexFlatL2 files load without faiss; install faiss-cpu and load it with "
        "FaissKNN (or InferenceModel with faiss installed)"
    )
    if file_kind(filename) != "faiss":
        raise ValueError(f"filename {_name(filename)} is not a faiss index file")
    if header[:4] != _FLAT_L2_MAGIC:
        raise ValueError(
            f"filename {_name(filename)} is a faiss index of type {header[:4]!r}, which "
            f"TorchKNN cannot read: {need_faiss}"
        )
    if len(header) < _FLAT_HEADER.size:
        raise ValueError(f"filename {_name(filename)} is a truncated faiss index file")
    _, dim, ntotal, _, _, _, metric, count = _FLAT_HEADER.unpack(header)
    expected_size = _FLAT_HEADER.size + 4 * count
    if (
        metric != _METRIC_L2
        or dim <= 0
        or ntotal < 0
        or count != dim * ntotal
        or size != expected_size
    ):
        raise ValueError(
            f"filename {_name(filename)} has an IndexFlatL2 layout TorchKNN does not know "
            f"(d={dim}, ntotal={ntotal}, metric={metric}, {size} bytes): {need_faiss}"
        )
    data = np.fromfile(os.fspath(filename), dtype="<f4", count=count, offset=_FLAT_HEADER.size)
    return torch.from_numpy(data.astype(np.float32).reshape(ntotal, dim))
