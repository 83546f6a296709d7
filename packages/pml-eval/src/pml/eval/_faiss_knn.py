"""FaissKNN: exact faiss search (IndexFlatL2), and faiss searches in blocks of queries."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pml.core import config
from pml.core.io import atomic_write
from pml.core.validation import check_finite, check_type
from pml.eval import functional as EF
from pml.eval._faiss import num_gpus, require_faiss
from pml.eval._index_files import file_kind, read_torch_index
from pml.eval._io import check_dim, to_numpy_f32
from pml.eval._knn import IndexNotReadyError, _clamp_k, _index_embeddings, _search_inputs

__all__ = ["FaissKNN", "faiss_flat_l2_blocks"]

#: query rows per faiss search call in the block-wise searches (bounds the result arrays)
_FAISS_ROWS = 16384


def _gpu_k_limit() -> int:
    cuda = torch.version.cuda
    if cuda is not None and tuple(int(v) for v in cuda.split(".")[:2]) < (9, 5):
        return 1024
    return 2048


class FaissKNN:
    """k-NN with a faiss index (default ``IndexFlatL2``: squared L2 distances).

    Args:
        reset_before: build a fresh index (``index_init_fn(dim)``) at each call.
        reset_after: drop the index after each call.
        index_init_fn: ``callable(dim) -> faiss index``; None means ``faiss.IndexFlatL2``.
        gpus: list/tuple of GPU ids to search on (faiss GPU builds only).

    Raises:
        ImportError: faiss is not installed (the message says how to install it).
        TypeError: ``gpus`` is not a list or tuple.
        ValueError: ``gpus`` is empty.
    """

    def __init__(
        self,
        reset_before: bool = True,
        reset_after: bool = True,
        index_init_fn: Callable[[int], Any] | None = None,
        gpus: Sequence[int] | None = None,
    ) -> None:
        faiss = require_faiss("FaissKNN")
        check_type("gpus", gpus, (list, tuple), allow_none=True)
        if gpus is not None and len(gpus) == 0:
            raise ValueError("gpus must not be empty; pass None to use all GPUs")
        self.reset_before = reset_before
        self.reset_after = reset_after
        self.index_init_fn = faiss.IndexFlatL2 if index_init_fn is None else index_init_fn
        self.gpus = gpus
        self.index: Any = None

    def __call__(
        self,
        query: Tensor,
        k: int,
        reference: Tensor | None = None,
        ref_includes_query: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """Search ``k`` neighbours (``k + 1`` then self removal with ``ref_includes_query``).

        Returns:
            ``(distances (N, k) float32, indices (N, k) int64)`` on ``query``'s device.
            An approximate index that finds fewer than ``k`` neighbours pads with index
            ``-1`` (faiss's convention; :class:`AccuracyCalculator` rejects such results).

        Raises:
            IndexNotReadyError: ``reset_before=False`` and no index was trained or loaded, or
                ``reset_before=True`` without ``reference`` (the new index would be empty).
            TypeError: ``k`` is not an int.
            ValueError: a negative ``k``; query/reference not 2-D, of different dims (or not
                the index's), or holding NaN/inf.
        """
        faiss = require_faiss("FaissKNN")
        k, query_t, ref_t = _search_inputs(k, query, reference)
        device = query_t.device
        dim = query_t.shape[1]
        check_finite(query_t, "query")
        if ref_t is not None:
            check_finite(ref_t, "reference")
        config.LOGGER.info("running k-nn with k=%d", k)
        config.LOGGER.info("embedding dimensionality is %d", dim)
        if self.reset_before and ref_t is None:
            # fix: a fresh (empty) index was searched and faiss raised a bare AssertionError
            raise IndexNotReadyError(
                "FaissKNN(reset_before=True) builds a new index at every call, so a call "
                "needs reference=...; to search an index filled by train()/add()/load(), use "
                "FaissKNN(reset_before=False, reset_after=False)"
            )
        if self.reset_before:
            self.index = self.index_init_fn(dim)
        if self.index is None:
            raise IndexNotReadyError("the index is not initialised: call train() or load() first")
        check_dim(query_t, "query", int(self.index.d), "the index")
        if ref_t is not None:
            self.index.add(to_numpy_f32(ref_t))
        num_search = _clamp_k(k, int(self.index.ntotal), ref_includes_query, "FaissKNN")
        if num_search == 0:  # faiss asserts k > 0: nothing to search (k=0 or an empty index)
            distances = np.zeros((query_t.shape[0], 0), dtype=np.float32)
            indices = np.zeros((query_t.shape[0], 0), dtype=np.int64)
        else:
            distances, indices = self._search(faiss, to_numpy_f32(query_t), num_search, device)
        if self.reset_after:
            self.index = None
        d = torch.from_numpy(distances).to(device)
        i = torch.from_numpy(indices).to(device=device, dtype=torch.long)
        if ref_includes_query:
            d, i = EF.remove_self_matches(d, i)
        return d, i

    @property
    def is_exact_flat_l2(self) -> bool:
        """A fresh CPU ``IndexFlatL2`` each call: exact search, squared L2, faiss's order."""
        faiss = require_faiss("FaissKNN")
        return self.reset_before and self.index_init_fn is faiss.IndexFlatL2 and self.gpus is None

    def _search(self, faiss: Any, query: Any, k: int, device: torch.device) -> tuple[Any, Any]:
        wants_gpu = device.type == "cuda" or self.gpus is not None
        if num_gpus(faiss) > 0 and wants_gpu and k <= _gpu_k_limit():
            try:
                if self.gpus is None:
                    gpu_index = faiss.index_cpu_to_all_gpus(self.index)
                else:
                    gpu_index = faiss.index_cpu_to_gpus_list(self.index, gpus=list(self.gpus))
                return gpu_index.search(query, k)
            except (AttributeError, RuntimeError) as exc:
                config.LOGGER.warning("faiss GPU search failed (%s); using the CPU", exc)
        return self.index.search(query, k)

    def train(self, embeddings: Tensor) -> None:
        """New index of the embeddings' dim holding ``embeddings``.

        Raises:
            ValueError: not 2-D, or holding NaN/inf.
        """
        emb = to_numpy_f32(_index_embeddings(embeddings))
        self.index = self.index_init_fn(emb.shape[1])
        self.index.add(emb)

    def add(self, embeddings: Tensor) -> None:
        """Add ``embeddings`` to the current index.

        Raises:
            IndexNotReadyError: before ``train``/``load`` (also an ``AttributeError``).
            ValueError: not 2-D, not the index's dim, or holding NaN/inf.
        """
        if self.index is None:
            raise IndexNotReadyError("the index is not initialised: call train() or load() first")
        self.index.add(to_numpy_f32(_index_embeddings(embeddings, int(self.index.d))))

    def save(self, filename: str | os.PathLike[str]) -> None:
        """``faiss.write_index``, written to a temporary file and renamed (atomic)."""
        faiss = require_faiss("FaissKNN.save")
        if self.index is None:
            raise IndexNotReadyError("nothing to save: call train() or load() first")
        atomic_write(filename, lambda tmp: faiss.write_index(self.index, tmp))

    def load(self, filename: str | os.PathLike[str]) -> None:
        """``faiss.read_index`` (a binary index file; nothing is unpickled).

        A :class:`TorchKNN` file (saved where faiss was not installed) is loaded into a new
        ``index_init_fn(dim)`` index.

        Raises:
            FileNotFoundError: no such file.
            ValueError: not an index file faiss or TorchKNN can read (the message names it).
        """
        faiss = require_faiss("FaissKNN.load")
        if file_kind(filename) == "torch":
            emb = read_torch_index(filename)
            index = self.index_init_fn(emb.shape[1])
            index.add(to_numpy_f32(emb))
            self.index = index
            return
        try:
            self.index = faiss.read_index(os.fspath(filename))
        except RuntimeError as exc:
            raise ValueError(
                f"filename {os.fspath(filename)!r} is not an index file faiss can read ({exc})"
            ) from exc

    def reset(self) -> None:
        """Drop the index."""
        self.index = None


def faiss_flat_l2_blocks(
    query: Tensor, reference: Tensor, num_search: int, rows: int = _FAISS_ROWS
) -> Iterator[tuple[int, Tensor]]:
    """Exact search with a faiss ``IndexFlatL2`` of ``reference``, ``rows`` queries at a time.

    Inputs are compared in float32 (faiss's only dtype); no self removal.

    Yields:
        ``(start, indices (B, num_search) int64)`` on ``query``'s device, nearest first.
    """
    faiss = require_faiss("faiss_flat_l2_blocks")
    index = faiss.IndexFlatL2(reference.shape[1])
    index.add(to_numpy_f32(reference))
    num_search = min(num_search, reference.shape[0])
    yield from _faiss_blocks(index, query, num_search, rows)


def _faiss_blocks(
    index: Any, query: Tensor, num_search: int, rows: int
) -> Iterator[tuple[int, Tensor]]:
    for s in range(0, query.shape[0], rows):
        q = query[s : s + rows]
        if num_search == 0:
            yield s, torch.zeros((q.shape[0], 0), dtype=torch.long, device=query.device)
            continue
        _, idx = index.search(to_numpy_f32(q), num_search)
        yield s, torch.from_numpy(idx).to(device=query.device, dtype=torch.long)
