"""Pair losses (family A): forward + backward, labels only, default arguments, 8 per class.

LiftedStructureLoss is the headline case: the reference builds a (positive pairs x negative
pairs) matrix (2.3 GB and ~15 s at N = 256); pml combines per-row log-sum-exps in O(N·M).
Both libraries run with ``torch.set_num_threads(1)`` (the benchmark machine is shared).
"""

from __future__ import annotations

from typing import Any

import torch

TITLE = "Pair losses A: forward + backward, default arguments (1 thread, 8 per class, D = 128)"


def _data(n: int, d: int, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n // per_class).repeat_interleave(per_class)
    labels = labels[torch.randperm(n, generator=g)]
    emb = torch.randn(n, d, generator=g).requires_grad_()
    return emb, labels


def _step(loss_fn: Any, emb: torch.Tensor, labels: torch.Tensor):  # type: ignore[no-untyped-def]
    def step() -> None:
        loss_fn(emb, labels).backward()
        emb.grad = None

    return step


def _make(lib: str, name: str, n: int, d: int, per_class: int):  # type: ignore[no-untyped-def]
    if lib == "pml":
        import pml.losses as losses
    else:
        import pytorch_metric_learning.losses as losses  # type: ignore[no-redef]
    torch.set_num_threads(1)
    emb, labels = _data(n, d, per_class)
    return _step(getattr(losses, name)(), emb, labels)


def _pair(name: str):  # type: ignore[no-untyped-def]
    def ours(n: int, d: int, per_class: int):  # type: ignore[no-untyped-def]
        return _make("pml", name, n, d, per_class)

    def ref(n: int, d: int, per_class: int):  # type: ignore[no-untyped-def]
        return _make("ref", name, n, d, per_class)

    return ours, ref


contrastive_pml, contrastive_ref = _pair("ContrastiveLoss")
snr_pml, snr_ref = _pair("SignalToNoiseRatioContrastiveLoss")
ipv_pml, ipv_ref = _pair("IntraPairVarianceLoss")
genlifted_pml, genlifted_ref = _pair("GeneralizedLiftedStructureLoss")
lifted_pml, lifted_ref = _pair("LiftedStructureLoss")
ms_pml, ms_ref = _pair("MultiSimilarityLoss")
circle_pml, circle_ref = _pair("CircleLoss")
supcon_pml, supcon_ref = _pair("SupConLoss")


def _case(name: str, prefix: str, n: int, **extra: Any) -> dict:
    return {
        "name": name,
        "params": {"n": n, "d": 128, "per_class": 8},
        "pml": f"{__name__}:{prefix}_pml",
        "ref": f"{__name__}:{prefix}_ref",
        **extra,
    }


_LIFTED_1024 = "P x Nn = 7168 x 1.04M = 7.5e9 cells: > 30 GB as float32 (2.4 GB at N = 256)"
_LIFTED_4096 = "P x Nn = 28672 x 16.7M = 4.8e11 cells: > 1.9 TB as float32"

#: many repeats: the machine is shared, and the median of few steps is easily disturbed
_R256, _R1024 = 41, 21

SUITE = [
    _case("ContrastiveLoss", "contrastive", 256, repeats=_R256),
    _case("ContrastiveLoss", "contrastive", 1024, repeats=_R1024),
    _case("SignalToNoiseRatioContrastiveLoss", "snr", 256, repeats=_R256),
    _case("SignalToNoiseRatioContrastiveLoss", "snr", 1024, repeats=3),
    _case("IntraPairVarianceLoss", "ipv", 256, repeats=_R256),
    _case("IntraPairVarianceLoss", "ipv", 1024, repeats=_R1024),
    _case("GeneralizedLiftedStructureLoss", "genlifted", 256, repeats=_R256),
    _case("GeneralizedLiftedStructureLoss", "genlifted", 1024, repeats=_R1024),
    _case("LiftedStructureLoss", "lifted", 256, repeats=1),
    _case("LiftedStructureLoss", "lifted", 1024, repeats=_R1024, ref_skip=_LIFTED_1024),
    _case("LiftedStructureLoss", "lifted", 4096, repeats=1, ref_skip=_LIFTED_4096),
    _case("MultiSimilarityLoss", "ms", 256, repeats=_R256),
    _case("MultiSimilarityLoss", "ms", 1024, repeats=_R1024),
    _case("CircleLoss", "circle", 256, repeats=_R256),
    _case("CircleLoss", "circle", 1024, repeats=_R1024),
    _case("SupConLoss", "supcon", 256, repeats=_R256),
    _case("SupConLoss", "supcon", 1024, repeats=_R1024),
]
