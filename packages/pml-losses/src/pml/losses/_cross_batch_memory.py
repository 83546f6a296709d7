"""CrossBatchMemory: compare each batch with a queue of embeddings from recent batches.

Wang et al., "Cross-Batch Memory for Embedding Learning", CVPR 2020.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

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
from pml.losses._base import BaseLossWrapper, checked_indices_tuple

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
        **kwargs: ``collect_stats``.

    Attributes:
        embedding_memory: buffer ``(memory_size, embedding_size)`` (in the state dict).
        label_memory: buffer ``(memory_size,)`` (in the state dict).
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
        **kwargs: Any,
    ) -> None:
        super().__init__(loss=loss, **kwargs)
        self.loss = loss
        self.miner = miner
        self.embedding_size = _positive_int("embedding_size", embedding_size)
        self.memory_size = _positive_int("memory_size", memory_size)
        self.curr_batch_idx: Tensor | None = None
        self.reset_queue()
        self.add_to_recordable_attributes(
            list_of_names=["embedding_size", "memory_size", "queue_idx"], is_stat=False
        )

    @staticmethod
    def supported_losses() -> list[str]:
        return list(CROSS_BATCH_MEMORY_LOSSES)

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
        self.register_buffer(
            "label_memory", torch.zeros(self.memory_size, dtype=torch.long, device=device)
        )
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
        self._check_batch(embeddings, labels)
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

        self.reset_stats()
        labels = labels.to(embeddings.device)
        memory, label_memory = self._working_memory(embeddings, labels)
        if enqueue_mask is not None:
            enqueue_mask = enqueue_mask.to(embeddings.device)
            emb_for_queue, labels_for_queue = embeddings[enqueue_mask], labels[enqueue_mask]
            queries, query_labels = embeddings[~enqueue_mask], labels[~enqueue_mask]
        else:
            emb_for_queue, labels_for_queue = embeddings, labels
            queries, query_labels = embeddings, labels

        new = _ring_write(
            memory, label_memory, emb_for_queue, labels_for_queue, self.queue_idx, self.memory_size
        )
        filled = self.has_been_filled or new.filled
        ref_emb, ref_labels = new.memory, new.label_memory
        if not filled:
            ref_emb, ref_labels = ref_emb[: new.queue_idx], ref_labels[: new.queue_idx]
        queries = queries.to(memory.dtype)
        self_slots = new.slots if enqueue_mask is None else None
        internal = self._indices_tuple(
            queries, query_labels, ref_emb, ref_labels, indices_tuple, self_slots
        )
        # Checked above (user tuple) or built here: the wrapped loss skips the range check.
        internal = checked_indices_tuple(internal)
        out = self.loss(queries, query_labels, internal, ref_emb, ref_labels)
        # The batch is committed only now: a call that raised above left the memory as it was.
        self._commit(new, filled)
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
        self._check_batch(embeddings, labels)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            raise TypeError(f"batch_size must be an int; got {type(batch_size).__name__}")
        if batch_size != embeddings.shape[0]:
            raise ValueError(
                f"batch_size must equal the number of embeddings ({embeddings.shape[0]}); "
                f"got {batch_size}"
            )
        labels = labels.to(embeddings.device)
        memory, label_memory = self._working_memory(embeddings, labels)
        new = _ring_write(
            memory, label_memory, embeddings, labels, self.queue_idx, self.memory_size
        )
        self._commit(new, self.has_been_filled or new.filled)

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
        if input_indices_tuple is not None:
            check_indices_tuple(
                input_indices_tuple,
                embeddings.shape[0],
                E_mem.shape[0],
                name="input_indices_tuple",
                check_bounds=True,
            )
        self_slots = None
        if do_remove_self_comparisons:
            if self.curr_batch_idx is None:
                raise ValueError(
                    "curr_batch_idx is not set: call add_to_memory (or forward) before "
                    "create_indices_tuple with do_remove_self_comparisons=True"
                )
            if len(self.curr_batch_idx) != embeddings.shape[0]:
                raise ValueError(
                    f"curr_batch_idx has {len(self.curr_batch_idx)} slots but embeddings has "
                    f"{embeddings.shape[0]} rows"
                )
            self_slots = self.curr_batch_idx
        return self._indices_tuple(
            embeddings, labels, E_mem, L_mem, input_indices_tuple, self_slots
        )

    # ------------------------------------------------------------------------- internals

    def _check_batch(self, embeddings: Tensor, labels: Tensor | None) -> None:
        check_embeddings(embeddings, "embeddings")
        if labels is None:
            raise ValueError("labels must not be None: CrossBatchMemory needs labels")
        check_shapes(embeddings, labels)
        if embeddings.shape[1] != self.embedding_size:
            raise ValueError(
                f"embeddings must have embedding_size {self.embedding_size} columns; "
                f"got {embeddings.shape[1]}"
            )

    def _reference_size_after(self, n: int) -> int:
        """Size of the reference set once ``n`` more rows are enqueued."""
        if self.has_been_filled or self.queue_idx + n >= self.memory_size:
            return self.memory_size
        return self.queue_idx + n

    def _working_memory(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """The memories on the batch's device, in the promoted dtypes (never narrowed)."""
        # fix: the reference casts the memories to each batch's dtypes, truncating a float64
        # memory to float16 and wrapping int64 labels into uint8 (300 -> 44).
        emb_dtype = torch.promote_types(self.embedding_memory.dtype, embeddings.dtype)
        label_dtype = torch.promote_types(self.label_memory.dtype, labels.dtype)
        return (
            self.embedding_memory.to(device=embeddings.device, dtype=emb_dtype),
            self.label_memory.to(device=embeddings.device, dtype=label_dtype),
        )

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
        else:
            internal = get_all_pairs_indices(query_labels, ref_labels)
        if self_slots is not None:
            internal = remove_self_comparisons(internal, self_slots, self.memory_size)
        if user is not None:
            device = internal[0].device
            user = tuple(t.to(device=device, dtype=torch.long) for t in user)  # type: ignore[assignment]
            internal = concatenate_indices_tuples(internal, _match_tuple_format(user, internal))  # type: ignore[arg-type]
        return internal

    def _commit(self, new: _Written, filled: bool) -> None:
        self.embedding_memory = new.memory
        self.label_memory = new.label_memory
        self.curr_batch_idx = new.slots
        self.queue_idx = new.queue_idx
        self.has_been_filled = filled

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
        emb_key, label_key = prefix + "embedding_memory", prefix + "label_memory"
        if key in state_dict:
            queue = _queue_from_saved_state(state_dict[key], self.memory_size)
        else:
            queue = _infer_queue(state_dict.get(emb_key), state_dict.get(label_key), self)
        for name, k in (("embedding_memory", emb_key), ("label_memory", label_key)):
            incoming, own = state_dict.get(k), getattr(self, name)
            if isinstance(incoming, Tensor):
                dtype = torch.promote_types(own.dtype, incoming.dtype)
                if dtype != own.dtype:
                    setattr(self, name, own.to(dtype))
        n_errors = len(error_msgs)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if key not in state_dict and key in missing_keys:
            missing_keys.remove(key)
        if queue is not None and len(error_msgs) == n_errors:
            self.queue_idx, self.has_been_filled = queue


