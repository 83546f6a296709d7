"""k-means and PCA in plain torch (the back-ends used when faiss is not installed)."""

from __future__ import annotations

import torch
from torch import Tensor

from pml.core.dtypes import accumulation_dtype
from pml.core.validation import check_int
from pml.eval.functional._knn import chunk_rows, squared_l2_matrix

__all__ = ["kmeans", "nearest_centroid", "pca"]


def nearest_centroid(x: Tensor, centroids: Tensor, batch_size: int | None = None) -> Tensor:
    """Index of the closest centroid (squared L2; ties to the lowest index), ``(N,)`` int64.

    Example:
        >>> nearest_centroid(torch.tensor([[0.0], [0.9], [3.0]]), torch.tensor([[0.0], [2.5]]))
        tensor([0, 0, 1])
    """
    rows = chunk_rows(centroids.shape[0], batch_size)
    parts = [
        squared_l2_matrix(x[s : s + rows], centroids).argmin(1) for s in range(0, x.shape[0], rows)
    ]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long, device=x.device)


def _kmeans_plus_plus(x: Tensor, n_clusters: int, gen: torch.Generator) -> Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii, 2007); draws on CPU with ``gen``."""
    num = x.shape[0]
    sq_norms = (x * x).sum(1)
    first = int(torch.randint(num, (1,), generator=gen))
    centroids = [x[first]]
    closest = (sq_norms - 2 * (x @ x[first]) + sq_norms[first]).clamp_(min=0)
    for _ in range(1, n_clusters):
        total = closest.sum()
        weights = torch.where(total > 0, closest, torch.ones_like(closest))
        pick = int(torch.multinomial(weights.double().cpu(), 1, generator=gen))
        centroids.append(x[pick])
        dist = (sq_norms - 2 * (x @ x[pick]) + sq_norms[pick]).clamp_(min=0)
        closest = torch.minimum(closest, dist)
    return torch.stack(centroids)


def kmeans(
    x: Tensor,
    n_clusters: int,
    *,
    niter: int = 20,
    seed: int = 1234,
    max_points_per_centroid: int = 256,
) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means with k-means++ seeding; deterministic for a given ``seed``.

    Like faiss, training uses at most ``max_points_per_centroid * n_clusters`` rows (a seeded
    random subset); every row is then assigned to its nearest centroid. An empty cluster keeps
    its previous centroid. Computed in at least float32.

    Args:
        x: shape ``(N, D)``.
        n_clusters: ``1 <= n_clusters <= N``.
        niter: Lloyd iterations (stops early once assignments no longer change).
        seed: seed of the CPU generator used for sub-sampling and seeding.
        max_points_per_centroid: training sub-sample size per centroid.

    Returns:
        ``(assignments (N,) int64, centroids (n_clusters, D))``.

    Raises:
        TypeError: ``n_clusters`` is not an int.
        ValueError: ``n_clusters`` is not in ``[1, N]``.

    Example:
        >>> x = torch.tensor([[0.0], [0.1], [5.0], [5.1]])
        >>> kmeans(x, 2)[0].unique(return_counts=True)[1].tolist()
        [2, 2]
    """
    num = x.shape[0]
    n_clusters = check_int("n_clusters", n_clusters, min=1, max=num)
    x = x.to(accumulation_dtype(x.dtype))
    gen = torch.Generator().manual_seed(seed)
    train = x
    if num > max_points_per_centroid * n_clusters:
        keep = torch.randperm(num, generator=gen)[: max_points_per_centroid * n_clusters]
        train = x[keep.to(x.device)]
    centroids = _kmeans_plus_plus(train, n_clusters, gen)
    assign = nearest_centroid(train, centroids)
    for _ in range(niter):
        sums = torch.zeros_like(centroids).index_add_(0, assign, train)
        counts = torch.bincount(assign, minlength=n_clusters).unsqueeze(1)
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
        new_assign = nearest_centroid(train, centroids)
        if torch.equal(new_assign, assign):
            break
        assign = new_assign
    return nearest_centroid(x, centroids), centroids


def pca(x: Tensor, output_dimensionality: int) -> Tensor:
    """Project mean-centred rows on the top ``output_dimensionality`` principal axes.

    No whitening and no rotation (faiss ``PCAMatrix`` defaults). The sign of each axis is
    arbitrary; distances between projected rows do not depend on it. The covariance is
    accumulated in float64; the result has ``x``'s dtype (at least float32).

    Args:
        x: shape ``(N, D)``.
        output_dimensionality: ``1 <= d_out <= D``.

    Returns:
        Shape ``(N, d_out)``.

    Raises:
        TypeError: ``output_dimensionality`` is not an int.
        ValueError: ``output_dimensionality`` is out of range.

    Example:
        >>> x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [4.0, 0.0]])
        >>> pca(x, 1).abs().flatten().tolist()
        [2.0, 0.0, 2.0]
    """
    dim = x.shape[1]
    output_dimensionality = check_int(
        "output_dimensionality", output_dimensionality, min=1, max=dim
    )
    out_dtype = accumulation_dtype(x.dtype)
    centred = x.to(torch.float64) - x.to(torch.float64).mean(0, keepdim=True)
    _, axes = torch.linalg.eigh(centred.T @ centred)
    top = axes.flip(1)[:, :output_dimensionality]
    return (centred @ top).to(out_dtype)
