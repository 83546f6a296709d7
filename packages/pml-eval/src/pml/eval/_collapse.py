"""Embedding-collapse diagnostic (thin layer over ``functional.collapse_statistics``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from pml.core.validation import check_int, check_real
from pml.eval import functional as EF
from pml.eval._io import as_embeddings

__all__ = ["embedding_collapse"]


def _key(q: float) -> str:
    return f"pc{q * 100:g}_fraction"


def embedding_collapse(
    embeddings: Any, fractions: Sequence[float] = (0.9, 0.99), batch_size: int | None = None
) -> dict[str, float]:
    """How many principal directions the embeddings spread over.

    ``pc<q>_fraction`` is the fraction of the ``D`` dimensions that the leading principal
    components need to explain a share ``q`` of the variance (smallest ``k`` with
    ``sum_{i<=k} lambda_i >= q * sum lambda``, divided by ``D``; ``lambda`` the covariance
    eigenvalues): near ``1/D`` the embeddings collapsed onto a line, near 1 they use every
    dimension evenly. ``effective_rank`` is ``exp`` of the entropy of the normalised singular
    values of the centred embeddings (Roy & Vetterli, 2007), between 1 and ``D``. NaN when
    the embeddings have no variance. Accumulated in float64 over blocks of rows (memory
    ``O(D^2)``).

    Args:
        embeddings: ``(N, D)`` (tensor or numpy, any floating dtype).
        fractions: variance shares in ``(0, 1]``.
        batch_size: rows per block.

    Returns:
        ``{"pc90_fraction": ..., "pc99_fraction": ..., "effective_rank": ...}`` (one
        ``pc<100 q>_fraction`` per share).

    Raises:
        TypeError: not a tensor/array, or wrong argument types.
        ValueError: not 2-D, NaN/inf, a share outside ``(0, 1]``.

    Example:
        >>> x = torch.randn(1000, 2) * torch.tensor([10.0, 0.1])
        >>> embedding_collapse(torch.cat([x, torch.zeros(1000, 2)], 1))["pc90_fraction"]
        0.25
    """
    x = as_embeddings(embeddings, "embeddings")
    if isinstance(fractions, str | bytes) or not isinstance(fractions, Iterable):
        raise TypeError(f"fractions must be a sequence of numbers; got {fractions!r}")
    shares = [
        check_real(f"fractions[{i}]", q, min=0, min_open=True, max=1)
        for i, q in enumerate(fractions)
    ]
    batch_size = check_int("batch_size", batch_size, min=1, allow_none=True)
    with torch.no_grad():
        stats = EF.collapse_statistics(x, shares, batch_size)  # type: ignore[arg-type]
    out = {_key(q): float(v) for q, v in zip(shares, stats["pc_fraction"].tolist())}  # type: ignore[arg-type]
    out["effective_rank"] = float(stats["effective_rank"])
    return out