class _Written(NamedTuple):
    memory: Tensor
    label_memory: Tensor
    slots: Tensor
    queue_idx: int
    filled: bool


def _ring_write(
    memory: Tensor,
    label_memory: Tensor,
    emb: Tensor,
    labels: Tensor,
    start: int,
    memory_size: int,
) -> _Written:
    """Write ``emb``/``labels`` (detached) from slot ``start`` on, out of place.

    Returns the new memories, the slot of every row ``(B,)``, the next slot and whether the
    writes reached the last slot.
    """
    size = emb.shape[0]
    slots = torch.arange(start, start + size, device=emb.device) % memory_size
    # fix: with more rows than slots (enqueue_mask mode) the reference scatters to duplicate
    # slots (order-dependent); a FIFO keeps the last memory_size rows, so write only those.
    keep = slice(max(size - memory_size, 0), size)
    # Out of place: a graph built on the previous memory (e.g. two forwards before one
    # backward) stays valid, and nothing changes until the caller commits.
    memory = memory.index_copy(0, slots[keep], emb[keep].detach().to(memory.dtype))
    label_memory = label_memory.index_copy(0, slots[keep], labels[keep].to(label_memory.dtype))
    # Filled once the writes reach the last slot. fix: the reference tests "new queue_idx
    # <= old one", which also fires after enqueueing nothing and exposes never-written
    # zero slots as label-0 samples.
    return _Written(
        memory, label_memory, slots, (start + size) % memory_size, start + size >= memory_size
    )


def _queue_from_saved_state(saved: Any, memory_size: int) -> tuple[int, bool]:
    values = saved.tolist() if isinstance(saved, Tensor) else None
    if (
        not isinstance(values, list)
        or len(values) != 2
        or not all(isinstance(v, int) for v in values)
        or not 0 <= values[0] < memory_size
        or values[1] not in (0, 1)
    ):
        raise ValueError(
            "queue_state must be an integer tensor [queue_idx, has_been_filled] with "
            f"0 <= queue_idx < memory_size={memory_size} and has_been_filled 0 or 1; "
            f"got {saved!r}"
        )
    return values[0], bool(values[1])


def _infer_queue(emb: Any, labels: Any, module: CrossBatchMemory) -> tuple[int, bool] | None:
    """Queue position of a saved memory without ``queue_state``; None if not inferable."""
    if not isinstance(emb, Tensor) or emb.shape != module.embedding_memory.shape:
        return None
    written = (emb != 0).any(dim=1)
    if isinstance(labels, Tensor) and labels.shape == module.label_memory.shape:
        written |= labels.to(written.device) != 0
    rows = torch.nonzero(written).flatten()
    used = int(rows[-1]) + 1 if len(rows) else 0
    if used < module.memory_size:
        return used, False
    warnings.warn(
        "the state_dict has no queue_state (saved by pytorch-metric-learning or an older "
        "pml): the memory is full, so it is loaded as filled with queue_idx 0; the saved "
        "run's next write position is unknown",
        UserWarning,
        stacklevel=4,
    )
    return 0, True


__all__ = ["CrossBatchMemory"]
