"""``pml search``: the nearest neighbours of query items in a reference set.

Through :class:`pml.eval.InferenceModel`: the reference items are embedded into a k-NN
index (faiss's ``IndexFlatL2`` when faiss is installed, else plain torch; ``--knn`` picks),
the queries are embedded and searched. Distances are squared L2 between the embeddings,
L2-normalised by default when the run's distance normalises (its default), so the order is
the cosine order. A query that is also in the reference set finds itself first (distance 0).

``--save-index FILE`` writes the index (atomically) and ``--index FILE`` searches a saved one
instead of embedding the reference again. Neither format is a pickle: faiss writes its own
binary format, the torch back-end a tensor file read with ``weights_only=True``; each
back-end reads the other's flat files. An index holds embeddings only: pass ``--reference``
with ``--index`` to show the reference items' labels.

Results: a table on stdout (the first ``--show`` queries) and, with ``--out``, every row to
``results.csv`` or ``results.jsonl`` (written atomically): ``query`` (the query's file name
or row), ``query_label``, ``rank`` (1 = nearest), ``reference`` (row of the reference set),
``reference_label``, ``distance``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import torch

from pml.cli._errors import UsageError
from pml.cli._items import label_name, load_dataset, load_queries
from pml.cli._loading import (
    add_device_arguments,
    add_run_argument,
    embed,
    inference_model,
    load_trained,
    one_line,
    resolve_device,
    run_distance,
    write_atomically,
)

__all__ = ["COLUMNS", "add_parser", "run"]

#: the columns of ``--out``
COLUMNS = ("query", "query_label", "rank", "reference", "reference_label", "distance")

_EPILOG = """\
examples:
  pml search runs/<run> --query digits:test --reference digits:train --k 5
  pml search runs/<run> --query cat.jpg dog.png --reference photos/ --out results.csv
  pml search runs/<run> --reference photos/ --save-index photos.index --query q.npy
  pml search runs/<run> --index photos.index --reference photos/ --query cat.jpg
