"""Softmax-style losses: forward + backward, labels only, 8 samples per class, D = 128.

NTXent and TupletMargin are the headline cases: the reference builds (positive pairs x
negative pairs) matrices (≈ N³ memory); pml uses one log-sum-exp per anchor (O(N·M)).
Shared set-up (one thread, data): ``benchmarks/_loss_cases.py``.
"""

from __future__ import annotations

from typing import Any

from benchmarks._loss_cases import case, factories, make_step

TITLE = "Softmax-style losses: forward + backward (1 thread, 8 samples per class, D = 128)"


ntxent_pml, ntxent_ref = factories(make_step, "NTXentLoss")
tuplet_pml, tuplet_ref = factories(make_step, "TupletMarginLoss")
angular_pml, angular_ref = factories(make_step, "AngularLoss")
npairs_pml, npairs_ref = factories(make_step, "NPairsLoss")
nca_pml, nca_ref = factories(make_step, "NCALoss")
instance_pml, instance_ref = factories(make_step, "InstanceLoss")


def _case(name: str, prefix: str, n: int, **extra: Any) -> dict:
    return case(__name__, name, prefix, n, **extra)


_BLOWUP_1024 = "P x Nn = 7168 x 1.04M: one float32 matrix alone is 30 GB"
_BLOWUP_4096 = "P x Nn = 28672 x 16.7M: one float32 matrix alone is 1.9 TB"

SUITE = [
    _case("NTXentLoss", "ntxent", 256, repeats=2),
    _case("NTXentLoss", "ntxent", 1024, ref_skip=_BLOWUP_1024),
    _case("NTXentLoss", "ntxent", 4096, repeats=1, ref_skip=_BLOWUP_4096),
    _case("TupletMarginLoss", "tuplet", 256, repeats=2),
    _case("TupletMarginLoss", "tuplet", 1024, ref_skip=_BLOWUP_1024),
    _case("TupletMarginLoss", "tuplet", 4096, repeats=1, ref_skip=_BLOWUP_4096),
    _case("AngularLoss", "angular", 256, repeats=9, rounds=3),
    _case("AngularLoss", "angular", 1024, repeats=5, rounds=3),
    _case("NPairsLoss", "npairs", 256, repeats=15, rounds=3),
    _case("NPairsLoss", "npairs", 1024, repeats=9, rounds=3),
    _case("NCALoss", "nca", 256, repeats=15, rounds=3),
    _case("NCALoss", "nca", 1024, repeats=9, rounds=3),
    _case("InstanceLoss", "instance", 256, repeats=15, rounds=3),
    _case("InstanceLoss", "instance", 1024, repeats=9, rounds=3),
]
