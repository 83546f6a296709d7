"""Optional faiss import: pml.eval imports and works without faiss."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

_INSTALL_HINT = (
    "install faiss-cpu (a dependency of pml-eval; `pip install faiss-cpu` or "
    "`pip install 'pml-eval[faiss]'`), or a GPU build of faiss"
)

_faiss: ModuleType | None = None
_tried = False


def get_faiss() -> ModuleType | None:
    """The faiss module, or None when it cannot be imported (tried once)."""
    global _faiss, _tried
    if not _tried:
        _tried = True
        try:
            _faiss = importlib.import_module("faiss")
        except ImportError:
            _faiss = None
    return _faiss


def faiss_available() -> bool:
    """``True`` when faiss can be imported."""
    return get_faiss() is not None


def require_faiss(what: str) -> Any:
    """The faiss module, or an ``ImportError`` naming ``what`` needs it and how to install it."""
    faiss = get_faiss()
    if faiss is None:
        raise ImportError(
            f"{what} needs faiss, which is not installed: {_INSTALL_HINT}. "
            "Without faiss use the plain-torch back-ends (TorchKNN, TorchKMeans)."
        )
    return faiss


def num_gpus(faiss: Any) -> int:
    """GPUs faiss can use (0 for CPU builds)."""
    fn = getattr(faiss, "get_num_gpus", None)
    return int(fn()) if fn is not None else 0
