"""k-NN back-ends: plain torch (TorchKNN, CustomKNN; the default) and the shared checks.

The faiss back-ends are in ``_faiss_knn.py`` (FaissKNN, exact) and ``_approximate_knn.py``
(ApproximateKNN, IVF/HNSW for galleries of millions).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

from pml.core import config
from pml.core.io import atomic_write
from pml.core.validation import check_finite, check_int
from pml.distances import BaseDistance
from pml.eval import functional as EF
from pml.eval._index_files import TORCH_FORMAT, file_kind, read_faiss_flat_l2, read_torch_index
from pml.eval._io import as_embeddings, check_dim

__all__ = [
    "CustomKNN",
    "IndexNotReadyError",
    "TorchKNN",
]


class IndexNotReadyError(ValueError, AttributeError):
    """The k-NN index is used before ``train``/``load``.

    A ``ValueError``, and an ``AttributeError`` too (what the reference raised from ``add``).
    """


def _search_inputs(k: Any, query: Any, reference: Any) -> tuple[int, Tensor, Tensor | None]:
    """``k >= 0``, a 2-D query and an optional reference of the query's dim."""
    k = check_int("k", k, min=0)
    query_t = as_embeddings(query, "query")
    if reference is None:
        return k, query_t, None
    ref_t = as_embeddings(reference, "reference")
    check_dim(ref_t, "reference", query_t.shape[1], "query")
    return k, query_t, ref_t


def _index_embeddings(embeddings: Any, dim: int | None = None) -> Tensor:
    """Embeddings to put in an index: 2-D, finite, of the index's ``dim`` when given."""
    emb = as_embeddings(embeddings, "embeddings")
    if dim is not None:
        check_dim(emb, "embeddings", dim, "the index")
    check_finite(emb, "embeddings")
    return emb


def _clamp_k(k: int, num_ref: int, ref_includes_query: bool, who: str) -> int:
    """``k + self`` clamped to the reference size, with a warning (the reference pads with -1)."""
    wanted = k + int(ref_includes_query)
    if wanted > num_ref:
        config.LOGGER.warning(
            "%s: k=%d (+1 for the query itself) exceeds the %d reference embeddings; "
            "returning %d neighbours instead of padding with index -1",
            who,
            k,
            num_ref,
            max(num_ref - int(ref_includes_query), 0),
        )
        return num_ref
    return wanted


