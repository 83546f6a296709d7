"""The re-identification protocol: CMC@k and mAP (thin layer over ``reid_values``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from pml.core.validation import check_bool, check_int, check_type
from pml.distances import BaseDistance
from pml.eval import functional as EF
from pml.eval._io import as_embeddings, as_labels, check_dim
from pml.eval._summaries import class_labels, summarize

__all__ = ["reid_metrics"]


def _ids(x: Any, name: str, num: int, device: torch.device) -> Tensor:
    t = as_labels(x, name, num, device)
    if t.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one id per item); got shape {tuple(t.shape)}")
    return t


def _junk(junk_labels: Any, device: torch.device) -> Tensor | None:
    if junk_labels is None:
        return None
    if isinstance(junk_labels, Tensor):
        return junk_labels.reshape(-1).to(device)
    if isinstance(junk_labels, str | bytes) or not isinstance(junk_labels, Iterable):
        raise TypeError(
            f"junk_labels must be a sequence of labels (or a tensor, or None); got "
            f"{type(junk_labels).__name__}"
        )
    values = list(junk_labels)
    return torch.as_tensor(values, device=device) if values else None


def reid_metrics(
    query: Any,
    query_labels: Any,
    gallery: Any,
    gallery_labels: Any,
    query_cameras: Any = None,
    gallery_cameras: Any = None,
    *,
    junk_labels: Sequence[Any] | Tensor | None = (-1,),
    ks: Sequence[int] = (1, 5, 10),
    distance: BaseDistance | None = None,
    return_per_class: bool = False,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """CMC@k and mAP of a query set against a gallery under the re-ID protocol.

    For each query the gallery is ranked by ``distance`` (default: squared L2, i.e.
    Euclidean order; equal distances by gallery index). Gallery items of the query's
    identity seen by the query's camera (or session) are removed, and so are items whose
    identity is in ``junk_labels`` (Market-1501: ``-1`` junk images; its ``0``
    distractors are kept as non-matches unless listed). The matches are the remaining items
    of the query's identity. ``CMC@k`` is the fraction of queries whose first match ranks
    within the top ``k`` of the filtered gallery; ``mAP`` the mean of
    ``AP = (1/R) sum_j precision@rank(j)`` over the ``R`` matches (non-interpolated, over the
    whole filtered ranking). Queries without any match are skipped and counted.

    Args:
        query: ``(N, D)`` embeddings (tensor or numpy; f16/bf16 computed in float32).
        query_labels: identities ``(N,)``.
        gallery: ``(M, D)`` embeddings.
        gallery_labels: identities ``(M,)``.
        query_cameras: camera or session ids ``(N,)``; None: no same-camera removal.
        gallery_cameras: ``(M,)``, given exactly when ``query_cameras`` is.
        junk_labels: identities removed from every ranking (None or ``()``: none).
        ks: CMC cut-offs, positive ints.
        distance: a pml distance (None: squared L2).
        return_per_class: per-identity means (sorted identities of the scored queries).
        batch_size: query rows per block.

    Returns:
        ``{"cmc_at_<k>" for each k, "mean_average_precision": float or list,
        "num_queries": scored queries, "num_skipped_queries": queries without a match}``,
        plus ``"class_labels"`` with ``return_per_class``.

    Raises:
        TypeError: wrong argument types.
        ValueError: shapes that do not match, NaN/inf embeddings, cameras for one side only,
            bad ``ks``.

    Example:
        >>> g = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
        >>> out = reid_metrics(torch.tensor([[0.1]]), torch.tensor([7]), g,
        ...                    torch.tensor([7, 3, 7, -1]), torch.tensor([0]),
        ...                    torch.tensor([0, 1, 2, 1]), ks=(1, 2))
        >>> out["cmc_at_1"], out["cmc_at_2"], out["mean_average_precision"]
        (0.0, 1.0, 0.5)
    """
    check_bool("return_per_class", return_per_class)
    check_type("distance", distance, BaseDistance, allow_none=True)
    batch_size = check_int("batch_size", batch_size, min=1, allow_none=True)
    if isinstance(ks, str | bytes) or not isinstance(ks, Iterable):
        raise TypeError(f"ks must be a sequence of positive ints; got {type(ks).__name__}")
    ks = [check_int(f"ks[{i}]", v, min=1) for i, v in enumerate(ks)]  # type: ignore[misc]
    if not ks:
        raise ValueError("ks must not be empty")
    if (query_cameras is None) != (gallery_cameras is None):
        raise ValueError(
            "query_cameras and gallery_cameras must be given together (or both None); got "
            f"query_cameras={'None' if query_cameras is None else 'given'}, "
            f"gallery_cameras={'None' if gallery_cameras is None else 'given'}"
        )
    q = as_embeddings(query, "query")
    device = q.device
    g = as_embeddings(gallery, "gallery", device)
    check_dim(g, "gallery", q.shape[1], "query")
    q_labels = _ids(query_labels, "query_labels", q.shape[0], device)
    g_labels = _ids(gallery_labels, "gallery_labels", g.shape[0], device)
    q_cams = g_cams = None
    if query_cameras is not None:
        q_cams = _ids(query_cameras, "query_cameras", q.shape[0], device)
        g_cams = _ids(gallery_cameras, "gallery_cameras", g.shape[0], device)
    junk = _junk(junk_labels, device)
    with torch.no_grad():
        values = EF.reid_values(
            q,
            q_labels,
            g,
            g_labels,
            q_cams,
            g_cams,
            junk_labels=junk,
            ks=ks,
            distance_fn=distance,
            is_inverted=bool(getattr(distance, "is_inverted", False)),
            batch_size=batch_size,
        )
    ap = values["average_precision"]
    out: dict[str, Any] = {
        f"cmc_at_{k}": summarize(values["cmc"][:, i], q_labels, return_per_class)
        for i, k in enumerate(ks)
    }
    out["mean_average_precision"] = summarize(ap, q_labels, return_per_class)
    scored = int((values["num_matches"] > 0).sum())
    out["num_queries"] = scored
    out["num_skipped_queries"] = q.shape[0] - scored
    if return_per_class:
        out["class_labels"] = class_labels(ap, q_labels)
    return out
