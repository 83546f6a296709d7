"""ApproximateKNN: faiss IVF or HNSW search for galleries of millions, with measured recall."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from pml.core.validation import check_finite, check_int, check_option
from pml.eval import functional as EF
from pml.eval._faiss import require_faiss
from pml.eval._faiss_knn import _FAISS_ROWS, _faiss_blocks
from pml.eval._io import check_dim, to_numpy_f32
from pml.eval._knn import IndexNotReadyError, _clamp_k, _index_embeddings, _search_inputs

__all__ = ["ApproximateKNN"]


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
