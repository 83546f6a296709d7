"""Testers: embed dataset splits with a model and run AccuracyCalculator on them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from pml.core import config
from pml.core.validation import InvalidArgumentError
from pml.eval._accuracy import AccuracyCalculator
from pml.eval._clustering import run_pca
from pml.eval._labels import LabelMapper

__all__ = [
    "BaseTester",
    "GlobalEmbeddingSpaceTester",
    "GlobalTwoStreamEmbeddingSpaceTester",
    "WithSameParentLabelTester",
]

SplitsToEval = list[tuple[str, list[str]]]


def _identity(x: Any) -> Any:
    return x


def _check_hierarchy_level(level: Any) -> Any:
    is_int = isinstance(level, int) and not isinstance(level, bool)
    if level == "all" or (is_int and level >= 0):
        return level
    if isinstance(level, list | tuple) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in level
    ):
        return level
    raise ValueError(
        "label_hierarchy_level must be a non-negative int, a list/tuple of them, or 'all'; "
        f"got {level!r}"
    )


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
    ) -> None:
        self.normalize_embeddings = normalize_embeddings
        self.use_trunk_output = use_trunk_output
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
        self.dataloader_num_workers = dataloader_num_workers
        if pca and (isinstance(pca, bool) or not isinstance(pca, int) or pca < 1):
            raise ValueError(f"pca must be a positive int (output dimension) or None; got {pca!r}")
        self.pca = pca
        if data_device is None:
            data_device = "cuda" if torch.cuda.is_available() else "cpu"
        self.data_device = torch.device(data_device)
        self.dtype = dtype
        self.data_and_label_getter = (
            _identity if data_and_label_getter is None else data_and_label_getter
        )
        self.label_hierarchy_level = _check_hierarchy_level(label_hierarchy_level)
        self.end_of_testing_hook = end_of_testing_hook
        self.dataset_labels = dataset_labels
        self.set_min_label_to_zero = set_min_label_to_zero
        self.accuracy_calculator = accuracy_calculator
        self.visualizer = visualizer
        if visualizer_hook is not None:
            self.visualizer_hook = visualizer_hook  # type: ignore[method-assign]
        self.initialize_label_mapper()
        self.initialize_accuracy_calculator()
        self.reference_split_names: dict[str, list[str]] = {}
        self._pca_groups: list[list[str]] | None = None

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
        num_levels = query_labels.shape[1]
        level = self.label_hierarchy_level
        if level == "all":
            return list(range(num_levels))
        levels = [level] if isinstance(level, int) else list(level)
        if max(levels, default=0) >= num_levels:
            raise InvalidArgumentError(
                f"label_hierarchy_level {level!r} needs more label columns; the labels have "
                f"{num_levels}"
            )
        return levels

    # ------------------------------------------------------------------ embeddings
    def maybe_normalize(self, embeddings: Tensor) -> Tensor:
        """Row L2-normalisation (eps 1e-12) when ``normalize_embeddings``."""
        if self.normalize_embeddings:
            return F.normalize(embeddings, p=2, dim=1, eps=1e-12)
        return embeddings

    def _postprocess(self, parts: list[Tensor]) -> list[Tensor]:
        """PCA fitted once on all ``parts`` together (standardised columns), then normalise."""
        if self.pca:
            sizes = [p.shape[0] for p in parts]
            joint = torch.cat(parts)
            std = joint.std(0, keepdim=True)
            standardised = (joint - joint.mean(0, keepdim=True)) / torch.where(
                std > 0, std, torch.ones_like(std)
            )
            parts = list(run_pca(standardised, self.pca).split(sizes))
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

    def _dataloader(self, dataset: Dataset, collate_fn: Callable[..., Any] | None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=False,
            drop_last=False,
            num_workers=self.dataloader_num_workers,
            collate_fn=collate_fn,
            pin_memory=False,
        )

    def _map_labels(self, labels: Any) -> Tensor:
        return self.label_mapper.map(labels).to(self.data_device)

    def compute_all_embeddings(
        self, dataloader: DataLoader, trunk_model: nn.Module, embedder_model: nn.Module
    ) -> tuple[Tensor, Tensor]:
        """Raw embeddings ``(N, D)`` and label columns ``(N, levels)`` on ``data_device``.

        Buffers of the dataset's length are filled batch by batch (no list of batches).
        """
        total = len(dataloader.dataset)  # type: ignore[arg-type]
        emb_buf: Tensor | None = None
        label_buf: Tensor | None = None
        s = 0
        with torch.no_grad():
            for batch in dataloader:
                data, labels = self.data_and_label_getter(batch)
                labels = self._map_labels(labels)
                emb = self.get_embeddings_for_eval(trunk_model, embedder_model, data)
                emb = emb.reshape(emb.shape[0], -1)
                if emb_buf is None or label_buf is None:
                    emb_buf = emb.new_empty((total, emb.shape[1]), device=self.data_device)
                    label_buf = labels.new_empty((total, labels.shape[1]))
                e = s + emb.shape[0]
                emb_buf[s:e] = emb
                label_buf[s:e] = labels
                s = e
        if emb_buf is None or label_buf is None:
            raise ValueError("dataset must not be empty")
        return emb_buf[:s], label_buf[:s]

    def _raw_embeddings(
        self,
        dataset: Dataset,
        trunk_model: nn.Module,
        embedder_model: nn.Module | None,
        collate_fn: Callable[..., Any] | None,
        eval: bool = True,
    ) -> tuple[Tensor, Tensor]:
        embedder_model = nn.Identity() if embedder_model is None else embedder_model
        if eval:
            trunk_model.eval()
            embedder_model.eval()
        dataloader = self._dataloader(dataset, collate_fn)
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
    ) -> dict[str, tuple[Tensor, Tensor]]:
        """``{split: (embeddings, labels)}``; splits compared with each other share one PCA."""
        raw = {
            name: self._raw_embeddings(dataset_dict[name], trunk_model, embedder_model, collate_fn)
            for name in splits_to_compute_embeddings
        }
        groups = self._pca_groups or [[name] for name in raw]
        out: dict[str, tuple[Tensor, Tensor]] = {}
        for group in groups:  # groups of splits, not samples
            names = [n for n in group if n in raw]
            processed = self._postprocess([raw[n][0] for n in names])
            out.update({n: (emb, raw[n][1]) for n, emb in zip(names, processed)})
        return {name: out[name] for name in raw}

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
        if self.visualizer is None:
            return
        name = type(self.visualizer).__name__
        for split_name, (embeddings, labels) in embeddings_and_labels.items():
            config.LOGGER.info("Running %s on the %s set", name, split_name)
            reduced = self.visualizer.fit_transform(embeddings.cpu().numpy())
            for level in self.label_levels_to_evaluate(labels):
                keyname = self.accuracies_keyname(name, label_hierarchy_level=level)
                self.visualizer_hook(
                    self.visualizer,
                    reduced,
                    labels[:, level].cpu().numpy(),
                    split_name,
                    keyname,
                    epoch,
                )

    def _splits_to_eval(
        self, dataset_dict: dict[str, Dataset], splits_to_eval: SplitsToEval | None
    ) -> SplitsToEval:
        if splits_to_eval is None:
            return [(name, [name]) for name in dataset_dict]
        queries = [q for q, _ in splits_to_eval]
        if len(queries) != len(set(queries)):
            raise InvalidArgumentError(
                f"splits_to_eval must name each query split once; got queries {queries}"
            )
        out = []
        for query, refs in splits_to_eval:
            if not isinstance(refs, list | tuple):
                raise TypeError(
                    "splits_to_eval entries must be (query_split, [reference_splits]); got "
                    f"reference splits of type {type(refs).__name__}"
                )
            missing = [s for s in [query, *refs] if s not in dataset_dict]
            if missing:
                raise ValueError(
                    f"splits_to_eval names splits missing from dataset_dict: {missing}; "
                    f"dataset_dict has {list(dataset_dict)}"
                )
            if query in refs:
                # compat: spec §4 test() step 2: the caller's list is reordered in place.
                if isinstance(refs, list):
                    refs.remove(query)
                    refs.insert(0, query)
                else:
                    refs = [query, *(r for r in refs if r != query)]
            out.append((query, refs))
        return out

    @staticmethod
    def _compared_groups(splits_to_eval: SplitsToEval) -> list[list[str]]:
        """Splits connected by evaluation pairs (each group gets one PCA basis)."""
        parent: dict[str, str] = {}

        def root(name: str) -> str:
            while parent.setdefault(name, name) != name:
                name = parent[name]
            return name

        for query, refs in splits_to_eval:
            for ref in refs:
                parent[root(ref)] = root(query)
        groups: dict[str, list[str]] = defaultdict(list)
        for name in list(parent):
            groups[root(name)].append(name)
        return list(groups.values())

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
        embedder_model = nn.Identity() if embedder_model is None else embedder_model
        trunk_model.eval()
        embedder_model.eval()
        splits_to_eval = self._splits_to_eval(dataset_dict, splits_to_eval)
        splits = self.get_splits_to_compute_embeddings(dataset_dict, splits_to_eval)
        # fix: splits compared with each other share one PCA basis (the reference fits one
        # per split, so cross-split distances mix bases).
        self._pca_groups = self._compared_groups(splits_to_eval)
        try:
            self.embeddings_and_labels = self.get_all_embeddings_for_all_splits(
                dataset_dict, trunk_model, embedder_model, splits, collate_fn
            )
        finally:
            self._pca_groups = None
        self.maybe_visualize(self.embeddings_and_labels, epoch)
        self.all_accuracies: dict[str, dict[str, Any]] = defaultdict(dict)
        for query_split_name, reference_split_names in splits_to_eval:
            config.LOGGER.info(
                "Getting accuracy for %s using %s as reference",
                query_split_name,
                reference_split_names,
            )
            accuracies = self.all_accuracies[query_split_name]
            accuracies["epoch"] = epoch
            self.reference_split_names[query_split_name] = reference_split_names
            self.do_knn_and_accuracies(
                accuracies, self.embeddings_and_labels, query_split_name, reference_split_names
            )
        if self.end_of_testing_hook is not None:
            self.end_of_testing_hook(self)
        else:
            config.LOGGER.info("%s", dict(self.all_accuracies))
        del self.embeddings_and_labels
        return self.all_accuracies

    def do_knn_and_accuracies(
        self,
        accuracies: dict[str, Any],
        embeddings_and_labels: dict[str, tuple[Tensor, Tensor]],
        query_split_name: str,
        reference_split_names: list[str],
    ) -> None:
        """Fill ``accuracies`` for one query split (implemented by subclasses)."""
        raise NotImplementedError

    def _store(self, accuracies: dict[str, Any], result: dict[str, Any], level: int) -> None:
        for metric, value in result.items():
            accuracies[self.accuracies_keyname(metric, label_hierarchy_level=level)] = value


class GlobalEmbeddingSpaceTester(BaseTester):
    """Each query split against the concatenation of its reference splits, per label level.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
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
        self.label_levels = self.label_levels_to_evaluate(query_labels)
        ref_includes_query = self.ref_includes_query(query_split_name, reference_split_names)
        calc = self._calculator
        for level in self.label_levels:  # label columns, not samples
            result = calc.get_accuracy(
                query_emb,
                query_labels[:, level],
                ref_emb,
                ref_labels[:, level],
                ref_includes_query,
            )
            self._store(accuracies, result, level)
        if len(self.label_levels) > 1:
            self.calculate_average_accuracies(
                accuracies, calc.get_curr_metrics(), self.label_levels
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
            for parent in torch.unique(query_parents):  # parent classes: one k-means each
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
    """

    def get_all_embeddings(  # type: ignore[override]
        self,
        dataset: Dataset,
        trunk_model: nn.Module,
        embedder_model: nn.Module | None = None,
        collate_fn: Callable[..., Any] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``(cat[anchor_emb, posneg_emb], cat[labels, labels])``."""
        embedder_model = nn.Identity() if embedder_model is None else embedder_model
        trunk_model.eval()
        embedder_model.eval()
        anchors: list[Tensor] = []
        posnegs: list[Tensor] = []
        labels: list[Tensor] = []
        with torch.no_grad():
            for batch in self._dataloader(dataset, collate_fn):
                anchor_data, posneg_data, batch_labels = self.data_and_label_getter(batch)
                labels.append(self._map_labels(batch_labels))
                for data, out in ((anchor_data, anchors), (posneg_data, posnegs)):
                    emb = self.get_embeddings_for_eval(trunk_model, embedder_model, data)
                    out.append(emb.reshape(emb.shape[0], -1))
        if not labels:
            raise ValueError("dataset must not be empty")
        # fix: one PCA basis for both streams, which are compared with each other.
        anchor_emb, posneg_emb = self._postprocess([torch.cat(anchors), torch.cat(posnegs)])
        all_labels = torch.cat(labels)
        return torch.cat([anchor_emb, posneg_emb]), torch.cat([all_labels, all_labels])

    def get_all_embeddings_for_all_splits(
        self,
        dataset_dict: dict[str, Dataset],
        trunk_model: nn.Module,
        embedder_model: nn.Module,
        splits_to_compute_embeddings: list[str],
        collate_fn: Callable[..., Any] | None,
    ) -> dict[str, tuple[Tensor, Tensor]]:
        return {
            name: self.get_all_embeddings(
                dataset_dict[name], trunk_model, embedder_model, collate_fn
            )
            for name in splits_to_compute_embeddings
        }

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
        self.label_levels = self.label_levels_to_evaluate(query_labels)
        calc = self._calculator
        for level in self.label_levels:
            result = calc.get_accuracy(
                query_emb, query_labels[:, level], ref_emb, query_labels[:, level], False
            )
            self._store(accuracies, result, level)
        if len(self.label_levels) > 1:
            self.calculate_average_accuracies(
                accuracies, calc.get_curr_metrics(), self.label_levels
            )
