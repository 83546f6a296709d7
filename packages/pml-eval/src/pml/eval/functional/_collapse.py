"""Embedding-collapse diagnostics: how many principal directions the embeddings use.

With ``lambda_1 >= ... >= lambda_D >= 0`` the eigenvalues of the embeddings' covariance (the
variance along each principal component):

* ``pc_fraction(q) = k_q / D`` where ``k_q`` is the smallest ``k`` with
  ``sum_{i<=k} lambda_i >= q * sum_i lambda_i``: the fraction of the ``D`` dimensions needed
  to explain a share ``q`` of the variance (near ``1/D``: collapsed onto a line; near 1:
  spread evenly);
* ``effective_rank = exp(H(p))``, ``p_i = sigma_i / sum_j sigma_j`` with
  ``sigma_i = sqrt(lambda_i)`` the singular values of the centred embeddings and ``H`` the
  Shannon entropy (Roy & Vetterli, 2007; RankMe, Garrido et al., 2023): between 1 and ``D``.

Embeddings with no variance (one row, or all rows equal) give NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pml.core.validation import check_finite
from pml.eval.functional._knn import chunk_rows

__all__ = ["collapse_statistics", "covariance_spectrum"]


def covariance_spectrum(embeddings: Tensor, batch_size: int | None = None) -> Tensor:
    """Eigenvalues of the covariance (``1/N`` normalised), descending, ``(D,)`` float64.

    Accumulated in float64 over blocks of rows (memory ``O(D^2)`` besides one block).

    Example:
        >>> covariance_spectrum(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])).tolist()
        [1.0, 0.0]
    """
    num, dim = embeddings.shape
    device = embeddings.device
    rows = chunk_rows(dim, batch_size)
    mean = torch.zeros(dim, dtype=torch.float64, device=device)
    for s in range(0, num, rows):
        mean += embeddings[s : s + rows].to(torch.float64).sum(0)
    mean /= max(num, 1)
    cov = torch.zeros(dim, dim, dtype=torch.float64, device=device)
    for s in range(0, num, rows):
        centred = embeddings[s : s + rows].to(torch.float64) - mean
        cov.addmm_(centred.T, centred)
    cov /= max(num, 1)
    return torch.linalg.eigvalsh(cov).flip(0).clamp_(min=0)


def collapse_statistics(
    embeddings: Tensor, fractions: Sequence[float] = (0.9, 0.99), batch_size: int | None = None
) -> dict[str, Tensor]:
    """Principal-component fractions and effective rank (module docstring).

    Args:
        embeddings: ``(N, D)`` floating.
        fractions: variance shares ``q`` in ``(0, 1]``.
        batch_size: rows per block of the covariance accumulation.

    Returns:
        ``{"pc_fraction": (len(fractions),) float64, "num_components": (len(fractions),)
        int64, "effective_rank": () float64, "spectrum": (D,) float64}``; NaN fractions and
        rank, 0 components, when the embeddings have no variance.

    Raises:
        ValueError: NaN or inf embeddings.

    Example:
        >>> x = torch.tensor([[3.0, 0.0, 0.0], [-3.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, -1.0, 0.0]])
        >>> out = collapse_statistics(x)
        >>> out["num_components"].tolist(), round(float(out["effective_rank"]), 4)
        ([1, 2], 1.7548)
    """
    check_finite(embeddings, "embeddings")
    spectrum = covariance_spectrum(embeddings, batch_size)
    dim = spectrum.shape[0]
    total = spectrum.sum()
    share = spectrum.cumsum(0) / total  # NaN when there is no variance
    q = torch.as_tensor(list(fractions), dtype=torch.float64, device=spectrum.device)
    # smallest k with share_k >= q; rounding may leave the last share just below 1
    share = torch.cat([share[:-1], share[-1:].clamp(min=1.0)]) if dim else share
    k = torch.searchsorted(share, q).clamp(max=dim - 1) + 1
    sigma = spectrum.sqrt()
    p = sigma / sigma.sum()
    entropy = -(torch.where(p > 0, p * p.log(), 0.0)).sum()
    no_variance = ~(total > 0)
    pc_fraction = torch.where(no_variance, float("nan"), k.to(torch.float64) / max(dim, 1))
    return {
        "pc_fraction": pc_fraction,
        "num_components": torch.where(no_variance, 0, k),
        "effective_rank": torch.where(no_variance, float("nan"), entropy.exp()),
        "spectrum": spectrum,
    }
