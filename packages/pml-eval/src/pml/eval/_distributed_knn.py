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

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from pml.core import config
from pml.core.distributed import get_world_size
from pml.core.validation import check_int
from pml.eval import functional as EF
from pml.eval._accuracy_inputs import accuracy_inputs, check_metric_names
from pml.eval._io import as_embeddings, check_dim
from pml.eval._knn import TorchKNN
from pml.eval._metrics import (
    EQUALITY,
    get_label_match_counts,
    get_lone_query_labels,
    maybe_get_avg_of_avgs,
    nan_accuracy,
)
from pml.eval._neighbor_lists import check_knn_indices
from pml.eval._ranked import can_rank_exactly
from pml.eval.functional._ranked import _from_ranks

if TYPE_CHECKING:
    from pml.eval._accuracy import AccuracyCalculator

__all__ = ["DistributedKNN", "distributed_get_accuracy"]

#: dtypes exchanged as small codes between ranks (to check that the ranks agree).
_DTYPES = (
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.bool,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
)


def _dtype_code(dtype: torch.dtype) -> int:
    return _DTYPES.index(dtype) if dtype in _DTYPES else len(_DTYPES)


def _exchange(fields: Sequence[int], device: torch.device) -> Tensor:
    """Every rank's ``fields`` (ints), one row per rank in rank order: ``(world, F)``."""
    row = torch.tensor([list(fields)], dtype=torch.int64, device=device)
    return _gather_rows(row, [1] * get_world_size()).cpu()


def _agree(error: BaseException | None, fields: Sequence[int], device: torch.device) -> Tensor:
    """Exchange ``fields``, or raise on every rank when a rank had an ``error``.

    The rank that failed raises its own error; the others a RuntimeError naming it.
    """
    table = _exchange([int(error is not None), *fields], device)
    failed = table[:, 0].nonzero().flatten().tolist()
    if error is not None:
        raise error
    if failed:
        raise RuntimeError(
            f"distributed evaluation stopped: rank(s) {failed} failed (see the error on those "
            "ranks); every rank stops so that none waits in a collective"
        )
    return table[:, 1:]


def _same_on_all_ranks(table: Tensor, column: int, name: str) -> int:
    values = table[:, column].tolist()
    if len(set(values)) > 1:
        raise ValueError(f"every rank must pass the same {name}; got {values} (rank order)")
    return int(values[0])


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


def _gather_rows(x: Tensor, sizes: Sequence[int]) -> Tensor:
    """Every rank's ``x`` (``sizes[r]`` rows each) concatenated in rank order.

    One ``all_gather`` of blocks padded to the largest size (the sizes are known on every
    rank); no collective when every block is empty.
    """
    if sum(sizes) == 0:
        return x
    x = x.contiguous()
    longest = max(sizes)
    padded = x
    if x.shape[0] < longest:
        padded = torch.cat([x, x.new_zeros((longest - x.shape[0], *x.shape[1:]))])
    blocks = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(blocks, padded)
    return torch.cat([b[:n] for b, n in zip(blocks, sizes)])


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

    The ``knn_func`` that makes an :class:`AccuracyCalculator` evaluate distributed: give
    ``AccuracyCalculator(knn_func=DistributedKNN())`` to a tester, or pass the calculator to
    :func:`distributed_get_accuracy` (which gathers the labels the metrics need). Without a
    process group (or with world size 1) it is ``local_knn`` itself, called as a knn_func.

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

    Calling it as a knn_func under a group of world size > 1 is an error: the caller would
    index its own shard's labels with whole-reference indices (a silent wrong number).

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


def _compute_dtype(codes: Tensor) -> torch.dtype:
    """float64 when any rank's embeddings are float64 (one process would promote), else float32."""
    return torch.float64 if _DTYPES.index(torch.float64) in codes.tolist() else torch.float32


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


# ---------------------------------------------------------------------------- accuracy


@contextlib.contextmanager
def _knn_func(calc: AccuracyCalculator, knn: Callable[..., Any]) -> Iterator[None]:
    """``calc.knn_func`` set to ``knn`` for the duration (the calculator's own routes see it)."""
    saved = calc.knn_func
    calc.knn_func = knn
    try:
        yield
    finally:
        calc.knn_func = saved


