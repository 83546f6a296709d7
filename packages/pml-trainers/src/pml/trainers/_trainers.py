"""MetricLossOnly, TrainWithClassifier, CascadedEmbeddings and TwoStreamMetricLoss."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from pml.core.indices import get_all_triplets_indices, shift_indices_tuple
from pml.core.validation import check_int
from pml.miners import HDCMiner
from pml.trainers._base_trainer import BaseTrainer
from pml.trainers._trainer_data import batch_parts, process_label

__all__ = [
    "CascadedEmbeddings",
    "MetricLossOnly",
    "TrainWithClassifier",
    "TwoStreamMetricLoss",
]


class MetricLossOnly(BaseTrainer):
    """Trains ``embedder(trunk(data))`` with one metric loss (and an optional tuple miner).

    Every iteration: ``emb = embedder(trunk(data))``; ``indices_tuple =
    mining_funcs["tuple_miner"](emb, labels)`` when there is one; ``losses["metric_loss"] =
    loss_funcs["metric_loss"](emb, labels, indices_tuple)`` when its weight is > 0. See
    :class:`BaseTrainer` for the arguments, epochs, samplers and checkpoints.

    Example:
        >>> from pml.losses import TripletMarginLoss
        >>> from pml.miners import MultiSimilarityMiner
        >>> trunk = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU())
        >>> embedder = torch.nn.Linear(16, 4)
        >>> dataset = torch.utils.data.TensorDataset(torch.randn(64, 8), torch.arange(64) % 4)
        >>> params = list(trunk.parameters()) + list(embedder.parameters())
        >>> trainer = MetricLossOnly(
        ...     models={"trunk": trunk, "embedder": embedder},
        ...     optimizers={"trunk_optimizer": torch.optim.Adam(params, lr=1e-3)},
        ...     batch_size=16,
        ...     loss_funcs={"metric_loss": TripletMarginLoss(margin=0.1)},
        ...     mining_funcs={"tuple_miner": MultiSimilarityMiner(epsilon=0.1)},
        ...     dataset=dataset,
        ...     data_device="cpu",
        ...     dataloader_num_workers=0,
        ... )
        >>> trainer.train(num_epochs=2)
        >>> trainer.epoch, trainer.iterations_per_epoch
        (2, 4)
    """

    def calculate_loss(self, curr_batch: Any) -> None:
        data, labels = curr_batch
        embeddings = self.compute_embeddings(data)
        indices_tuple = self.maybe_mine_embeddings(embeddings, labels)
        self.losses["metric_loss"] = self.maybe_get_metric_loss(embeddings, labels, indices_tuple)

    def maybe_get_metric_loss(self, embeddings: Tensor, labels: Tensor, indices_tuple: Any) -> Any:
        """The metric loss when its weight is > 0, else 0."""
        if self.loss_weights.get("metric_loss", 0) > 0:
            return self.loss_funcs["metric_loss"](embeddings, labels, indices_tuple)
        return 0


class TrainWithClassifier(MetricLossOnly):
    """MetricLossOnly plus a classifier on the embeddings and a ``"classifier_loss"``.

    Adds the model key ``"classifier"`` and the loss key ``"classifier_loss"``: logits =
    ``models["classifier"](emb)`` (when there is a classifier and the classifier loss has a
    weight > 0), ``losses["classifier_loss"] = loss_funcs["classifier_loss"](logits,
    labels)``.
    """

    def calculate_loss(self, curr_batch: Any) -> None:
        data, labels = curr_batch
        embeddings = self.compute_embeddings(data)
        logits = self.maybe_get_logits(embeddings)
        indices_tuple = self.maybe_mine_embeddings(embeddings, labels)
        self.losses["metric_loss"] = self.maybe_get_metric_loss(embeddings, labels, indices_tuple)
        self.losses["classifier_loss"] = self.maybe_get_classifier_loss(logits, labels)

    def maybe_get_classifier_loss(self, logits: Tensor | None, labels: Tensor) -> Any:
        """The classifier loss on ``logits`` (0 when there are none)."""
        if logits is None:
            return 0
        return self.loss_funcs["classifier_loss"](logits, labels.to(logits.device))

    def maybe_get_logits(self, embeddings: Tensor) -> Tensor | None:
        """``models["classifier"](embeddings)`` when it exists and its loss weight is > 0."""
        classifier = self.models.get("classifier")
        if classifier is not None and self.loss_weights.get("classifier_loss", 0) > 0:
            return classifier(embeddings)
        return None

    def modify_schema(self) -> None:
        self.schema["models"].keys += ["classifier"]
        self.schema["loss_funcs"].keys += ["classifier_loss"]


class CascadedEmbeddings(BaseTrainer):
    """Consecutive slices of the embedding, each with its own loss, miner and classifier.

    Slice ``i`` (``embedding_sizes[i]`` columns, in order) is trained with
    ``loss_funcs["metric_loss_i"]`` (indices from ``mining_funcs["tuple_miner_i"]`` when
    present; an ``HDCMiner`` mines from the previous slice's tuple) and, with a
    ``models["classifier_i"]``, ``loss_funcs["classifier_loss_i"]`` on its logits.

    Args:
        embedding_sizes: the width of each slice (first positional argument).
        *args: the arguments of :class:`BaseTrainer`.
        **kwargs: the arguments of :class:`BaseTrainer`.

    Raises:
        TypeError: ``embedding_sizes`` is not a list of ints.
        ValueError: a size < 1; (at the first iteration) slices wider than the embeddings.
    """

    def __init__(self, embedding_sizes: Sequence[int], *args: Any, **kwargs: Any) -> None:
        if isinstance(embedding_sizes, (str, bytes)) or not isinstance(embedding_sizes, Sequence):
            raise TypeError(
                f"embedding_sizes must be a list of ints; got {type(embedding_sizes).__name__}"
            )
        sizes = [check_int("embedding_sizes", s, min=1) for s in embedding_sizes]
        super().__init__(*args, **kwargs)
        self.embedding_sizes: list[int] = sizes  # type: ignore[assignment]

    def calculate_loss(self, curr_batch: Any) -> None:
        data, labels = curr_batch
        embeddings = self.compute_embeddings(data)
        if sum(self.embedding_sizes) > embeddings.shape[1]:
            raise ValueError(
                f"embedding_sizes {self.embedding_sizes} add up to {sum(self.embedding_sizes)}; "
                f"the embeddings have only {embeddings.shape[1]} columns"
            )
        start, indices_tuple, all_logits = 0, None, []
        for i, size in enumerate(self.embedding_sizes):
            curr = embeddings[:, start : start + size]
            start += size
            indices_tuple = self.maybe_mine_embeddings(
                curr, labels, indices_tuple, f"tuple_miner_{i}"
            )
            name = f"metric_loss_{i}"
            # fix: the reference raises KeyError for a slice without its loss
            if name in self.losses:
                self.losses[name] += self.maybe_get_metric_loss(curr, labels, indices_tuple, name)
            all_logits.append(self.maybe_get_logits(curr, f"classifier_{i}"))
        for i, logits in enumerate(all_logits):
            name = f"classifier_loss_{i}"
            if logits is not None and name in self.losses:
                self.losses[name] += self.maybe_get_classifier_loss(logits, labels, name)

    def maybe_mine_embeddings(  # type: ignore[override]
        self,
        embeddings: Tensor,
        labels: Tensor,
        prev_indices_tuple: Any,
        curr_miner_name: str,
    ) -> Any:
        """Mine with ``mining_funcs[curr_miner_name]``, None without it.

        An ``HDCMiner`` mines from ``prev_indices_tuple`` (all pairs when None).
        """
        miner = self.mining_funcs.get(curr_miner_name)
        if miner is None:
            return None
        if isinstance(miner, HDCMiner) and prev_indices_tuple is not None:
            miner.set_idx_externally(prev_indices_tuple, labels)
            try:
                return miner(embeddings, labels)
            finally:
                miner.reset_idx()
        return miner(embeddings, labels)

    def maybe_get_metric_loss(  # type: ignore[override]
        self, embeddings: Tensor, labels: Tensor, indices_tuple: Any, curr_loss_name: str
    ) -> Any:
        """The loss ``curr_loss_name`` when its weight is > 0, else 0."""
        if self.loss_weights.get(curr_loss_name, 0) > 0:
            return self.loss_funcs[curr_loss_name](embeddings, labels, indices_tuple)
        return 0

    def maybe_get_logits(  # type: ignore[override]
        self, embeddings: Tensor, curr_classifier_name: str
    ) -> Tensor | None:
        """``models[curr_classifier_name](embeddings)`` when that classifier exists."""
        classifier = self.models.get(curr_classifier_name)
        return None if classifier is None else classifier(embeddings)

    def maybe_get_classifier_loss(  # type: ignore[override]
        self, logits: Tensor, labels: Tensor, curr_loss_name: str
    ) -> Any:
        """The loss ``curr_loss_name`` on ``logits`` when its weight is > 0, else 0."""
        if self.loss_weights.get(curr_loss_name, 0) > 0:
            return self.loss_funcs[curr_loss_name](logits, labels.to(logits.device))
        return 0

    def modify_schema(self) -> None:
        self.schema["models"].keys += ["classifier_[0-9]+"]
        self.schema["loss_funcs"].keys = ["metric_loss_[0-9]+", "classifier_loss_[0-9]+"]
        # compat: spec §4 ("subset_batch_miner" is not allowed here)
        self.schema["mining_funcs"].keys = ["tuple_miner_[0-9]+"]


class TwoStreamMetricLoss(BaseTrainer):
    """Anchors and positives/negatives come from two streams of the same models.

    Dataset items are ``(anchor, posneg, label)`` (``data_and_label_getter`` must return
    those three). ``E_a = embedder(trunk(anchors))``, ``E_p = embedder(trunk(posnegs))``;
    triplets have their anchor in ``E_a`` and positive/negative in ``E_p``: from
    ``mining_funcs["tuple_miner"](E_a, labels, E_p, labels)``, else all triplets of the
    labels (``j = i`` included: the two streams are different sets). The loss sees
    ``cat([E_a, E_p])`` with the indices shifted accordingly.
    """

    def calculate_loss(self, curr_batch: Any) -> None:
        anchors, posnegs, labels = curr_batch
        embeddings = (self.compute_embeddings(anchors), self.compute_embeddings(posnegs))
        indices_tuple = self.maybe_mine_embeddings(embeddings, labels)
        self.losses["metric_loss"] = self.maybe_get_metric_loss(embeddings, labels, indices_tuple)

    def get_batch(self) -> tuple[Any, Any, Tensor]:  # type: ignore[override]
        batch = self._next_batch()
        anchors, posnegs, labels = batch_parts(self.data_and_label_getter(batch), 3)
        labels = process_label(labels, self.label_hierarchy_level, self.label_mapper)
        return anchors, posnegs, labels

    def maybe_mine_embeddings(self, embeddings: Any, labels: Tensor) -> Any:
        """The tuple miner's (anchors vs the other stream), else all triplets."""
        anchors, posnegs = embeddings
        miner = self.mining_funcs.get("tuple_miner")
        if miner is not None:
            return miner(anchors, labels, posnegs, labels.clone())
        triplets = get_all_triplets_indices(labels, labels.clone())
        return tuple(t.to(anchors.device) for t in triplets)

    def maybe_get_metric_loss(self, embeddings: Any, labels: Tensor, indices_tuple: Any) -> Any:
        """The metric loss over both streams (indices shifted), when its weight is > 0."""
        if self.loss_weights.get("metric_loss", 0) > 0:
            anchors, posnegs = embeddings
            shifted = shift_indices_tuple(indices_tuple, anchors.shape[0])
            return self.loss_funcs["metric_loss"](
                torch.cat([anchors, posnegs], dim=0), torch.cat([labels, labels]), shifted
            )
        return 0

    def modify_schema(self) -> None:
        # compat: spec §6 (only a "tuple_miner")
        self.schema["mining_funcs"].keys = ["tuple_miner"]
