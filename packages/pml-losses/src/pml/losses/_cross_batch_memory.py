"""CrossBatchMemory: compare each batch with a queue of embeddings from recent batches.

Wang et al., "Cross-Batch Memory for Embedding Learning", CVPR 2020.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from pml.core.indices import (
    IndicesTuple,
    concatenate_indices_tuples,
    convert_to_pairs,
    get_all_pairs_indices,
    pairs_to_triplets,
    remove_self_comparisons,
)
from pml.core.records import ModuleWithRecords
from pml.core.validation import (
    InvalidArgumentError,
    check_embeddings,
    check_indices_tuple,
    check_shapes,
)
from pml.losses._base import BaseLossWrapper

#: class names CrossBatchMemory accepts (spec losses-other.md, CrossBatchMemory)
CROSS_BATCH_MEMORY_LOSSES = (
    "AngularLoss",
    "CircleLoss",
    "ContrastiveLoss",
    "GeneralizedLiftedStructureLoss",
    "IntraPairVarianceLoss",
    "LiftedStructureLoss",
    "MarginLoss",
    "MultiSimilarityLoss",
    "NCALoss",
    "NTXentLoss",
    "SignalToNoiseRatioContrastiveLoss",
    "SupConLoss",
    "TripletMarginLoss",
    "TupletMarginLoss",
)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int; got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1; got {value}")
    return value


def _match_tuple_format(indices_tuple: IndicesTuple, like: IndicesTuple) -> IndicesTuple:
    """``indices_tuple`` converted to pairs or triplets, whichever ``like`` is."""
    if len(indices_tuple) == len(like):
        return indices_tuple
    if len(like) == 4:
        return convert_to_pairs(indices_tuple, None)
    return pairs_to_triplets(indices_tuple)  # type: ignore[arg-type]


class CrossBatchMemory(BaseLossWrapper, ModuleWithRecords):
    """Wrap a pair/triplet loss so that queries are compared with a memory of past batches.

    Every call enqueues (detached) embeddings and labels into a FIFO queue of
    ``memory_size`` slots, then computes ``loss(queries, query_labels, indices_tuple,
    memory, memory_labels)``. The current batch is already in the memory when the loss runs;
    a query's comparison with its own slot is removed from the positives.

    Args:
        loss: the wrapped loss; one of :meth:`supported_losses` (checked by class name).
        embedding_size: width ``D`` of the memory.
        memory_size: number of slots of the queue.
        miner: optional tuple miner, called as ``miner(queries, query_labels, memory,
            memory_labels)``; without it all (query, memory) pairs are used.
        **kwargs: ``collect_stats``.

    Attributes:
        embedding_memory: buffer ``(memory_size, embedding_size)`` (in the state dict).
        label_memory: buffer ``(memory_size,)`` (in the state dict).
        queue_idx: next slot to write.
        has_been_filled: ``True`` once every slot has been written.

    Raises:
        UnsupportedLossError: (a TypeError) the loss's class name is not supported.
        ValueError: ``embedding_size`` or ``memory_size`` is smaller than 1.

    Example:
        >>> from pml.losses import ContrastiveLoss
        >>> loss_func = CrossBatchMemory(ContrastiveLoss(), embedding_size=2, memory_size=4)
        >>> loss_func(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]), torch.tensor([0, 0, 1]))
        tensor(1.4142)
        >>> loss_func(torch.tensor([[0.9, 0.1], [0.2, 1.0]]), torch.tensor([1, 0]))  # wraps around
        tensor(1.0970)
        >>> loss_func.queue_idx, loss_func.has_been_filled
        (1, True)
    """

    embedding_memory: Tensor
    label_memory: Tensor

    def __init__(
        self,
        loss: nn.Module,
        embedding_size: int,
        memory_size: int = 1024,
        miner: nn.Module | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(loss=loss, **kwargs)
        self.loss = loss
        self.miner = miner
        self.embedding_size = _positive_int("embedding_size", embedding_size)
        self.memory_size = _positive_int("memory_size", memory_size)
        self.reset_queue()
        self.add_to_recordable_attributes(
            list_of_names=["embedding_size", "memory_size", "queue_idx"], is_stat=False
        )

    @staticmethod
    def supported_losses() -> list[str]:
        return list(CROSS_BATCH_MEMORY_LOSSES)

    def reset_queue(self) -> None:
        """Empty the memory: zero buffers (float32 / int64), ``queue_idx`` 0, not filled."""
        device = self.embedding_memory.device if hasattr(self, "embedding_memory") else None
        self.register_buffer(
            "embedding_memory", torch.zeros(self.memory_size, self.embedding_size, device=device)
        )
        self.register_buffer(
            "label_memory", torch.zeros(self.memory_size, dtype=torch.long, device=device)
        )
        self.has_been_filled = False
        self.queue_idx = 0

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        indices_tuple: IndicesTuple | None = None,
        enqueue_mask: Tensor | None = None,
    ) -> Tensor:
        """Enqueue the batch, then compute the wrapped loss of the queries against the memory.

        Args:
            embeddings: shape ``(N, embedding_size)``.
            labels: shape ``(N,)``.
            indices_tuple: extra pairs/triplets whose ``p``/``n`` index the *memory*; appended
                after the internal ones (converted to their format).
            enqueue_mask: bool ``(N,)``: rows with True are only enqueued, rows with False are
                the queries (then no self-comparison removal is needed).

        Returns:
            The wrapped loss's output (a 0-dim tensor in the embeddings' dtype).

        Raises:
            ValueError: missing labels, shape mismatches, ``indices_tuple`` together with
                ``enqueue_mask``, or a batch larger than the memory (without a mask).
            TypeError: ``enqueue_mask`` is not a bool tensor.
        """
        check_embeddings(embeddings, "embeddings")
        if labels is None:
            raise ValueError("labels must not be None: CrossBatchMemory needs labels")
        check_shapes(embeddings, labels)
        if embeddings.shape[1] != self.embedding_size:
            raise ValueError(
                f"embeddings must have embedding_size {self.embedding_size} columns; "
                f"got {embeddings.shape[1]}"
            )
        if enqueue_mask is not None:
            if indices_tuple is not None:
                raise ValueError("indices_tuple and enqueue_mask cannot be used together")
            if not isinstance(enqueue_mask, Tensor) or enqueue_mask.dtype != torch.bool:
                got = enqueue_mask.dtype if isinstance(enqueue_mask, Tensor) else type(enqueue_mask)
                raise TypeError(f"enqueue_mask must be a bool tensor; got {got}")
            if enqueue_mask.shape != (embeddings.shape[0],):
                raise InvalidArgumentError(
                    f"enqueue_mask must have shape ({embeddings.shape[0]},) to match "
                    f"embeddings; got {tuple(enqueue_mask.shape)}"
                )
        elif embeddings.shape[0] > self.memory_size:
            raise InvalidArgumentError(
                f"embeddings must have at most memory_size={self.memory_size} rows; "
                f"got {embeddings.shape[0]}"
            )
        if indices_tuple is not None:
            check_indices_tuple(indices_tuple)

        self.reset_stats()
        device = embeddings.device
        labels = labels.to(device)
        self.embedding_memory = self.embedding_memory.to(device=device, dtype=embeddings.dtype)
        self.label_memory = self.label_memory.to(device=device, dtype=labels.dtype)

        if enqueue_mask is not None:
            enqueue_mask = enqueue_mask.to(device)
            emb_for_queue, labels_for_queue = embeddings[enqueue_mask], labels[enqueue_mask]
            queries, query_labels = embeddings[~enqueue_mask], labels[~enqueue_mask]
            remove_self = False
        else:
            emb_for_queue, labels_for_queue = embeddings, labels
            queries, query_labels = embeddings, labels
            remove_self = True

        batch_idx = self._enqueue(emb_for_queue, labels_for_queue)
        if self.has_been_filled:
            mem_emb, mem_labels = self.embedding_memory, self.label_memory
        else:
            mem_emb = self.embedding_memory[: self.queue_idx]
            mem_labels = self.label_memory[: self.queue_idx]

        if self.miner is not None:
            internal = self.miner(queries, query_labels, mem_emb, mem_labels)
        else:
            internal = get_all_pairs_indices(query_labels, mem_labels)
        if remove_self:
            internal = remove_self_comparisons(internal, batch_idx, self.memory_size)
        if indices_tuple is not None:
            user = _match_tuple_format(indices_tuple, internal)
            internal = concatenate_indices_tuples(internal, user)
        return self.loss(queries, query_labels, internal, mem_emb, mem_labels)

    def _enqueue(self, emb: Tensor, labels: Tensor) -> Tensor:
        """Write ``emb``/``labels`` into the next slots; return the slot of every row, ``(B,)``."""
        size = emb.shape[0]
        start = self.queue_idx
        slots = torch.arange(start, start + size, device=emb.device) % self.memory_size
        # fix: with more rows than slots (enqueue_mask mode) the reference scatters to duplicate
        # slots (order-dependent); a FIFO keeps the last memory_size rows, so write only those.
        keep = slice(max(size - self.memory_size, 0), size)
        # Out of place: a graph built on the previous memory (e.g. two forwards before one
        # backward) stays valid.
        self.embedding_memory = self.embedding_memory.index_copy(0, slots[keep], emb[keep].detach())
        self.label_memory = self.label_memory.index_copy(0, slots[keep], labels[keep])
        self.queue_idx = (start + size) % self.memory_size
        # Filled once the writes reach the last slot. fix: the reference tests "new queue_idx
        # <= old one", which also fires after enqueueing nothing and exposes never-written
        # zero slots as label-0 samples.
        if start + size >= self.memory_size:
            self.has_been_filled = True
        return slots


__all__ = ["CrossBatchMemory"]
