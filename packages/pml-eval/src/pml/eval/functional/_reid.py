"""The re-identification protocol: CMC@k and average precision over a filtered gallery.

For a query with identity ``y`` seen by camera ``c`` the gallery is ranked by distance
(closest first, equal distances by ascending gallery index), then filtered:

* removed: gallery items of identity ``y`` seen by camera ``c`` (the same view: trivial
  matches), and items whose identity is a *junk* label (e.g. Market-1501's ``-1``);
* *matches*: the remaining items of identity ``y``; every other remaining item is a
  non-match (distractors included).

With ``rank(j)`` an item's position in the filtered ranking (1-based) and ``R`` the number of
matches: ``CMC@k = 1`` if the first match has rank ``<= k``, else 0; ``AP = (1/R) sum over
matches j of (matches ranked at or before j) / rank(j)`` (the non-interpolated AP used by
the common re-ID code, over the whole filtered ranking). A query with no match (``R = 0``)
has no CMC or AP (NaN): callers skip and count it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pml.core.dtypes import accumulation_dtype
from pml.core.validation import check_finite
from pml.eval.functional._knn import DistanceFn, block_distance, closest_first

__all__ = ["reid_values"]

#: entries of one ``(B, M)`` block: the sort keeps a few copies of it
_BLOCK_ELEMENTS = 1 << 22


def reid_values(
    query: Tensor,
    query_labels: Tensor,
    gallery: Tensor,
    gallery_labels: Tensor,
    query_cameras: Tensor | None = None,
    gallery_cameras: Tensor | None = None,
    *,
    junk_labels: Tensor | None = None,
    ks: Sequence[int] = (1, 5, 10),
    distance_fn: DistanceFn | None = None,
    is_inverted: bool = False,
    batch_size: int | None = None,
) -> dict[str, Tensor]:
    """Per-query CMC@k and AP under the re-ID protocol (module docstring), chunked.

    Memory: a few ``(B, M)`` blocks, ``B * M`` ~4M (or ``batch_size`` rows).

    Args:
        query: shape ``(N, D)``.
        query_labels: identities ``(N,)``.
        gallery: shape ``(M, D)``.
        gallery_labels: identities ``(M,)``, comparable with ``query_labels``.
        query_cameras: camera (or session) ids ``(N,)``; None: no same-camera removal.
        gallery_cameras: ``(M,)``, with ``query_cameras``.
        junk_labels: 1-D identities whose gallery items are removed (None: none).
        ks: CMC cut-offs.
        distance_fn: ``(B, D), (M, D) -> (B, M)`` (e.g. a pml distance); None: squared L2.
        is_inverted: ``True`` when larger values of ``distance_fn`` mean closer.
        batch_size: query rows per block.

    Returns:
        ``{"average_precision": (N,) float64, "cmc": (N, len(ks)) float64 (0/1),
        "first_match_rank": (N,) int64, "num_matches": (N,) int64}``; AP and CMC are NaN and
        the rank 0 where a query has no match.

    Raises:
        ValueError: NaN or inf embeddings.

    Example:
        >>> g = torch.tensor([[0.0], [1.0], [2.0]])
        >>> out = reid_values(torch.tensor([[0.1]]), torch.tensor([5]), g,
        ...                   torch.tensor([5, 7, 5]), torch.tensor([0]), torch.tensor([0, 1, 1]))
        >>> out["first_match_rank"].tolist(), out["average_precision"].tolist()
        ([2], [0.5])
    """
    check_finite(query, "query")
    check_finite(gallery, "gallery")
    dtype = accumulation_dtype(torch.promote_types(query.dtype, gallery.dtype))
    query, gallery = query.to(dtype), gallery.to(dtype)
    num_query, num_gallery = query.shape[0], gallery.shape[0]
    device = query.device
    junk = (
        torch.zeros(num_gallery, dtype=torch.bool, device=device)
        if junk_labels is None
        else torch.isin(gallery_labels, junk_labels.to(gallery_labels.device))
    )
    cutoffs = torch.as_tensor(list(ks), dtype=torch.int64, device=device)
    ap = torch.full((num_query,), float("nan"), dtype=torch.float64, device=device)
    first_rank = torch.zeros(num_query, dtype=torch.int64, device=device)
    num_matches = torch.zeros(num_query, dtype=torch.int64, device=device)
    rows = batch_size or max(1, _BLOCK_ELEMENTS // max(num_gallery, 1))
    blocks = block_distance(gallery, distance_fn)
    for s in range(0, num_query if num_gallery else 0, rows):
        e = min(s + rows, num_query)
        mat = closest_first(blocks(query[s:e]), is_inverted, inplace=True)
        order = torch.sort(mat, dim=1, stable=True).indices
        del mat
        same_id = query_labels[s:e].unsqueeze(1) == gallery_labels.unsqueeze(0)
        removed = junk.unsqueeze(0).expand_as(same_id)
        if query_cameras is not None and gallery_cameras is not None:
            same_cam = query_cameras[s:e].unsqueeze(1) == gallery_cameras.unsqueeze(0)
            removed = removed | (same_id & same_cam)
        match = (same_id & ~removed).gather(1, order)
        kept_rank = (~removed).gather(1, order).cumsum(1)  # rank among the kept items
        del order, same_id, removed
        hits = match.cumsum(1)
        num = hits[:, -1]
        precision = hits.to(torch.float64) / kept_rank.clamp(min=1)
        ap[s:e] = (precision * match).sum(1) / num
        first = torch.where(match, kept_rank, num_gallery + 1).amin(1)
        first_rank[s:e] = torch.where(num > 0, first, 0)
        num_matches[s:e] = num
    has = num_matches > 0
    cmc = (first_rank.unsqueeze(1) <= cutoffs.unsqueeze(0)).to(torch.float64)
    cmc = torch.where(has.unsqueeze(1), cmc, float("nan"))
    return {
        "average_precision": ap,
        "cmc": cmc,
        "first_match_rank": first_rank,
        "num_matches": num_matches,
    }
