"""AccuracyCalculator's neighbour lists: how its ``knn_func`` searches, and ``(N, k)`` lists.

:func:`known_search` says how a ``knn_func`` pml knows searches (plain torch, faiss's exact
flat index, or :class:`~pml.eval.ApproximateKNN`): the built-in metrics then come from
neighbour blocks scored on the fly (:mod:`pml.eval._ranked`). :func:`neighbor_lists` calls
any ``knn_func`` for the ``(N, k)`` lists that ``calculate_*`` methods receive: custom
metrics, a custom label comparison, or a ``knn_func`` pml does not know.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from pml.core import config
from pml.eval import functional as EF
from pml.eval._approximate_knn import ApproximateKNN
from pml.eval._faiss import faiss_available
from pml.eval._faiss_knn import FaissKNN, faiss_flat_l2_blocks
from pml.eval._knn import TorchKNN
from pml.eval._metrics import EQUALITY, get_label_match_counts, get_lone_query_labels

if TYPE_CHECKING:
    from pml.eval._accuracy import AccuracyCalculator

__all__ = ["Search", "check_knn_indices", "known_search", "neighbor_lists", "redefined"]

#: ``blocks(query, reference, num_search, ref_includes_query)`` -> ``(start, indices)`` blocks
BlocksFn = Callable[[Tensor, Tensor, int, bool], Iterator[tuple[int, Tensor]]]


def redefined(cls: type, attr: str) -> bool:
    """Whether a subclass redefines ``attr``: more than one class of the MRO defines it."""
    return sum(attr in vars(c) for c in cls.__mro__) > 1


@dataclass(frozen=True)
class Search:
    """How a ``knn_func`` pml knows finds neighbours.

    Attributes:
        kind: ``"torch"``, ``"faiss"`` (exact flat L2) or ``"approximate"``.
        exact: the exact ranking of ``distance`` may stand in for it (any ``k``).
        distance: what it ranks by (None: squared L2).
        is_inverted: larger ``distance`` values are closer.
        batch_size: query rows per block (torch), None: automatic.
        blocks: the search, block by block, self matches not removed.
    """

    kind: str
    exact: bool
    distance: Any
    is_inverted: bool
    batch_size: int | None
    blocks: BlocksFn


def _torch_blocks(knn: TorchKNN) -> BlocksFn:
    def blocks(
        query: Tensor, reference: Tensor, num_search: int, ref_includes_query: bool
    ) -> Iterator[tuple[int, Tensor]]:
        found = EF.knn_blocks(
            query,
            reference.to(query.device),
            num_search,
            distance_fn=knn.distance,
            is_inverted=knn.is_inverted,
            batch_size=knn.batch_size,
        )
        return ((s, idx) for s, _, idx in found)

    return blocks


def _faiss_blocks(
    query: Tensor, reference: Tensor, num_search: int, ref_includes_query: bool
) -> Iterator[tuple[int, Tensor]]:
    return faiss_flat_l2_blocks(query, reference, num_search)


def known_search(calc: AccuracyCalculator, query: Tensor | None = None) -> Search | None:
    """How ``calc.knn_func`` searches, when pml knows it exactly; None for any other callable.

    * :class:`TorchKNN`/:class:`CustomKNN` (``__call__`` not overridden): plain torch. The
      calculator's own default ``TorchKNN()`` searches with faiss's exact ``IndexFlatL2``
      instead when faiss is installed and the embeddings are float32 on the CPU (same
      distances, same order; faster for small ``k``); pass ``knn_func=TorchKNN()`` to keep
      plain torch.
    * :class:`FaissKNN` with a fresh CPU ``IndexFlatL2`` each call (its defaults): faiss's
      exact search.
    * :class:`ApproximateKNN`: its index, recall measured on a sample.
    """
    knn = calc.knn_func
    if isinstance(knn, ApproximateKNN) and not redefined(type(knn), "__call__"):
        return Search("approximate", False, None, False, None, knn.search_blocks)
    on_cpu = query is None or query.device.type == "cpu"
    if isinstance(knn, FaissKNN) and not redefined(type(knn), "__call__"):
        if knn.is_exact_flat_l2 and on_cpu:
            return Search("faiss", True, None, False, None, _faiss_blocks)
        return None
    if isinstance(knn, TorchKNN) and not redefined(type(knn), "__call__"):
        use_faiss = (
            knn is getattr(calc, "_default_knn", None)
            and knn.distance is None
            and on_cpu
            and (query is None or query.dtype == torch.float32)
            and faiss_available()
        )
        blocks = _faiss_blocks if use_faiss else _torch_blocks(knn)
        kind = "faiss" if use_faiss else "torch"
        return Search(kind, True, knn.distance, knn.is_inverted, knn.batch_size, blocks)
    return None


def neighbor_lists(
    calc: AccuracyCalculator,
    query: Tensor,
    reference: Tensor,
    query_labels: Tensor,
    reference_labels: Tensor,
    ref_includes_query: bool,
    **kwargs: Any,
) -> dict[str, Any]:
    """The k-NN keyword arguments of the metric functions.

    Returns:
        ``{"label_counts", "knn_labels", "knn_distances", "lone_query_labels",
        "not_lone_query_mask", "knn_indices"}`` (the caller pops ``knn_indices``: the
        reference's metric functions are not given it).
    """
    comparison = calc.label_comparison_fn or EQUALITY
    label_counts = get_label_match_counts(query_labels, reference_labels, comparison)
    lone_query_labels, not_lone_query_mask = get_lone_query_labels(
        query_labels, label_counts, ref_includes_query, comparison
    )
    num_k = calc.determine_k(label_counts[1], reference.shape[0], ref_includes_query)
    knn_distances, knn_indices = calc.knn_func(query, num_k, reference, ref_includes_query)
    knn_indices = check_knn_indices(knn_indices, query.shape[0], reference.shape[0])
    knn_labels = reference_labels[knn_indices.to(reference_labels.device)]
    if not bool(not_lone_query_mask.any()):
        config.LOGGER.warning(
            "None of the query labels are in the reference set: k-NN metrics are NaN"
        )
    return {
        "label_counts": label_counts,
        "knn_labels": knn_labels,
        "knn_distances": knn_distances,
        "lone_query_labels": lone_query_labels,
        "not_lone_query_mask": not_lone_query_mask,
        "knn_indices": knn_indices,
    }


def check_knn_indices(indices: Any, num_query: int, num_ref: int) -> Tensor:
    """``knn_func``'s indices: ``(num_query, k)`` integers in ``[0, num_ref)``.

    Raises:
        TypeError: not a tensor, or not of an integer dtype.
        ValueError: another shape, or an index outside the reference (faiss's ``-1``).
    """
    if not isinstance(indices, Tensor):
        raise TypeError(f"knn_func must return index tensors; got {type(indices).__name__}")
    if indices.ndim != 2 or indices.shape[0] != num_query:
        raise ValueError(
            f"knn_func must return indices of shape ({num_query}, k); got {tuple(indices.shape)}"
        )
    if indices.dtype.is_floating_point or indices.dtype == torch.bool:
        raise TypeError(f"knn_func must return integer indices; got {indices.dtype}")
    if indices.numel() > 0:
        low, high = torch.aminmax(indices)
        if int(low) < 0 or int(high) >= num_ref:
            # fix: the reference reads reference_labels[-1] for faiss's "not found" -1
            raise ValueError(
                f"knn_func returned neighbour indices outside [0, {num_ref}) "
                f"(min {int(low)}, max {int(high)}); -1 is faiss's padding when an index "
                "finds fewer than k neighbours (approximate indexes, NaN queries): use an "
                "exact index or a smaller k"
            )
    return indices
