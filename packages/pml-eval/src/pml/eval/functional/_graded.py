"""NDCG@k: ranking quality with graded relevance, normalised by the ideal ranking.

For query ``i`` the reference items are ranked by distance (closest first, equal distances
by ascending reference index; the query itself left out when the query set is the reference
set). With gains ``g_ij >= 0`` (from labels, see :func:`label_gains`) and the standard
``log2`` discount::

    DCG@k_i  = sum_{r=1..k} gain(g_{i, pi_i(r)}) / log2(r + 1)
    IDCG@k_i = the same sum over the gains of *all* the query's references sorted descending
    NDCG@k_i = DCG@k_i / IDCG@k_i

``gain`` is the identity (``"linear"``) or ``2**g - 1`` (``"exponential"``). A query whose
references all have gain 0 has no ideal ranking: its NDCG is NaN.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from pml.core.dtypes import accumulation_dtype
from pml.core.validation import check_finite, check_option
from pml.eval.functional._knn import DistanceFn, block_distance, chunk_rows, closest_first
from pml.eval.functional._self_matches import remove_self_matches
from pml.eval.functional._smallest_k import smallest_k

__all__ = ["RelevanceFn", "label_gains", "ndcg_values"]

#: ``fn(query_labels (B, 1, ...), reference_labels (1, M, ...)) -> gains (B, M)``, ``>= 0``
RelevanceFn = Callable[[Tensor, Tensor], Tensor]


def label_gains(query_labels: Tensor, reference_labels: Tensor) -> Tensor:
    """Default gains: the number of equal label columns (1-D labels: 1 if equal, else 0).

    Args:
        query_labels: ``(B, 1)`` or ``(B, 1, L)``.
        reference_labels: ``(1, M)`` or ``(1, M, L)``.

    Returns:
        ``(B, M)`` int64.

    Example:
        >>> q, r = torch.tensor([[3, 1]]), torch.tensor([[3, 1], [3, 2], [0, 0]])
        >>> label_gains(q.unsqueeze(1), r.unsqueeze(0))
        tensor([[2, 1, 0]])
    """
    same = query_labels == reference_labels
    if same.ndim > 2:
        return same.reshape(*same.shape[:2], -1).sum(-1)
    return same.to(torch.int64)


def ndcg_values(
    query: Tensor,
    query_labels: Tensor,
    reference: Tensor,
    reference_labels: Tensor,
    k: int | None = None,
    *,
    relevance_fn: RelevanceFn | None = None,
    gain: Literal["linear", "exponential"] = "linear",
    ref_includes_query: bool = False,
    distance_fn: DistanceFn | None = None,
    is_inverted: bool = False,
    batch_size: int | None = None,
) -> Tensor:
    """Per-query NDCG@k (see the module docstring), chunked over query rows.

    Memory: one ``(B, M)`` block of distances and one of gains (``B`` from ``batch_size`` or
    ~16M entries).

    Args:
        query: shape ``(N, D)``.
        query_labels: ``(N,)`` or ``(N, L)``, any dtype ``relevance_fn`` understands.
        reference: shape ``(M, D)``.
        reference_labels: ``(M,)`` or ``(M, L)``.
        k: rank cut-off (None: the whole ranking); clamped to ``M - ref_includes_query``.
        relevance_fn: gains ``fn(query_labels[:, None], reference_labels[None]) -> (B, M)``,
            non-negative (None: :func:`label_gains`).
        gain: ``"linear"`` (``g``) or ``"exponential"`` (``2**g - 1``).
        ref_includes_query: query row ``i`` is reference row ``i``: it is neither ranked
            nor in the ideal ranking.
        distance_fn: ``(B, D), (M, D) -> (B, M)`` (e.g. a pml distance); None: squared L2.
        is_inverted: ``True`` when larger values of ``distance_fn`` mean closer.
        batch_size: query rows per block.

    Returns:
        ``(N,)`` float64; NaN where the ideal DCG is 0 (no reference with a positive gain).

    Raises:
        ValueError: NaN/inf embeddings, gains of another shape than ``(B, M)``, negative
            gains, an unknown ``gain``.

    Example:
        >>> x = torch.tensor([[0.0], [1.0], [2.0]])
        >>> ndcg_values(x, torch.tensor([0, 1, 0]), x, torch.tensor([0, 1, 0]),
        ...             ref_includes_query=True).tolist()
        [0.6309297535714575, nan, 0.6309297535714575]
    """
    check_option("gain", gain, ("linear", "exponential"))
    check_finite(query, "query")
    if reference is not query:
        check_finite(reference, "reference")
    relevance_fn = label_gains if relevance_fn is None else relevance_fn
    dtype = accumulation_dtype(torch.promote_types(query.dtype, reference.dtype))
    query, reference = query.to(dtype), reference.to(dtype)
    num_query, num_ref = query.shape[0], reference.shape[0]
    own = int(ref_includes_query)
    max_k = max(num_ref - own, 0)
    k_eff = max_k if k is None else min(k, max_k)
    device = query.device
    out = torch.full((num_query,), float("nan"), dtype=torch.float64, device=device)
    if k_eff == 0:
        return out
    discount = 1.0 / torch.log2(torch.arange(2, k_eff + 2, device=device, dtype=torch.float64))
    ref_labels = reference_labels.unsqueeze(0)
    rows = chunk_rows(num_ref, batch_size)
    blocks = block_distance(reference, distance_fn)
    for s in range(0, num_query, rows):
        e = min(s + rows, num_query)
        mat = closest_first(blocks(query[s:e]), is_inverted, inplace=True)
        _, idx = smallest_k(mat, k_eff + own)
        if own:
            _, idx = remove_self_matches(idx, idx, offset=s)
        del mat
        gains = relevance_fn(query_labels[s:e].unsqueeze(1), ref_labels)
        if not isinstance(gains, Tensor) or gains.shape != (e - s, num_ref):
            got = tuple(gains.shape) if isinstance(gains, Tensor) else type(gains).__name__
            raise ValueError(
                f"relevance_fn must return gains of shape {(e - s, num_ref)} (query block x "
                f"reference); got {got}"
            )
        gains = gains.to(torch.float64)
        if bool((gains < 0).any()):
            raise ValueError("relevance_fn must return non-negative gains; got negative values")
        if gain == "exponential":
            gains = torch.exp2(gains) - 1
        if own:
            local = torch.arange(e - s, device=device)
            gains[local, local + s] = 0.0  # the query itself is not in the ideal ranking
        dcg = (gains.gather(1, idx) * discount).sum(1)
        ideal = torch.topk(gains, k_eff, dim=1, sorted=True).values
        idcg = (ideal * discount).sum(1)
        out[s:e] = dcg / idcg
    return out
