"""How testers embed a dataset: the batch loop (one or more streams), the shared PCA, plots."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from pml.core import config
from pml.eval._clustering import run_pca

__all__ = [
    "embed_streams",
    "eval_dataloader",
    "joint_pca",
    "postprocess_groups",
    "visualize_splits",
]


def eval_dataloader(
    dataset: Dataset, batch_size: int, num_workers: int, collate_fn: Callable[..., Any] | None
) -> DataLoader:
    """The dataset in order, every item once (no shuffling, no dropped last batch)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        drop_last=False,
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=False,
    )


def embed_streams(
    dataloader: DataLoader,
    num_streams: int,
    unpack: Callable[[Any], Any],
    embed: Callable[[Any], Tensor],
    map_labels: Callable[[Any], Tensor],
    device: torch.device,
) -> tuple[list[Tensor], Tensor]:
    """Embeddings of each data stream of the batches, and the label columns, on ``device``.

    ``unpack(batch)`` gives ``(*streams, labels)``: ``(data, labels)``, or ``(anchors,
    posnegs, labels)`` for two streams. ``embed(data)`` is flattened to ``(n, D)``. Buffers of
    the dataset's length are filled batch by batch (no list of batches), under no_grad.

    Returns:
        ``([stream embeddings (N, D)] * num_streams, labels (N, levels))``.

    Raises:
        ValueError: an empty dataset, or ``unpack`` giving another number of streams.
    """
    total = len(dataloader.dataset)  # type: ignore[arg-type]
    buffers: list[Tensor] = []
    label_buf: Tensor | None = None
    start = 0
    with torch.no_grad():
        for batch in dataloader:
            *streams, labels = unpack(batch)
            if len(streams) != num_streams:
                raise ValueError(
                    f"data_and_label_getter must return {num_streams} data stream(s) and the "
                    f"labels; got {len(streams)} stream(s)"
                )
            labels = map_labels(labels).to(device)
            embs = [embed(data) for data in streams]
            embs = [emb.reshape(emb.shape[0], -1) for emb in embs]
            if label_buf is None:
                buffers = [x.new_empty((total, x.shape[1]), device=device) for x in embs]
                label_buf = labels.new_empty((total, labels.shape[1]))
            end = start + embs[0].shape[0]
            for buffer, emb in zip(buffers, embs):
                buffer[start:end] = emb
            label_buf[start:end] = labels
            start = end
    if label_buf is None:
        raise ValueError("dataset must not be empty")
    return [buffer[:start] for buffer in buffers], label_buf[:start]


def joint_pca(parts: list[Tensor], output_dimensionality: int) -> list[Tensor]:
    """One PCA fitted on all ``parts`` together (standardised columns), split back.

    Example:
        >>> [p.shape for p in joint_pca([torch.randn(5, 4), torch.randn(3, 4)], 2)]
        [torch.Size([5, 2]), torch.Size([3, 2])]
    """
    sizes = [p.shape[0] for p in parts]
    joint = torch.cat(parts)
    std = joint.std(0, keepdim=True)
    standardised = (joint - joint.mean(0, keepdim=True)) / torch.where(
        std > 0, std, torch.ones_like(std)
    )
    return list(run_pca(standardised, output_dimensionality).split(sizes))


def visualize_splits(
    tester: Any, embeddings_and_labels: dict[str, tuple[Tensor, Tensor]], epoch: int
) -> None:
    """``tester.visualizer.fit_transform`` each split, then its hook once per evaluated level."""
    visualizer = tester.visualizer
    name = type(visualizer).__name__
    for split_name, (embeddings, labels) in embeddings_and_labels.items():
        config.LOGGER.info("Running %s on the %s set", name, split_name)
        reduced = visualizer.fit_transform(embeddings.cpu().numpy())
        for level in tester.label_levels_to_evaluate(labels):
            keyname = tester.accuracies_keyname(name, label_hierarchy_level=level)
            level_labels = labels[:, level].cpu().numpy()
            tester.visualizer_hook(visualizer, reduced, level_labels, split_name, keyname, epoch)


def postprocess_groups(
    raw: dict[str, tuple[Tensor, Tensor]],
    postprocess: Callable[[list[Tensor]], list[Tensor]],
    pca_groups: list[list[str]] | None,
) -> dict[str, tuple[Tensor, Tensor]]:
    """``postprocess`` (PCA, normalisation) once per group of splits; None: per split."""
    out: dict[str, tuple[Tensor, Tensor]] = {}
    for group in pca_groups or [[name] for name in raw]:  # groups of splits, not samples
        names = [n for n in group if n in raw]
        processed = postprocess([raw[n][0] for n in names])
        out.update({n: (emb, raw[n][1]) for n, emb in zip(names, processed)})
    return {name: out[name] for name in raw}
