"""all_gather helpers for ``torch.distributed``.

Convention (the reference's): gathered tensors put the local block first, then the other
ranks in ascending rank order, so local index ``i`` is global index ``i``. Gathered copies of
other ranks carry no autograd graph; the local block keeps its graph.
:func:`gather_in_rank_order` is the exception: rank 0's block first on every rank, the layout
of one process holding the concatenated batch (for stateful consumers such as a memory queue,
which must hold the same rows on every rank).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from pml.core.indices import IndicesTuple, get_all_pairs_indices, remove_self_comparisons

__all__ = [
    "all_gather",
    "all_gather_embeddings_and_labels",
    "gather",
    "gather_emb_and_ref",
    "gather_enqueue_mask",
    "gather_in_rank_order",
    "get_indices_tuple",
    "get_world_size",
    "is_distributed",
    "select_ref_or_regular",
]


def is_distributed() -> bool:
    """``True`` when torch.distributed is available and a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    """World size of the default group, 1 when not distributed."""
    return dist.get_world_size() if is_distributed() else 1


def _all_gather_blocks(x: Tensor) -> list[Tensor] | None:
    """Every rank's ``x`` (detached), indexed by rank; None when the world size is 1."""
    world_size = get_world_size()
    if world_size <= 1:
        return None
    is_bool = x.dtype == torch.bool
    x = x.contiguous().to(torch.uint8) if is_bool else x.contiguous()
    local_size = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes = [torch.zeros_like(local_size) for _ in range(world_size)]
    dist.all_gather(sizes, local_size)
    max_size = int(torch.stack(sizes).max())
    padded = x
    if x.shape[0] < max_size:
        pad = x.new_zeros((max_size - x.shape[0], *x.shape[1:]))
        padded = torch.cat([x, pad])
    buffers = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(buffers, padded.detach())
    blocks = [buf[: int(sizes[r])] for r, buf in enumerate(buffers)]
    return [b.bool() for b in blocks] if is_bool else blocks


def all_gather(x: Tensor) -> Tensor | None:
    """Gather ``x`` from every rank, drop the caller's own copy, concatenate the others.

    Every rank must pass a tensor of the same shape except along dim 0 (sizes are exchanged
    first, so ranks may hold different batch sizes). Returns None when the world size is 1.
    """
    blocks = _all_gather_blocks(x)
    if blocks is None:
        return None
    rank = dist.get_rank()
    return torch.cat([b for r, b in enumerate(blocks) if r != rank], dim=0)


def gather_in_rank_order(x: Tensor) -> tuple[Tensor, int]:
    """Every rank's ``x`` concatenated in ascending rank order (rank 0 first).

    Unlike :func:`gather` (local block first), every rank gets the same layout: that of one
    process holding the concatenated batch. The caller's block is ``x`` itself (it keeps its
    autograd graph and device); the other blocks are detached copies.

    Returns:
        ``(gathered, offset)``: ``gathered[offset : offset + len(x)]`` is the caller's block.
        Not distributed (or world size 1): ``(x, 0)``.
    """
    blocks = _all_gather_blocks(x)
    if blocks is None:
        return x, 0
    rank = dist.get_rank()
    offset = sum(len(b) for b in blocks[:rank])
    blocks[rank] = x
    return torch.cat([b.to(x.device) for b in blocks], dim=0), offset


def all_gather_embeddings_and_labels(
    emb: Tensor, labels: Tensor | None
) -> tuple[Tensor | None, Tensor | None]:
    """Gathered embeddings and labels of the *other* ranks; ``(None, None)`` if not distributed."""
    if not is_distributed():
        return None, None
    other_emb = all_gather(emb)
    other_labels = all_gather(labels) if labels is not None else None
    return other_emb, other_labels


def gather(emb: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``(cat[emb, others], cat[labels, other_labels] or None, labels)``; local block first."""
    device = emb.device
    if labels is not None:
        labels = labels.to(device)
    other_emb, other_labels = all_gather_embeddings_and_labels(emb, labels)
    all_emb, all_labels = emb, labels
    if other_emb is not None:
        all_emb = torch.cat([emb, other_emb.to(device)], dim=0)
        if labels is not None and other_labels is not None:
            all_labels = torch.cat([labels, other_labels.to(device)], dim=0)
    return all_emb, all_labels, labels


def gather_emb_and_ref(
    emb: Tensor,
    labels: Tensor | None,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None, Tensor | None]:
    """Gather query and (when given) reference sets.

    Returns:
        ``(all_emb, all_labels, all_ref_emb, all_ref_labels, labels)``.
    """
    all_emb, all_labels, labels = gather(emb, labels)
    all_ref_emb, all_ref_labels = None, None
    if ref_emb is not None:
        all_ref_emb, all_ref_labels, _ = gather(ref_emb, ref_labels)
    return all_emb, all_labels, all_ref_emb, all_ref_labels, labels


def get_indices_tuple(
    labels: Tensor,
    ref_labels: Tensor,
    embeddings: Tensor | None = None,
    ref_emb: Tensor | None = None,
    miner: Any = None,
) -> IndicesTuple:
    """Local anchors against the gathered reference, without self comparisons.

    With a miner: ``miner(embeddings, labels, ref_emb, ref_labels)``; otherwise all pairs.
    The local batch occupies reference slots ``0..len(labels)-1``.
    """
    if miner is not None:
        indices_tuple = miner(embeddings, labels, ref_emb, ref_labels)
    else:
        indices_tuple = get_all_pairs_indices(labels, ref_labels)
    curr = torch.arange(len(labels), device=labels.device)
    return remove_self_comparisons(indices_tuple, curr, len(ref_labels))


def select_ref_or_regular(regular: Any, ref: Any) -> Any:
    """``ref`` if it is not None, else ``regular``."""
    return regular if ref is None else ref


def gather_enqueue_mask(enqueue_mask: Tensor | None, device: torch.device) -> Tensor | None:
    """``cat[mask, masks of the other ranks]`` on ``device``; None stays None."""
    if enqueue_mask is None:
        return None
    enqueue_mask = enqueue_mask.to(device)
    others = all_gather(enqueue_mask)
    if others is None:
        return enqueue_mask
    return torch.cat([enqueue_mask, others.to(device)], dim=0)
