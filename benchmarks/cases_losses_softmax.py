"""Softmax-style losses: forward + backward, labels only, 8 samples per class, D = 128.

NTXent and TupletMargin are the headline cases: the reference builds (positive pairs x
negative pairs) matrices (≈ N³ memory); pml uses one log-sum-exp per anchor (O(N·M)).
Both libraries run with ``torch.set_num_threads(1)`` (the benchmark machine is shared).
"""

from __future__ import annotations

from typing import Any

import torch

TITLE = "Softmax-style losses: forward + backward (1 thread, 8 samples per class, D = 128)"


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


ntxent_pml, ntxent_ref = _pair("NTXentLoss")
tuplet_pml, tuplet_ref = _pair("TupletMarginLoss")
angular_pml, angular_ref = _pair("AngularLoss")
npairs_pml, npairs_ref = _pair("NPairsLoss")
nca_pml, nca_ref = _pair("NCALoss")
instance_pml, instance_ref = _pair("InstanceLoss")


def _case(name: str, prefix: str, n: int, **extra: Any) -> dict:
    return {
        "name": name,
        "params": {"n": n, "d": 128, "per_class": 8},
        "pml": f"{__name__}:{prefix}_pml",
        "ref": f"{__name__}:{prefix}_ref",
        **extra,
    }


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
