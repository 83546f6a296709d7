"""Proxy losses: forward + backward (embeddings and parameters), 1 thread, D = 128.

ProxyAnchor, ProxyNCA, SoftTriple (10 centers per class) and P2SGrad with C = N / 8 classes
(8 samples per class); ManifoldLoss with its default K = 50 proxies and fixed meta classes
(``i mod 50``). Both libraries build the loss after the same seed (identical parameters).
The large case is ProxyAnchorLoss with 100,000 classes, D = 512, batch 256: pml keeps to
``N x C`` tensors (the reference builds several dense ``N x C`` masks and copies).
Shared set-up (one thread, data): ``benchmarks/_loss_cases.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from benchmarks._loss_cases import data, libs

TITLE = "Proxy losses: forward + backward (1 thread, C = N/8 classes, D = 128)"


def _build(losses: Any, name: str, n: int, d: int, num_classes: int) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "ManifoldLoss":
        return losses.ManifoldLoss(l=d)
    if name == "P2SGradLoss":
        return losses.P2SGradLoss(descriptors_dim=d, num_classes=num_classes)
    return getattr(losses, name)(num_classes=num_classes, embedding_size=d)


def make_step(
    lib: str, name: str, n: int, d: int, per_class: int, num_classes: int | None = None
) -> Callable[[], None]:
    """Forward + backward of ``name`` (default arguments) on ``n`` embeddings."""
    losses, _ = libs(lib)
    torch.set_num_threads(1)
    emb, labels = data(n, d, per_class)
    num_classes = num_classes or n // per_class
    loss_fn = _build(losses, name, n, d, num_classes)
    if name == "ManifoldLoss":
        meta = torch.arange(n) % 50

        def step() -> None:
            loss_fn(emb, indices_tuple=meta).backward()
            emb.grad = None
            loss_fn.zero_grad(set_to_none=True)

        return step

    def step() -> None:
        loss_fn(emb, labels).backward()
        emb.grad = None
        loss_fn.zero_grad(set_to_none=True)

    return step


def _factories(name: str) -> tuple[Callable, Callable]:
    def ours(n: int, d: int, per_class: int, **extra: Any) -> Callable[[], None]:
        return make_step("pml", name, n, d, per_class, **extra)

    def ref(n: int, d: int, per_class: int, **extra: Any) -> Callable[[], None]:
        return make_step("ref", name, n, d, per_class, **extra)

    return ours, ref


proxy_anchor_pml, proxy_anchor_ref = _factories("ProxyAnchorLoss")
proxy_nca_pml, proxy_nca_ref = _factories("ProxyNCALoss")
soft_triple_pml, soft_triple_ref = _factories("SoftTripleLoss")
p2sgrad_pml, p2sgrad_ref = _factories("P2SGradLoss")
manifold_pml, manifold_ref = _factories("ManifoldLoss")


def _case(name: str, prefix: str, n: int, d: int = 128, **extra: Any) -> dict:
    params = {"n": n, "d": d, "per_class": 8, **extra.pop("params", {})}
    return {
        "name": name,
        "params": params,
        "pml": f"{__name__}:{prefix}_pml",
        "ref": f"{__name__}:{prefix}_ref",
        **extra,
    }


SUITE = [
    _case("ProxyAnchorLoss", "proxy_anchor", 256, repeats=15, rounds=3),
    _case("ProxyAnchorLoss", "proxy_anchor", 1024, repeats=9, rounds=3),
    _case(
        "ProxyAnchorLoss",
        "proxy_anchor",
        256,
        d=512,
        params={"num_classes": 100_000},
        repeats=3,
        rounds=2,
    ),
    _case("ProxyNCALoss", "proxy_nca", 256, repeats=15, rounds=3),
    _case("ProxyNCALoss", "proxy_nca", 1024, repeats=9, rounds=3),
    _case("SoftTripleLoss", "soft_triple", 256, repeats=15, rounds=3),
    _case("SoftTripleLoss", "soft_triple", 1024, repeats=9, rounds=3),
    _case("P2SGradLoss", "p2sgrad", 256, repeats=15, rounds=3),
    _case("P2SGradLoss", "p2sgrad", 1024, repeats=9, rounds=3),
    _case("ManifoldLoss", "manifold", 256, repeats=5, rounds=3),
    _case("ManifoldLoss", "manifold", 1024, repeats=3, rounds=3),
]
