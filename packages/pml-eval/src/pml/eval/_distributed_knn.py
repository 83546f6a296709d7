"""Distributed evaluation on ``torch.distributed``: sharded exact k-NN and AccuracyCalculator.

Every rank holds a shard of the queries and a shard of the reference set (any sizes, empty
ones too). The results are those of one process holding the concatenated data, to the last
bit (up to the BLAS caveat in :class:`DistributedKNN`):

* queries are gathered (every rank searches all of them against its own reference shard,
  with the local k-NN, indices mapped to the whole reference);
* each query's candidate lists go to the rank that owns the query, which keeps the best
  ``k`` of the union (:func:`pml.eval.functional.merge_topk`: distance, then reference index,
  faiss's and TorchKNN's tie order), then drops the self match;
* :func:`distributed_get_accuracy` gathers the labels and every rank computes the metrics
  from the merged lists of all queries: the same dict on every rank.

The whole reference is "the shards in rank order". With ``ref_includes_query`` each rank's
query shard must be the first rows of its reference shard (as for one process); the whole
reference is then every rank's query rows in rank order followed by every rank's remaining
reference rows in rank order, so the whole query is again its prefix.

A rank that fails its input checks (or its local search) makes every rank raise: no rank
waits forever in a collective.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor

from pml.core.distributed import get_world_size
from pml.core.validation import check_int
from pml.eval import functional as EF
from pml.eval._distributed_comm import (
    _agree,
    _compute_dtype,
    _dtype_code,
    _gather_rows,
    _same_on_all_ranks,
)
from pml.eval._io import as_embeddings, check_dim
from pml.eval._knn import TorchKNN
from pml.eval._neighbor_lists import check_knn_indices

if TYPE_CHECKING:
    from pml.eval._accuracy import AccuracyCalculator

__all__ = ["DistributedKNN"]


@dataclass(frozen=True)
class _Layout:
    """Shard sizes of every rank and where each shard sits in the whole query/reference."""

    rank: int
    num_query: tuple[int, ...]
    num_reference: tuple[int, ...]
    ref_includes_query: bool

    @property
    def total_query(self) -> int:
        return sum(self.num_query)

    @property
    def total_reference(self) -> int:
        return sum(self.num_reference)

    def query_offset(self, rank: int) -> int:
        return sum(self.num_query[:rank])

    def to_global(self, local: Tensor) -> Tensor:
        """This rank's reference row numbers -> rows of the whole reference."""
        r = self.rank
        if not self.ref_includes_query:
            return local + sum(self.num_reference[:r])
        nq = self.num_query[r]
        rest_offset = sum(m - n for m, n in zip(self.num_reference[:r], self.num_query[:r]))
        return torch.where(
            local < nq,
            local + self.query_offset(r),
            local - nq + self.total_query + rest_offset,
        )

    def gather_queries(self, x: Tensor) -> Tensor:
        """Rows of every rank's query shard, in rank order (the whole query)."""
        return _gather_rows(x, self.num_query)

    def gather_reference(self, x: Tensor) -> Tensor:
        """Rows of every rank's reference shard, laid out as the whole reference."""
        if not self.ref_includes_query:
            return _gather_rows(x, self.num_reference)
        nq = self.num_query[self.rank]
        rest = tuple(m - n for m, n in zip(self.num_reference, self.num_query))
        return torch.cat([_gather_rows(x[:nq], self.num_query), _gather_rows(x[nq:], rest)])


def _owner_merge(
    distances: Tensor, indices: Tensor, layout: _Layout, is_inverted: bool
) -> tuple[Tensor, Tensor]:
    """This rank's queries: every rank's candidate lists of them, merged (best of the union).

    ``distances``/``indices`` ``(N, w)`` hold this rank's candidates for every query (rank
    order); one ``all_to_all`` sends the rows of rank ``s``'s queries to ``s``.
    """
    width = distances.shape[1]
    world = len(layout.num_query)
    n = layout.num_query[layout.rank]
    if layout.total_query == 0 or width == 0:
        return distances.new_zeros((n, width)), indices.new_zeros((n, width))
    received = []
    for x in (distances.contiguous(), indices.contiguous()):
        out = x.new_empty((world * n, width))
        dist.all_to_all_single(
            out, x, output_split_sizes=[n] * world, input_split_sizes=list(layout.num_query)
        )
        # (senders, n, w) -> (n, senders * w): each row's candidates from every rank
        received.append(out.view(world, n, width).transpose(0, 1).reshape(n, world * width))
    return EF.merge_topk(received[0], received[1], width, is_inverted=is_inverted)