"""


def add_parser(subparsers: Any) -> None:
    """Add the ``search`` sub-command to ``subparsers``."""
    p = subparsers.add_parser(
        "search",
        help="nearest neighbours of query items in a reference set (faiss index when installed)",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_argument(p)
    p.add_argument(
        "--query",
        "-q",
        required=True,
        nargs="+",
        metavar="ITEM",
        help="the queries: image files, or one data argument (digits[:train|test], a folder "
        "of class folders, a .npz features file, a .npy one with or without labels)",
    )
    p.add_argument(
        "--reference",
        "-r",
        metavar="DATA",
        help="the items searched (default: the run's held-out split; with --index: only "
        "their labels are shown)",
    )
    p.add_argument(
        "--index",
        metavar="FILE",
        help="search this saved index (from --save-index) instead of embedding --reference",
    )
    p.add_argument("--save-index", metavar="FILE", help="write the reference index to FILE")
    p.add_argument("--k", type=int, default=5, metavar="K", help="neighbours per query (default 5)")
    p.add_argument(
        "--out",
        "-o",
        metavar="FILE",
        help="every result row to FILE.csv or FILE.jsonl",
    )
    p.add_argument(
        "--show",
        type=int,
        default=10,
        metavar="N",
        help="queries shown in the table (default 10; 0: none)",
    )
    norm = p.add_mutually_exclusive_group()
    norm.add_argument(
        "--normalize",
        dest="normalize",
        action="store_true",
        default=None,
        help="L2-normalise the embeddings (default: when the run's distance does)",
    )
    norm.add_argument(
        "--no-normalize",
        dest="normalize",
        action="store_false",
        help="search the raw embeddings",
    )
    p.add_argument(
        "--knn",
        choices=("auto", "faiss", "torch"),
        default="auto",
        help="the index: faiss (IndexFlatL2), torch (exact, plain torch) or auto (faiss "
        "when installed; default)",
    )
    add_device_arguments(p)
    p.set_defaults(run=run)


def _knn_func(choice: str) -> Any:
    from pml.eval import FaissKNN, TorchKNN

    if choice == "torch":
        return TorchKNN()
    try:
        return FaissKNN(reset_before=False, reset_after=False)
    except ImportError:
        if choice == "faiss":
            raise UsageError("--knn faiss needs faiss: pip install faiss-cpu") from None
        return TorchKNN()


def _index_size(knn: Any) -> tuple[int, int]:
    """``(items, dim)`` of a loaded index (faiss or torch)."""
    index = knn.index
    if isinstance(index, torch.Tensor):
        return int(index.shape[0]), int(index.shape[1])
    return int(index.ntotal), int(index.d)


def _out_kind(text: str | None) -> tuple[Path, str] | None:
    if text is None:
        return None
    path = Path(os.path.expanduser(text))
    kind = path.suffix.lower().lstrip(".")
    if kind not in ("csv", "jsonl"):
        raise UsageError(f"--out must end in .csv or .jsonl; got {text!r}")
    return path, kind


def run(args: argparse.Namespace) -> int:
    """Run ``pml search`` with parsed ``args``; returns the exit status."""
    if args.k < 1:
        raise UsageError(f"--k must be >= 1; got {args.k}")
    if args.show < 0:
        raise UsageError(f"--show must be >= 0; got {args.show}")
    out = _out_kind(args.out)
    device = resolve_device(args.device)
    trained = load_trained(args.source, device)
    normalize = args.normalize
    if normalize is None:
        normalize = bool(getattr(run_distance(trained), "normalize_embeddings", True))
    inference = inference_model(trained, device, normalize, _knn_func(args.knn))
    queries = load_queries(trained, args.query)
    reference = None
    if args.reference is not None or args.index is None:
        reference = load_dataset(trained, args.reference, "--reference")

    if args.index is not None:
        _load_index(inference, args.index)
        items, dim = _index_size(inference.knn_func)
        if reference is not None and len(reference) != items:
            raise UsageError(
                f"--index {args.index} holds {items} items but --reference {args.reference} "
                f"has {len(reference)}; pass the reference the index was built from"
            )
        source = f"index {args.index}"
    else:
        emb = embed(trained, reference, device, args.batch_size, inference=inference)
        inference.knn_func.train(emb)
        items, dim = emb.shape
        source = getattr(reference, "source", "reference")
    query_emb = embed(trained, queries, device, args.batch_size, inference=inference)
    if query_emb.shape[1] != dim:
        raise UsageError(
            f"the index holds embeddings of size {dim} but the model of "
            f"{os.fspath(trained.checkpoint)!r} makes size {query_emb.shape[1]}; search an "
            "index built with this model"
        )
    if args.save_index is not None:
        _save_index(inference, args.save_index)

    k = min(args.k, items)
    with torch.no_grad():
        distances, indices = inference.knn_func(query_emb.to(device), k)
    rows = _rows(queries, reference, distances.cpu(), indices.cpu())

    print(f"model:     {trained.describe()}")
    print(f"reference: {source} ({items} items)")
    print(
        f"queries:   {getattr(queries, 'source', 'queries')} ({len(queries)} items); k = {k}; "
        f"{type(inference.knn_func).__name__}, squared L2"
        + (" of L2-normalised embeddings" if normalize else "")
    )
    if args.save_index is not None:
        print(f"saved the index to {args.save_index}")
    if args.show:
        _print_table(rows, args.show, len(queries), k)
    if out is not None:
        _write_rows(rows, *out)
        print(f"wrote {len(rows)} rows to {os.fspath(out[0])}")
    return 0


def _load_index(inference: Any, filename: str) -> None:
    if not os.path.isfile(os.path.expanduser(filename)):
        raise UsageError(f"--index {filename!r} does not exist")
    try:
        inference.load_knn_func(os.path.expanduser(filename))
    except Exception as err:  # damaged files: ValueError, and struct/zip errors from torch
        detail = str(err) if isinstance(err, ValueError) else f"not an index file ({err})"
        raise UsageError(one_line(f"cannot load --index {filename!r}: {detail}")) from None


def _save_index(inference: Any, filename: str) -> None:
    path = Path(os.path.expanduser(filename))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        inference.save_knn_func(path)
    except OSError as err:
        raise UsageError(f"cannot write --save-index {filename!r}: {err}") from None


def _rows(
    queries: Any, reference: Any, distances: torch.Tensor, indices: torch.Tensor
) -> list[dict[str, Any]]:
    ids = getattr(queries, "ids", None) or list(range(len(queries)))
    labelled = getattr(queries, "labelled", True)
    ref_labels = None if reference is None else list(reference.labels)
    rows = []
    for q in range(indices.shape[0]):
        q_label = label_name(queries, queries.labels[q]) if labelled else ""
        for rank in range(indices.shape[1]):
            j = int(indices[q, rank])
            if j < 0:  # an approximate index that found fewer neighbours
                continue
            rows.append(
                {
                    "query": ids[q],
                    "query_label": q_label,
                    "rank": rank + 1,
                    "reference": j,
                    "reference_label": (
                        "" if ref_labels is None else label_name(reference, ref_labels[j])
                    ),
                    "distance": float(distances[q, rank]),
                }
            )
    return rows


def _print_table(rows: list[dict[str, Any]], show: int, num_queries: int, k: int) -> None:
    shown = rows[: show * k]
    shown_ids = list(dict.fromkeys(str(r["query"]) for r in shown))[:show]
    shown = [r for r in shown if str(r["query"]) in shown_ids]
    has_labels = any(r["query_label"] != "" or r["reference_label"] != "" for r in shown)
    header = ["query", "rank", "reference", "distance"]
    if has_labels:
        header = ["query", "query_label", "rank", "reference", "reference_label", "distance"]
    table = [header] + [
        [f"{r[c]:.4f}" if c == "distance" else str(r[c]) for c in header] for r in shown
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    print("")
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if num_queries > len(shown_ids):
        print(f"... {num_queries - len(shown_ids)} more queries (see --out, --show)")


def _write_rows(rows: list[dict[str, Any]], path: Path, kind: str) -> None:
    if kind == "csv":
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        data = text.getvalue().encode("utf-8")
    else:
        data = "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")
    write_atomically(path, lambda fh: fh.write(data))
