"""Triplet family: forward + backward, 8 samples per class, D = 128, default arguments.

The reference enumerates all triplets with an N x M x M mask (TripletMargin, Margin,
DynamicSoftMargin, Histogram) and, given a pair miner's 4-tuple, a positive pairs x negative
pairs matrix. pml reduces per-anchor sums without listing triplets (O(N M) memory).
Shared set-up (one thread, data): ``benchmarks/_loss_cases.py``.
"""

from __future__ import annotations

from typing import Any

import torch

from benchmarks._loss_cases import case, data, factories, libs

TITLE = "Triplet family: forward + backward (1 thread, 8 samples per class, D = 128)"


def _make(lib: str, name: str, miner: str | None, n: int, d: int, per_class: int):  # type: ignore[no-untyped-def]
    losses, miners = libs(lib)
    torch.set_num_threads(1)
    emb, labels = data(n, d, per_class)
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


triplet_pml, triplet_ref = factories(_make, "TripletMarginLoss", None)
ms_triplet_pml, ms_triplet_ref = factories(_make, "TripletMarginLoss", "MultiSimilarityMiner")
margin_pml, margin_ref = factories(_make, "MarginLoss", None)
tcm_pml, tcm_ref = factories(_make, "ThresholdConsistentMarginLoss", None)
dsm_pml, dsm_ref = factories(_make, "DynamicSoftMarginLoss", None)
histogram_pml, histogram_ref = factories(_make, "HistogramLoss", None)


def _case(name: str, prefix: str, n: int, **extra: Any) -> dict:
    return case(__name__, name, prefix, n, **extra)


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
