"""The testers: one query split against reference splits, per label level."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from pml.core.validation import InvalidArgumentError
from pml.eval._distributed_accuracy import gathered_unique
from pml.eval._tester_base import BaseTester

__all__ = [
    "GlobalEmbeddingSpaceTester",
    "GlobalTwoStreamEmbeddingSpaceTester",
    "WithSameParentLabelTester",
]


def _accuracies_per_level(
    tester: BaseTester,
    accuracies: dict[str, Any],
    query_emb: Tensor,
    query_labels: Tensor,
    ref_emb: Tensor,
    ref_labels: Tensor,
    ref_includes_query: bool,
) -> None:
    """``{metric}_level{L}`` for each evaluated label column, and their averages."""
    tester.label_levels = tester.label_levels_to_evaluate(query_labels)
    calc = tester._calculator
    for level in tester.label_levels:  # label columns, not samples
        result = calc.get_accuracy(
            query_emb,
            query_labels[:, level],
            ref_emb,
            ref_labels[:, level],
            ref_includes_query,
        )
        for metric, value in result.items():
            accuracies[tester.accuracies_keyname(metric, label_hierarchy_level=level)] = value
    if len(tester.label_levels) > 1:
        tester.calculate_average_accuracies(
            accuracies, calc.get_curr_metrics(), tester.label_levels
        )


class GlobalEmbeddingSpaceTester(BaseTester):
    """Each query split against the concatenation of its reference splits, per label level.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> from pml.eval import AccuracyCalculator
        >>> x = torch.tensor([[0.0, 1.0], [0.1, 1.0], [1.0, 0.0], [1.0, 0.1]])
        >>> data = TensorDataset(x, torch.tensor([0, 0, 1, 1]))
        >>> calc = AccuracyCalculator(include=("precision_at_1",), device="cpu")
        >>> tester = GlobalEmbeddingSpaceTester(
        ...     accuracy_calculator=calc, dataloader_num_workers=0, data_device="cpu")
        >>> tester.test({"val": data}, 1, torch.nn.Identity())["val"]
        {'epoch': 1, 'precision_at_1_level0': 1.0}
    """

    def do_knn_and_accuracies(
        self,
        accuracies: dict[str, Any],
        embeddings_and_labels: dict[str, tuple[Tensor, Tensor]],
        query_split_name: str,
        reference_split_names: list[str],
    ) -> None:
        query_emb, query_labels, ref_emb, ref_labels = self.set_reference_and_query(
            embeddings_and_labels, query_split_name, reference_split_names
        )
        ref_includes_query = self.ref_includes_query(query_split_name, reference_split_names)
        _accuracies_per_level(
            self, accuracies, query_emb, query_labels, ref_emb, ref_labels, ref_includes_query
        )


class WithSameParentLabelTester(BaseTester):
    """Accuracy of level ``L`` within each parent class (level ``L + 1``), averaged over parents.

    Needs at least two label columns. Each parent value among the query items restricts query
    and reference to that parent; the level's value is the unweighted mean over parents.
    """

    def do_knn_and_accuracies(
        self,
        accuracies: dict[str, Any],
        embeddings_and_labels: dict[str, tuple[Tensor, Tensor]],
        query_split_name: str,
        reference_split_names: list[str],
        tag_suffix: str = "",
    ) -> None:
        query_emb, query_labels, ref_emb, ref_labels = self.set_reference_and_query(
            embeddings_and_labels, query_split_name, reference_split_names
        )
        num_columns = query_labels.shape[1]
        levels = [lv for lv in self.label_levels_to_evaluate(query_labels) if lv < num_columns - 1]
        if not levels:
            raise InvalidArgumentError(
                "WithSameParentLabelTester needs a parent label column (level + 1) for the "
                f"evaluated levels; the labels have {num_columns} column(s)"
            )
        self.label_levels = levels
        ref_includes_query = self.ref_includes_query(query_split_name, reference_split_names)
        calc = self._calculator
        for level in levels:
            per_metric: dict[str, list[Any]] = defaultdict(list)
            query_parents = query_labels[:, level + 1]
            ref_parents = ref_labels[:, level + 1]
            # parent classes (of every rank's queries when distributed): one k-means each
            for parent in gathered_unique(calc, query_parents):
                q_mask = query_parents == parent
                r_mask = ref_parents == parent
                result = calc.get_accuracy(
                    query_emb[q_mask],
                    query_labels[q_mask, level],
                    ref_emb[r_mask],
                    ref_labels[r_mask, level],
                    ref_includes_query,
                )
                for metric, value in result.items():
                    per_metric[metric].append(value)
            for metric, values in per_metric.items():
                key = self.accuracies_keyname(metric, label_hierarchy_level=level) + tag_suffix
                accuracies[key] = np.mean(values)
        if len(levels) > 1:
            self.calculate_average_accuracies(accuracies, calc.get_curr_metrics(), levels)


class GlobalTwoStreamEmbeddingSpaceTester(BaseTester):
    """Anchors against positives/negatives of the same split (for ``TwoStreamMetricLoss``).

    Batches give ``(anchors, posnegs, labels)`` through ``data_and_label_getter``. The query is
    the anchors' embeddings, the reference the posnegs' (with the anchors' labels);
    ``ref_includes_query`` is False. Only ``(split, [split])`` pairs are supported.
    ``get_all_embeddings`` gives ``(cat[anchor_emb, posneg_emb], cat[labels, labels])``.
    """

    def compute_all_embeddings(  # type: ignore[override]
        self, dataloader: DataLoader, trunk_model: nn.Module, embedder_model: nn.Module
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(anchor_emb (N, D), posneg_emb (N, D), labels (N, levels))``, like the reference."""
        (anchors, posnegs), labels = self._embed_streams(dataloader, trunk_model, embedder_model, 2)
        return anchors, posnegs, labels

    def _raw_embeddings(self, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        """``(cat[anchor_emb, posneg_emb], cat[labels, labels])`` of one dataset.

        The two streams are one split: PCA fits one basis for both, as they are compared with
        each other (fix: the reference fits one per stream).
        """
        anchors, posnegs, labels = super()._raw_embeddings(*args, **kwargs)  # type: ignore[misc]
        return torch.cat([anchors, posnegs]), torch.cat([labels, labels])

    def do_knn_and_accuracies(
        self,
        accuracies: dict[str, Any],
        embeddings_and_labels: dict[str, tuple[Tensor, Tensor]],
        query_split_name: str,
        reference_split_names: list[str],
    ) -> None:
        if list(reference_split_names) != [query_split_name]:
            raise InvalidArgumentError(
                f"{type(self).__name__} does not support reference splits different from the "
                f"query split; got query {query_split_name!r} with references "
                f"{list(reference_split_names)}"
            )
        embeddings, labels = embeddings_and_labels[query_split_name]
        half = embeddings.shape[0] // 2
        query_emb, ref_emb = embeddings[:half], embeddings[half:]
        query_labels = labels[:half]
        # fix: every label column is kept, so any label_hierarchy_level works (the reference
        # keeps one column and then fails its level check for levels other than 0).
        _accuracies_per_level(
            self, accuracies, query_emb, query_labels, ref_emb, query_labels, False
        )
