"""Triplet family: forward + backward, 8 samples per class, D = 128, default arguments.

The reference enumerates all triplets with an N x M x M mask (TripletMargin, Margin,
DynamicSoftMargin, Histogram) and, given a pair miner's 4-tuple, a positive pairs x negative
pairs matrix. pml reduces per-anchor sums without listing triplets (O(N M) memory).
Both libraries run with ``torch.set_num_threads(1)`` (the benchmark machine is shared).
"""

from __future__ import annotations

from typing import Any

import torch

TITLE = "Triplet family: forward + backward (1 thread, 8 samples per class, D = 128)"


def _data(n: int, d: int, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n // per_class).repeat_interleave(per_class)
    labels = labels[torch.randperm(n, generator=g)]
    emb = torch.randn(n, d, generator=g).requires_grad_()
    return emb, labels


def _libs(lib: str):  # type: ignore[no-untyped-def]
    if lib == "pml":
        import pml.losses as losses
        import pml.miners as miners
    else:
        import pytorch_metric_learning.losses as losses  # type: ignore[no-redef]
        import pytorch_metric_learning.miners as miners  # type: ignore[no-redef]
    return losses, miners


def _make(lib: str, name: str, n: int, d: int, per_class: int, miner: str | None = None):  # type: ignore[no-untyped-def]
    losses, miners = _libs(lib)
    torch.set_num_threads(1)
    emb, labels = _data(n, d, per_class)
    loss_fn: Any = getattr(losses, name)()
    miner_fn: Any = getattr(miners, miner)() if miner else None

    def step() -> None:
        if lib == "ref" and name == "DynamicSoftMarginLoss":
            # the reference keeps the histogram's graph, and the next backward raises
            # (docs/compatibility.md); detaching it between steps is the user's workaround
            loss_fn.hist_ = loss_fn.hist_.detach()
        indices_tuple = miner_fn(emb, labels) if miner_fn is not None else None
        loss_fn(emb, labels, indices_tuple).backward()
        emb.grad = None

    return step


def _pair(name: str, miner: str | None = None):  # type: ignore[no-untyped-def]
    def ours(n: int, d: int, per_class: int):  # type: ignore[no-untyped-def]
        return _make("pml", name, n, d, per_class, miner)

    def ref(n: int, d: int, per_class: int):  # type: ignore[no-untyped-def]
        return _make("ref", name, n, d, per_class, miner)

    return ours, ref


triplet_pml, triplet_ref = _pair("TripletMarginLoss")
ms_triplet_pml, ms_triplet_ref = _pair("TripletMarginLoss", "MultiSimilarityMiner")
margin_pml, margin_ref = _pair("MarginLoss")
tcm_pml, tcm_ref = _pair("ThresholdConsistentMarginLoss")
dsm_pml, dsm_ref = _pair("DynamicSoftMarginLoss")
histogram_pml, histogram_ref = _pair("HistogramLoss")


def _case(name: str, prefix: str, n: int, **extra: Any) -> dict:
    return {
        "name": name,
        "params": {"n": n, "d": 128, "per_class": 8},
        "pml": f"{__name__}:{prefix}_pml",
        "ref": f"{__name__}:{prefix}_ref",
        **extra,
    }


_CUBIC_8192 = "all-triplet mask N x M x M = 550 G elements (550 GB as uint8)"

SUITE = [
    _case("TripletMarginLoss", "triplet", 256),
    _case("TripletMarginLoss", "triplet", 1024, repeats=2),
    _case("TripletMarginLoss", "triplet", 8192, repeats=1, ref_skip=_CUBIC_8192),
    _case("MultiSimilarityMiner + TripletMarginLoss", "ms_triplet", 256),
    _case("MultiSimilarityMiner + TripletMarginLoss", "ms_triplet", 1024, repeats=2),
    _case("MarginLoss", "margin", 256),
    _case("MarginLoss", "margin", 1024, repeats=2),
    _case("ThresholdConsistentMarginLoss", "tcm", 256),
    _case("ThresholdConsistentMarginLoss", "tcm", 1024),
    _case("DynamicSoftMarginLoss", "dsm", 256),
    _case("DynamicSoftMarginLoss", "dsm", 1024, repeats=2),
    _case("HistogramLoss", "histogram", 256),
    _case("HistogramLoss", "histogram", 1024, repeats=1),
]
