"""PNG plots of a run: loss curve, accuracy curves, 2-D map of the test embeddings.

matplotlib is imported lazily (Agg back-end: no display needed); without it the plots are
skipped with a message and the run is still complete. Files are written atomically.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pml.core.io import atomic_write

__all__ = ["PlotsUnavailable", "embedding_map", "plot_run"]

_METRICS = (
    ("precision_at_1", "P@1"),
    ("r_precision", "R-precision"),
    ("mean_average_precision_at_r", "MAP@R"),
)


class PlotsUnavailable(RuntimeError):
    """matplotlib (or scikit-learn for t-SNE) is not installed."""


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise PlotsUnavailable(
            "matplotlib is not installed (pip install matplotlib); plots skipped"
        ) from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def embedding_map(
    embeddings: torch.Tensor, method: str = "pca", seed: int = 0
) -> tuple[np.ndarray, str]:
    """2-D coordinates of ``embeddings`` ``(N, D)`` and the axis name prefix.

    ``"pca"``: the two principal components (signs fixed: each axis's largest coordinate is
    positive). ``"tsne"``: scikit-learn's t-SNE (PCA initialisation, ``random_state=seed``).
    """
    x = embeddings.detach().to(device="cpu", dtype=torch.float64)
    if method == "tsne":
        try:
            from sklearn.manifold import TSNE
        except ImportError:
            raise PlotsUnavailable("t-SNE needs scikit-learn (pip install scikit-learn)") from None
        perplexity = float(max(2.0, min(30.0, (len(x) - 1) / 3)))
        tsne = TSNE(n_components=2, init="pca", random_state=seed, perplexity=perplexity)
        return tsne.fit_transform(x.numpy()), "t-SNE"
    centred = x - x.mean(dim=0, keepdim=True)
    if centred.shape[1] < 2:
        centred = torch.cat([centred, torch.zeros(len(centred), 2 - centred.shape[1])], dim=1)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    coords = centred @ vh[:2].T
    flip = torch.sign(coords.gather(0, coords.abs().argmax(dim=0, keepdim=True)))
    coords = coords * torch.where(flip == 0, torch.ones_like(flip), flip)
    return coords.numpy(), "PC"


def plot_run(
    folder: Path,
    history: Sequence[Mapping[str, Any]],
    embeddings: torch.Tensor | None,
    labels: Sequence[int],
    class_names: Mapping[int, str],
    method: str = "pca",
    seed: int = 0,
    title: str = "",
    raw_baseline: Mapping[str, float] | None = None,
) -> list[str]:
    """Write ``loss.png``, ``accuracy.png`` and ``embeddings_<method>.png`` into ``folder``.

    ``title`` (the loss) goes into the titles; ``raw_baseline`` (the metrics of the raw
    inputs) is drawn as a dashed MAP@R line. ``embeddings`` are drawn as given (normalise
    them first when the distance does).

    Returns:
        the file names written.

    Raises:
        PlotsUnavailable: matplotlib (or scikit-learn for t-SNE) is missing.
    """
    plt = _pyplot()
    written = []
    trained = [r for r in history if r.get("loss") is not None]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot([r["epoch"] for r in trained], [r["loss"] for r in trained], marker=".")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean training loss")
    ax.set_title(f"training loss, {title}" if title else "training loss")
    ax.grid(alpha=0.3)
    _save(fig, folder / "loss.png")
    plt.close(fig)
    written.append("loss.png")

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    epochs = [r["epoch"] for r in history]
    for key, label in _METRICS:
        ax.plot(epochs, [r.get(key) for r in history], marker=".", label=label)
    if raw_baseline is not None:
        ax.axhline(
            raw_baseline["mean_average_precision_at_r"],
            color="grey",
            linestyle="--",
            label="MAP@R of the raw inputs",
        )
    ax.set_xlabel("epoch (0: untrained)")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"held-out retrieval, {title}" if title else "held-out retrieval")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    _save(fig, folder / "accuracy.png")
    plt.close(fig)
    written.append("accuracy.png")

    if embeddings is not None and len(embeddings) >= 2:
        coords, axis = embedding_map(embeddings, method, seed)
        y = np.asarray(labels)
        classes = sorted(set(y.tolist()))
        fig, ax = plt.subplots(figsize=(6.8, 5))
        cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
        for i, c in enumerate(classes):
            sel = y == c
            color = (
                cmap(i % cmap.N) if len(classes) <= 20 else plt.get_cmap("hsv")(i / len(classes))
            )
            ax.scatter(
                coords[sel, 0],
                coords[sel, 1],
                s=8,
                color=color,
                label=class_names.get(c, str(c)),
                alpha=0.8,
            )
        ax.set_xlabel(f"{axis} 1")
        ax.set_ylabel(f"{axis} 2")
        what = "t-SNE" if method == "tsne" else "PCA"
        ax.set_title(f"held-out embeddings ({what}), {title}" if title else f"held-out ({what})")
        if len(classes) <= 20:
            # beside the map, not over the points
            ax.legend(
                markerscale=2,
                fontsize="small",
                loc="upper left",
                bbox_to_anchor=(1.01, 1.0),
                ncol=2 if len(classes) > 10 else 1,
            )
        name = f"embeddings_{method}.png"
        _save(fig, folder / name)
        plt.close(fig)
        written.append(name)
    return written