class TorchKNN:
    """Exact k-nearest neighbours in plain torch, chunked over queries (bounded memory).

    The default of :class:`AccuracyCalculator`. With ``distance=None`` it returns what faiss's
    ``IndexFlatL2`` does: squared L2 distances, ascending, ties by ascending reference index
    (exactly, whatever ``torch.topk`` does with ties). With a pml distance it returns that
    distance's values (similarities descending when ``distance.is_inverted``).

    It can also hold an index (``train``/``add``/``save``/``load``) so that
    :class:`InferenceModel` works without faiss; files are plain tensors loaded with
    ``torch.load(weights_only=True)``.

    Args:
        distance: a pml distance, or None for squared L2 on the raw embeddings.
        batch_size: query rows per block; None picks blocks of ~16M distances.

    Example:
        >>> knn = TorchKNN()
        >>> x = torch.tensor([[0.0], [1.0], [3.0]])
        >>> knn(x, 1, x, ref_includes_query=True)
        (tensor([[1.],
                [1.],
                [4.]]), tensor([[1],
                [0],
                [1]]))
    """

    def __init__(self, distance: BaseDistance | None = None, batch_size: int | None = None) -> None:
        if distance is not None and not callable(distance):
            raise TypeError(
                f"distance must be a pml distance or None; got {type(distance).__name__}"
            )
        self.distance = distance
        self.batch_size = check_int("batch_size", batch_size, min=1, allow_none=True)
        self.index: Tensor | None = None

    @property
    def is_inverted(self) -> bool:
        """``True`` when larger values mean closer (similarities)."""
        return bool(getattr(self.distance, "is_inverted", False))

    def distance_fn(self, query: Tensor, reference: Tensor) -> Tensor:
        """The ``(B, M)`` block this k-NN ranks by."""
        if self.distance is None:
            return EF.squared_l2_matrix(query, reference)
        return self.distance(query, reference)

    def __call__(
        self,
        query: Tensor,
        k: int,
        reference: Tensor | None = None,
        ref_includes_query: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """The ``k`` nearest reference rows of each query row.

        Args:
            query: shape ``(N, D)``.
            k: neighbours per query; clamped (with a warning) to the reference size.
            reference: shape ``(M, D)``; None searches the trained index.
            ref_includes_query: query row ``i`` is reference row ``i``: drop self matches.

        Returns:
            ``(distances (N, k), indices (N, k) int64)`` on ``query``'s device.

        Raises:
            IndexNotReadyError: no reference and no trained index.
            TypeError: ``k`` is not an int.
            ValueError: a negative ``k``; query/reference not 2-D, of different dims (or not
                the index's), or holding NaN/inf.
        """
        k, query, reference = _search_inputs(k, query, reference)
        if reference is None:
            if self.index is None:
                raise IndexNotReadyError(
                    "the index is not initialised: pass reference, or call train() or load() first"
                )
            check_dim(query, "query", self.index.shape[1], "the index")
            reference = self.index
        reference = reference.to(query.device)
        num_search = _clamp_k(k, reference.shape[0], ref_includes_query, type(self).__name__)
        with torch.no_grad():
            return EF.knn(
                query,
                reference,
                num_search - int(ref_includes_query),
                distance_fn=self.distance,
                is_inverted=self.is_inverted,
                ref_includes_query=ref_includes_query,
                batch_size=self.batch_size,
            )

    def train(self, embeddings: Tensor) -> None:
        """Replace the index with ``embeddings`` ``(M, D)``.

        Raises:
            ValueError: not 2-D, or holding NaN/inf.
        """
        self.index = _index_embeddings(embeddings).detach()

    def add(self, embeddings: Tensor) -> None:
        """Append ``embeddings`` to the index.

        Raises:
            IndexNotReadyError: before ``train``/``load``.
            ValueError: not 2-D, not the index's dim, or holding NaN/inf.
        """
        if self.index is None:
            raise IndexNotReadyError("the index is not initialised: call train() or load() first")
        emb = _index_embeddings(embeddings, self.index.shape[1]).detach()
        self.index = torch.cat([self.index, emb.to(self.index.device, self.index.dtype)])

    def reset(self) -> None:
        """Drop the index."""
        self.index = None

    def save(self, filename: str | os.PathLike[str]) -> None:
        """Write the index (a plain tensor file) atomically."""
        if self.index is None:
            raise IndexNotReadyError("nothing to save: call train() or load() first")
        payload = {"format": TORCH_FORMAT, "version": 1, "index": self.index.cpu()}
        atomic_write(filename, lambda tmp: torch.save(payload, tmp))

    def load(self, filename: str | os.PathLike[str]) -> None:
        """Read an index written by :meth:`save`, or a faiss ``IndexFlatL2`` file.

        TorchKNN files are read with ``weights_only`` (no code is unpickled); faiss flat L2
        files (what :class:`FaissKNN` and :class:`InferenceModel` save by default) are read
        without faiss, so an index saved where faiss is installed loads where it is not.

        Raises:
            FileNotFoundError: no such file.
            ValueError: neither kind of file, a damaged one, or another faiss index type (the
                message names the file and says why).
        """
        if file_kind(filename) == "faiss":
            self.index = read_faiss_flat_l2(filename)
        else:
            self.index = read_torch_index(filename)


class CustomKNN(TorchKNN):
    """The reference's plain-torch k-NN: a pml distance, optionally in query blocks.

    Returns the distance's own values (``LpDistance``: unsquared; similarities for inverted
    distances). Ties are ordered by reference index.

    Args:
        distance: any pml distance.
        batch_size: query rows per block (None: automatic, also bounded).

    Example:
        >>> from pml.distances import LpDistance
        >>> knn = CustomKNN(LpDistance(normalize_embeddings=False))
        >>> knn(torch.tensor([[0.0], [3.0]]), 1, torch.tensor([[1.0], [5.0]]))[0]
        tensor([[1.],
                [2.]])
    """

    def __init__(self, distance: BaseDistance, batch_size: int | None = None) -> None:
        if distance is None:
            raise TypeError("distance must be a pml distance; got None")
        super().__init__(distance=distance, batch_size=batch_size)
