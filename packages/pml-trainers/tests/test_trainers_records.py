"""The built-in record keeper: table names, CSV/JSON Lines files, reload, truncation."""

from __future__ import annotations

import csv
import json
import logging
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from pml.losses import TripletMarginLoss
from pml.miners import MultiSimilarityMiner
from pml.trainers import RecordKeeper, get_record_keeper

IT = "~iteration~"


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_loss_and_miner_tables_are_named_like_the_reference(tmp_path):
    keeper, _, _ = get_record_keeper(tmp_path)
    loss, miner = TripletMarginLoss(margin=0.2), MultiSimilarityMiner(epsilon=0.3)
    walk = [torch.nn.Module]  # the hooks walk into loss functions only (as the reference)
    keeper.update_records({"metric_loss": loss}, 0, recursive_types=walk)
    keeper.update_records({"tuple_miner": miner}, 0)
    keeper.update_records({"metric_loss": loss}, 2, recursive_types=walk)
    keeper.save_records()
    names = sorted(p.name for p in tmp_path.glob("*.csv"))
    assert names == [
        "metric_loss_TripletMarginLoss.csv",
        "metric_loss_TripletMarginLoss__modules_distance_LpDistance.csv",
        "metric_loss_TripletMarginLoss__modules_reducer_AvgNonZeroReducer.csv",
        "tuple_miner_MultiSimilarityMiner.csv",
    ]
    assert read_csv(tmp_path / "metric_loss_TripletMarginLoss.csv") == [
        [IT, "margin"],
        ["0", "0.2"],
        ["2", "0.2"],
    ]
    # high=None is not recorded (as the reference: the column does not exist)
    assert read_csv(
        tmp_path / "metric_loss_TripletMarginLoss__modules_reducer_AvgNonZeroReducer.csv"
    ) == [[IT, "low"], ["0", "0"], ["2", "0"]]
    assert read_csv(tmp_path / "metric_loss_TripletMarginLoss__modules_distance_LpDistance.csv")[
        1
    ] == ["0", "2", "1"]
    assert read_csv(tmp_path / "tuple_miner_MultiSimilarityMiner.csv") == [
        [IT, "epsilon"],
        ["0", "0.3"],
    ]


def test_plain_dicts_record_tensors_and_numpy_values_as_numbers(tmp_path):
    keeper, writer, _ = get_record_keeper(tmp_path)
    losses = {"metric_loss": torch.tensor(0.5, requires_grad=True), "total_loss": 0}
    keeper.update_records({"loss_histories": losses}, 3)
    keeper.update_records({"loss_histories": {"metric_loss": np.float32(0.25), "total_loss": 1}}, 5)
    keeper.save_records()
    assert read_csv(tmp_path / "loss_histories.csv") == [
        [IT, "metric_loss", "total_loss"],
        ["3", "0.5", "0"],
        ["5", "0.25", "1"],
    ]
    assert read_jsonl(tmp_path / "records.jsonl") == [
        {"~table~": "loss_histories", IT: 3, "metric_loss": 0.5, "total_loss": 0},
        {"~table~": "loss_histories", IT: 5, "metric_loss": 0.25, "total_loss": 1},
    ]
    assert keeper.get_record("loss_histories") == {
        IT: [3, 5],
        "metric_loss": [0.5, 0.25],
        "total_loss": [0, 1],
    }
    assert writer.table_exists("loss_histories") and not writer.table_exists("nope")


def test_values_of_one_iteration_share_a_row_unless_a_column_repeats(tmp_path):
    _, writer, _ = get_record_keeper(tmp_path)
    writer.add_row("acc", 1, {"epoch": 1, "p1": 0.5})
    writer.add_row("acc", 1, {"best_epoch": 1, "best_accuracy": 0.5})
    writer.add_row("acc", 1, {"epoch": 1, "p1": 0.7})  # the same epoch evaluated again
    writer.save_records()
    writer.add_row("acc", 1, {"extra": 3})  # after a save: a new row
    writer.save_records()
    assert writer.rows("acc") == [
        {IT: 1, "epoch": 1, "p1": 0.5, "best_epoch": 1, "best_accuracy": 0.5},
        {IT: 1, "epoch": 1, "p1": 0.7},
        {IT: 1, "extra": 3},
    ]


