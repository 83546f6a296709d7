"""Run a recipe once on a small training batch before the run starts, changing nothing.

Some combinations of classes build fine but cannot train together: a loss that takes no
mined tuples behind a miner, a reducer that needs an entry the loss does not give, a reducer
that does not reduce to one number. They fail inside the first step, after the run folder
exists and with a traceback. :func:`check_first_batch` runs the model, the miner and the loss
once on a batch of at most two items per class (model in eval mode, random state restored,
no backward pass) and turns such a failure into a one-line :class:`UsageError` naming the
classes, before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pml.cli._errors import UsageError

__all__ = ["check_first_batch", "first_batch_indices"]


def first_batch_indices(labels: Sequence[int], batch_size: int, per_class: int = 2) -> torch.Tensor:
    """The first ``per_class`` items of each class (class order), at most ``batch_size``.

    A batch with positives for every class it holds.

    Example:
        >>> first_batch_indices([1, 0, 1, 0, 1, 2], batch_size=8).tolist()
        [1, 3, 0, 2, 5]
    """
    labels_t = torch.as_tensor(list(labels), dtype=torch.long)
    order = torch.argsort(labels_t, stable=True)
    ordered = labels_t[order]
    rank_in_class = torch.arange(len(order)) - torch.searchsorted(ordered, ordered, side="left")
    return order[rank_in_class < per_class][:batch_size]


def check_first_batch(
    model: nn.Module,
    loss: nn.Module,
    miner: Any,
    dataset: Any,
    device: torch.device,
    batch_size: int,
) -> None:
    """Embed, mine and compute the loss once on a small batch of ``dataset``.

    Args:
        model: maps a batch of items to embeddings ``(B, D)``.
        loss: the run's loss (not wrapped for distributed training).
        miner: the run's miner, or None.
        dataset: the training items, ``dataset[i] -> (x, label)``, with a ``labels`` list.
        device: where the model lives.
        batch_size: the most items to use.

    Raises:
        UsageError: the miner or the loss fails on the batch, or the loss does not return
            one number (naming the classes and the error).
    """
    idx = first_batch_indices(dataset.labels, batch_size)
    x = torch.stack([dataset[int(i)][0] for i in idx]).to(device)
    labels = torch.as_tensor([dataset.labels[int(i)] for i in idx], device=device)
    devices = [device] if device.type == "cuda" else []
    was_training = model.training
    names = type(loss).__name__ + ("" if miner is None else f" with {type(miner).__name__}")
    model.eval()
    try:
        with torch.random.fork_rng(devices=devices):
            embeddings = model(x)
            indices_tuple = None if miner is None else miner(embeddings, labels)
            out = loss(embeddings, labels, indices_tuple)
    except (ValueError, TypeError, NotImplementedError, RuntimeError) as err:
        hint = " (try --miner none)" if miner is not None and "indices_tuple" in str(err) else ""
        message = " ".join(str(err).split())
        raise UsageError(
            f"{names} fails on a first batch of {len(idx)} training items: "
            f"{type(err).__name__}: {message}{hint}"
        ) from None
    finally:
        model.train(was_training)
    if not (isinstance(out, torch.Tensor) and out.ndim == 0):
        got = (
            type(out).__name__ if not isinstance(out, torch.Tensor) else f"shape {tuple(out.shape)}"
        )
        raise UsageError(
            f"{names} returns {got}, not one number, so it cannot be trained on (is the "
            "reducer one that reduces?)"
        )
