"""The check of a distance matrix handed to a loss (``forward(..., mat=)``, issue 15)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from pml.core.validation import check_distance_matrix


def check_loss_mat(loss: Any, mat: Any, embeddings: Tensor, ref_emb: Tensor) -> None:
    """Check a distance matrix handed to ``loss.forward(..., mat=)`` (see ``forward``).

    :func:`pml.core.validation.check_distance_matrix` with the loss's ``accepts_mat`` and
    an autograd graph required when the embeddings need gradients.
    """
    check_distance_matrix(
        mat,
        embeddings,
        ref_emb,
        owner=type(loss).__name__,
        accepted=getattr(loss, "accepts_mat", False),
        require_graph=True,
    )


__all__ = ["check_loss_mat"]
