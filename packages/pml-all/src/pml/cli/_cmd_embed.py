"""``pml embed``: the embeddings of a dataset under a trained model, saved with numpy.

Output files (each written atomically: a temporary file renamed into place, so a crash
never leaves a half-written file):

* ``--out FILE.npy``: the embeddings, ``float32`` of shape ``(items, embedding size)``, in
  the dataset's item order; the labels (``int64``, shape ``(items,)``) go to the sibling
  ``FILE_labels.npy`` (or ``--labels-out``), the name ``pml train --data FILE.npy`` looks
  for, so embeddings can be fed to another run as features.
* ``--out FILE.npz``: one archive with the arrays ``embeddings`` and ``labels`` (read with
  ``np.load(FILE)["embeddings"]``; ``pml train --data FILE.npz`` reads it too).

Labels are the dataset's integer labels: for an image folder, its class folders numbered in
sorted name order; for the digits, the digit.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np

from pml.cli._errors import UsageError
from pml.cli._items import load_dataset
from pml.cli._loading import (
    add_device_arguments,
    add_run_argument,
    embed,
    load_trained,
    resolve_device,
    write_atomically,
)

__all__ = ["add_parser", "labels_path", "run"]

_EPILOG = """\
output:
  FILE.npy   embeddings (float32, items x size); labels (int64) in FILE_labels.npy beside it
  FILE.npz   both in one archive: np.load(FILE)["embeddings"], np.load(FILE)["labels"]
  Files are written atomically (never half-written); an existing file is replaced.

examples:
  pml embed runs/<run> --out test_embeddings.npy          the run's held-out split
  pml embed runs/<run> --data photos/ --out photos.npz    any data the model takes
  pml embed runs/<run> --data digits --out all.npz --normalize
"""


def add_parser(subparsers: Any) -> None:
    """Add the ``embed`` sub-command to ``subparsers``."""
    p = subparsers.add_parser(
        "embed",
        help="embeddings of a dataset under a trained model, to .npy or .npz",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_argument(p)
    p.add_argument(
        "--out",
        "-o",
        required=True,
        metavar="FILE",
        help="FILE.npy (labels to FILE_labels.npy) or FILE.npz (embeddings and labels)",
    )
    p.add_argument(
        "--data",
        metavar="DATA",
        help="the items to embed: digits[:train|test], a folder of class folders of images, "
        "or a .npy/.npz features file (default: the run's held-out split)",
    )
    p.add_argument(
        "--labels-out",
        metavar="FILE",
        help="where the labels of a .npy output go (default: FILE_labels.npy beside it)",
    )
    p.add_argument(
        "--normalize",
        action="store_true",
        help="L2-normalise the embeddings (default: the model's raw output)",
    )
    add_device_arguments(p)
    p.set_defaults(run=run)


def labels_path(out: Path) -> Path:
    """The labels file beside a ``.npy`` output: ``<stem>_labels.npy``."""
    return out.with_name(f"{out.stem}_labels.npy")


def run(args: argparse.Namespace) -> int:
    """Run ``pml embed`` with parsed ``args``; returns the exit status."""
    out = Path(os.path.expanduser(args.out))
    suffix = out.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise UsageError(f"--out must end in .npy or .npz; got {args.out!r}")
    if out.is_dir():
        raise UsageError(f"--out {args.out!r} is a folder; give a file name ending in {suffix}")
    labels_out = None
    if suffix == ".npy":
        labels_out = Path(os.path.expanduser(args.labels_out)) if args.labels_out else None
        labels_out = labels_out or labels_path(out)
        if labels_out.suffix.lower() != ".npy":
            raise UsageError(f"--labels-out must end in .npy; got {args.labels_out!r}")
        if labels_out.resolve() == out.resolve():
            raise UsageError("--labels-out must differ from --out")
    elif args.labels_out:
        raise UsageError("--labels-out goes with a .npy --out (a .npz holds the labels itself)")
    device = resolve_device(args.device)
    trained = load_trained(args.source, device)
    dataset = load_dataset(trained, args.data, "--data")
    emb = embed(trained, dataset, device, args.batch_size, normalize=args.normalize).numpy()
    labels = np.asarray(list(dataset.labels), dtype=np.int64)
    if labels_out is None:
        write_atomically(out, lambda fh: np.savez(fh, embeddings=emb, labels=labels))
        where = f"{os.fspath(out)} (arrays: embeddings, labels)"
    else:
        write_atomically(labels_out, lambda fh: np.save(fh, labels))
        write_atomically(out, lambda fh: np.save(fh, emb))
        where = f"{os.fspath(out)} (labels: {os.fspath(labels_out)})"
    norm = ", L2-normalised" if args.normalize else ""
    print(f"model:  {trained.describe()}")
    print(f"data:   {getattr(dataset, 'source', 'data')}")
    print(f"wrote {emb.shape[0]} embeddings of size {emb.shape[1]}{norm} to {where}")
    return 0
