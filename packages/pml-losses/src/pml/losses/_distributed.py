"""DistributedLossWrapper: compute a loss over the batches of every ``torch.distributed`` rank.

The reference has this class in ``utils.distributed``; pml keeps it with the losses.
Gathering helpers are pml-core's (:mod:`pml.core.distributed`): the local block comes first,
then the other ranks in ascending order; only the local block carries gradients.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from pml.core import distributed as D
from pml.core.indices import IndicesTuple, get_all_pairs_indices, remove_self_comparisons
from pml.losses._arguments import check_bool
from pml.losses._base import BaseMetricLossFunction
from pml.losses._cross_batch_memory import CrossBatchMemory


class DistributedLossWrapper(nn.Module):
    """Make a loss see the embeddings of all ranks; the result is multiplied by the world size.

    The multiplication compensates DistributedDataParallel's averaging of gradients over
    ranks, so the gradient of the local embeddings equals that of one process computing the
    loss on the concatenated batch.

    Args:
        loss: a :class:`BaseMetricLossFunction` or a :class:`CrossBatchMemory`.
        efficient: ``False``: the loss runs on the gathered batch (queries = everyone's
            embeddings). ``True``: the local embeddings are the queries and the gathered
            batch is the reference set (an ``(N, world_size * N)`` problem instead of
            ``(world_size * N)^2``); pairs come from labels, without self comparisons.

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
        if not isinstance(loss, BaseMetricLossFunction | CrossBatchMemory):
            raise TypeError(
                "loss must be a BaseMetricLossFunction or CrossBatchMemory instance; "
                f"got {type(loss).__name__}"
            )
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
                index the local batch, ``p``/``n`` the gathered reference).
            ref_emb: local reference embeddings ``(M, D)`` (gathered too).
            ref_labels: local reference labels ``(M,)``.
            enqueue_mask: CrossBatchMemory only: local bool mask ``(N,)``.

        Returns:
            A 0-dim tensor in the embeddings' dtype.

        Raises:
            ValueError: ``ref_emb``/``ref_labels`` with a CrossBatchMemory, ``enqueue_mask``
                with another loss, or missing labels in efficient mode.
        """
        if isinstance(self.loss, CrossBatchMemory):
            return self._cross_batch_memory(
                embeddings, labels, indices_tuple, ref_emb, ref_labels, enqueue_mask
            )
        if enqueue_mask is not None:
            raise ValueError("enqueue_mask is only supported when wrapping a CrossBatchMemory")
        if not D.is_distributed():
            _warn_not_distributed()
            return self.loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        world_size = D.get_world_size()
        if world_size <= 1:
            return self.loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        all_emb, all_labels, all_ref_emb, all_ref_labels, labels = D.gather_emb_and_ref(
            embeddings, labels, ref_emb, ref_labels
        )
        if not self.efficient:
            loss = self.loss(all_emb, all_labels, indices_tuple, all_ref_emb, all_ref_labels)
            return loss * world_size
        has_ref = ref_emb is not None
        ref = all_ref_emb if has_ref else all_emb
        ref_lab = all_ref_labels if has_ref else all_labels
        if indices_tuple is None:
            if labels is None:
                raise ValueError(
                    "labels must be given in efficient mode when indices_tuple is None"
                )
            if ref_lab is None:
                raise ValueError("ref_labels must be given with ref_emb when indices_tuple is None")
            indices_tuple = get_all_pairs_indices(labels, ref_lab)
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
        all_emb, all_labels, _ = D.gather(embeddings, labels)
        all_mask = D.gather_enqueue_mask(enqueue_mask, embeddings.device)
        return self.loss(all_emb, all_labels, indices_tuple, all_mask) * world_size


def _warn_not_distributed() -> None:
    warnings.warn(
        "DistributedLossWrapper is being used in a non-distributed setting; "
        "returning the wrapped loss of the local batch",
        UserWarning,
        stacklevel=3,
    )


__all__ = ["DistributedLossWrapper"]
