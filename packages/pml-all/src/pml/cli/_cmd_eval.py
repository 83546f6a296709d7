"""``pml eval``: retrieval accuracy of a trained model on a dataset.

The model of a run folder (``checkpoints/best.pth``, else ``last.pth``) or of a checkpoint
file embeds the data (the run's held-out split by default, or ``--data``); every item
queries all the others (itself excluded), or the items of ``--reference``, and
:class:`pml.eval.AccuracyCalculator` scores the neighbours. By default the protocol is the
one ``pml train`` reports (P@1, R-precision, MAP@R; ``k = max_bin_count``; the loss's
distance on the raw embeddings), so ``pml eval <run>`` repeats the run's numbers for its
best epoch.

Under ``torch.distributed`` (a process group already made by the caller, or ``pml eval``
launched by ``torchrun`` with ``WORLD_SIZE > 1``: it then makes one, gloo on the CPU, nccl
on CUDA) each rank embeds its contiguous shard of the items and the shards are evaluated
together (:func:`pml.eval.distributed_get_accuracy`): the numbers of one process; rank 0
prints them.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import os
import sys
from typing import Any

from pml.cli._distributed import exit_worker, process_group
from pml.cli._errors import UsageError
from pml.cli._items import load_dataset
from pml.cli._loading import (
    add_device_arguments,
    add_run_argument,
    embed,
    load_trained,
    resolve_device,
    run_distance,
)

__all__ = ["DEFAULT_METRICS", "METRIC_ALIASES", "add_parser", "metric_names", "run"]

#: the metrics ``pml train`` reports (the default of ``--metric``)
DEFAULT_METRICS = ("precision_at_1", "r_precision", "mean_average_precision_at_r")
#: short names accepted by ``--metric`` (case-insensitive)
METRIC_ALIASES = {
    "p@1": "precision_at_1",
    "precision@1": "precision_at_1",
    "r-precision": "r_precision",
    "r_prec": "r_precision",
    "map@r": "mean_average_precision_at_r",
    "map": "mean_average_precision",
    "mrr": "mean_reciprocal_rank",
}

_EPILOG = """\
metrics (--metric, repeatable; "all" for every one):
  precision_at_1, r_precision, mean_average_precision_at_r (the default three),
  mean_average_precision, mean_reciprocal_rank, NMI, AMI (k-means on the embeddings);
  short names: p@1, r-precision, map@r, map, mrr.

examples:
  pml eval runs/<run>                          the run's held-out split, the run's metrics
  pml eval runs/<run>/checkpoints/last.pth     another checkpoint
  pml eval runs/<run> --data photos_test/ --metric all
  pml eval runs/<run> --data queries.npz --reference gallery.npz --k 10 --metric p@1
  pml eval runs/<run> --json > metrics.json
