"""Distances: matrix computation forward + backward."""

from __future__ import annotations

import torch

TITLE = "Distances: forward + backward of the (N, N) matrix"


def _data(n: int, d: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, d, generator=g).requires_grad_()


def _step(dist, x):  # type: ignore[no-untyped-def]
    def step() -> None:
        dist(x).sum().backward()
        x.grad = None

    return step


def snr_pml(n: int, d: int):  # type: ignore[no-untyped-def]
    from pml.distances import SNRDistance

    return _step(SNRDistance(), _data(n, d))


def snr_ref(n: int, d: int):  # type: ignore[no-untyped-def]
    from pytorch_metric_learning.distances import SNRDistance

    return _step(SNRDistance(), _data(n, d))


def lp_pml(n: int, d: int):  # type: ignore[no-untyped-def]
    from pml.distances import LpDistance

    return _step(LpDistance(), _data(n, d))


def lp_ref(n: int, d: int):  # type: ignore[no-untyped-def]
    from pytorch_metric_learning.distances import LpDistance

    return _step(LpDistance(), _data(n, d))


SUITE = [
    {
        "name": "LpDistance",
        "params": {"n": 1024, "d": 128},
        "pml": f"{__name__}:lp_pml",
        "ref": f"{__name__}:lp_ref",
    },
    {
        "name": "SNRDistance",
        "params": {"n": 256, "d": 128},
        "pml": f"{__name__}:snr_pml",
        "ref": f"{__name__}:snr_ref",
    },
    {
        "name": "SNRDistance",
        "params": {"n": 1024, "d": 128},
        "pml": f"{__name__}:snr_pml",
        "ref": f"{__name__}:snr_ref",
    },
]