def distributed_get_accuracy(
    calculator: AccuracyCalculator,
    query: Tensor | np.ndarray,
    query_labels: Tensor | np.ndarray,
    reference: Tensor | np.ndarray | None = None,
    reference_labels: Tensor | np.ndarray | None = None,
    ref_includes_query: bool = False,
    include: tuple[str, ...] | list[str] = (),
    exclude: tuple[str, ...] | list[str] = (),
) -> dict[str, Any]:
    """``calculator.get_accuracy`` of the data sharded across the ranks: same dict on every rank.

    Every rank calls it together with **its own shard** of the queries (and labels) and of
    the reference (and labels); ``reference=None`` on every rank means each rank's queries
    are its reference shard (the whole query against itself). The result equals, to the
    last bit, ``get_accuracy`` on one process of the concatenated shards (rank order; with
    ``ref_includes_query`` the reference is every rank's query rows followed by every rank's
    other reference rows) with ``knn_func`` the local k-NN: the calculator's own, or the
    ``local_knn`` of its :class:`DistributedKNN`. Without a process group (or world size 1)
    it is that ``get_accuracy`` call.

    Labels and queries are gathered on every rank (``N x D`` and the labels); the reference
    embeddings never leave their rank. Each rank holds the neighbour lists of all queries
    (``N x k``), so prefer ``k="max_bin_count"`` or an int: ``k=None`` needs ``N x M``.
    Metric functions get the gathered ``query``, labels and neighbour lists, and
    ``reference=None``; clustering (NMI/AMI) runs the calculator's ``kmeans_func`` on the
    gathered queries on every rank.

    Args:
        calculator: an :class:`AccuracyCalculator`.
        query, query_labels, reference, reference_labels, ref_includes_query, include,
            exclude: as for ``AccuracyCalculator.get_accuracy``, this rank's shards.

    Returns:
        ``{metric: value}``, identical on every rank.

    Raises:
        ValueError, TypeError: as ``get_accuracy``; ranks that disagree on the embedding
            dim, ``ref_includes_query``, the label shape or dtype. RuntimeError on the other
            ranks when one rank's inputs fail their checks.

    Example:
        >>> from pml.eval import AccuracyCalculator
        >>> calc = AccuracyCalculator(include=("precision_at_1",), device="cpu")
        >>> x = torch.tensor([[0.0], [1.0], [10.0], [11.0]])
        >>> distributed_get_accuracy(calc, x, torch.tensor([0, 0, 1, 1]))  # no process group
        {'precision_at_1': 1.0}
    """
    knn = calculator.knn_func
    dknn = knn if isinstance(knn, DistributedKNN) else DistributedKNN(local_knn=knn)
    args = (query, query_labels, reference, reference_labels, ref_includes_query)
    with _knn_func(calculator, dknn.local_knn):
        if get_world_size() <= 1:
            return calculator.get_accuracy(*args, include=include, exclude=exclude)
        return _sharded_accuracy(calculator, dknn, *args, include, exclude)


#: columns of the exchanged fields that every rank must share, and what they are.
_ACCURACY_AGREEMENT = {
    2: "embedding dim",
    4: "ref_includes_query (reference=None means True)",
    5: "query_labels ndim",
    6: "query_labels width",
    7: "query_labels dtype",
    8: "reference_labels ndim",
    9: "reference_labels width",
    10: "reference_labels dtype",
}


def _label_fields(labels: Tensor) -> list[int]:
    return [labels.ndim, int(np.prod(labels.shape[1:])), _dtype_code(labels.dtype)]


