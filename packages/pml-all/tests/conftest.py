"""Fixtures of the ``pml`` command's tests: a tiny run folder and a way to call ``pml``.

``fake_run`` is a run folder made with the contract functions of :mod:`pml.cli` (settings,
data, model, run folder) without training: a clustered features file, an untrained MLP (its
random projection keeps the clusters apart) and a checkpoint laid out as ``pml train``
writes it (``{"models": {"trunk": ..., "embedder": ...}, "cli": {...}, "epoch": ...}``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from pml.cli._errors import UsageError

NUM_CLASSES = 6
PER_CLASS = 12
DIM = 10


def run_pml(argv: list[str]) -> tuple[int, str, str]:
    """``pml <argv>`` in this process: ``(exit status, stdout, stderr)``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            from pml.cli.__main__ import main
        except ModuleNotFoundError:  # the train helper's __main__ has not landed yet
            main = _fallback_main
        try:
            code = main([os.fspath(a) for a in argv])
        except SystemExit as exc:  # --help
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def _fallback_main(argv: list[str]) -> int:
    import importlib

    parser = argparse.ArgumentParser(prog="pml")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("eval", "embed", "search"):
        importlib.import_module(f"pml.cli._cmd_{name}").add_parser(sub)
    try:
        args = parser.parse_args(argv)
        return int(args.run(args) or 0)
    except UsageError as exc:
        print(f"pml: error: {exc}", file=__import__("sys").stderr)
        return 2


@pytest.fixture
def pml() -> Callable[..., tuple[int, str, str]]:
    """``pml(*argv) -> (exit status, stdout, stderr)``."""
    return lambda *argv: run_pml(list(argv))


def clustered_features(seed: int = 0, dim: int = DIM) -> tuple[np.ndarray, np.ndarray]:
    """``NUM_CLASSES`` well separated clusters of ``PER_CLASS`` points in ``dim`` dims.

    The centres are the same for every ``seed`` (of a given ``dim``); the points differ.
    """
    centers = np.random.default_rng(1234).normal(0, 4.0, (NUM_CLASSES, dim))
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(NUM_CLASSES), PER_CLASS)
    features = centers[labels] + rng.normal(0, 0.3, (labels.size, dim))
    return features.astype(np.float32), labels.astype(np.int64)


def make_run(root: Path, features_file: Path, name: str = "run", **settings_values) -> Path:
    """A run folder with config.toml, checkpoints/best.pth and last.pth, and COMPLETE."""
    from pml.cli._data import load_data
    from pml.cli._models import build_model
    from pml.cli._run_folder import CHECKPOINT_FORMAT, RunFolder
    from pml.cli._settings import merge_settings

    values = {
        "data": os.fspath(features_file),
        "hidden_size": 16,
        "embedding_size": 8,
        "epochs": 1,
        "device": "cpu",
        **settings_values,
    }
    settings = merge_settings([values])
    splits = load_data(settings)
    torch.manual_seed(0)
    model = build_model(settings, splits.input_shape)
    state = {
        "models": {"trunk": model.trunk.state_dict(), "embedder": model.embedder.state_dict()},
        "epoch": 1,
        "cli": {
            "format": CHECKPOINT_FORMAT,
            "settings": settings.to_dict(),
            "input_shape": list(splits.input_shape),
            "num_classes": splits.num_classes,
            "history": [],
        },
    }
    folder = RunFolder(root / name)
    folder.path.mkdir(parents=True)
    folder.write_config(settings)
    folder.save_checkpoint(state, best=True)
    folder.mark_complete()
    return folder.path


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder trained (not really) on a clustered ``features.npz``."""
    root = tmp_path_factory.mktemp("fake_run")
    features, labels = clustered_features()
    data = root / "features.npz"
    np.savez(data, features=features, labels=labels)
    return make_run(root, data)


def embed_directly(run: Path, features: np.ndarray) -> np.ndarray:
    """The run's model applied to ``features`` in plain torch (the value the CLI must give)."""
    from pml.cli._run_folder import load_model

    model, _ = load_model(run)
    with torch.no_grad():
        return model(torch.from_numpy(features)).numpy()


@pytest.fixture(scope="session")
def helpers() -> types.SimpleNamespace:
    """The helpers above for the test modules (conftest is not importable in importlib mode)."""
    return types.SimpleNamespace(
        DIM=DIM,
        NUM_CLASSES=NUM_CLASSES,
        PER_CLASS=PER_CLASS,
        clustered_features=clustered_features,
        make_run=make_run,
        embed_directly=embed_directly,
        run_pml=run_pml,
    )
