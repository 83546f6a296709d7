"""BaseTester: embed dataset splits with a model and hand them to AccuracyCalculator."""

from __future__ import annotations

import functools
import numbers
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from pml.core import config
from pml.core.validation import check_bool, check_int
from pml.eval._accuracy import AccuracyCalculator
from pml.eval._collapse import embedding_collapse
from pml.eval._labels import LabelMapper
from pml.eval._tester_embeddings import (
    embed_streams,
    eval_dataloader,
    joint_pca,
    postprocess_groups,
    visualize_splits,
)
from pml.eval._tester_splits import (
    SplitsToEval,
    check_hierarchy_level,
    check_splits_to_eval,
    check_test_inputs,
    compared_groups,
    levels_to_evaluate,
)

__all__ = ["BaseTester"]


def _identity(x: Any) -> Any:
    return x


class BaseTester:
    """Embed every split of a dataset dict and compute accuracies (subclasses say how).

    Args:
        normalize_embeddings: L2-normalise embeddings (after PCA, if any).
        use_trunk_output: ignore the embedder, use the trunk's output.
        batch_size: dataloader batch size.
        dataloader_num_workers: dataloader workers.
        pca: output dimension of a PCA applied to the embeddings (None: no PCA).
        data_device: where inputs and embeddings live (None: cuda if available).
        dtype: cast input batches to this dtype.
        data_and_label_getter: maps a dataloader batch to ``(data, labels)`` (None: identity).
        label_hierarchy_level: label column(s) to evaluate: int, list of ints, or ``"all"``.
        end_of_testing_hook: ``fn(tester)`` called at the end of :meth:`test`.
        dataset_labels: every label of the dataset (needed by ``set_min_label_to_zero``).
        set_min_label_to_zero: map labels to their rank among the sorted distinct labels.
        accuracy_calculator: None: ``AccuracyCalculator()``.
        visualizer: object with ``fit_transform(ndarray) -> ndarray`` (UMAP, PCA, ...).
        visualizer_hook: ``fn(visualizer, reduced, labels, split_name, keyname, epoch)``.
        embedding_diagnostics: also record, per query split, the embedding-collapse
            diagnostic of its (PCA'd, normalised) embeddings under
            ``collapse_pc90_fraction``, ``collapse_pc99_fraction`` and
            ``collapse_effective_rank`` (see :func:`~pml.eval.embedding_collapse`). Off by
            default: the results stay those of the reference.
    """

    def __init__(
        self,
        normalize_embeddings: bool = True,
        use_trunk_output: bool = False,
        batch_size: int = 32,
        dataloader_num_workers: int = 2,
        pca: int | None = None,
        data_device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        data_and_label_getter: Callable[[Any], Any] | None = None,
        label_hierarchy_level: int | Sequence[int] | str = 0,
        end_of_testing_hook: Callable[[BaseTester], Any] | None = None,
        dataset_labels: Any = None,
        set_min_label_to_zero: bool = False,
        accuracy_calculator: AccuracyCalculator | None = None,
        visualizer: Any = None,
        visualizer_hook: Callable[..., Any] | None = None,
        embedding_diagnostics: bool = False,
    ) -> None:
        self.normalize_embeddings = normalize_embeddings
        self.use_trunk_output = use_trunk_output
        # compat: the reference casts batch_size with int() (2.5 -> 2)
        batch_size = int(batch_size) if isinstance(batch_size, numbers.Real) else batch_size
        self.batch_size = check_int("batch_size", batch_size, min=1)
        self.dataloader_num_workers = dataloader_num_workers
        # compat: a falsy pca (None, 0) is no PCA; fix: 1.5 is a TypeError, not int() -> 1
        self.pca = check_int("pca", pca, min=1) if pca else None
        if data_device is None:
            data_device = "cuda" if torch.cuda.is_available() else "cpu"
        self.data_device = torch.device(data_device)
        self.dtype = dtype
        self.data_and_label_getter = (
            _identity if data_and_label_getter is None else data_and_label_getter
        )
        self.label_hierarchy_level = check_hierarchy_level(label_hierarchy_level)
        self.end_of_testing_hook = end_of_testing_hook
        self.dataset_labels = dataset_labels
        self.set_min_label_to_zero = set_min_label_to_zero
        self.accuracy_calculator = accuracy_calculator
        self.visualizer = visualizer
        self.embedding_diagnostics = check_bool("embedding_diagnostics", embedding_diagnostics)
        if visualizer_hook is not None:
            self.visualizer_hook = visualizer_hook  # type: ignore[method-assign]
        self.initialize_label_mapper()
        self.initialize_accuracy_calculator()
        self.reference_split_names: dict[str, list[str]] = {}

    def initialize_label_mapper(self) -> None:
        """Build ``label_mapper`` from ``set_min_label_to_zero`` and ``dataset_labels``."""
        self.label_mapper = LabelMapper(self.set_min_label_to_zero, self.dataset_labels)

    def initialize_accuracy_calculator(self) -> None:
        """Default ``accuracy_calculator``: ``AccuracyCalculator()``."""
        if self.accuracy_calculator is None:
            self.accuracy_calculator = AccuracyCalculator()

    @property
    def _calculator(self) -> AccuracyCalculator:
        return cast(AccuracyCalculator, self.accuracy_calculator)

    def visualizer_hook(self, *args: Any, **kwargs: Any) -> None:
        """Called with each visualisation; does nothing unless one is passed to ``__init__``."""

    # ------------------------------------------------------------------ naming
    def accuracies_keyname(
        self, metric: str, label_hierarchy_level: int | str = 0, average: bool = False
    ) -> str:
        """``{metric}_level{L}``, or ``AVERAGE_{metric}`` with ``average``."""
        if average:
            return f"AVERAGE_{metric}"
        return f"{metric}_level{label_hierarchy_level}"

    def label_hierarchy_level_to_str(self, label_hierarchy_level: Any) -> str:
        """``"0"``, ``"all"``, or list levels joined with ``_``."""
        if isinstance(label_hierarchy_level, list | tuple):
            return "_".join(str(x) for x in label_hierarchy_level)
        return str(label_hierarchy_level)

    def description_suffixes(self, base_name: str) -> str:
        """``base`` + ``_pca{n}``, ``_normalized``, ``_trunk``, ``_{Tester}``, ``_level_{L}``..."""
        if self.pca:
            base_name += f"_pca{self.pca}"
        if self.normalize_embeddings:
            base_name += "_normalized"
        if self.use_trunk_output:
            base_name += "_trunk"
        base_name += f"_{type(self).__name__}"
        base_name += f"_level_{self.label_hierarchy_level_to_str(self.label_hierarchy_level)}"
        description = self._calculator.description()
        if description:
            base_name += f"_{description}"
        return base_name

    def label_levels_to_evaluate(self, query_labels: Tensor) -> list[int]:
        """Label columns to evaluate for labels ``(N, levels)``.

        Raises:
            InvalidArgumentError: a level that the labels do not have.
        """
        return levels_to_evaluate(self.label_hierarchy_level, query_labels.shape[1])

    # ------------------------------------------------------------------ embeddings
    def maybe_normalize(self, embeddings: Tensor) -> Tensor:
        """Row L2-normalisation (eps 1e-12) when ``normalize_embeddings``."""
        if self.normalize_embeddings:
            return F.normalize(embeddings, p=2, dim=1, eps=1e-12)
        return embeddings

    def _postprocess(self, parts: list[Tensor]) -> list[Tensor]:
        """PCA fitted once on all ``parts`` together (standardised columns), then normalise."""
        if self.pca:
            parts = joint_pca(parts, self.pca)
        return [self.maybe_normalize(p) for p in parts]

    def get_embeddings_for_eval(
        self, trunk_model: nn.Module, embedder_model: nn.Module, input_imgs: Any
    ) -> Tensor:
        """``embedder(trunk(x))``, or ``trunk(x)`` with ``use_trunk_output``."""
        if isinstance(input_imgs, Tensor):
            input_imgs = input_imgs.to(self.data_device)
            if self.dtype is not None:
                input_imgs = input_imgs.to(self.dtype)
        trunk_output = trunk_model(input_imgs)
        if self.use_trunk_output:
            return trunk_output
        return embedder_model(trunk_output)

    def compute_all_embeddings(
        self, dataloader: DataLoader, trunk_model: nn.Module, embedder_model: nn.Module
    ) -> tuple[Tensor, Tensor]:
        """Raw embeddings ``(N, D)`` and label columns ``(N, levels)`` on ``data_device``."""
        (embeddings,), labels = self._embed_streams(dataloader, trunk_model, embedder_model, 1)
        return embeddings, labels

    def _embed_streams(
        self,
        dataloader: DataLoader,
        trunk_model: nn.Module,
        embedder_model: nn.Module,
        num_streams: int,
    ) -> tuple[list[Tensor], Tensor]:
        """The batches' data streams embedded, and their labels (see :func:`embed_streams`)."""
        embed = functools.partial(self.get_embeddings_for_eval, trunk_model, embedder_model)
        unpack, labels = self.data_and_label_getter, self.label_mapper.map
        return embed_streams(dataloader, num_streams, unpack, embed, labels, self.data_device)

    def _raw_embeddings(
        self,
        dataset: Dataset,
        trunk_model: nn.Module,
        embedder_model: nn.Module | None,
        collate_fn: Callable[..., Any] | None,
        eval: bool = True,
    ) -> tuple[Tensor, Tensor]:
        """Embeddings ``(N, D)`` before PCA and normalisation, and labels, of one dataset."""
        embedder_model = nn.Identity() if embedder_model is None else embedder_model
        if eval:
            trunk_model.eval()
            embedder_model.eval()
        dataloader = eval_dataloader(
            dataset, self.batch_size, self.dataloader_num_workers, collate_fn
        )
        return self.compute_all_embeddings(dataloader, trunk_model, embedder_model)

    def get_all_embeddings(
        self,
        dataset: Dataset,
        trunk_model: nn.Module,
        embedder_model: nn.Module | None = None,
        collate_fn: Callable[..., Any] | None = None,
        eval: bool = True,
        return_as_numpy: bool = False,
    ) -> tuple[Any, Any]:
        """Embeddings ``(N, D)`` and labels ``(N, levels)`` of one dataset (PCA, normalised).

        Returns:
            tensors on ``data_device``, or numpy arrays with ``return_as_numpy``.
        """
        emb, labels = self._raw_embeddings(dataset, trunk_model, embedder_model, collate_fn, eval)
        (emb,) = self._postprocess([emb])
        if return_as_numpy:
            return emb.cpu().numpy(), labels.cpu().numpy()
        return emb, labels

    def get_splits_to_compute_embeddings(
        self, dataset_dict: dict[str, Dataset], splits_to_eval: SplitsToEval
    ) -> list[str]:
        """Every split named in ``splits_to_eval`` (in ``dataset_dict`` order)."""
        named = {q for q, _ in splits_to_eval} | {r for _, refs in splits_to_eval for r in refs}
        return [name for name in dataset_dict if name in named]

    def get_all_embeddings_for_all_splits(
        self,
        dataset_dict: dict[str, Dataset],
        trunk_model: nn.Module,
        embedder_model: nn.Module,
        splits_to_compute_embeddings: list[str],
        collate_fn: Callable[..., Any] | None,
        *,
        pca_groups: list[list[str]] | None = None,
    ) -> dict[str, tuple[Tensor, Tensor]]:
        """``{split: (embeddings, labels)}``; the splits of a ``pca_groups`` group share one PCA.

        ``pca_groups`` None: each split gets its own PCA (as with :meth:`get_all_embeddings`).
        """
        raw = {
            name: self._raw_embeddings(dataset_dict[name], trunk_model, embedder_model, collate_fn)
            for name in splits_to_compute_embeddings
        }
        return postprocess_groups(raw, self._postprocess, pca_groups)

    # ------------------------------------------------------------------ evaluation
    def ref_includes_query(self, query_split_name: str, reference_split_names: list[str]) -> bool:
        """Whether the query split is one of its reference splits."""
        return query_split_name in reference_split_names

    def maybe_combine_splits(
        self, embeddings_and_labels: dict[str, tuple[Tensor, Tensor]], splits: list[str]
    ) -> tuple[Tensor, Tensor]:
        """Concatenate the splits' embeddings and labels, in list order."""
        if len(splits) == 1:
            return embeddings_and_labels[splits[0]]
        emb = torch.cat([embeddings_and_labels[s][0] for s in splits])
        labels = torch.cat([embeddings_and_labels[s][1] for s in splits])
        return emb, labels

    def set_reference_and_query(
        self,
        embeddings_and_labels: dict[str, tuple[Tensor, Tensor]],
        query_split_name: str,
        reference_split_names: list[str],
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(query_emb, query_labels, reference_emb, reference_labels)``."""
        query_emb, query_labels = embeddings_and_labels[query_split_name]
        ref_emb, ref_labels = self.maybe_combine_splits(
            embeddings_and_labels, reference_split_names
        )
        return query_emb, query_labels, ref_emb, ref_labels

    def calculate_average_accuracies(
        self, accuracies: dict[str, Any], metrics: list[str], label_levels: list[int]
    ) -> None:
        """``AVERAGE_{metric}`` = plain mean over the evaluated levels."""
        for metric in metrics:
            values = [accuracies[self.accuracies_keyname(metric, lv)] for lv in label_levels]
            accuracies[self.accuracies_keyname(metric, average=True)] = np.mean(values)

    def maybe_visualize(
        self, embeddings_and_labels: dict[str, tuple[Tensor, Tensor]], epoch: int
    ) -> None:
        """``visualizer.fit_transform`` each split, then the hook once per evaluated level."""
        if self.visualizer is not None:
            visualize_splits(self, embeddings_and_labels, epoch)

    def test(
        self,
        dataset_dict: dict[str, Dataset],
        epoch: int,
        trunk_model: nn.Module,
        embedder_model: nn.Module | None = None,
        splits_to_eval: SplitsToEval | None = None,
        collate_fn: Callable[..., Any] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Embed the splits and compute ``all_accuracies[query_split][key]``.

        Args:
            dataset_dict: ``{split_name: dataset}``.
            epoch: stored under ``"epoch"`` for every query split.
            trunk_model: the model.
            embedder_model: applied after the trunk (None: identity).
            splits_to_eval: ``[(query_split, [reference_splits])]``; None: each split against
                itself.
            collate_fn: the dataloaders' collate function.

        Returns:
            ``{query_split: {"epoch": epoch, "{metric}_level{L}": value, ...}}``.

        Raises:
            InvalidArgumentError: a query split listed twice.
            ValueError: unknown split names.
        """
        config.LOGGER.info("Evaluating epoch %s", epoch)
        check_test_inputs(dataset_dict, trunk_model, embedder_model)
        embedder_model = nn.Identity() if embedder_model is None else embedder_model
        trunk_model.eval()
        embedder_model.eval()
        splits_to_eval = check_splits_to_eval(dataset_dict, splits_to_eval)
        splits = self.get_splits_to_compute_embeddings(dataset_dict, splits_to_eval)
        # fix: splits compared with each other share one PCA basis (the reference fits one
        # per split, so cross-split distances mix bases).
        args = (dataset_dict, trunk_model, embedder_model, splits, collate_fn)
        # compat: a subclass override has the reference's five-argument signature
        embed_all = type(self).get_all_embeddings_for_all_splits
        own = embed_all is BaseTester.get_all_embeddings_for_all_splits
        groups = {"pca_groups": compared_groups(splits_to_eval)} if own else {}
        self.embeddings_and_labels = self.get_all_embeddings_for_all_splits(*args, **groups)
        self.maybe_visualize(self.embeddings_and_labels, epoch)
        self.all_accuracies: dict[str, dict[str, Any]] = defaultdict(dict)
        for query, refs in splits_to_eval:
            config.LOGGER.info("Getting accuracy for %s using %s as reference", query, refs)
            accuracies = self.all_accuracies[query]
            accuracies["epoch"] = epoch
            self.reference_split_names[query] = refs
            self.do_knn_and_accuracies(accuracies, self.embeddings_and_labels, query, refs)
            if self.embedding_diagnostics:
                accuracies.update(self.collapse_diagnostics(query))
        if self.end_of_testing_hook is not None:
            self.end_of_testing_hook(self)
        else:
            config.LOGGER.info("%s", dict(self.all_accuracies))
        del self.embeddings_and_labels
        return self.all_accuracies

    def collapse_diagnostics(self, split_name: str) -> dict[str, float]:
        """``collapse_*`` keys of a split's embeddings (see :func:`embedding_collapse`)."""
        embeddings = self.embeddings_and_labels[split_name][0]
        return {f"collapse_{k}": v for k, v in embedding_collapse(embeddings).items()}

    def do_knn_and_accuracies(
        self,
        accuracies: dict[str, Any],
        embeddings_and_labels: dict[str, tuple[Tensor, Tensor]],
        query_split_name: str,
        reference_split_names: list[str],
    ) -> None:
        """Fill ``accuracies`` for one query split (implemented by subclasses)."""
        raise NotImplementedError
