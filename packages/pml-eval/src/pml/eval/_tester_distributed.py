"""A tester run under ``torch.distributed``: each rank embeds its shard, the metrics are global.

:func:`distributed_test` is what pml-trainers' hooks (and anyone driving a tester from every
rank of a process group) call instead of ``tester.test``: every split is cut into
contiguous shards in rank order (:func:`shard_dataset`), each rank embeds only its own, and
the tester's calculator evaluates the shards together
(:func:`~pml.eval.distributed_get_accuracy`), so every rank gets the accuracies one process
would compute on the whole splits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, Subset

from pml.core import config
from pml.core.distributed import get_world_size
from pml.core.validation import check_int
from pml.eval._accuracy import AccuracyCalculator
from pml.eval._accuracy_routes import distributed_route
from pml.eval._tester_base import BaseTester

__all__ = ["distributed_test", "shard_dataset"]


def shard_dataset(dataset: Dataset, rank: int, world_size: int) -> Dataset:
    """Rank ``rank``'s contiguous part of ``dataset`` (the parts in rank order are all of it).

    Rank ``r`` gets items ``[r * n // w, (r + 1) * n // w)``: sizes differ by at most one.

    Raises:
        TypeError: a dataset without ``len()``; a rank or world size that is not an int.
        ValueError: ``world_size < 1`` or a rank outside ``[0, world_size)``.

    Example:
        >>> list(shard_dataset(list(range(5)), 1, 2))
        [2, 3, 4]
    """
    world_size = check_int("world_size", world_size, min=1)
    rank = check_int("rank", rank, min=0, max=world_size - 1)
    try:
        n = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"dataset must have a length to be sharded; got {type(dataset).__name__}"
        ) from None
    return Subset(dataset, range(rank * n // world_size, (rank + 1) * n // world_size))


@contextlib.contextmanager
def _evaluating_distributed(calc: AccuracyCalculator) -> Iterator[None]:
    """``calc`` evaluates the ranks' shards together for the duration."""
    if distributed_route(calc) is not None:
        yield
        return
    saved = getattr(calc, "distributed", False)
    calc.distributed = True
    try:
        yield
    finally:
        calc.distributed = saved


def distributed_test(
    tester: BaseTester,
    dataset_dict: Mapping[str, Dataset],
    epoch: int,
    trunk_model: nn.Module,
    embedder_model: nn.Module | None = None,
    splits_to_eval: Sequence[tuple[str, Sequence[str]]] | None = None,
    collate_fn: Callable[..., Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """``tester.test(...)`` with each rank of a process group embedding only its shard.

    Every rank calls it together with the **whole** ``dataset_dict``. Without a process group
    (or with world size 1) it is ``tester.test``. With one, each split is replaced by this
    rank's contiguous shard (:func:`shard_dataset`) and the tester's calculator evaluates
    the shards together: every rank gets (and its ``end_of_testing_hook`` sees) the
    accuracies of one process on the whole splits. What a tester computes per rank (its
    ``pca``, ``embedding_diagnostics``, ``visualizer``) uses this rank's shard only: a
    warning says so for ``pca`` and the diagnostics, whose numbers then differ from one
    process's.

    Returns:
        ``tester.all_accuracies``: ``{query_split: {key: value}}``, the same on every rank.

    Raises:
        ValueError: under a group, a split with fewer items than ranks (on every rank);
            what ``tester.test`` raises.
    """
    args = (epoch, trunk_model, embedder_model, splits_to_eval, collate_fn)
    world_size = get_world_size()
    if world_size <= 1:
        return tester.test(dict(dataset_dict), *args)
    per_rank = [n for n in ("pca", "embedding_diagnostics") if getattr(tester, n, None)]
    if per_rank:
        config.LOGGER.warning(
            "distributed testing: %s computed on each rank's shard of the splits, not on the "
            "whole splits (the accuracies are those of the whole splits)",
            " and ".join(per_rank),
        )
    for name, ds in dataset_dict.items():  # checked alike on every rank: all raise
        if len(ds) < world_size:  # type: ignore[arg-type]
            raise ValueError(
                f"dataset_dict[{name!r}] has {len(ds)} items, fewer than the {world_size} "  # type: ignore[arg-type]
                "ranks: every rank needs at least one item to embed"
            )
    rank = dist.get_rank()
    shards = {name: shard_dataset(ds, rank, world_size) for name, ds in dataset_dict.items()}
    calc = tester.accuracy_calculator
    if calc is None:
        return tester.test(shards, *args)
    with _evaluating_distributed(calc):
        return tester.test(shards, *args)
