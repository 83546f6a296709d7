"""DistributedLossWrapper: compute a loss over the batches of every ``torch.distributed`` rank.

The reference has this class in ``utils.distributed``; pml keeps it with the losses.
Gathering helpers are pml-core's (:mod:`pml.core.distributed`): the local block comes first,
then the other ranks in ascending order; only the local block carries gradients. A wrapped
CrossBatchMemory is the exception: it gets the batches in rank order (rank 0 first) on every
rank, so that every rank's memory holds the same rows as one process fed the concatenated
batch.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from pml.core import distributed as D
from pml.core.indices import IndicesTuple, get_all_pairs_indices, remove_self_comparisons
from pml.core.validation import check_bool, check_indices_tuple, check_type, labels_required
from pml.losses._base import BaseMetricLossFunction, checked_indices_tuple
from pml.losses._cross_batch_memory import CrossBatchMemory


class DistributedLossWrapper(nn.Module):
    """Make a loss see the embeddings of all ranks; the result is multiplied by the world size.

    The multiplication compensates DistributedDataParallel's averaging of gradients over
    ranks, so the gradient of the local embeddings equals that of one process computing the
    loss on the concatenated batch.

    With a :class:`CrossBatchMemory`, every rank enqueues the gathered batch in rank order
    (rank 0's rows first) and computes the loss of all gathered queries, so every rank holds
    the memory of one process fed the concatenated batch and returns ``world_size`` times
    that process's loss (the gradient of each rank's embeddings is ``world_size`` times that
    process's gradient of those rows).

    Args:
        loss: a :class:`BaseMetricLossFunction` or a :class:`CrossBatchMemory`.
        efficient: ``False``: the loss runs on the gathered batch (queries = everyone's
            embeddings). ``True``: the local embeddings are the queries and the gathered
            batch is the reference set (an ``(N, world_size * N)`` problem instead of
            ``(world_size * N)^2``); pairs come from labels, without self comparisons (a
            loss with label sets, MultiSupConLoss, pairs them by its ``label_set_pairs``).

    Raises:
        TypeError: ``loss`` is not a BaseMetricLossFunction or CrossBatchMemory.
        ValueError: ``efficient=True`` with a CrossBatchMemory.

    Example:
        >>> from pml.losses import ContrastiveLoss, DistributedLossWrapper  # doctest: +SKIP
        >>> loss_func = DistributedLossWrapper(ContrastiveLoss())  # doctest: +SKIP
        >>> loss = loss_func(embeddings, labels)  # in every rank  # doctest: +SKIP
    """

    def __init__(self, loss: nn.Module, efficient: bool = False) -> None:
        super().__init__()
        check_type("loss", loss, (BaseMetricLossFunction, CrossBatchMemory))
        check_bool("efficient", efficient)
        if efficient and isinstance(loss, CrossBatchMemory):
            raise ValueError("efficient=True is not supported with CrossBatchMemory")
        self.loss = loss
        self.efficient = efficient

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor | None = None,
        indices_tuple: IndicesTuple | None = None,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
        enqueue_mask: Tensor | None = None,
    ) -> Tensor:
        """Gather from every rank and compute the loss, times the world size.

        Args:
            embeddings: local embeddings ``(N, D)``.
            labels: local labels ``(N,)``.
            indices_tuple: pairs/triplets indexing the *gathered* arrays (efficient: anchors
                index the local batch, ``p``/``n`` the gathered reference; CrossBatchMemory:
                anchors index the batches concatenated in rank order, ``p``/``n`` the memory).
                Every index must lie in range (ValueError), checked on every call.
            ref_emb: local reference embeddings ``(M, D)`` (gathered too).
            ref_labels: local reference labels ``(M,)``.
            enqueue_mask: CrossBatchMemory only: local bool mask ``(N,)``.

        Returns:
            A 0-dim tensor in the embeddings' dtype.

        Raises:
            ValueError: ``ref_emb``/``ref_labels`` with a CrossBatchMemory, ``enqueue_mask``
                with another loss, missing labels in efficient mode, or ``indices_tuple``
                indices out of range.
        """
        if isinstance(self.loss, CrossBatchMemory):
            return self._cross_batch_memory(
                embeddings, labels, indices_tuple, ref_emb, ref_labels, enqueue_mask
            )
        if enqueue_mask is not None:
            raise ValueError("enqueue_mask is only supported when wrapping a CrossBatchMemory")
        if not D.is_distributed() or D.get_world_size() <= 1:
            if not D.is_distributed():
                _warn_not_distributed()
            indices_tuple = _check_bounds(
                indices_tuple, embeddings, embeddings if ref_emb is None else ref_emb
            )
            return self.loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        world_size = D.get_world_size()
        all_emb, all_labels, all_ref_emb, all_ref_labels, labels = D.gather_emb_and_ref(
            embeddings, labels, ref_emb, ref_labels
        )
        if not self.efficient:
            indices_tuple = _check_bounds(
                indices_tuple, all_emb, all_emb if all_ref_emb is None else all_ref_emb
            )
            loss = self.loss(all_emb, all_labels, indices_tuple, all_ref_emb, all_ref_labels)
            return loss * world_size
        has_ref = ref_emb is not None
        ref = all_ref_emb if has_ref else all_emb
        ref_lab = all_ref_labels if has_ref else all_labels
        # fix: the reference checks no bounds (-1 silently meant the last row).
        indices_tuple = _check_bounds(indices_tuple, embeddings, ref)
        if indices_tuple is None:
            if labels is None:
                raise ValueError(
                    "labels must be given in efficient mode when indices_tuple is None"
                )
            if ref_lab is None:
                raise ValueError("ref_labels must be given with ref_emb when indices_tuple is None")
            indices_tuple = _all_pairs(self.loss, labels, ref_lab)
            # fix: the reference also drops pairs (i, i) when a separate ref_emb is given,
            # although the local batch is then not part of the reference set.
            if not has_ref:
                curr = torch.arange(len(labels), device=labels.device)
                indices_tuple = remove_self_comparisons(indices_tuple, curr, len(ref_lab))
        return self.loss(embeddings, labels, indices_tuple, ref, ref_lab) * world_size

    def _cross_batch_memory(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        indices_tuple: IndicesTuple | None,
        ref_emb: Tensor | None,
        ref_labels: Tensor | None,
        enqueue_mask: Tensor | None,
    ) -> Tensor:
        if ref_emb is not None or ref_labels is not None:
            raise ValueError("ref_emb and ref_labels are not supported with CrossBatchMemory")
        if not D.is_distributed():
            _warn_not_distributed()
            # fix: the reference passes ref_emb/ref_labels positionally here, so a wrapped
            # CrossBatchMemory raised TypeError outside a process group.
            return self.loss(embeddings, labels, indices_tuple, enqueue_mask)
        world_size = D.get_world_size()
        if world_size <= 1:
            return self.loss(embeddings, labels, indices_tuple, enqueue_mask)
        labels = labels_required(labels)
        # fix: the reference gathers local-rank-first, so every rank enqueued the rows in
        # another order and, with a memory size that is not a multiple of the global batch,
        # the ranks' memories (and losses) diverged. Rank order is the same on every rank:
        # that of one process holding the concatenated batch.
        all_emb, _ = D.gather_in_rank_order(embeddings)
        all_labels, _ = D.gather_in_rank_order(labels.to(embeddings.device))
        all_mask = None
        if enqueue_mask is not None:
            all_mask, _ = D.gather_in_rank_order(enqueue_mask.to(embeddings.device))
        # The memory checks indices_tuple itself (against the gathered sizes).
        return self.loss(all_emb, all_labels, indices_tuple, all_mask) * world_size


def _all_pairs(loss: nn.Module, labels: Tensor, ref_labels: Tensor) -> IndicesTuple:
    """Every pair of the local rows with the gathered reference, positive or negative.

    A loss that reads label sets (one with ``label_set_pairs``, e.g. MultiSupConLoss) makes
    them itself, from its Jaccard threshold; other losses compare class labels.
    """
    # fix: get_all_pairs_indices cannot read (N, C) label sets (it raised "too many values
    # to unpack"), and with class labels it ignored MultiSupConLoss's threshold.
    label_set_pairs = getattr(loss, "label_set_pairs", None)
    if callable(label_set_pairs):
        return label_set_pairs(labels, ref_labels)
    return get_all_pairs_indices(labels, ref_labels)


def _check_bounds(
    indices_tuple: IndicesTuple | None, queries: Tensor, ref: Tensor
) -> IndicesTuple | None:
    """Anchors in ``[0, len(queries))``, positives/negatives in ``[0, len(ref))``.

    Returns the tuple marked as checked, so that the wrapped loss does not check it again.
    """
    if indices_tuple is None:
        return None
    check_indices_tuple(indices_tuple, len(queries), len(ref), check_bounds=True)
    return checked_indices_tuple(indices_tuple)


def _warn_not_distributed() -> None:
    warnings.warn(
        "DistributedLossWrapper is being used in a non-distributed setting; "
        "returning the wrapped loss of the local batch",
        UserWarning,
        stacklevel=3,
    )


__all__ = ["DistributedLossWrapper"]
