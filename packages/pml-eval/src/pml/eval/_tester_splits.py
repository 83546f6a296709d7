"""Testers' splits: which split is evaluated against which, and the PCA basis they share."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn
from torch.utils.data import Dataset

from pml.core.validation import InvalidArgumentError, check_int, check_option, check_type

__all__ = [
    "SplitsToEval",
    "check_hierarchy_level",
    "check_splits_to_eval",
    "check_test_inputs",
    "compared_groups",
    "levels_to_evaluate",
]

#: ``[(query_split, [reference_splits])]``
SplitsToEval = list[tuple[str, list[str]]]


def check_test_inputs(dataset_dict: Any, trunk_model: Any, embedder_model: Any) -> None:
    """The arguments of a tester's ``test``: a dict of non-empty datasets and two modules.

    Raises:
        TypeError: ``dataset_dict`` not a mapping, a split that is a bare tensor (its items
            carry no labels), or a model that is not an ``nn.Module``.
        ValueError: an empty split (named).
    """
    check_type("dataset_dict", dataset_dict, Mapping)
    check_type("trunk_model", trunk_model, nn.Module)
    check_type("embedder_model", embedder_model, nn.Module, allow_none=True)
    for name, dataset in dataset_dict.items():
        if isinstance(dataset, Tensor):
            raise TypeError(
                f"dataset_dict[{name!r}] must be a Dataset of (data, label) items; got a "
                "Tensor (wrap it with its labels: TensorDataset(x, labels))"
            )
        if hasattr(dataset, "__len__") and len(dataset) == 0:
            raise ValueError(f"dataset_dict[{name!r}] is empty: there is nothing to evaluate")


def check_hierarchy_level(level: Any) -> Any:
    """``label_hierarchy_level``: an int ``>= 0``, a list/tuple of them, or ``"all"``.

    Raises:
        TypeError: not an int, str, list or tuple (or a list holding a non-int).
        ValueError: a negative level, or a string other than ``"all"``.
    """
    name = "label_hierarchy_level"
    if isinstance(level, str):
        check_option(name, level, ["all"])
        return level
    if isinstance(level, list | tuple):
        for i, value in enumerate(level):
            check_int(f"{name}[{i}]", value, min=0)
        return level
    return check_int(name, level, min=0)


def levels_to_evaluate(level: Any, num_levels: int) -> list[int]:
    """The label columns a checked ``label_hierarchy_level`` names, of ``num_levels``.

    Raises:
        InvalidArgumentError: a level that the labels do not have.
    """
    if level == "all":
        return list(range(num_levels))
    levels = [level] if isinstance(level, int) else list(level)
    if max(levels, default=0) >= num_levels:
        raise InvalidArgumentError(
            f"label_hierarchy_level {level!r} needs more label columns; the labels have "
            f"{num_levels}"
        )
    return levels


def check_splits_to_eval(
    dataset_dict: dict[str, Dataset], splits_to_eval: SplitsToEval | None
) -> SplitsToEval:
    """``splits_to_eval`` checked against ``dataset_dict``; None: each split against itself.

    A query split listed among its own references is moved to the front of them.

    Raises:
        InvalidArgumentError: a query split listed twice.
        TypeError: reference splits that are not a list or tuple.
        ValueError: split names missing from ``dataset_dict``.
    """
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


def compared_groups(splits_to_eval: SplitsToEval) -> list[list[str]]:
    """Splits connected by evaluation pairs (each group gets one PCA basis).

    Example:
        >>> compared_groups([("val", ["train"]), ("test", ["test"])])
        [['val', 'train'], ['test']]
    """
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
