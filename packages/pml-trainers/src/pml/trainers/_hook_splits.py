"""HookContainer's evaluation plan: the splits a test covers and the one deciding the best epoch.

Checked when the epoch hook is made (before training), so a primary metric the tester does
not compute or a validation split that is not evaluated fails at once, not at the end of the
first evaluated epoch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pml.core import config

if TYPE_CHECKING:
    from pml.eval import BaseTester

__all__ = ["check_primary_metric", "query_splits", "validation_split"]

#: ``[(query split, [reference splits])]``
SplitPairs = list[tuple[str, list[str]]]


def query_splits(
    dataset_dict: Mapping[str, Any],
    splits_to_eval: Sequence[tuple[str, Sequence[str]]] | None,
) -> SplitPairs:
    """``splits_to_eval`` as ``[(query, [references])]``; None: each split against itself.

    Example:
        >>> query_splits({"train": 0, "val": 1}, None)
        [('train', ['train']), ('val', ['val'])]
    """
    if splits_to_eval is None:
        return [(name, [name]) for name in dataset_dict]
    return [(query, list(refs)) for query, refs in splits_to_eval]


def check_primary_metric(tester: BaseTester, primary_metric: str) -> None:
    """``primary_metric`` must be one of the tester's calculator's metrics (if it has one).

    Raises:
        ValueError: listing the metrics the calculator computes.
    """
    calculator = getattr(tester, "accuracy_calculator", None)
    if calculator is None:
        return
    metrics = list(calculator.get_curr_metrics())
    if primary_metric not in metrics:
        raise ValueError(
            f"primary_metric {primary_metric!r} is not computed by the tester's "
            f"AccuracyCalculator; it computes {metrics} (add it to the calculator's "
            "include=, or choose one of these)"
        )


def validation_split(pairs: SplitPairs, dataset_dict: Mapping[str, Any], name: str) -> str:
    """The query split whose primary metric decides the best epoch.

    ``name`` when it is one of the queries of ``pairs``; the only query when ``name`` is the
    default ``"val"`` (with a warning).

    Raises:
        ValueError: ``pairs`` name splits that ``dataset_dict`` lacks; ``name`` is not
            evaluated.
    """
    missing = sorted({s for q, refs in pairs for s in [q, *refs] if s not in dataset_dict})
    if missing:
        raise ValueError(
            f"splits_to_eval names splits missing from dataset_dict: {missing}; "
            f"dataset_dict has {list(dataset_dict)}"
        )
    queries = [q for q, _ in pairs]
    if name in queries:
        return name
    if name == "val" and len(queries) == 1:
        # fix: the reference looks for "val" anyway and fails with KeyError at the end
        # of the first evaluated epoch
        config.LOGGER.warning(
            'validation_split_name "val" is not evaluated; using the only query split '
            "%r to pick the best epoch",
            queries[0],
        )
        return queries[0]
    raise ValueError(
        f"validation_split_name {name!r} is not one of the evaluated query splits "
        f"{queries}; pass validation_split_name=<one of them> to get_hook_container"
    )
