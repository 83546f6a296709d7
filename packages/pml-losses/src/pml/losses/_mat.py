"""The check of a distance matrix handed to a loss (``forward(..., mat=)``, issue 15)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def check_loss_mat(loss: Any, mat: Any, embeddings: Tensor, ref_emb: Tensor) -> None:
    """Check a distance matrix handed to ``loss.forward(..., mat=)`` (see ``forward``).

    Raises:
        TypeError: the loss cannot take ``mat`` (``accepts_mat`` is False), or ``mat`` is not
            a floating-point tensor.
        ValueError: ``mat`` is not ``(N, M)`` on the embeddings' device, or it has no
            autograd graph while the embeddings need gradients.
    """
    name = type(loss).__name__
    if not getattr(loss, "accepts_mat", False):
        raise TypeError(
            f"{name} cannot take mat: it does not compute one distance matrix of "
            "embeddings x ref_emb (call it without mat)"
        )
    if not isinstance(mat, Tensor):
        raise TypeError(f"mat must be a torch.Tensor; got {type(mat).__name__}")
    if not mat.dtype.is_floating_point:
        raise TypeError(f"mat must be a floating-point tensor; got {mat.dtype}")
    shape = (embeddings.shape[0], ref_emb.shape[0])
    if tuple(mat.shape) != shape:
        raise ValueError(
            f"mat must have shape (N, M) = {shape} (embeddings x ref_emb) for {name}; "
            f"got {tuple(mat.shape)}"
        )
    if mat.device != embeddings.device:
        raise ValueError(f"mat must be on {embeddings.device} like embeddings; got {mat.device}")
    needs_grad = embeddings.requires_grad or ref_emb.requires_grad
    if needs_grad and torch.is_grad_enabled() and mat.grad_fn is None:
        raise ValueError(
            f"mat has no autograd graph (grad_fn is None) but the embeddings require grad: "
            f"{name}'s gradients would not reach them. Compute mat from these embeddings "
            "outside torch.no_grad() and without .detach(), e.g. "
            "mat = loss.distance(embeddings, ref_emb)"
        )


__all__ = ["check_loss_mat"]
