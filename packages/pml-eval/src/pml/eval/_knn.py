"""k-NN back-ends: plain torch (TorchKNN, CustomKNN; the default) and faiss (FaissKNN)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from pml.core import config
from pml.core.io import atomic_write
from pml.core.validation import check_finite, check_int, check_option, check_type
from pml.distances import BaseDistance
from pml.eval import functional as EF
from pml.eval._faiss import num_gpus, require_faiss
from pml.eval._index_files import TORCH_FORMAT, file_kind, read_faiss_flat_l2, read_torch_index
from pml.eval._io import as_embeddings, check_dim, to_numpy_f32

__all__ = [
    "ApproximateKNN",
    "CustomKNN",
    "FaissKNN",
    "IndexNotReadyError",
    "TorchKNN",
    "faiss_flat_l2_blocks",
]

#: query rows per faiss search call in the block-wise searches (bounds the result arrays)
_FAISS_ROWS = 16384


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
            IndexNotReadyError: ``reset_before=False`` and no index was trained or loaded.
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
        if self.reset_before:
            self.index = self.index_init_fn(dim)
        if self.index is None:
            raise IndexNotReadyError("the index is not initialised: call train() or load() first")
        check_dim(query_t, "query", int(self.index.d), "the index")
        if ref_t is not None:
            self.index.add(to_numpy_f32(ref_t))
        num_search = _clamp_k(k, int(self.index.ntotal), ref_includes_query, "FaissKNN")
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


class ApproximateKNN:
    """Approximate k-NN with a faiss IVF or HNSW index, for galleries of millions.

    Each search with a reference builds the index, searches, and measures how approximate
    the result is: the exact neighbours of ``recall_sample`` random queries are computed
    (plain torch, one matrix product per block) and ``last_recall`` is the mean fraction of
    them the index found (recall@k). :class:`AccuracyCalculator` reports it next to the
    metrics as ``"knn_recall_at_k"``. Queries for which the index returns fewer than ``k``
    neighbours (faiss's ``-1``) are searched exactly instead (``last_exact_rows`` counts
    them), so results never hold ``-1``.

    * ``"ivf"``: ``IndexIVFFlat`` with ``nlist`` k-means cells (default ``4 sqrt(M)``,
      trained on at most ``64 nlist`` sampled rows, 10 iterations); each query scans its
      ``nprobe`` nearest cells. Cost per query ~ ``nprobe * M / nlist`` distances.
    * ``"hnsw"``: ``IndexHNSWFlat`` with ``hnsw_m`` links per node, built with
      ``ef_construction``; searched with ``max(ef_search, k)`` candidates.

    Distances are squared L2 (like :class:`FaissKNN`). It can also hold an index
    (``train``/``add``/``reset``) for :class:`InferenceModel`; searches of the held index
    measure no recall (``last_recall`` is None).

    Args:
        index_type: ``"ivf"`` or ``"hnsw"``.
        nlist: IVF cells; None: ``4 sqrt(M)`` (at most ``M``).
        nprobe: IVF cells scanned per query.
        hnsw_m: HNSW links per node.
        ef_search: HNSW search breadth (at least ``k`` is used).
        ef_construction: HNSW build breadth.
        recall_sample: queries whose exact neighbours measure the recall (0: not measured).
        seed: seeds the recall sample and the IVF training sample.

    Raises:
        ImportError: faiss is not installed.
        TypeError: an argument of the wrong type.
        ValueError: an unknown ``index_type`` or an out-of-range number.

    Example:
        >>> from pml.core.testing import clustered_embeddings
        >>> x, labels = clustered_embeddings(20, 50, 16, seed=0, spread=0.5)
        >>> knn = ApproximateKNN("ivf", nlist=20, nprobe=4)
        >>> distances, indices = knn(x, 10, x, ref_includes_query=True)
        >>> indices.shape, knn.last_recall > 0.9
        (torch.Size([1000, 10]), True)
    """

    def __init__(
        self,
        index_type: str = "ivf",
        *,
        nlist: int | None = None,
        nprobe: int = 16,
        hnsw_m: int = 32,
        ef_search: int = 128,
        ef_construction: int = 40,
        recall_sample: int = 1000,
        seed: int = 0,
    ) -> None:
        require_faiss("ApproximateKNN")
        self.index_type = check_option("index_type", index_type, ("ivf", "hnsw"))
        self.nlist = check_int("nlist", nlist, min=1, allow_none=True)
        self.nprobe = check_int("nprobe", nprobe, min=1)
        self.hnsw_m = check_int("hnsw_m", hnsw_m, min=2)
        self.ef_search = check_int("ef_search", ef_search, min=1)
        self.ef_construction = check_int("ef_construction", ef_construction, min=1)
        self.recall_sample = check_int("recall_sample", recall_sample, min=0)
        self.seed = check_int("seed", seed)
        self.index: Any = None
        self.last_recall: float | None = None
        self.last_exact_rows = 0

    # ------------------------------------------------------------------ index
    def _new_index(self, reference: Tensor) -> Any:
        """A trained index holding ``reference`` (float32, CPU)."""
        faiss = require_faiss("ApproximateKNN")
        ref = to_numpy_f32(reference)
        num_ref, dim = ref.shape
        if self.index_type == "hnsw":
            index = faiss.IndexHNSWFlat(dim, self.hnsw_m)
            index.hnsw.efConstruction = self.ef_construction
            index.add(ref)
            return index
        nlist = self.nlist or int(4 * math.sqrt(num_ref))
        nlist = max(1, min(nlist, num_ref))
        quantizer = faiss.IndexFlatL2(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_L2)
        index.cp.niter = 10
        index.cp.seed = self.seed
        index.cp.min_points_per_centroid = 1  # small training samples are fine (no warning)
        index.cp.max_points_per_centroid = 64
        gen = torch.Generator().manual_seed(self.seed)
        train_rows = torch.randperm(num_ref, generator=gen)[: 64 * nlist].sort().values
        index.train(ref[train_rows.numpy()] if train_rows.numel() < num_ref else ref)
        index.add(ref)
        return index

    def _configure(self, index: Any, num_search: int) -> None:
        if self.index_type == "hnsw":
            index.hnsw.efSearch = max(self.ef_search, num_search)
        else:
            index.nprobe = min(self.nprobe, int(index.nlist))

    def train(self, embeddings: Tensor) -> None:
        """Build a held index of ``embeddings`` ``(M, D)`` (trained on them for IVF).

        Raises:
            ValueError: not 2-D, or holding NaN/inf.
        """
        self.index = self._new_index(_index_embeddings(embeddings))

    def add(self, embeddings: Tensor) -> None:
        """Add ``embeddings`` to the held index (IVF cells are not retrained).

        Raises:
            IndexNotReadyError: before ``train``.
            ValueError: not 2-D, not the index's dim, or holding NaN/inf.
        """
        if self.index is None:
            raise IndexNotReadyError("the index is not initialised: call train() first")
        self.index.add(to_numpy_f32(_index_embeddings(embeddings, int(self.index.d))))

    def reset(self) -> None:
        """Drop the held index."""
        self.index = None

    # ------------------------------------------------------------------ search
    def __call__(
        self,
        query: Tensor,
        k: int,
        reference: Tensor | None = None,
        ref_includes_query: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """The (approximately) ``k`` nearest reference rows of each query row.

        Args:
            query: shape ``(N, D)``.
            k: neighbours per query; clamped (with a warning) to the reference size.
            reference: shape ``(M, D)``: indexed for this call; None searches the held index.
            ref_includes_query: query row ``i`` is reference row ``i``: drop self matches.

        Returns:
            ``(distances (N, k) float32, indices (N, k) int64)`` on ``query``'s device;
            squared L2, nearest first.

        Raises:
            IndexNotReadyError: no reference and no trained index.
            TypeError: ``k`` is not an int.
            ValueError: a negative ``k``; query/reference not 2-D, of different dims, or
                holding NaN/inf.
        """
        k, query_t, ref_t = _search_inputs(k, query, reference)
        check_finite(query_t, "query")
        device = query_t.device
        if ref_t is None:
            if self.index is None:
                raise IndexNotReadyError(
                    "the index is not initialised: pass reference, or call train() first"
                )
            check_dim(query_t, "query", int(self.index.d), "the index")
            num_search = _clamp_k(k, int(self.index.ntotal), ref_includes_query, "ApproximateKNN")
            self._configure(self.index, num_search)
            self.last_recall = None
            dist, idx = self.index.search(to_numpy_f32(query_t), num_search)
            d = torch.from_numpy(dist).to(device)
            i = torch.from_numpy(idx).to(device=device, dtype=torch.long)
        else:
            check_finite(ref_t, "reference")
            num_search = _clamp_k(k, ref_t.shape[0], ref_includes_query, "ApproximateKNN")
            blocks = self.search_blocks(query_t, ref_t, num_search, ref_includes_query)
            parts = [idx.cpu() for _, idx in blocks]
            i = torch.cat(parts) if parts else torch.zeros((0, num_search), dtype=torch.long)
            d = _gathered_sq_l2(query_t, ref_t, i).to(device)
            i = i.to(device)
        if ref_includes_query:
            d, i = EF.remove_self_matches(d, i)
        return d, i

    def search_blocks(
        self, query: Tensor, reference: Tensor, num_search: int, ref_includes_query: bool
    ) -> Iterator[tuple[int, Tensor]]:
        """Neighbour indices of ``query`` in a new index of ``reference``, block by block.

        Rows the index could not fill (``-1``) are searched exactly; once the blocks are
        consumed, ``last_recall`` holds the recall@k measured on the sampled queries.

        Yields:
            ``(start, indices (B, num_search) int64)``, self matches not removed.
        """
        num_query = query.shape[0]
        num_search = min(num_search, reference.shape[0])
        self.last_recall = None
        self.last_exact_rows = 0
        if num_search == 0:  # nothing to find (an empty reference, or k = 0)
            for s in range(0, num_query, _FAISS_ROWS):
                rows = min(_FAISS_ROWS, num_query - s)
                yield s, torch.zeros((rows, 0), dtype=torch.long, device=query.device)
            return
        index = self._new_index(reference)
        self._configure(index, num_search)
        gen = torch.Generator().manual_seed(self.seed)
        sample = torch.randperm(num_query, generator=gen)[: self.recall_sample].sort().values
        sampled: list[Tensor] = []
        for s, idx in _faiss_blocks(index, query, num_search, _FAISS_ROWS):
            idx = self._fill_missing(idx, query[s : s + idx.shape[0]], reference, num_search)
            local = sample[(sample >= s) & (sample < s + idx.shape[0])] - s
            sampled.append(idx[local.to(idx.device)].cpu())
            yield s, idx
        if sample.numel() and num_search:
            found = torch.cat(sampled)
            exact = self._exact(query[sample.to(query.device)], reference, num_search)
            if ref_includes_query:
                found = EF.drop_self_matches(found, own=sample)
                exact = EF.drop_self_matches(exact, own=sample)
            if found.shape[1]:
                self.last_recall = float(EF.neighbour_recall(found, exact).mean())

    def _exact(self, query: Tensor, reference: Tensor, num_search: int) -> Tensor:
        blocks = EF.knn_blocks(query, reference, num_search)
        return torch.cat([idx for _, _, idx in blocks]).cpu()

    def _fill_missing(
        self, idx: Tensor, query: Tensor, reference: Tensor, num_search: int
    ) -> Tensor:
        missing = (idx < 0).any(1)
        if bool(missing.any()):
            rows = missing.nonzero(as_tuple=True)[0]
            self.last_exact_rows += int(rows.numel())
            exact = self._exact(query[rows.to(query.device)], reference, num_search)
            idx[rows] = exact.to(idx.device)
        return idx


def _gathered_sq_l2(query: Tensor, reference: Tensor, indices: Tensor) -> Tensor:
    """float32 squared L2 between each query row and its listed reference rows, in chunks."""
    num_query, width = indices.shape
    out = torch.empty((num_query, width), dtype=torch.float32)
    rows = max(1, (1 << 24) // max(width * reference.shape[1], 1))
    ref = reference.to("cpu", torch.float32)
    for s in range(0, num_query, rows):
        q = query[s : s + rows].to("cpu", torch.float32)
        nbrs = ref[indices[s : s + rows]]
        out[s : s + rows] = ((nbrs - q.unsqueeze(1)) ** 2).sum(-1)
    return out
