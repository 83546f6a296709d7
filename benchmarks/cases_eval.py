"""Evaluation: AccuracyCalculator.get_accuracy on class-clustered embeddings.

``spread`` is the within-class noise: 1.5 gives realistic embeddings (precision@1 ~0.99,
MAP ~0.8 at 5k), 2.0 poor ones (precision@1 ~0.8, MAP ~0.35), where most of each row must be
ranked. Both libraries get the same float32 tensors and run on the CPU.

``include`` lists metric names separated by commas. ``knn`` picks pml's ``knn_func`` (the
reference keeps its default ``FaissKNN``): ``"torch"`` forces the plain-torch search
(``TorchKNN()``, what pml does without faiss); ``"ivf"`` is ``ApproximateKNN("ivf")``. The
approximate case also writes its metrics and measured recall@k to
``benchmarks/results/eval_approximate.json`` (the table has no column for them); it uses
``spread=1.0`` (P@1 ~1.0, MAP@R ~0.8): at 1.5 the within-class noise spreads each query's
neighbours over most IVF cells (recall ~0.5 with the default 16 probes, 200k points).
"""

from __future__ import annotations

import json
from pathlib import Path

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
        kwargs["include"] = tuple(include.split(","))
    elif not clustering:
        kwargs["exclude"] = NO_CLUSTERING
    return kwargs


_RESULTS = Path(__file__).parent / "results" / "eval_approximate.json"


def _recording_step(calc, x, y, params: dict):  # type: ignore[no-untyped-def]
    def step() -> None:
        result = calc.get_accuracy(x, y)
        record = {"params": params, "results": result, "exact_rows": calc.knn_func.last_exact_rows}
        _RESULTS.write_text(json.dumps(record, indent=1) + "\n")

    return step


def accuracy_pml(n, d, classes, spread, k=None, clustering=False, include=None, knn=None):  # type: ignore[no-untyped-def]
    from pml.eval import AccuracyCalculator, ApproximateKNN, TorchKNN

    x, y = _data(n, d, classes, spread)
    kwargs = _kwargs(k, clustering, include)
    if knn == "torch":
        kwargs["knn_func"] = TorchKNN()
    elif knn is not None:
        kwargs["knn_func"] = ApproximateKNN(knn)
        params = {"n": n, "d": d, "classes": classes, "spread": spread, "k": k, "knn": knn}
        return _recording_step(AccuracyCalculator(**kwargs), x, y, params)
    return _step(AccuracyCalculator(**kwargs), x, y)


def accuracy_ref(n, d, classes, spread, k=None, clustering=False, include=None, knn=None):  # type: ignore[no-untyped-def]
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    x, y = _data(n, d, classes, spread)  # knn: pml's choice; the reference keeps FaissKNN
    return _step(AccuracyCalculator(**_kwargs(k, clustering, include)), x, y)


def _case(  # type: ignore[no-untyped-def]
    name: str, repeats: int = 1, ref_skip: str | None = None, rounds: int = 1, **params
) -> dict:
    return {
        "name": name,
        "params": params,
        "pml": f"{__name__}:accuracy_pml",
        "ref": f"{__name__}:accuracy_ref",
        "repeats": repeats,
        "rounds": rounds,
        "ref_skip": ref_skip,
    }


_R_METRICS = "precision_at_1,r_precision,mean_average_precision_at_r"
_MBC = "k=max_bin_count"


_NN = "k=None keeps (N, N) neighbour lists: ~{} GB in the reference (2.4 GB at 6k)"

SUITE = [
    _case("default metrics without NMI/AMI", n=5000, d=128, classes=50, spread=1.5),
    _case(
        "default metrics without NMI/AMI, poor embeddings", n=5000, d=128, classes=50, spread=2.0
    ),
    _case("all 7 default metrics", n=5000, d=128, classes=50, spread=1.5, clustering=True),
    _case(
        "k=max_bin_count without NMI/AMI",
        n=5000,
        d=128,
        classes=50,
        spread=1.5,
        k="max_bin_count",
        repeats=5,
        rounds=3,
    ),
    _case(
        "k=max_bin_count without NMI/AMI, plain-torch search",
        n=5000,
        d=128,
        classes=50,
        spread=1.5,
        k="max_bin_count",
        knn="torch",
        repeats=5,
        rounds=3,
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
        repeats=3,
        rounds=3,
    ),
    _case(
        "k=max_bin_count without NMI/AMI, plain-torch search",
        n=20000,
        d=128,
        classes=200,
        spread=1.5,
        k="max_bin_count",
        knn="torch",
        repeats=3,
        rounds=3,
    ),
    _case(
        f"P@1, R-precision, MAP@R with {_MBC}",
        n=100000,
        d=128,
        classes=1000,
        spread=1.5,
        k="max_bin_count",
        include=_R_METRICS,
        repeats=0,
    ),
    _case(
        f"P@1, R-precision, MAP@R with {_MBC}, plain-torch search",
        n=100000,
        d=128,
        classes=1000,
        spread=1.5,
        k="max_bin_count",
        include=_R_METRICS,
        knn="torch",
        repeats=0,
    ),
    _case(
        f"P@1, R-precision, MAP@R with {_MBC}",
        n=200000,
        d=128,
        classes=2000,
        spread=1.5,
        k="max_bin_count",
        include=_R_METRICS,
        repeats=0,
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
    _case(
        "approximate k-NN (ApproximateKNN ivf), P@1 and MAP@R",
        n=1000000,
        d=128,
        classes=10000,
        spread=1.0,
        k="max_bin_count",
        include="precision_at_1,mean_average_precision_at_r",
        knn="ivf",
        repeats=0,
        ref_skip=(
            "no approximate route (FaissKNN never trains an IVF index); exact search of "
            "1M x 1M is ~2.6e14 flops, hours on 2 cores"
        ),
    ),
]
