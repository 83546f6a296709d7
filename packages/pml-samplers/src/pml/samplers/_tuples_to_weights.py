"""TuplesToWeightsSampler: offline mining turned into sampling weights."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, WeightedRandomSampler

from pml.core import config
from pml.core.indices import convert_to_weights
from pml.core.validation import check_int
from pml.samplers import functional as SF
from pml.samplers._sharding import Sharding

# the reference's BaseTester arguments and defaults
_TESTER_KWARGS: dict[str, Any] = {
    "normalize_embeddings": True,
    "use_trunk_output": False,
    "batch_size": 32,
    "dataloader_num_workers": 2,
    "pca": None,
    "data_device": None,
    "dtype": None,
    "data_and_label_getter": None,
    "label_hierarchy_level": 0,
    "end_of_testing_hook": None,
    "dataset_labels": None,
    "set_min_label_to_zero": False,
    "accuracy_calculator": None,
    "visualizer": None,
    "visualizer_hook": None,
}


class TuplesToWeightsSampler(Sampler[int]):
    """Sample items in proportion to how often a miner picks them (offline mining).

    Every ``iter()`` embeds the dataset (or a random subset of ``subset_size`` items) with
    ``model`` in eval mode, runs ``miner(embeddings, labels)``, counts how often each item
    appears in the mined tuples, and draws ``len(self)`` items with replacement with
    weights ``count / max(count)`` (all ones if nothing was mined). The model's train/eval
    state is restored afterwards (the reference leaves it in eval mode).

    The numpy subset and torch draws equal pytorch-metric-learning's under the same seeds.
    With ``seed`` they come from private generators instead (identical on every rank), and
    ``num_replicas``/``rank`` give each process its share of the draws.

    Args:
        model: maps a batch of data to embeddings.
        miner: any miner, called as ``miner(embeddings, labels)``.
        dataset: map-style dataset of ``(data, label)``.
        subset_size: if truthy, mine a random subset of this size.
        num_replicas: number of processes sharing the draws (DDP world size).
        rank: this process's index in ``[0, num_replicas)``.
        seed: seed of private generators; combined with :meth:`set_epoch`.
        **tester_kwargs: the reference's tester options that shape the embeddings:
            ``batch_size`` (32), ``dataloader_num_workers`` (2), ``data_device`` (CUDA if
            available), ``dtype``, ``normalize_embeddings`` (True),
            ``data_and_label_getter``; evaluation-only options are accepted and ignored.

    Raises:
        TypeError: an unknown tester option; ``subset_size``, ``batch_size`` or
            ``dataloader_num_workers`` not an int.
        ValueError: ``pca`` (not supported here); ``batch_size < 1``, a negative
            ``subset_size`` or ``dataloader_num_workers``.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> from pml.core.indices import get_all_pairs_indices
        >>> data = TensorDataset(torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 2, 2]))
        >>> miner = lambda emb, labels: get_all_pairs_indices(labels)
        >>> sampler = TuplesToWeightsSampler(torch.nn.Identity(), miner, data,
        ...                                  dataloader_num_workers=0, data_device="cpu")
        >>> len(sampler), len(list(sampler))
        (6, 6)
    """

    def __init__(
        self,
        model: nn.Module,
        miner: Callable[[Tensor, Tensor], Any],
        dataset: Dataset,
        subset_size: int | None = None,
        *,
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int | None = None,
        **tester_kwargs: Any,
    ) -> None:
        unknown = sorted(set(tester_kwargs) - set(_TESTER_KWARGS))
        if unknown:
            raise TypeError(
                f"TuplesToWeightsSampler got unknown tester options {unknown}; "
                f"known: {sorted(_TESTER_KWARGS)}"
            )
        opts = {**_TESTER_KWARGS, **tester_kwargs}
        if opts["pca"]:
            raise ValueError(
                f"pca is not supported by TuplesToWeightsSampler; got pca={opts['pca']!r} "
                "(reduce the embeddings inside the model)"
            )
        self.model = model
        self.miner = miner
        self.dataset = dataset
        # fix: int() silently truncated a batch_size of 2.7 (the reference fails in DataLoader)
        self.subset_size = check_int("subset_size", subset_size, min=0, allow_none=True)
        self.batch_size: int = check_int("batch_size", opts["batch_size"], min=1)  # type: ignore[assignment]
        self.num_workers = check_int(
            "dataloader_num_workers", opts["dataloader_num_workers"], min=0
        )
        # compat: the reference tests normalize_embeddings for truthiness
        self.normalize_embeddings = bool(opts["normalize_embeddings"])
        self.dtype = opts["dtype"]
        self.data_and_label_getter = opts["data_and_label_getter"] or (lambda batch: batch)
        device = opts["data_device"]
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.weights: Tensor | None = None
        self._shard = Sharding(num_replicas, rank, seed)

    def __len__(self) -> int:
        total = self.subset_size if self.subset_size else len(self.dataset)  # type: ignore[arg-type]
        return self._shard.num_blocks(total)

    def set_epoch(self, epoch: int) -> None:
        """Select the draws of ``epoch`` (only with ``seed``/``num_replicas``)."""
        self._shard.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        config.LOGGER.info("Computing embeddings in %s", type(self).__name__)
        num_items = len(self.dataset)  # type: ignore[arg-type]
        rng = self._shard.rng()
        if self.subset_size:
            if SF._is_legacy(rng):
                indices = SF.safe_random_choice(np.arange(num_items), self.subset_size)
            else:
                indices = rng.choice(num_items, self.subset_size, self.subset_size > num_items)
            data: Dataset = Subset(self.dataset, indices.tolist())
            index = torch.as_tensor(indices, device=self.device)
        else:
            data = self.dataset
            index = torch.arange(num_items, device=self.device)
        embeddings, labels = self.get_all_embeddings(data)
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels.squeeze(1)
        tuples = self.miner(embeddings, labels)
        weights = torch.zeros(num_items, dtype=torch.float32, device=self.device)
        weights[index] = convert_to_weights(tuples, labels, dtype=torch.float32).to(self.device)
        self.weights = weights
        total = self.subset_size if self.subset_size else num_items
        generator = None
        if self._shard.seed is not None:
            torch_seed = int(
                np.random.default_rng([self._shard.seed, self._shard.epoch, 1]).integers(2**62)
            )
            generator = torch.Generator().manual_seed(torch_seed)
        draws = WeightedRandomSampler(weights, total, replacement=True, generator=generator)
        if not self._shard.sharded:
            return iter(draws)
        return iter(self._shard.take(np.asarray(list(draws), dtype=np.int64), 1).tolist())

    def get_all_embeddings(self, dataset: Dataset) -> tuple[Tensor, Tensor]:
        """Embeddings ``(n, D)`` and labels ``(n, levels)`` of ``dataset``, in order.

        The model runs in eval mode under ``no_grad``; every submodule's train/eval flag is
        restored afterwards (fix: the reference leaves the model in eval mode).
        """
        modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        loader = DataLoader(dataset, batch_size=self.batch_size, shuffle=False,
                            num_workers=self.num_workers)  # fmt: skip
        all_emb, all_labels = [], []
        try:
            with torch.no_grad():
                for batch in loader:
                    data, labels = self.data_and_label_getter(batch)
                    if isinstance(labels, list | tuple):
                        labels = torch.stack(list(labels), dim=1)
                    data = data.to(self.device)
                    if self.dtype is not None:
                        data = data.to(self.dtype)
                    all_emb.append(self.model(data).to(self.device))
                    labels = labels.to(self.device)
                    all_labels.append(labels.unsqueeze(1) if labels.ndim == 1 else labels)
        finally:
            for module, training in modes:
                module.training = training
        if not all_emb:
            return torch.empty(0, 0, device=self.device), torch.empty(0, 1, device=self.device)
        embeddings = torch.cat(all_emb)
        if self.normalize_embeddings:
            embeddings = F.normalize(embeddings, p=2, dim=1, eps=1e-12)
        return embeddings, torch.cat(all_labels)
