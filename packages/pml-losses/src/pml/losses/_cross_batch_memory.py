"""CrossBatchMemory: compare each batch with a queue of embeddings from recent batches.

Wang et al., "Cross-Batch Memory for Embedding Learning", CVPR 2020.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from pml.core.indices import IndicesTuple, get_all_pairs_indices
from pml.core.records import ModuleWithRecords
from pml.core.validation import (
    InvalidArgumentError,
    check_embeddings,
    check_indices_tuple,
    check_int,
    check_shapes,
    labels_required,
)
from pml.losses._base import BaseLossWrapper, checked_indices_tuple
from pml.losses._memory_queue import (
    ADDED_MEMORY_LOSSES,
    CROSS_BATCH_MEMORY_LOSSES,
    Written,
    check_label_shape,
    empty_label_memory,
    memory_indices_tuple,
    ring_write,
    saved_queue_position,
    widened,
)
from pml.losses._multi_supcon import check_label_sets


class CrossBatchMemory(BaseLossWrapper, ModuleWithRecords):
    """Wrap a pair/triplet loss so that queries are compared with a memory of past batches.

    Every call enqueues (detached) embeddings and labels into a FIFO queue of
    ``memory_size`` slots, then computes ``loss(queries, query_labels, indices_tuple,
    memory, memory_labels)``. The current batch is already in the memory when the loss runs;
    a query's comparison with its own slot is removed from the positives.

    The memory is never narrowed: it takes the promoted dtype of itself and every batch
    (a float16 batch keeps a float32/float64 memory; uint8 labels keep an int64 label
    memory); the loss is computed in that dtype and returned in the batch's dtype. A call
    that raises changes nothing: the batch is committed to the memory only after the
    wrapped loss has returned.

    Args:
        loss: the wrapped loss; one of :meth:`supported_losses` (checked by class name).
        embedding_size: width ``D`` of the memory.
        memory_size: number of slots of the queue.
        miner: optional tuple miner, called as ``miner(queries, query_labels, memory,
            memory_labels)``; without it all (query, memory) pairs are used.
        label_shape: ``()`` (one label per row) or ``(C,)``: label sets, boolean or 0/1
            ``(N, C)`` rows, held as bool, for a loss taking label sets (MultiSupConLoss);
            without a miner the pairs come from the loss's ``label_set_pairs``.
        **kwargs: ``collect_stats``.

    Attributes:
        embedding_memory: buffer ``(memory_size, embedding_size)`` (in the state dict).
        label_memory: buffer ``(memory_size, *label_shape)`` (in the state dict).
        queue_state: buffer ``(2,)`` int64, ``[queue_idx, has_been_filled]`` (in the state
            dict, so that a resumed run continues the queue; a state dict without it, such
            as the reference's, still loads, see :meth:`load_state_dict`).
        queue_idx: next slot to write (an int).
        has_been_filled: ``True`` once every slot has been written.
        curr_batch_idx: slots written by the last enqueue, ``(B,)`` int64 (None before).

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
        >>> loss_func.state_dict()["queue_state"]
        tensor([1, 1])
    """

    embedding_memory: Tensor
    label_memory: Tensor
    queue_state: Tensor

    def __init__(
        self,
        loss: nn.Module,
        embedding_size: int,
        memory_size: int = 1024,
        miner: nn.Module | None = None,
        *,
        label_shape: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(loss=loss, **kwargs)
        self.loss = loss
        self.miner = miner
        self.label_shape = check_label_shape(label_shape, loss)
        self.embedding_size: int = check_int("embedding_size", embedding_size, min=1)  # type: ignore[assignment]
        self.memory_size: int = check_int("memory_size", memory_size, min=1)  # type: ignore[assignment]
        self.curr_batch_idx: Tensor | None = None
        self.reset_queue()
        self.add_to_recordable_attributes(
            list_of_names=["embedding_size", "memory_size", "queue_idx"], is_stat=False
        )

    @staticmethod
    def supported_losses() -> list[str]:
        return list(CROSS_BATCH_MEMORY_LOSSES)

    @classmethod
    def check_loss_support(cls, loss_name: str) -> None:
        if loss_name not in ADDED_MEMORY_LOSSES:  # pml's new pair/triplet losses are taken too
            super().check_loss_support(loss_name)

    # The queue position lives in plain attributes (read on every call without a device
    # sync) and is written through to the ``queue_state`` buffer, which the state dict saves.
    @property
    def queue_idx(self) -> int:
        return self._queue_idx

    @queue_idx.setter
    def queue_idx(self, value: int) -> None:
        self._queue_idx = int(value)
        self._write_queue_state(0, self._queue_idx)

    @property
    def has_been_filled(self) -> bool:
        return self._has_been_filled

    @has_been_filled.setter
    def has_been_filled(self, value: bool) -> None:
        self._has_been_filled = bool(value)
        self._write_queue_state(1, int(self._has_been_filled))

    def _write_queue_state(self, i: int, value: int) -> None:
        # A fill, no host-device copy or sync. A buffer created under inference_mode cannot
        # be updated in place outside it: replace it by a normal copy first.
        if self.queue_state.is_inference() and not torch.is_inference_mode_enabled():
            self.queue_state = self.queue_state.clone()
        self.queue_state[i] = value

    def reset_queue(self) -> None:
        """Empty the memory: zero buffers (float32 / int64), ``queue_idx`` 0, not filled."""
        device = self.embedding_memory.device if hasattr(self, "embedding_memory") else None
        self.register_buffer(
            "embedding_memory", torch.zeros(self.memory_size, self.embedding_size, device=device)
        )
        labels = empty_label_memory(self.memory_size, self.label_shape, device)
        self.register_buffer("label_memory", labels)
        self.register_buffer("queue_state", torch.zeros(2, dtype=torch.long, device=device))
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
            indices_tuple: extra pairs/triplets appended after the internal ones (converted
                to their format): anchors index the batch (``[0, N)``), positives/negatives
                index the reference set, i.e. the memory after this batch was enqueued
                (``[0, R)``, ``R`` = ``memory_size`` once filled, else the written slots).
            enqueue_mask: bool ``(N,)``: rows with True are only enqueued, rows with False are
                the queries (then no self-comparison removal is needed).

        Returns:
            The wrapped loss's output (a 0-dim tensor in the embeddings' dtype).

        Raises:
            ValueError: missing labels, shape mismatches, ``indices_tuple`` together with
                ``enqueue_mask``, ``indices_tuple`` indices out of range, or a batch larger
                than the memory (without a mask).
            TypeError: ``enqueue_mask`` is not a bool tensor.
        """
        labels = self._check_forward_inputs(embeddings, labels, indices_tuple, enqueue_mask)
        self.reset_stats()
        labels = labels.to(embeddings.device)
        queries, query_labels, rows, row_labels = embeddings, labels, embeddings, labels
        if enqueue_mask is not None:
            enqueue_mask = enqueue_mask.to(embeddings.device)
            rows, row_labels = embeddings[enqueue_mask], labels[enqueue_mask]
            queries, query_labels = embeddings[~enqueue_mask], labels[~enqueue_mask]
        new = ring_write(self.embedding_memory, self.label_memory, rows, row_labels, self.queue_idx)
        ref_emb, ref_labels = new.reference(self.has_been_filled)
        queries = queries.to(new.memory.dtype)
        self_slots = new.slots if enqueue_mask is None else None
        internal = self._indices_tuple(
            queries, query_labels, ref_emb, ref_labels, indices_tuple, self_slots
        )
        # Checked above (user tuple) or built here: the wrapped loss skips the range check.
        out = self.loss(queries, query_labels, checked_indices_tuple(internal), ref_emb, ref_labels)
        # The batch is committed only now: a call that raised above left the memory as it was.
        self._commit(new)
        if isinstance(out, Tensor) and out.dtype != embeddings.dtype:
            out = out.to(embeddings.dtype)
        return out

    def add_to_memory(self, embeddings: Tensor, labels: Tensor, batch_size: int) -> None:
        """Enqueue ``embeddings``/``labels`` (detached) and set :attr:`curr_batch_idx`.

        The reference's public method (``forward`` enqueues through the same code).

        Args:
            embeddings: shape ``(batch_size, embedding_size)``.
            labels: shape ``(batch_size,)``.
            batch_size: number of rows; must equal ``len(embeddings)``. With more rows than
                ``memory_size``, the last ``memory_size`` rows are kept.

        Raises:
            ValueError: shape mismatches or ``batch_size != len(embeddings)``.
        """
        labels = self._check_batch(embeddings, labels)
        n = embeddings.shape[0]
        if check_int("batch_size", batch_size) != n:
            raise ValueError(
                f"batch_size must equal the number of embeddings ({n}); got {batch_size}"
            )
        labels = labels.to(embeddings.device)
        self._commit(
            ring_write(self.embedding_memory, self.label_memory, embeddings, labels, self.queue_idx)
        )

    def create_indices_tuple(
        self,
        embeddings: Tensor,
        labels: Tensor,
        E_mem: Tensor,  # the reference's argument names
        L_mem: Tensor,
        input_indices_tuple: IndicesTuple | None,
        do_remove_self_comparisons: bool,
    ) -> IndicesTuple:
        """The pairs/triplets ``forward`` passes to the wrapped loss (the reference's method).

        The miner's tuples (or all pairs between ``labels`` and ``L_mem``), without a query's
        positive comparison with its own slot (:attr:`curr_batch_idx`) when
        ``do_remove_self_comparisons``, followed by ``input_indices_tuple`` converted to
        their format.

        Args:
            embeddings: queries ``(N, D)``.
            labels: query labels ``(N,)``.
            E_mem: reference embeddings ``(R, D)``.
            L_mem: reference labels ``(R,)``.
            input_indices_tuple: pairs/triplets; anchors in ``[0, N)``, others in ``[0, R)``.
            do_remove_self_comparisons: drop the (query, own slot) positives.

        Raises:
            ValueError: ``input_indices_tuple`` out of range, or self-comparison removal
                before anything was enqueued (no :attr:`curr_batch_idx`) or with a
                :attr:`curr_batch_idx` of another length than ``embeddings``.
        """
        n, user = embeddings.shape[0], input_indices_tuple
        if user is not None:
            check_indices_tuple(user, n, len(E_mem), name="input_indices_tuple", check_bounds=True)
        self_slots = None
        if do_remove_self_comparisons:
            if self.curr_batch_idx is None:
                raise ValueError(
                    "curr_batch_idx is not set: call add_to_memory (or forward) before "
                    "create_indices_tuple with do_remove_self_comparisons=True"
                )
            if len(self.curr_batch_idx) != n:
                raise ValueError(
                    f"curr_batch_idx has {len(self.curr_batch_idx)} slots but embeddings has "
                    f"{n} rows"
                )
            self_slots = self.curr_batch_idx
        return self._indices_tuple(embeddings, labels, E_mem, L_mem, user, self_slots)

    def _check_batch(self, embeddings: Tensor, labels: Tensor | None) -> Tensor:
        """Embeddings ``(N, embedding_size)`` and labels ``(N, *label_shape)``; the labels."""
        check_embeddings(embeddings, "embeddings")
        labels = labels_required(labels)
        if self.label_shape:  # label sets, as bool (checked like the loss checks them)
            labels = check_label_sets(embeddings, labels, None, None)[0]
            if labels.shape[1:] != self.label_shape:
                raise ValueError(f"labels must have shape (N, *{self.label_shape}) (label_shape)")
            return labels
        check_shapes(embeddings, labels)
        if embeddings.shape[1] != self.embedding_size:
            raise ValueError(
                f"embeddings must have embedding_size {self.embedding_size} columns; "
                f"got {embeddings.shape[1]}"
            )
        return labels

    def _check_forward_inputs(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        indices_tuple: IndicesTuple | None,
        enqueue_mask: Tensor | None,
    ) -> Tensor:
        """Every check of :meth:`forward`, made before anything is enqueued; the labels."""
        labels = self._check_batch(embeddings, labels)
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
            # fix: the reference never checks the bounds (index -1 silently meant the last
            # row). Checked before anything is enqueued.
            n = embeddings.shape[0]
            check_indices_tuple(indices_tuple, n, self._reference_size_after(n), check_bounds=True)
        return labels

    def _reference_size_after(self, n: int) -> int:
        """Size of the reference set once ``n`` more rows are enqueued."""
        if self.has_been_filled or self.queue_idx + n >= self.memory_size:
            return self.memory_size
        return self.queue_idx + n

    def _indices_tuple(
        self,
        queries: Tensor,
        query_labels: Tensor,
        ref_emb: Tensor,
        ref_labels: Tensor,
        user: IndicesTuple | None,
        self_slots: Tensor | None,
    ) -> IndicesTuple:
        if self.miner is not None:
            internal = self.miner(queries, query_labels, ref_emb, ref_labels)
        elif self.label_shape:
            internal = self.loss.label_set_pairs(query_labels, ref_labels)
        else:
            internal = get_all_pairs_indices(query_labels, ref_labels)
        return memory_indices_tuple(internal, self_slots, user, self.memory_size)

    def _commit(self, new: Written) -> None:
        self.embedding_memory = new.memory
        self.label_memory = new.label_memory
        self.curr_batch_idx = new.slots
        self.queue_idx = new.queue_idx
        self.has_been_filled = self.has_been_filled or new.filled

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        """Load the memories and the queue position.

        A state dict without ``queue_state`` (the reference's, or pml's before it was saved)
        loads too, also with ``strict=True``: the position is inferred from the memory (the
        written slots are a prefix until the memory is full; a full memory is loaded as
        filled with ``queue_idx`` 0, with a warning, since its position is unknown).
        Incoming memories of a wider dtype widen the buffers (never narrowed).
        """
        key = prefix + "queue_state"
        queue = saved_queue_position(state_dict, prefix, self.embedding_memory, self.label_memory)
        for name in ("embedding_memory", "label_memory"):  # widened, never narrowed
            setattr(self, name, widened(getattr(self, name), state_dict.get(prefix + name)))
        n_errors = len(error_msgs)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if key not in state_dict and key in missing_keys:
            missing_keys.remove(key)
        if queue is not None and len(error_msgs) == n_errors:
            self.queue_idx, self.has_been_filled = queue


__all__ = ["CrossBatchMemory"]
