"""Ranking losses and VICReg: forward + backward, 1 thread, D = 128.

PNP and Smooth-AP are the headline cases: the reference builds ``N x N x N`` tensors (it
cannot run at N = 1024 on a 23 GB machine); pml computes the same sums in bounded chunks,
each sigmoid once, ``O(N²)`` memory. FastAP: the reference builds ``(num_bins + 1) x N x N``
pulses, pml one scatter of two neighbouring bins per distance.

Batches: 8 samples per class (labels shuffled), except Smooth-AP, which needs equal class
counts with the batch grouped by label and as many samples per class as classes (its
positive blocks are then the classes): 16 x 16, 32 x 32, 64 x 64. VICReg gets two views
(the second a noisy copy of the first). Shared set-up: ``benchmarks/_loss_cases.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from benchmarks._loss_cases import case, factories, libs, make_step

TITLE = "Ranking losses and VICReg: forward + backward (1 thread, D = 128)"


def _make_kwargs_step(lib: str, name: str, kwargs: dict, n: int, d: int, per_class: int):  # type: ignore[no-untyped-def]
    """Forward + backward of ``name(**kwargs)`` on the shared data, labels only."""
    from benchmarks._loss_cases import data

    losses, _ = libs(lib)
    torch.set_num_threads(1)
    emb, labels = data(n, d, per_class)
    loss_fn = getattr(losses, name)(**kwargs)

    def step() -> None:
        loss_fn(emb, labels).backward()
        emb.grad = None

    return step


def _smooth_ap_step(lib: str, n: int, d: int, per_class: int) -> Callable[[], None]:
    """Smooth-AP on a batch grouped by label, ``sqrt(n)`` classes of ``sqrt(n)`` samples."""
    losses, _ = libs(lib)
    torch.set_num_threads(1)
    side = math.isqrt(n)
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(side).repeat_interleave(side)
    centers = torch.randn(side, d, generator=g)
    emb = (centers[labels] + torch.randn(n, d, generator=g)).requires_grad_()
    loss_fn = losses.SmoothAPLoss()

    def step() -> None:
        loss_fn(emb, labels).backward()
        emb.grad = None

    return step


def _vicreg_step(lib: str, n: int, d: int, per_class: int) -> Callable[[], None]:
    losses, _ = libs(lib)
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    view_1 = torch.randn(n, d, generator=g).requires_grad_()
    view_2 = (view_1.detach() + 0.3 * torch.randn(n, d, generator=g)).requires_grad_()
    loss_fn = losses.VICRegLoss()

    def step() -> None:
        loss_fn(view_1, ref_emb=view_2).backward()
        view_1.grad = view_2.grad = None

    return step


fastap_pml, fastap_ref = factories(make_step, "FastAPLoss")
pnp_pml, pnp_ref = factories(make_step, "PNPLoss")
ranked_pml, ranked_ref = factories(_make_kwargs_step, "RankedListLoss", {"margin": 0.4, "Tn": 1.0})


def smooth_ap_pml(n: int, d: int, per_class: int) -> Callable[[], None]:
    return _smooth_ap_step("pml", n, d, per_class)


def smooth_ap_ref(n: int, d: int, per_class: int) -> Callable[[], None]:
    return _smooth_ap_step("ref", n, d, per_class)


def vicreg_pml(n: int, d: int, per_class: int) -> Callable[[], None]:
    return _vicreg_step("pml", n, d, per_class)


def vicreg_ref(n: int, d: int, per_class: int) -> Callable[[], None]:
    return _vicreg_step("ref", n, d, per_class)


def _case(name: str, prefix: str, n: int, **extra: Any) -> dict:
    return case(__name__, name, prefix, n, **extra)


def _blowup(what: str, peak_256_mb: float, n: int) -> str:
    """The reference's N³ tensors at ``n``: measured peak at N = 256, scaled by (n / 256)³."""
    gb = peak_256_mb * (n / 256) ** 3 / 1024
    cells = f"N³ = {n**3 / 1e9:.1f}G cells each"
    return f"{what} ({cells}): peak {peak_256_mb:.0f} MB at N = 256, so ≈ {gb:,.0f} GB"


_PNP = "three N x N x N tensors"
_SMOOTH_AP = "N x N x N sigmoid tensors and a Python loop over N"

SUITE = [
    _case("FastAPLoss", "fastap", 256, repeats=9, rounds=3),
    _case("FastAPLoss", "fastap", 1024, repeats=5, rounds=3),
    _case("FastAPLoss", "fastap", 4096, repeats=1),
    _case("PNPLoss", "pnp", 256, repeats=5, rounds=3),
    _case("PNPLoss", "pnp", 1024, repeats=3, ref_skip=_blowup(_PNP, 583, 1024)),
    _case("PNPLoss", "pnp", 4096, repeats=1, ref_skip=_blowup(_PNP, 583, 4096)),
    _case("SmoothAPLoss", "smooth_ap", 256, repeats=3),
    _case("SmoothAPLoss", "smooth_ap", 1024, repeats=2, ref_skip=_blowup(_SMOOTH_AP, 329, 1024)),
    _case("SmoothAPLoss", "smooth_ap", 4096, repeats=1, ref_skip=_blowup(_SMOOTH_AP, 329, 4096)),
    _case("RankedListLoss", "ranked", 256, repeats=15, rounds=3),
    _case("RankedListLoss", "ranked", 1024, repeats=9, rounds=3),
    _case("VICRegLoss", "vicreg", 256, repeats=15, rounds=3),
    _case("VICRegLoss", "vicreg", 1024, repeats=9, rounds=3),
]
