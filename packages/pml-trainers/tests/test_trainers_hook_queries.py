"""The pure parts behind HookContainer's queries and split plan, checked on hand-made tables."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from pml.trainers._accuracy_history import (
    AccuracyTable,
    accuracy_table_name,
    earliest_best,
    loss_history,
    new_best,
    patience_remaining,
)
from pml.trainers._hook_splits import query_splits, validation_split

KEY = "AVERAGE_p"


def _writer(rows, columns=("epoch", KEY)):
    return SimpleNamespace(rows=lambda table: rows, columns=lambda table: list(columns))


def _tester(level=0):
    def keyname(metric, label_hierarchy_level=0, average=False):
        return f"AVERAGE_{metric}" if average else f"{metric}_level{label_hierarchy_level}"

    return SimpleNamespace(accuracies_keyname=keyname, label_hierarchy_level=level)


def _table(rows, columns=("epoch", KEY)):
    return AccuracyTable(_writer(rows, columns), "t", _tester(), "p")


def test_best_skips_ignored_epochs_and_nan_and_keeps_ties():
    rows = [
        {"epoch": -1, KEY: 0.9},
        {"epoch": 1, KEY: 0.5},
        {"epoch": 2, KEY: math.nan},
        {"epoch": 3, KEY: 0.7},
        {"epoch": 4, KEY: 0.7},
    ]
    best, key = _table(rows).best(True, (-1,))
    assert key == KEY and [r["epoch"] for r in best] == [3, 4]
    assert earliest_best(best, key) == (3, 0.7)
    assert _table(rows).best(False, (-1, 3))[0] == [{"epoch": 4, KEY: 0.7}]


def test_best_without_the_metric_column_is_empty():
    assert _table([{"epoch": 1, "x": 1.0}], ("epoch", "x")).best(True, ()) == ([], None)
    assert earliest_best([], None) == (None, 0)


def test_metric_column_falls_back_to_an_evaluated_level():
    rows = [{"epoch": 1, "p_level2": 0.25}]
    table = AccuracyTable(_writer(rows, ("epoch", "p_level2")), "t", _tester("all"), "p")
    assert table.history(None) == {"epoch": [1], "p_level2": [0.25]}
    assert table.history(["p", "q"]) == {"epoch": [1], "p_level2": [0.25]}
    assert table.of_epoch(1, select_all=False) == [{"epoch": 1, "p_level2": 0.25}]
    assert table.has_epoch(1) and not table.has_epoch(2)


def test_new_best_is_strictly_greater_and_never_nan():
    assert new_best(5, 0.8, None, 0) == (True, 0.8, 5, 0.8)
    assert new_best(5, 0.8, 2, 0.7) == (True, 0.8, 5, 0.8)
    assert new_best(5, 0.7, 2, 0.7) == (False, 0.7, 2, 0.7)
    assert new_best(5, math.nan, 2, 0.7)[0] is False


@pytest.mark.parametrize(
    ("epoch", "best_epoch", "patience", "expected"),
    [(6, 4, 1, False), (5, 4, 1, True), (9, None, 0, True), (9, 1, None, True)],
)
def test_patience_remaining(epoch, best_epoch, patience, expected):
    assert patience_remaining(epoch, best_epoch, patience) is expected


def test_loss_history_selects_columns():
    writer = _writer([{"a": 1, "b": 2}, {"a": 3}], ("a", "b"))
    assert loss_history(writer, ()) == {"a": [1, 3], "b": [2, None]}
    assert loss_history(writer, ["b"]) == {"b": [2, None]}
    assert loss_history(None, ()) == {}


def test_accuracy_table_name_sorts_references():
    assert accuracy_table_name("acc", "val", ["val"]) == "acc_VAL_vs_self"
    assert accuracy_table_name("acc", "val", ["val", "train"]) == "acc_VAL_vs_TRAIN_and_VAL"


def test_validation_split_defaults_to_the_only_query():
    datasets = {"train": 0, "test": 1}
    pairs = query_splits(datasets, [("test", ["train"])])
    assert pairs == [("test", ["train"])]
    assert validation_split(pairs, datasets, "val") == "test"
    assert validation_split(pairs, datasets, "test") == "test"
    with pytest.raises(ValueError, match="validation_split_name 'other'"):
        validation_split(pairs, datasets, "other")
    with pytest.raises(ValueError, match="missing from dataset_dict: \\['nope'\\]"):
        validation_split([("nope", ["train"])], datasets, "nope")
