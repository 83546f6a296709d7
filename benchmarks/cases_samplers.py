"""Samplers: construction plus the first epoch (one full iteration) on large label sets."""

from __future__ import annotations

import numpy as np

TITLE = "Samplers: construction + first epoch (list(iter(sampler)))"


def _labels(n: int, classes: int) -> np.ndarray:
    labels = np.random.RandomState(0).randint(0, classes, n)
    labels[:classes] = np.arange(classes)
    return labels


def _m_per_class(lib: str, n: int, classes: int, m: int, batch_size: int | None, seed=None):  # type: ignore[no-untyped-def]
    if lib == "pml":
        from pml.samplers import MPerClassSampler

        extra = {} if seed is None else {"seed": seed}
    else:
        from pytorch_metric_learning.samplers import MPerClassSampler  # type: ignore[no-redef]

        extra = {}
    labels = _labels(n, classes)

    def step() -> None:
        np.random.seed(0)
        sampler = MPerClassSampler(labels, m, batch_size=batch_size, **extra)
        out = list(iter(sampler))
        assert len(out) == len(sampler) or lib == "ref"

    return step


def mpc_pml(n: int, classes: int, m: int, batch_size: int | None = None):  # type: ignore[no-untyped-def]
    return _m_per_class("pml", n, classes, m, batch_size)


def mpc_seeded_pml(n: int, classes: int, m: int, batch_size: int | None = None):  # type: ignore[no-untyped-def]
    return _m_per_class("pml", n, classes, m, batch_size, seed=0)


def mpc_ref(n: int, classes: int, m: int, batch_size: int | None = None):  # type: ignore[no-untyped-def]
    return _m_per_class("ref", n, classes, m, batch_size)


def _fixed(lib: str, n: int, classes: int, num_triplets: int, seed=None):  # type: ignore[no-untyped-def]
    if lib == "pml":
        from pml.samplers import FixedSetOfTriplets

        extra = {} if seed is None else {"seed": seed}
    else:
        from pytorch_metric_learning.samplers import FixedSetOfTriplets  # type: ignore[no-redef]

        extra = {}
    labels = _labels(n, classes)

    def step() -> None:
        np.random.seed(0)
        list(iter(FixedSetOfTriplets(labels, num_triplets, **extra)))

    return step


def fixed_pml(n: int, classes: int, num_triplets: int):  # type: ignore[no-untyped-def]
    return _fixed("pml", n, classes, num_triplets)


def fixed_seeded_pml(n: int, classes: int, num_triplets: int):  # type: ignore[no-untyped-def]
    return _fixed("pml", n, classes, num_triplets, seed=0)


def fixed_ref(n: int, classes: int, num_triplets: int):  # type: ignore[no-untyped-def]
    return _fixed("ref", n, classes, num_triplets)


_BIG = {"n": 1_000_000, "classes": 100_000, "m": 4}
SUITE = [
    {"name": "MPerClassSampler (reference stream)", "params": {**_BIG, "batch_size": None},
     "pml": f"{__name__}:mpc_pml", "ref": f"{__name__}:mpc_ref", "repeats": 1},
    {"name": "MPerClassSampler (seed=0, vectorised)", "params": {**_BIG, "batch_size": None},
     "pml": f"{__name__}:mpc_seeded_pml", "ref": f"{__name__}:mpc_ref", "repeats": 1},
    {"name": "MPerClassSampler (reference stream)", "params": {**_BIG, "batch_size": 64},
     "pml": f"{__name__}:mpc_pml", "ref": f"{__name__}:mpc_ref", "repeats": 1},
    {"name": "MPerClassSampler (seed=0, vectorised)", "params": {**_BIG, "batch_size": 64},
     "pml": f"{__name__}:mpc_seeded_pml", "ref": f"{__name__}:mpc_ref", "repeats": 1},
    {"name": "FixedSetOfTriplets (reference stream)",
     "params": {"n": 100_000, "classes": 1_000, "num_triplets": 100_000},
     "pml": f"{__name__}:fixed_pml", "ref": f"{__name__}:fixed_ref", "repeats": 1},
    {"name": "FixedSetOfTriplets (seed=0, vectorised)",
     "params": {"n": 100_000, "classes": 1_000, "num_triplets": 100_000},
     "pml": f"{__name__}:fixed_seeded_pml", "ref": f"{__name__}:fixed_ref", "repeats": 1},
]  # fmt: skip
