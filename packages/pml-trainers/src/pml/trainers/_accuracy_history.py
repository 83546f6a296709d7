"""What a HookContainer's records say about accuracy and loss over epochs.

An :class:`AccuracyTable` reads the accuracy table of one evaluated split (rows of one
:class:`~pml.trainers.RecordWriter` table, one per evaluated epoch): the column holding a
metric, the metric's history, the rows of an epoch and those of the best epoch. The decisions
built on them (is an epoch a new best, is there patience left), the table names and the loss
history are plain functions. :class:`~pml.trainers.HookContainer`'s query methods delegate to
them.

Example:
    >>> from types import SimpleNamespace
    >>> writer = SimpleNamespace(
    ...     rows=lambda t: [{"epoch": 1, "AVERAGE_p": 0.5}, {"epoch": 2, "AVERAGE_p": 0.7}],
    ...     columns=lambda t: ["epoch", "AVERAGE_p"])
    >>> tester = SimpleNamespace(accuracies_keyname=lambda m, **kw: f"AVERAGE_{m}")
    >>> table = AccuracyTable(writer, "t", tester, "p")
    >>> table.history(["p"]), table.best(True, (-1,))[0]
    ({'epoch': [1, 2], 'AVERAGE_p': [0.5, 0.7]}, [{'epoch': 2, 'AVERAGE_p': 0.7}])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pml.eval import BaseTester
    from pml.trainers._records import RecordWriter

__all__ = [
    "LOSS_TABLE",
    "AccuracyTable",
    "accuracy_table_name",
    "current_accuracy",
    "earliest_best",
    "loss_history",
    "metric_column",
    "new_best",
    "patience_remaining",
    "table_rows",
]

#: the table of the trainer's (weighted) losses
LOSS_TABLE = "loss_histories"


def table_rows(writer: RecordWriter | None, table: str) -> list[dict[str, Any]]:
    """The rows of ``table`` (none without a writer)."""
    return [] if writer is None else writer.rows(table)


def _table_columns(writer: RecordWriter | None, table: str) -> list[str]:
    return [] if writer is None else writer.columns(table)


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _column_lists(rows: list[dict[str, Any]], columns: Sequence[str]) -> dict[str, list[Any]]:
    return {c: [r.get(c) for r in rows] for c in columns}


def metric_column(tester: BaseTester, metric: str, columns: Sequence[str]) -> str | None:
    """The column holding ``metric``: ``AVERAGE_<metric>``, then ``<metric>_level<L>``.

    The levels are the tester's ``label_hierarchy_level`` (an int or a list); with
    ``"all"``, the first ``<metric>_level<digits>`` column. None when there is none.
    """
    candidates = [tester.accuracies_keyname(metric, average=True)]
    level = getattr(tester, "label_hierarchy_level", 0)
    levels = level if isinstance(level, list | tuple) else [level]
    candidates += [tester.accuracies_keyname(metric, label_hierarchy_level=lv) for lv in levels]
    for key in candidates:
        if key in columns:
            return key
    prefix = f"{metric}_level"
    for column in columns:  # label_hierarchy_level "all": the evaluated levels
        if column.startswith(prefix) and column[len(prefix) :].isdigit():
            return column
    return None


def accuracy_table_name(base: str, split_name: str, reference_splits: Sequence[str]) -> str:
    """``<base>_<SPLIT>_vs_self``, or ``<base>_<SPLIT>_vs_<REF1>_and_<REF2>`` (sorted, upper).

    Example:
        >>> accuracy_table_name("acc", "val", ["train", "val"])
        'acc_VAL_vs_TRAIN_and_VAL'
    """
    head = f"{base}_{split_name.upper()}"
    if list(reference_splits) == [split_name]:
        return f"{head}_vs_self"
    return f"{head}_vs_" + "_and_".join(name.upper() for name in sorted(reference_splits))


def current_accuracy(tester: BaseTester, split_name: str, metric: str) -> Any:
    """``metric`` of ``split_name`` in ``tester.all_accuracies`` (the latest test).

    Raises:
        ValueError: the split was not evaluated, or has no value for the metric.
    """
    all_accuracies = getattr(tester, "all_accuracies", None) or {}
    if split_name not in all_accuracies:
        raise ValueError(
            f"validation_split_name {split_name!r} was not evaluated by the tester; "
            f"evaluated query splits: {list(all_accuracies)}"
        )
    accuracies = all_accuracies[split_name]
    key = metric_column(tester, metric, list(accuracies))
    if key is None:
        raise ValueError(
            f"primary_metric {metric!r} is not among the accuracies of split {split_name!r}: "
            f"{sorted(accuracies)}"
        )
    return accuracies[key]


def loss_history(writer: RecordWriter | None, loss_names: Sequence[str]) -> dict[str, list[Any]]:
    """``{column: [values...]}`` of the loss table (all columns, or ``loss_names``)."""
    rows = table_rows(writer, LOSS_TABLE)
    if not rows:
        return {}
    return _column_lists(rows, list(loss_names) or _table_columns(writer, LOSS_TABLE))


def earliest_best(rows: list[dict[str, Any]], key: str | None) -> tuple[int | None, Any]:
    """``(epoch, value)`` of the earliest of the best ``rows``; ``(None, 0)`` when none."""
    if not rows or key is None:
        return None, 0
    first = min(rows, key=lambda r: r.get("epoch", 0))
    return first.get("epoch"), first[key]


def new_best(
    epoch: int, current: Any, best_epoch: int | None, best: Any
) -> tuple[bool, Any, int | None, Any]:
    """``(is_new_best, current, best_epoch, best_accuracy)`` once ``epoch`` scored ``current``.

    ``epoch`` is a new best when there was none before or ``current`` is strictly greater
    (a tie keeps the older epoch; NaN never wins).
    """
    if best_epoch is None or (not _is_nan(current) and current > best):
        return True, current, epoch, current
    return False, current, best_epoch, best


def patience_remaining(epoch: int, best_epoch: int | None, patience: int | None) -> bool:
    """Whether to go on: no patience, no best yet, or ``epoch - best_epoch <= patience``."""
    if patience is None or best_epoch is None:
        return True
    return epoch - best_epoch <= patience


class AccuracyTable:
    """The recorded accuracies of one split: a row per evaluated epoch.

    Args:
        writer: the records (None: an empty table).
        table: the table's name (``HookContainer.record_group_name``).
        tester: the tester whose accuracies these are (names the metric columns).
        primary_metric: the metric that decides the best epoch.
    """

    def __init__(
        self, writer: RecordWriter | None, table: str, tester: BaseTester, primary_metric: str
    ) -> None:
        self.rows = table_rows(writer, table)
        self.columns = _table_columns(writer, table)
        self.tester = tester
        self.primary_metric = primary_metric

    def key(self, metric: str | None = None) -> str | None:
        """The column of ``metric`` (default: the primary metric), None when absent."""
        metric = self.primary_metric if metric is None else metric
        return metric_column(self.tester, metric, self.columns)

    def has_epoch(self, epoch: int) -> bool:
        """Whether ``epoch`` has a row."""
        return any(r.get("epoch") == epoch for r in self.rows)

    def history(self, metrics: Sequence[str] | None) -> dict[str, list[Any]]:
        """``{"epoch": [...], <metric column>: [...]}``; every column when ``metrics`` is None.

        Metrics without a column are left out; empty when nothing was recorded.
        """
        if not self.rows:
            return {}
        columns = self.columns
        if metrics is not None:
            keys = [self.key(m) for m in metrics]
            columns = ["epoch", *(k for k in keys if k is not None)]
        return _column_lists(self.rows, columns)

    def _select(self, rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
        return [{"epoch": r.get("epoch"), key: r.get(key)} for r in rows]

    def of_epoch(self, epoch: int, select_all: bool) -> list[dict[str, Any]]:
        """The rows of ``epoch`` (all columns, or epoch + primary metric)."""
        rows = [r for r in self.rows if r.get("epoch") == epoch]
        if select_all:
            return rows
        key = self.key()
        return self._select(rows, key) if key else []

    def best(
        self, select_all: bool, ignore_epoch: Sequence[int]
    ) -> tuple[list[dict[str, Any]], str | None]:
        """``(rows, key)``: the rows with the highest primary metric, and its column.

        Epochs in ``ignore_epoch`` and NaN values are left out; ties give several rows.
        ``([], None)`` when the table has no such column.
        """
        key = self.key()
        if key is None:
            return [], None
        rows = [
            r
            for r in self.rows
            if r.get("epoch") not in ignore_epoch
            and isinstance(r.get(key), int | float)
            and not _is_nan(r.get(key))
        ]
        if not rows:
            return [], key
        top = max(r[key] for r in rows)
        rows = [r for r in rows if r[key] == top]
        return (rows if select_all else self._select(rows, key)), key