def _sharded_accuracy(
    calc: AccuracyCalculator,
    knn: DistributedKNN,
    query: Any,
    query_labels: Any,
    reference: Any,
    reference_labels: Any,
    ref_includes_query: bool,
    include: tuple[str, ...] | list[str],
    exclude: tuple[str, ...] | list[str],
) -> dict[str, Any]:
    error, fields, inputs = None, [0] * 11, None
    try:
        names = getattr(calc, "_metric_names", None) or list(calc.original_function_dict)
        check_metric_names(include, exclude, list(names))
        inputs = accuracy_inputs(
            query, query_labels, reference, reference_labels, ref_includes_query, calc.device
        )
        q, r = inputs["query"], inputs["reference"]
        fields = [
            q.shape[0],
            r.shape[0],
            q.shape[1],
            _dtype_code(q.dtype),
            int(inputs["ref_includes_query"]),
            *_label_fields(inputs["query_labels"]),
            *_label_fields(inputs["reference_labels"]),
        ]
    except Exception as e:  # raised on every rank by _agree
        error = e
    table = _agree(error, fields, calc.device)
    for column, name in _ACCURACY_AGREEMENT.items():
        _same_on_all_ranks(table, column, name)
    assert inputs is not None
    own = bool(inputs["ref_includes_query"])
    layout = _Layout(dist.get_rank(), tuple(table[:, 0].tolist()), tuple(table[:, 1].tolist()), own)
    dtype = _compute_dtype(table[:, 3])
    with torch.no_grad():
        query_all = layout.gather_queries(inputs["query"].to(dtype))
        query_labels_all = layout.gather_queries(inputs["query_labels"])
        reference_labels_all = layout.gather_reference(inputs["reference_labels"])
        calc.curr_function_dict = calc.get_function_dict(include, exclude)
        function_dict = dict(calc.curr_function_dict)
        kwargs: dict[str, Any] = {
            "query": query_all,
            "reference": None,
            "query_labels": query_labels_all,
            "reference_labels": reference_labels_all,
            "ref_includes_query": own,
            "label_comparison_fn": calc.label_comparison_fn,
        }
        if any(m in calc.requires_knn() for m in function_dict):
            comparison = calc.label_comparison_fn or EQUALITY
            label_counts = get_label_match_counts(
                query_labels_all, reference_labels_all, comparison
            )
            num_ref = layout.total_reference
            num_k = calc.determine_k(label_counts[1], num_ref, own)
            distances, indices = _sharded_search(
                knn, layout, query_all, inputs["reference"].to(dtype), num_k, True
            )
            if can_rank_exactly(calc, function_dict) and 4 * num_k >= num_ref:
                # what one process computes here: _ranked.ranked_metrics (same threshold)
                function_dict.update(
                    _ranked_from_lists(calc, function_dict, indices, kwargs, num_k, num_ref)
                )
            else:
                kwargs.update(_neighbor_kwargs(calc, distances, indices, kwargs, label_counts))
        if any(m in calc.requires_clustering() for m in function_dict):
            kwargs["cluster_labels"] = calc.get_cluster_labels(**kwargs)
        return calc._get_accuracy(function_dict, **kwargs)


def _warn_no_neighbour() -> None:
    config.LOGGER.warning("None of the query labels are in the reference set: k-NN metrics are NaN")


def _neighbor_kwargs(
    calc: AccuracyCalculator,
    distances: Tensor,
    indices: Tensor,
    kwargs: dict[str, Any],
    label_counts: tuple[Tensor, Tensor],
) -> dict[str, Any]:
    """The k-NN keyword arguments one process's neighbour-list route gives the metrics."""
    comparison = calc.label_comparison_fn or EQUALITY
    query_labels, reference_labels = kwargs["query_labels"], kwargs["reference_labels"]
    lone_query_labels, not_lone_query_mask = get_lone_query_labels(
        query_labels, label_counts, kwargs["ref_includes_query"], comparison
    )
    if not bool(not_lone_query_mask.any()):
        _warn_no_neighbour()
    return {
        "label_counts": label_counts,
        "knn_labels": reference_labels[indices.to(reference_labels.device)],
        "knn_distances": distances,
        "lone_query_labels": lone_query_labels,
        "not_lone_query_mask": not_lone_query_mask,
    }