def test_a_new_column_rewrites_the_csv_with_the_new_header(tmp_path):
    _, writer, _ = get_record_keeper(tmp_path)
    writer.add_row("t", 0, {"a": 1})
    writer.save_records()
    writer.add_row("t", 1, {"a": 2, "b": 3})
    writer.save_records()
    writer.add_row("t", 2, {"a": 4, "b": 5})
    writer.save_records()
    assert read_csv(tmp_path / "t.csv") == [
        [IT, "a", "b"],
        ["0", "1", ""],
        ["1", "2", "3"],
        ["2", "4", "5"],
    ]
    assert len(read_jsonl(tmp_path / "records.jsonl")) == 3


def test_records_are_reloaded_and_a_resumed_run_appends(tmp_path):
    _, writer, _ = get_record_keeper(tmp_path)
    writer.add_row("loss_histories", 0, {"total_loss": 1.5})
    writer.add_row("loss_histories", 2, {"total_loss": 1.25})
    writer.save_records()
    del writer
    _, again, _ = get_record_keeper(tmp_path)
    assert again.rows("loss_histories") == [
        {IT: 0, "total_loss": 1.5},
        {IT: 2, "total_loss": 1.25},
    ]
    again.add_row("loss_histories", 2, {"other": 1.0})  # same iteration, but saved: new row
    again.add_row("loss_histories", 4, {"total_loss": 1.0})
    again.save_records()
    assert read_csv(tmp_path / "loss_histories.csv") == [
        [IT, "total_loss", "other"],
        ["0", "1.5", ""],
        ["2", "1.25", ""],
        ["2", "", "1.0"],
        ["4", "1.0", ""],
    ]
    assert [r[IT] for r in read_jsonl(tmp_path / "records.jsonl")] == [0, 2, 2, 4]


def test_csv_files_without_json_lines_are_reloaded(tmp_path):
    # e.g. a run started with the reference (record-keeper writes only CSV + SQLite)
    (tmp_path / "loss_histories.csv").write_text(
        f"{IT},metric_loss,total_loss\n0,0.5,0.5\n2,0.25,\n"
    )
    (tmp_path / "notes.csv").write_text("a,b\n1,2\n")  # not a record table: ignored
    _, writer, _ = get_record_keeper(tmp_path)
    assert writer.rows("loss_histories") == [
        {IT: 0, "metric_loss": 0.5, "total_loss": 0.5},
        {IT: 2, "metric_loss": 0.25},
    ]
    assert not writer.table_exists("notes")
    writer.add_row("loss_histories", 4, {"metric_loss": 0.125, "total_loss": 0.125})
    writer.save_records()
    assert read_csv(tmp_path / "loss_histories.csv")[-1] == ["4", "0.125", "0.125"]
    assert [r[IT] for r in read_jsonl(tmp_path / "records.jsonl")] == [0, 2, 4]


def test_a_json_line_cut_short_by_a_crash_is_dropped(tmp_path, caplog):
    _, writer, _ = get_record_keeper(tmp_path)
    writer.add_row("t", 0, {"a": 1})
    writer.save_records()
    with open(tmp_path / "records.jsonl", "a") as f:
        f.write('{"~table~": "t", "~iter')
    with caplog.at_level(logging.WARNING, logger="PML"):
        _, again, _ = get_record_keeper(tmp_path)
    assert "not valid JSON" in caplog.text
    assert again.rows("t") == [{IT: 0, "a": 1}]
    again.add_row("t", 1, {"a": 2})
    again.save_records()
    assert read_jsonl(tmp_path / "records.jsonl") == [
        {"~table~": "t", IT: 0, "a": 1},
        {"~table~": "t", IT: 1, "a": 2},
    ]


def test_truncate_drops_rows_written_after_a_checkpoint(tmp_path):
    _, writer, _ = get_record_keeper(tmp_path)
    for it in range(4):
        writer.add_row("t", it, {"a": it})
        writer.add_row("u", it, {"b": it})
    writer.save_records()
    writer.truncate({"t": 2, "missing": 0})
    assert [r[IT] for r in writer.rows("t")] == [0, 1]
    assert len(writer.rows("u")) == 4  # not listed: left alone
    assert read_csv(tmp_path / "t.csv") == [[IT, "a"], ["0", "0"], ["1", "1"]]
    _, again, _ = get_record_keeper(tmp_path)
    assert again.row_counts() == {"t": 2, "u": 4}