class DistributedKNN:
    """Exact k-NN over a reference set sharded across the ranks of ``torch.distributed``.

    The ``knn_func`` that makes an :class:`AccuracyCalculator` evaluate distributed:
    ``AccuracyCalculator(knn_func=DistributedKNN()).get_accuracy(...)`` (every rank with its
    shard; also in a tester) goes through :meth:`distributed_get_accuracy`, which gathers the
    labels the metrics need. Without a process group (or with world size 1) it is
    ``local_knn`` itself, called as a knn_func.

    The search itself is :meth:`search`: with a group of world size > 1 every rank calls it
    together (a collective), each passing **its own shard** of the queries and of the
    reference, and the same ``k`` and ``ref_includes_query``. It returns the neighbours of
    this rank's queries (or of all queries) in the **whole** reference: indices are rows of
    the shards concatenated in rank order (with ``ref_includes_query``: every rank's query
    rows in rank order, then every rank's other reference rows in rank order; each rank's
    query shard must be the first rows of its reference shard). Lists and ties are those of
    one ``local_knn`` search of the whole reference when ``local_knn`` orders ties by
    reference index (TorchKNN and faiss flat indexes on CPU do) and computes a shard's
    distances as it does the whole reference's (BLAS may round one differently by an ulp for
    another matrix shape; only references within that ulp of each other can then swap).

    Calling it as a plain knn_func under a group of world size > 1 is an error: the caller
    would index its own shard's labels with whole-reference indices (a silent wrong number).

    Args:
        local_knn: the search of one shard (a ``knn_func``); None: :class:`TorchKNN`.
        is_inverted: larger values mean closer (inner products, similarities); None: the
            ``is_inverted`` attribute of ``local_knn`` (False without one). Give it for a
            ``FaissKNN`` with an inner-product index.

    Example:
        >>> knn = DistributedKNN()  # no process group: TorchKNN's search
        >>> x = torch.tensor([[0.0], [1.0], [3.0]])
        >>> knn(x, 1, x, True)[1].flatten().tolist()
        [1, 0, 1]
    """

    def __init__(
        self, local_knn: Callable[..., Any] | None = None, is_inverted: bool | None = None
    ):
        if local_knn is not None and not callable(local_knn):
            raise TypeError(
                f"local_knn must be a knn_func (callable) or None; got {type(local_knn).__name__}"
            )
        if isinstance(local_knn, DistributedKNN):
            raise TypeError("local_knn must search one shard; got a DistributedKNN")
        if is_inverted is not None and not isinstance(is_inverted, bool):
            raise TypeError(f"is_inverted must be a bool or None; got {type(is_inverted).__name__}")
        self.local_knn = TorchKNN() if local_knn is None else local_knn
        self._is_inverted = is_inverted

    @property
    def is_inverted(self) -> bool:
        """``True`` when larger values mean closer."""
        if self._is_inverted is not None:
            return self._is_inverted
        return bool(getattr(self.local_knn, "is_inverted", False))

    def __call__(
        self,
        query: Tensor,
        k: int,
        reference: Tensor | None = None,
        ref_includes_query: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """``local_knn(query, k, reference, ref_includes_query)`` without a process group.

        Raises:
            RuntimeError: under a process group of world size > 1 (use
                :func:`distributed_get_accuracy`, a tester, or :meth:`search`).
        """
        if get_world_size() > 1:
            raise RuntimeError(
                "DistributedKNN is called as a plain knn_func under torch.distributed: its "
                "indices are rows of the whole (sharded) reference, which this rank's labels "
                "do not hold. Evaluate with distributed_get_accuracy(calculator, ...) (or a "
                "tester), or call DistributedKNN.search(...) for the neighbours themselves"
            )
        return self.local_knn(query, k, reference, ref_includes_query)

    def distributed_get_accuracy(
        self, calculator: AccuracyCalculator, *args: Any, **kwargs: Any
    ) -> dict[str, Any]:
        """:func:`~pml.eval.distributed_get_accuracy` with this search.

        The route ``calculator.get_accuracy(...)`` takes when this is its ``knn_func``.
        """
        from pml.eval._distributed_accuracy import distributed_get_accuracy

        return distributed_get_accuracy(calculator, *args, **kwargs)

    def search(
        self,
        query: Tensor,
        k: int,
        reference: Tensor | None = None,
        ref_includes_query: bool = False,
        *,
        all_queries: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """Neighbours in the whole reference (see the class docstring for the layout).

        Args:
            query: this rank's queries ``(n, D)``.
            k: neighbours per query (the same on every rank); clamped to the whole reference.
            reference: this rank's reference shard ``(m, D)`` (required with a group).
            ref_includes_query: the query shard is the first ``n`` rows of the reference
                shard: each query's own row is never its neighbour.
            all_queries: return the rows of every rank's queries (rank order) on every rank,
                instead of this rank's.

        Returns:
            ``(distances (n, k'), indices (n, k') int64)`` (``N`` rows with ``all_queries``);
            ``k' = min(k, M - ref_includes_query)`` for a whole reference of ``M`` rows.
            Distances are in the compute dtype (float64 when any rank's inputs are float64,
            else float32).

        Raises:
            ValueError: a bad ``k``, shapes or dims, ranks that disagree on ``k``, the dim or
                ``ref_includes_query``; the local search's errors. RuntimeError on the other
                ranks when one rank failed.
        """
        if get_world_size() <= 1:
            return self.local_knn(query, k, reference, ref_includes_query)
        device = query.device if isinstance(query, Tensor) else torch.device("cpu")
        error, fields, inputs = None, [0] * 5, None
        try:
            inputs = _knn_inputs(query, k, reference, ref_includes_query)
            q, r, k = inputs
            fields = [q.shape[0], r.shape[0], q.shape[1], _dtype_code(q.dtype), k]
        except Exception as e:  # raised on every rank by _agree
            error = e
        table = _agree(error, [*fields, int(bool(ref_includes_query))], device)
        _same_on_all_ranks(table, 2, "embedding dim")
        _same_on_all_ranks(table, 4, "k")
        _same_on_all_ranks(table, 5, "ref_includes_query")
        assert inputs is not None
        q, r, k = inputs
        layout = _Layout(
            dist.get_rank(),
            tuple(table[:, 0].tolist()),
            tuple(table[:, 1].tolist()),
            bool(ref_includes_query),
        )
        dtype = _compute_dtype(table[:, 3])
        with torch.no_grad():
            query_all = layout.gather_queries(q.to(dtype))
            return _sharded_search(self, layout, query_all, r.to(dtype), k, all_queries)


def _knn_inputs(
    query: Any, k: Any, reference: Any, ref_includes_query: bool
) -> tuple[Tensor, Tensor, int]:
    k = check_int("k", k, min=0)
    q = as_embeddings(query, "query")
    if reference is None:
        raise ValueError(
            "reference must be this rank's reference shard under torch.distributed; got None"
        )
    r = as_embeddings(reference, "reference", q.device)
    check_dim(r, "reference", q.shape[1], "query")
    if ref_includes_query and r.shape[0] < q.shape[0]:
        raise ValueError(
            "ref_includes_query=True needs each rank's query shard to be the first rows of its "
            f"reference shard; got {q.shape[0]} queries and {r.shape[0]} reference rows"
        )
    return q, r, k


def _sharded_search(
    knn: DistributedKNN,
    layout: _Layout,
    query_all: Tensor,
    reference: Tensor,
    k: int,
    all_queries: bool,
) -> tuple[Tensor, Tensor]:
    """Every query against this rank's shard, then the owners' merge and self-match removal."""
    own = int(layout.ref_includes_query)
    width = min(k + own, layout.total_reference)  # searched in the whole reference
    num_query, num_local = query_all.shape[0], reference.shape[0]
    searched = min(width, num_local)
    error = None
    dists = query_all.new_zeros((num_query, 0))
    idx = torch.zeros((num_query, 0), dtype=torch.int64, device=query_all.device)
    try:
        if searched > 0 and num_query > 0:
            d, i = knn.local_knn(query_all, searched, reference, False)
            i = check_knn_indices(i, num_query, num_local).to(query_all.device, torch.int64)
            if not isinstance(d, Tensor) or tuple(d.shape) != tuple(i.shape):
                raise ValueError(
                    "local_knn must return distances of the indices' shape "
                    f"{tuple(i.shape)}; got {getattr(d, 'shape', type(d).__name__)}"
                )
            dists, idx = d.to(query_all.device, query_all.dtype), layout.to_global(i)
    except Exception as e:  # raised on every rank by _agree
        error = e
    _agree(error, [], query_all.device)
    dists, idx = EF.pad_candidates(dists, idx, width, is_inverted=knn.is_inverted)
    dists, idx = _owner_merge(dists, idx, layout, knn.is_inverted)
    if own and width > 0:
        dists, idx = EF.remove_self_matches(dists, idx, offset=layout.query_offset(layout.rank))
    if all_queries:
        if dists.shape[1] == 0:
            return query_all.new_zeros((num_query, 0)), idx.new_zeros((num_query, 0))
        dists, idx = layout.gather_queries(dists), layout.gather_queries(idx)
    return dists, idx
