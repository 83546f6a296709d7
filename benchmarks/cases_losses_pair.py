"""Pair losses (family A): forward + backward, labels only, default arguments, 8 per class.

LiftedStructureLoss is the headline case: the reference builds a (positive pairs x negative
pairs) matrix (2.3 GB and ~15 s at N = 256); pml combines per-row log-sum-exps in O(N·M).
Shared set-up (one thread, data): ``benchmarks/_loss_cases.py``.
"""

from __future__ import annotations

from typing import Any

from benchmarks._loss_cases import case, factories, make_step

TITLE = "Pair losses A: forward + backward, default arguments (1 thread, 8 per class, D = 128)"


contrastive_pml, contrastive_ref = factories(make_step, "ContrastiveLoss")
snr_pml, snr_ref = factories(make_step, "SignalToNoiseRatioContrastiveLoss")
ipv_pml, ipv_ref = factories(make_step, "IntraPairVarianceLoss")
genlifted_pml, genlifted_ref = factories(make_step, "GeneralizedLiftedStructureLoss")
lifted_pml, lifted_ref = factories(make_step, "LiftedStructureLoss")
ms_pml, ms_ref = factories(make_step, "MultiSimilarityLoss")
circle_pml, circle_ref = factories(make_step, "CircleLoss")
supcon_pml, supcon_ref = factories(make_step, "SupConLoss")


def _case(name: str, prefix: str, n: int, **extra: Any) -> dict:
    return case(__name__, name, prefix, n, **extra)


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