def test_long_table_names_are_hashed_into_file_names_and_mapped_back(tmp_path):
    long_name = "accuracies_" + "x" * 300 + "_VAL_vs_self"
    _, writer, _ = get_record_keeper(tmp_path)
    writer.add_row(long_name, 1, {"epoch": 1})
    writer.save_records()
    (csv_file,) = tmp_path.glob("*.csv")
    assert len(csv_file.name) < 200
    assert json.loads((tmp_path / "hash_map.json").read_text()) == {csv_file.stem: long_name}
    (tmp_path / "records.jsonl").unlink()  # reload from the CSV through the hash map
    _, again, _ = get_record_keeper(tmp_path)
    assert again.rows(long_name) == [{IT: 1, "epoch": 1}]


def test_lists_are_skipped_unless_save_lists(tmp_path):
    values = {"n": 1, "lst": [1, 2], "vec": torch.tensor([1.0, 2.0]), "none": None, "s": "all"}
    _, plain, _ = get_record_keeper(tmp_path / "a")
    plain.add_row("t", 0, values)
    assert plain.rows("t") == [{IT: 0, "n": 1, "s": "all"}]
    _, lists, _ = get_record_keeper(tmp_path / "b", save_lists=True)
    lists.add_row("t", 0, values)
    lists.save_records()
    assert lists.rows("t") == [{IT: 0, "n": 1, "lst": [1, 2], "vec": [1.0, 2.0], "s": "all"}]
    assert read_csv(tmp_path / "b" / "t.csv")[1] == ["0", "1", "[1, 2]", "[1.0, 2.0]", "all"]
    _, again, _ = get_record_keeper(tmp_path / "b")
    assert again.rows("t")[0]["vec"] == [1.0, 2.0]


def test_optimizer_state_keyed_by_parameters_is_not_walked(tmp_path):
    param = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.Adam([param], lr=0.1)
    param.grad = torch.ones(2)
    opt.step()
    keeper, writer, _ = get_record_keeper(tmp_path)
    keeper.update_records(
        {"trunk_optimizer": opt},
        0,
        custom_attr_func=lambda o: {"lr": 0.1},
        recursive_types=[torch.nn.Module],
    )
    assert writer.row_counts() == {"trunk_optimizer_Adam": 1}


def test_global_db_path_is_ignored_with_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="PML"):
        keeper, writer, tb = get_record_keeper(tmp_path, global_db_path=tmp_path / "g.db")
    assert "global_db_path" in caplog.text
    assert tb is None and not (tmp_path / "g.db").exists()
    with pytest.raises(NotImplementedError, match="SQL"):
        keeper.query("SELECT * FROM loss_histories")


def test_tensorboard_is_written_only_when_asked_for(tmp_path, monkeypatch):
    calls = []

    class FakeWriter:
        def __init__(self, log_dir):
            calls.append(("init", log_dir))

        def add_scalar(self, tag, value, step):
            calls.append((tag, value, step))

        def flush(self):
            calls.append("flush")

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    keeper, _, tb = get_record_keeper(tmp_path / "csv", tmp_path / "tb")
    assert isinstance(tb, FakeWriter)
    keeper.update_records({"loss_histories": {"total_loss": 0.5, "note": "x"}}, 7)
    keeper.save_records()
    assert calls == [("init", str(tmp_path / "tb")), ("loss_histories/total_loss", 0.5, 7), "flush"]


def test_missing_tensorboard_is_a_warning_and_csv_records_go_on(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    keeper, _, tb = get_record_keeper(tmp_path / "csv")
    assert tb is None and isinstance(keeper, RecordKeeper) and not caplog.text
    with caplog.at_level(logging.WARNING, logger="PML"):
        keeper, _, tb = get_record_keeper(tmp_path / "csv", tensorboard_folder=tmp_path / "tb")
    assert tb is None and "pml-trainers[tensorboard]" in caplog.text
    keeper.update_records({"loss_histories": {"total_loss": 1.0}}, 0)
    keeper.save_records()
    assert (tmp_path / "csv" / "loss_histories.csv").is_file()
    assert not (tmp_path / "tb").exists()


def test_records_need_neither_tensorboard_nor_sqlite_nor_record_keeper(tmp_path):
    code = (
        "import sys, pml.trainers as t\n"
        f"k, w, tb = t.get_record_keeper({str(tmp_path)!r})\n"
        "k.update_records({'loss_histories': {'total_loss': 1.0}}, 0); k.save_records()\n"
        "print(sorted(m for m in ('tensorboard', 'torch.utils.tensorboard', 'sqlite3',"
        " 'record_keeper') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
