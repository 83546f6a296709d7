"""k-means back-ends (faiss's, and plain torch without faiss) and PCA."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pml.core import config
from pml.core.validation import check_finite, check_int
from pml.eval import functional as EF
from pml.eval._faiss import faiss_available, num_gpus, require_faiss
from pml.eval._io import as_embeddings, to_numpy_f32

__all__ = ["FaissKMeans", "TorchKMeans", "default_kmeans_func", "run_pca"]


def _clustering_inputs(x: Any, nmb_clusters: Any) -> tuple[Tensor, int]:
    """Finite 2-D points and ``1 <= nmb_clusters <= len(x)``."""
    x_t = as_embeddings(x, "x")
    num = check_int("nmb_clusters", nmb_clusters, min=1, max=x_t.shape[0])
    check_finite(x_t, "x")
    return x_t, num


class FaissKMeans:
    """k-means with ``faiss.Kmeans(d, nmb_clusters, **kwargs)``.

    faiss defaults decide the numbers: niter 25 (AccuracyCalculator passes 20), seed 1234,
    random initial centroids, training on at most 256 points per centroid.

    Raises:
        ImportError: faiss is not installed.
    """

    def __init__(self, **kwargs: Any) -> None:
        require_faiss("FaissKMeans")
        self.kwargs = kwargs

    def __call__(self, x: Tensor, nmb_clusters: int) -> Tensor:
        """Cluster ids ``(N,)`` int64 on ``x``'s device."""
        faiss = require_faiss("FaissKMeans")
        x_t, nmb_clusters = _clustering_inputs(x, nmb_clusters)
        data = to_numpy_f32(x_t)
        dim = data.shape[1]
        config.LOGGER.info("running k-means clustering with k=%d", nmb_clusters)
        config.LOGGER.info("embedding dimensionality is %d", dim)
        kmeans = faiss.Kmeans(dim, nmb_clusters, **self.kwargs)
        kmeans.train(data)
        _, ids = kmeans.index.search(data, 1)
        return torch.from_numpy(ids[:, 0]).to(device=x_t.device, dtype=torch.long)


class TorchKMeans:
    """k-means in plain torch (k-means++ seeding, Lloyd iterations, chunked assignment).

    Used by :class:`AccuracyCalculator` when faiss is not installed. Deterministic for a seed;
    its clusters (hence NMI/AMI) can differ slightly from faiss's.

    Args:
        niter: Lloyd iterations.
        seed: generator seed.
        max_points_per_centroid: training sub-sample per centroid (faiss's default 256).

    Raises:
        TypeError: an argument that is not an int.
        ValueError: a negative ``niter`` or ``max_points_per_centroid < 1``.

    Example:
        >>> TorchKMeans()(torch.tensor([[0.0], [0.1], [5.0], [5.1]]), 2).bincount().tolist()
        [2, 2]
    """

    def __init__(
        self, niter: int = 20, seed: int = 1234, max_points_per_centroid: int = 256
    ) -> None:
        self.niter = check_int("niter", niter, min=0)
        self.seed = check_int("seed", seed)
        self.max_points_per_centroid = check_int(
            "max_points_per_centroid", max_points_per_centroid, min=1
        )

    def __call__(self, x: Tensor, nmb_clusters: int) -> Tensor:
        """Cluster ids ``(N,)`` int64 on ``x``'s device."""
        x_t, nmb_clusters = _clustering_inputs(x, nmb_clusters)
        with torch.no_grad():
            ids, _ = EF.kmeans(
                x_t,
                nmb_clusters,
                niter=self.niter,
                seed=self.seed,
                max_points_per_centroid=self.max_points_per_centroid,
            )
        return ids


def default_kmeans_func(device: torch.device) -> FaissKMeans | TorchKMeans:
    """``FaissKMeans(niter=20)`` when faiss is installed, else ``TorchKMeans(niter=20)``."""
    if faiss_available():
        faiss = require_faiss("FaissKMeans")
        return FaissKMeans(niter=20, gpu=device.type == "cuda" and num_gpus(faiss) > 0)
    return TorchKMeans(niter=20)


def run_pca(x: Tensor, output_dimensionality: int) -> Tensor:
    """PCA to ``output_dimensionality`` dims (mean-centred, no whitening), on ``x``'s device.

    Plain torch (no faiss needed); each axis's sign is arbitrary, as with faiss.

    Raises:
        TypeError: ``output_dimensionality`` is not an int.
        ValueError: ``x`` is not 2-D, or ``output_dimensionality`` is not in ``[1, D]``.

    Example:
        >>> run_pca(torch.randn(10, 4), 2).shape
        torch.Size([10, 2])
    """
    x_t = as_embeddings(x, "x")
    return EF.pca(x_t, output_dimensionality)
