"""The ring-buffer queue behind :class:`CrossBatchMemory`: writes, dtypes, saved positions.

Plain functions on the memory tensors: the module owns the buffers and commits a write only
after the wrapped loss has returned. Also the index tuples against the memory.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import torch
from torch import Tensor

from pml.core.indices import (
    IndicesTuple,
    concatenate_indices_tuples,
    convert_to_pairs,
    pairs_to_triplets,
    remove_self_comparisons,
)

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

#: losses pml added (not in the reference 2.9) that CrossBatchMemory also accepts; kept out of
#: ``supported_losses()``, which lists the reference's names
ADDED_MEMORY_LOSSES = (
    "DecoupledContrastiveLoss",
    "MultiSupConLoss",
    "SelectivelyContrastiveTripletLoss",
)


class Written(NamedTuple):
    """A write that is not committed yet: the new memories and the queue position."""

    memory: Tensor
    label_memory: Tensor
    slots: Tensor
    queue_idx: int
    filled: bool

    def reference(self, was_filled: bool) -> tuple[Tensor, Tensor]:
        """The reference set after the write: the memory once filled, else the written slots."""
        if was_filled or self.filled:
            return self.memory, self.label_memory
        return self.memory[: self.queue_idx], self.label_memory[: self.queue_idx]


def check_label_shape(label_shape: Any, loss: Any) -> tuple[int, ...]:
    """``label_shape`` as a tuple: ``()`` (one label per row) or ``(C,)`` (label sets).

    Raises:
        TypeError: not a tuple/list of integers.
        ValueError: more than one dimension, a size below 1, or label sets for a loss that
            does not take them (one without ``label_set_pairs``).
    """
    if not isinstance(label_shape, tuple | list) or not all(
        isinstance(c, int) and not isinstance(c, bool) for c in label_shape
    ):
        raise TypeError(
            f"label_shape must be () or (num_classes,) (a tuple of ints); got {label_shape!r:.80}"
        )
    if len(label_shape) > 1 or any(c < 1 for c in label_shape):
        raise ValueError(
            f"label_shape must be () or (num_classes,) with num_classes >= 1; got {label_shape!r}"
        )
    if label_shape and not hasattr(loss, "label_set_pairs"):
        raise ValueError(
            f"label_shape={tuple(label_shape)} (label sets) needs a loss that takes label sets "
            f"(with label_set_pairs, e.g. MultiSupConLoss); got {type(loss).__name__}"
        )
    return tuple(label_shape)


def empty_label_memory(memory_size: int, label_shape: tuple[int, ...], device: Any) -> Tensor:
    """Zero labels: int64 ``(memory_size,)``, or bool ``(memory_size, C)`` label sets."""
    dtype = torch.bool if label_shape else torch.long
    return torch.zeros(memory_size, *label_shape, dtype=dtype, device=device)


def widened(own: Tensor, incoming: Any) -> Tensor:
    """``own`` in the promoted dtype of itself and an incoming tensor (never narrowed)."""
    if not isinstance(incoming, Tensor):
        return own
    return own.to(torch.promote_types(own.dtype, incoming.dtype))


def ring_write(
    memory: Tensor, label_memory: Tensor, emb: Tensor, labels: Tensor, start: int
) -> Written:
    """Write ``emb``/``labels`` (detached) from slot ``start`` on, out of place.

    The memories are taken to the batch's device and the promoted dtypes (never narrowed).
    Returns the new memories, the slot of every row ``(B,)``, the next slot and whether the
    writes reached the last slot.
    """
    # fix: the reference casts the memories to each batch's dtypes, truncating a float64
    # memory to float16 and wrapping int64 labels into uint8 (300 -> 44).
    memory = memory.to(emb.device, torch.promote_types(memory.dtype, emb.dtype))
    label_memory = label_memory.to(
        emb.device, torch.promote_types(label_memory.dtype, labels.dtype)
    )
    size, memory_size = emb.shape[0], memory.shape[0]
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
    return Written(
        memory, label_memory, slots, (start + size) % memory_size, start + size >= memory_size
    )


def saved_queue_position(
    state_dict: dict[str, Any], prefix: str, memory: Tensor, label_memory: Tensor
) -> tuple[int, bool] | None:
    """``(queue_idx, has_been_filled)`` saved in a state dict, or inferred from its memory."""
    if prefix + "queue_state" in state_dict:
        return queue_from_saved_state(state_dict[prefix + "queue_state"], memory.shape[0])
    emb, labels = (
        state_dict.get(prefix + "embedding_memory"),
        state_dict.get(prefix + "label_memory"),
    )
    return infer_queue(emb, labels, memory, label_memory)


def queue_from_saved_state(saved: Any, memory_size: int) -> tuple[int, bool]:
    """``(queue_idx, has_been_filled)`` of a saved ``queue_state`` buffer.

    Raises:
        ValueError: not an integer tensor ``[queue_idx, has_been_filled]`` in range.
    """
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


def infer_queue(
    emb: Any, labels: Any, memory: Tensor, label_memory: Tensor
) -> tuple[int, bool] | None:
    """Queue position of a saved memory without ``queue_state``; None if not inferable.

    The written slots are a prefix until the memory is full; a full memory is taken as
    filled with ``queue_idx`` 0 (with a warning: its position is unknown).
    """
    if not isinstance(emb, Tensor) or emb.shape != memory.shape:
        return None
    written = (emb != 0).any(dim=1)
    if isinstance(labels, Tensor) and labels.shape == label_memory.shape:
        labelled = labels.to(written.device) != 0
        written |= labelled.flatten(1).any(dim=1) if labelled.ndim > 1 else labelled
    rows = torch.nonzero(written).flatten()
    used = int(rows[-1]) + 1 if len(rows) else 0
    if used < memory.shape[0]:
        return used, False
    warnings.warn(
        "the state_dict has no queue_state (saved by pytorch-metric-learning or an older "
        "pml): the memory is full, so it is loaded as filled with queue_idx 0; the saved "
        "run's next write position is unknown",
        UserWarning,
        stacklevel=5,
    )
    return 0, True


def memory_indices_tuple(
    internal: IndicesTuple, self_slots: Tensor | None, user: IndicesTuple | None, ref_size: int
) -> IndicesTuple:
    """The tuple passed to the wrapped loss.

    ``internal`` (mined, or all pairs) without a query's positive comparison with its own
    slot ``self_slots[i]``, then ``user`` converted to ``internal``'s format.
    """
    if self_slots is not None:
        internal = remove_self_comparisons(internal, self_slots, ref_size)
    if user is None:
        return internal
    user = tuple(t.to(device=internal[0].device, dtype=torch.long) for t in user)  # type: ignore[assignment]
    if len(user) != len(internal):
        user = convert_to_pairs(user, None) if len(internal) == 4 else pairs_to_triplets(user)  # type: ignore[arg-type]
    return concatenate_indices_tuples(internal, user)
