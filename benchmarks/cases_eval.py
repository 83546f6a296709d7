"""Evaluation: AccuracyCalculator.get_accuracy on class-clustered embeddings.

``spread`` is the within-class noise: 1.5 gives realistic embeddings (precision@1 ~0.99,
MAP ~0.8 at 5k), 2.0 poor ones (precision@1 ~0.8, MAP ~0.35), where most of each row must be
ranked. Both libraries get the same float32 tensors and run on the CPU.
"""

from __future__ import annotations

import torch

TITLE = "Evaluation: AccuracyCalculator.get_accuracy (k=None unless stated)"

NO_CLUSTERING = ("NMI", "AMI")


def _data(n: int, d: int, classes: int, spread: float) -> tuple[torch.Tensor, torch.Tensor]:
    from pml.core.testing import clustered_embeddings

    return clustered_embeddings(classes, n // classes, d, seed=0, spread=spread)


def _step(calc, x, y):  # type: ignore[no-untyped-def]
    def step() -> None:
        calc.get_accuracy(x, y)

    return step


def _kwargs(k: int | str | None, clustering: bool, include: str | None) -> dict:
    kwargs: dict = {"k": k, "device": torch.device("cpu")}
    if include:
        kwargs["include"] = (include,)
    elif not clustering:
        kwargs["exclude"] = NO_CLUSTERING
    return kwargs


def accuracy_pml(n, d, classes, spread, k=None, clustering=False, include=None):  # type: ignore[no-untyped-def]
    from pml.eval import AccuracyCalculator

    x, y = _data(n, d, classes, spread)
    return _step(AccuracyCalculator(**_kwargs(k, clustering, include)), x, y)


def accuracy_ref(n, d, classes, spread, k=None, clustering=False, include=None):  # type: ignore[no-untyped-def]
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    x, y = _data(n, d, classes, spread)
    return _step(AccuracyCalculator(**_kwargs(k, clustering, include)), x, y)


def _case(name: str, repeats: int = 1, ref_skip: str | None = None, **params) -> dict:  # type: ignore[no-untyped-def]
    return {
        "name": name,
        "params": params,
        "pml": f"{__name__}:accuracy_pml",
        "ref": f"{__name__}:accuracy_ref",
        "repeats": repeats,
        "ref_skip": ref_skip,
    }


_NN = "k=None keeps (N, N) neighbour lists: ~{} GB in the reference (2.4 GB at 6k)"

SUITE = [
    _case("default metrics without NMI/AMI", n=5000, d=128, classes=50, spread=1.5),
    _case(
        "default metrics without NMI/AMI, poor embeddings", n=5000, d=128, classes=50, spread=2.0
    ),
    _case("all 7 default metrics", n=5000, d=128, classes=50, spread=1.5, clustering=True),
    _case(
        "k=max_bin_count without NMI/AMI", n=5000, d=128, classes=50, spread=1.5, k="max_bin_count"
    ),
    _case(
        "default metrics without NMI/AMI",
        n=20000,
        d=128,
        classes=200,
        spread=1.5,
        ref_skip=_NN.format(25),
    ),
    _case(
        "k=max_bin_count without NMI/AMI",
        n=20000,
        d=128,
        classes=200,
        spread=1.5,
        k="max_bin_count",
    ),
    _case(
        "mean_average_precision over the full ranking",
        n=100000,
        d=128,
        classes=1000,
        spread=1.5,
        include="mean_average_precision",
        repeats=0,
        ref_skip=_NN.format(600),
    ),
    _case(
        "all 7 default metrics",
        n=100000,
        d=128,
        classes=1000,
        spread=1.5,
        clustering=True,
        repeats=0,
        ref_skip=_NN.format(600),
    ),
]