"""


def metric_names() -> list[str]:
    """Every metric of :class:`pml.eval.AccuracyCalculator` (its ``calculate_*`` methods)."""
    from pml.eval import AccuracyCalculator

    prefix = "calculate_"
    return [n[len(prefix) :] for n in dir(AccuracyCalculator) if n.startswith(prefix)]


def add_parser(subparsers: Any) -> None:
    """Add the ``eval`` sub-command to ``subparsers``."""
    p = subparsers.add_parser(
        "eval",
        help="retrieval accuracy of a trained model (run folder or checkpoint) on a dataset",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_argument(p)
    p.add_argument(
        "--data",
        metavar="DATA",
        help="the items to evaluate: digits[:train|test], a folder of class folders of "
        "images, or a .npy/.npz features file (default: the run's held-out split)",
    )
    p.add_argument(
        "--reference",
        metavar="DATA",
        help="items the queries retrieve from (default: the --data items themselves, each "
        "query's own item excluded)",
    )
    p.add_argument(
        "--metric",
        action="append",
        dest="metrics",
        metavar="NAME",
        help="a metric of AccuracyCalculator (repeatable; 'all' for every one; default: "
        + ", ".join(DEFAULT_METRICS)
        + ")",
    )
    p.add_argument(
        "--k",
        default="max_bin_count",
        metavar="K",
        help="neighbours per query: a number, max_bin_count (the size of the largest class, "
        "what R-precision and MAP@R need), or all (default: max_bin_count)",
    )
    p.add_argument(
        "--distance",
        metavar="NAME",
        help="rank neighbours with this pml.distances class (default: the run's loss's "
        "distance, as pml train evaluates)",
    )
    p.add_argument(
        "--avg-of-avgs",
        action="store_true",
        help="average per class first, then over classes",
    )
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    add_device_arguments(p)
    p.set_defaults(run=run)


def resolve_metrics(given: list[str] | None) -> list[str]:
    """The metric names of ``--metric`` (defaults, ``all``, aliases, any case).

    Raises:
        UsageError: an unknown name (with the closest names).
    """
    valid = metric_names()
    if not given:
        return list(DEFAULT_METRICS)
    by_lower = {n.lower(): n for n in valid} | METRIC_ALIASES
    out: list[str] = []
    for raw in given:
        for name in (s.strip() for s in raw.split(",")):
            if not name:
                continue
            if name.lower() == "all":
                chosen = valid
            elif name in valid:
                chosen = [name]
            elif name.lower() in by_lower:
                chosen = [by_lower[name.lower()]]
            else:
                close = difflib.get_close_matches(name, valid + list(METRIC_ALIASES), 3, 0.5)
                close = list(dict.fromkeys(METRIC_ALIASES.get(c, c) for c in close))
                hint = (
                    f"; did you mean {', '.join(close)}?"
                    if close
                    else f"; choose from {', '.join(valid)}"
                )
                raise UsageError(f"unknown metric {name!r}{hint}")
            out += [c for c in chosen if c not in out]
    return out


def resolve_k(text: str) -> int | str | None:
    """``--k``: a positive int, ``"max_bin_count"``, or ``"all"`` (None: every reference)."""
    value = str(text).strip().lower()
    if value == "max_bin_count":
        return "max_bin_count"
    if value in ("all", "none"):
        return None
    try:
        k = int(value)
    except ValueError:
        raise UsageError(f"--k must be a number, max_bin_count or all; got {text!r}") from None
    if k < 1:
        raise UsageError(f"--k must be >= 1; got {k}")
    return k


def run(args: argparse.Namespace) -> int:
    """Run ``pml eval`` with parsed ``args``; returns the exit status."""
    metrics = resolve_metrics(args.metrics)
    k = resolve_k(args.k)
    device = resolve_device(args.device)
    with process_group(device) as (rank, world_size):
        if world_size > 1 and device.type == "cuda" and device.index is None:
            device = _local_cuda(device)
        status = _evaluate(args, metrics, k, device, rank, world_size)
    if world_size > 1:
        exit_worker(status)  # a torchrun worker: see pml.cli._distributed.exit_worker
    return status


def _evaluate(
    args: argparse.Namespace,
    metrics: list[str],
    k: int | str | None,
    device: Any,
    rank: int,
    world_size: int,
) -> int:
    """Embed (this rank's shard of) the items, evaluate, print on rank 0."""
    from pml.cli import _registry as registry
    from pml.eval import AccuracyCalculator, CustomKNN

    trained = load_trained(args.source, device)
    distance = registry.build("distance", args.distance) if args.distance else run_distance(trained)
    query = load_dataset(trained, args.data, "--data")
    reference = (
        None if args.reference is None else load_dataset(trained, args.reference, "--reference")
    )
    calculator = AccuracyCalculator(
        include=tuple(metrics),
        k=k,
        avg_of_avgs=args.avg_of_avgs,
        knn_func=CustomKNN(distance),
        device=device,
        distributed=world_size > 1,
    )
    shard = (rank, world_size)
    query_emb, query_labels = _shard_embedded(trained, query, device, args.batch_size, *shard)
    if reference is None:
        results = calculator.get_accuracy(query_emb, query_labels)
    else:
        ref_emb, ref_labels = _shard_embedded(trained, reference, device, args.batch_size, *shard)
        results = calculator.get_accuracy(
            query_emb, query_labels, ref_emb, ref_labels, ref_includes_query=False
        )
    if rank != 0:
        return 0
    values = {name: _number(results[name]) for name in metrics}
    if args.json:
        print(json.dumps(values))
        return 0
    _print_table(trained, query, reference, k, distance, values, world_size)
    return 0


def _local_cuda(device: Any) -> Any:
    """``cuda:LOCAL_RANK`` (torchrun's GPU of this process), else ``device``."""
    import torch

    local = os.environ.get("LOCAL_RANK")
    return device if local is None else torch.device("cuda", int(local))


def _shard_embedded(
    trained: Any, dataset: Any, device: Any, batch_size: int, rank: int, world_size: int
) -> tuple[Any, Any]:
    """Embeddings and labels of this rank's contiguous shard of ``dataset`` (all of it alone)."""
    labels = _labels(dataset)
    if world_size <= 1:
        return embed(trained, dataset, device, batch_size), labels
    from pml.eval import shard_dataset

    if len(dataset) < world_size:  # alike on every rank: none waits in a collective
        raise UsageError(f"{len(dataset)} items cannot be shared by {world_size} processes")
    part = shard_dataset(dataset, rank, world_size)
    rows = part.indices  # a range
    return embed(trained, part, device, batch_size), labels[rows.start : rows.stop]


def _labels(dataset: Any) -> Any:
    import torch

    return torch.as_tensor(list(dataset.labels), dtype=torch.int64)


def _number(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _print_table(
    trained: Any,
    query: Any,
    reference: Any,
    k: int | str | None,
    distance: Any,
    values: dict[str, float | None],
    world_size: int = 1,
) -> None:
    from pml.cli._data import dataset_stats

    out = sys.stdout
    stats = dataset_stats(query)
    print(f"model:     {trained.describe()}", file=out)
    print(
        f"data:      {getattr(query, 'source', 'data')} ({stats['items']} items, "
        f"{stats['classes']} classes)",
        file=out,
    )
    if reference is None:
        how = "each item queries all the others"
    else:
        ref_stats = dataset_stats(reference)
        how = (
            f"queries against {getattr(reference, 'source', 'reference')} "
            f"({ref_stats['items']} items, {ref_stats['classes']} classes)"
        )
    k_text = "all" if k is None else str(k)
    print(f"protocol:  {how}; k = {k_text}; {_describe(distance)}", file=out)
    if world_size > 1:
        print(f"processes: {world_size} (each embeds its shard; the metrics are global)", file=out)
    if stats["lone_queries"] and reference is None:
        print(
            f"note:      {stats['lone_queries']} classes have a single item: their queries "
            "have nothing to retrieve and are skipped",
            file=out,
        )
    width = max(len(n) for n in values)
    print("", file=out)
    print(f"{'metric'.ljust(width)}  value", file=out)
    for name, value in values.items():
        text = "nan (no query has a match)" if value is None else f"{value:.4f}"
        print(f"{name.ljust(width)}  {text}", file=out)


def _describe(distance: Any) -> str:
    name = type(distance).__name__
    normalized = getattr(distance, "normalize_embeddings", None)
    if normalized is None:
        return name
    return f"{name}(normalize_embeddings={normalized})"