def _ranked_from_lists(
    calc: AccuracyCalculator,
    function_dict: dict[str, Callable[..., Any]],
    indices: Tensor,
    kwargs: dict[str, Any],
    num_k: int,
    num_ref: int,
) -> dict[str, Callable[..., Any]]:
    """The exact-ranking route's metric functions, from the merged neighbour lists.

    One process ranks the whole reference (:func:`pml.eval.functional.retrieval_values`);
    here the lists hold the same ranking up to ``k``. The per-query values are computed by
    the same function on tensors of the same shapes (blocks of query rows, one column per
    same-class reference item), so every value is bitwise the same.
    """
    query_labels = kwargs["query_labels"]
    query_ids, reference_ids, classes = EF.label_ids(query_labels, kwargs["reference_labels"])
    counts = torch.bincount(reference_ids, minlength=classes.shape[0])
    num_relevant = counts[query_ids] - int(kwargs["ref_includes_query"])
    batch_size = getattr(calc.knn_func, "batch_size", None)
    rows = EF.chunk_rows(num_ref, batch_size)
    values = _values_from_lists(
        indices, query_ids, reference_ids, counts, num_relevant, num_k, rows
    )
    kept = num_relevant > 0
    if not bool(kept.any()):
        _warn_no_neighbour()
    aggregate = functools.partial(
        _aggregate,
        kept,
        query_labels,
        torch.unique(query_labels, dim=0),
        calc.avg_of_avgs,
        calc.return_per_class,
    )
    knn_metrics = calc.requires_knn()
    return {
        name: functools.partial(aggregate, values[name])
        for name in function_dict
        if name in EF.RETRIEVAL_METRICS and name in knn_metrics
    }


def _values_from_lists(
    indices: Tensor,
    query_ids: Tensor,
    reference_ids: Tensor,
    counts: Tensor,
    num_relevant: Tensor,
    k: int,
    rows: int,
) -> dict[str, Tensor]:
    """Per-query values of :func:`~pml.eval.functional.retrieval_values` from ``(N, k)`` lists."""
    num_query = query_ids.shape[0]
    device = query_ids.device
    out = {
        name: torch.full((num_query,), float("nan"), dtype=torch.float64, device=device)
        for name in EF.RETRIEVAL_METRICS
    }
    out["mean_reciprocal_rank"] = out["mean_reciprocal_rank"].float()
    for s in range(0, num_query if reference_ids.shape[0] and k else 0, rows):
        ids = query_ids[s : s + rows]
        width = int(counts[ids].max())  # the ranking's: one column per same-class item
        rel = reference_ids[indices[s : s + rows]] == ids.unsqueeze(1)
        ranks = torch.full((ids.shape[0], width), k + 1, dtype=torch.int64, device=device)
        r_rows, r_cols = rel.nonzero(as_tuple=True)
        slots = rel.cumsum(1)[r_rows, r_cols] - 1
        ranks[r_rows, slots] = r_cols + 1
        r = num_relevant[s : s + rows]
        lone = r <= 0
        for name, v in _from_ranks(ranks, r, k).items():
            out[name][s : s + rows] = v.masked_fill(lone, float("nan"))
    return out


def _aggregate(
    kept: Tensor,
    query_labels: Tensor,
    unique_query_labels: Tensor,
    avg_of_avgs: bool,
    return_per_class: bool,
    values: Tensor,
    /,
    **kwargs: Any,
) -> Any:
    """A metric from its per-query values, as the exact-ranking route aggregates them."""
    if not bool(kept.any()):
        return nan_accuracy(unique_query_labels, return_per_class)
    return maybe_get_avg_of_avgs(
        values[kept], query_labels[kept][:, None], avg_of_avgs, return_per_class
    )


# ---------------------------------------------------------------------------- testers


def calculator_accuracy(calc: AccuracyCalculator, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """``calc.get_accuracy(...)``, distributed when ``calc.knn_func`` is a DistributedKNN."""
    if isinstance(calc.knn_func, DistributedKNN):
        return distributed_get_accuracy(calc, *args, **kwargs)
    return calc.get_accuracy(*args, **kwargs)


def calculator_unique(calc: AccuracyCalculator, values: Tensor) -> Tensor:
    """Sorted distinct ``values``, of every rank's when ``calc`` evaluates distributed."""
    if isinstance(calc.knn_func, DistributedKNN) and get_world_size() > 1:
        sizes = _exchange([values.shape[0]], values.device)[:, 0].tolist()
        values = _gather_rows(values, sizes)
    return torch.unique(values)
