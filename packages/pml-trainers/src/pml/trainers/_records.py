"""A small built-in record keeper: tables of rows kept in memory and written as CSV/JSON Lines.

This replaces the third-party ``record-keeper`` package (CSV + SQLite) that the reference's
logging presets need, with the same table and column names:

* a *table* is a list of rows; every row has the iteration column ``~iteration~``;
* :meth:`RecordKeeper.update_records` records the attributes that objects list in
  ``_record_these`` / ``_record_these_stats`` into ``<dict key>_<ClassName>`` tables (recursing,
  when asked, into ``nn.Module`` and dict attributes: ``metric_loss_NTXentLoss__modules_...``), and
  dicts of plain values into a table named by their key (``loss_histories``);
* :meth:`RecordKeeper.save_records` appends the new rows to ``<folder>/<table>.csv`` (one file
  per table; the file is rewritten only when a table gains a column) and to
  ``<folder>/records.jsonl`` (one JSON object per row, with the table under ``~table~``);
* a keeper opened on a folder that already holds records reloads them (from ``records.jsonl``,
  else from the CSV files, which also reads CSVs written by record-keeper), so a resumed run
  continues its logs and "best epoch" queries see the earlier epochs;
* TensorBoard scalars ``<table>/<column>`` are written only when a ``SummaryWriter`` is given
  (:func:`pml.trainers.get_record_keeper` makes one only when asked for, importing TensorBoard
  lazily).

There is no SQLite database: queries are plain Python over the rows kept in memory.
:class:`RecordWriter` (here) holds and writes the tables; :class:`RecordKeeper` (in
``_record_keeper.py``) is the reference's interface over it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import numbers
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pml.core import config
from pml.core.io import atomic_write

__all__ = ["ITERATION_COLUMN", "RecordWriter"]

#: The iteration column of every table (the reference's name).
ITERATION_COLUMN = "~iteration~"
_TABLE_KEY = "~table~"
_JSONL_NAME = "records.jsonl"
_HASH_MAP_NAME = "hash_map.json"
_MAX_STEM = 120
_SAFE_STEM = re.compile(r"^[A-Za-z0-9_.\-~]+$")


def _file_stem(table: str) -> str:
    """The file name (without ``.csv``) of a table: the name itself, or a hashed form."""
    if len(table) <= _MAX_STEM and _SAFE_STEM.match(table) and not table.startswith("."):
        return table
    digest = hashlib.sha1(table.encode()).hexdigest()[:16]
    head = re.sub(r"[^A-Za-z0-9_\-]", "_", table[:60])
    return f"{head}_{digest}"


def _plain(value: Any, save_lists: bool) -> Any:
    """``value`` as a CSV/JSON-ready Python value, or ``None`` when it is not recorded.

    Numbers (Python, numpy, one-element tensors/arrays) become ``int``/``float`` (bool ->
    int), strings stay; lists, tuples and larger tensors/arrays become lists only with
    ``save_lists``; anything else (None, objects) is not recorded.
    """
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        return value
    if isinstance(value, torch.Tensor):
        if value.numel() == 1:
            return _plain(value.detach().reshape(()).item(), save_lists)
        return _plain(value.detach().cpu().tolist(), save_lists) if save_lists else None
    if isinstance(value, np.ndarray):
        if value.size == 1:
            return _plain(value.reshape(()).item(), save_lists)
        return _plain(value.tolist(), save_lists) if save_lists else None
    if isinstance(value, list | tuple) and save_lists:
        items = [_plain(v, True) for v in value]
        return None if any(v is None for v in items) else items
    return None


def _json_line(table: str, row: Mapping[str, Any]) -> str:
    return json.dumps({_TABLE_KEY: table, **row}) + "\n"


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list):
        return json.dumps(value)
    return value


def _parse_csv_cell(text: str) -> Any:
    """A CSV cell back to a value: int, float, a JSON list, else the string (empty: None)."""
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        pass
    if text.startswith("["):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


class RecordWriter:
    """Tables of rows, kept in memory and appended to CSV/JSON Lines files in ``folder``.

    Args:
        folder: where ``<table>.csv``, ``records.jsonl`` and ``hash_map.json`` (names too long
            or unsafe for a file name) are written. Records already there are reloaded.
        global_db_path: accepted for compatibility and ignored (there is no SQLite database;
            a warning is logged when one is given).
        experiment_name: accepted for compatibility (only used with ``global_db_path``).
        is_new_experiment: accepted for compatibility (only used with ``global_db_path``).
        save_lists: record list values (and tensors/arrays of several elements) as JSON lists;
            by default they are skipped.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        global_db_path: str | os.PathLike[str] | None = None,
        experiment_name: str | None = None,
        is_new_experiment: bool = True,
        save_lists: bool = False,
    ) -> None:
        self.folder = Path(os.fspath(folder))
        self.experiment_name = experiment_name
        self.is_new_experiment = is_new_experiment
        self.save_lists = bool(save_lists)
        if global_db_path is not None:
            # compat: record-keeper's cross-experiment SQLite database is not reproduced.
            config.LOGGER.warning(
                "global_db_path=%r is ignored: pml keeps no SQLite database; the records of "
                "this experiment are in %s",
                os.fspath(global_db_path),
                os.fspath(self.folder),
            )
        self.global_db_path = global_db_path
        self.tables: dict[str, list[dict[str, Any]]] = {}
        self._columns: dict[str, list[str]] = {}
        self._csv_rows: dict[str, int] = {}  # rows of each table in its CSV file
        self._csv_header: dict[str, list[str]] = {}
        # every row in the order it was first recorded (records.jsonl's order)
        self._log: list[tuple[str, dict[str, Any]]] = []
        self._jsonl_done = 0  # entries of _log already in records.jsonl
        self._rewrite_jsonl = False
        self._saved_rows: dict[str, int] = {}  # rows of each table already saved (not merged)
        self.hash_map: dict[str, str] = {}  # file stem -> table name (hashed names only)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._reload()

    # ------------------------------------------------------------------ recording
    def append(self, group_name: str, series_name: str, input_val: Any, iteration: int) -> None:
        """Record one value (see :meth:`add_row`)."""
        self.add_row(group_name, iteration, {series_name: input_val})

    def add_row(self, table: str, iteration: int, values: Mapping[str, Any]) -> None:
        """Record ``values`` at ``iteration`` in ``table``.

        Values recorded at the same iteration of the same table before the next
        :meth:`save_records` share one row (accuracies and ``best_epoch`` of one epoch), unless
        a column is recorded twice, which starts a new row. Values that are not recordable
        (None, objects; lists without ``save_lists``) are skipped; a row with nothing to
        record is not added.
        """
        plain = {}
        for name, value in values.items():
            if name == ITERATION_COLUMN:
                continue
            v = _plain(value, self.save_lists)
            if v is not None:
                plain[str(name)] = v
        if not plain:
            return
        rows = self.tables.setdefault(table, [])
        columns = self._columns.setdefault(table, [ITERATION_COLUMN])
        last = rows[-1] if rows else None
        if (
            last is not None
            and len(rows) > self._saved_rows.get(table, 0)
            and last[ITERATION_COLUMN] == iteration
            and not (plain.keys() & last.keys())
        ):
            last.update(plain)
        else:
            row = {ITERATION_COLUMN: iteration, **plain}
            rows.append(row)
            self._log.append((table, row))
        for name in plain:
            if name not in columns:
                columns.append(name)

    # ------------------------------------------------------------------ queries
    def table_exists(self, table_name: str, use_global_db: bool = False) -> bool:
        """Whether ``table_name`` has at least one row."""
        return bool(self.tables.get(table_name))

    def rows(self, table: str) -> list[dict[str, Any]]:
        """The rows of ``table`` in recording order (copies; empty if it does not exist)."""
        return [dict(r) for r in self.tables.get(table, [])]

    def columns(self, table: str) -> list[str]:
        """The columns of ``table`` (``~iteration~`` first), in order of first appearance."""
        return list(self._columns.get(table, []))

    def row_counts(self) -> dict[str, int]:
        """``{table: number of rows}``."""
        return {t: len(r) for t, r in self.tables.items()}

    def query(self, query: str, *args: Any, **kwargs: Any) -> Any:
        """Not supported: there is no SQL database (use :meth:`rows`)."""
        raise NotImplementedError(
            "pml's record writer keeps no SQLite database, so SQL queries are not supported; "
            "read rows with RecordWriter.rows(table) (or the HookContainer query helpers)"
        )

    # ------------------------------------------------------------------ files
    def csv_path(self, table: str) -> Path:
        """The CSV file of ``table``."""
        return self.folder / f"{_file_stem(table)}.csv"

    @property
    def jsonl_path(self) -> Path:
        """The JSON Lines file holding every row of every table."""
        return self.folder / _JSONL_NAME

    def save_records(self) -> None:
        """Append the rows recorded since the last call to the CSV and JSON Lines files.

        A table whose columns changed since its CSV header was written is rewritten whole
        (atomically); otherwise rows are appended.
        """
        for table, rows in self.tables.items():
            columns = self._columns[table]
            done = self._csv_rows.get(table, 0)
            if self._csv_header.get(table) != columns or done > len(rows):
                self._write_csv(table, rows, columns)
            elif done < len(rows):
                with open(self.csv_path(table), "a", newline="", encoding="utf-8") as f:
                    writer = csv.writer(f)
                    for row in rows[done:]:
                        writer.writerow([_csv_cell(row.get(c)) for c in columns])
                self._csv_rows[table] = len(rows)
        if self._rewrite_jsonl:
            self._write_jsonl()
        elif self._jsonl_done < len(self._log):
            with open(self.jsonl_path, "a", encoding="utf-8") as f:
                f.writelines(_json_line(t, r) for t, r in self._log[self._jsonl_done :])
            self._jsonl_done = len(self._log)
        self._saved_rows = self.row_counts()
        self._save_hash_map()

    def truncate(self, row_counts: Mapping[str, int]) -> None:
        """Keep only the first ``row_counts[table]`` rows of each listed table, on disk too.

        Used when a run resumes from a checkpoint: rows written after that checkpoint (by
        epochs that will run again) are dropped, so the resumed logs have no duplicates.
        Tables that ``row_counts`` does not list are left alone.
        """
        changed = False
        for table, count in row_counts.items():
            rows = self.tables.get(table)
            if rows is not None and len(rows) > int(count):
                del rows[int(count) :]
                changed = True
        if not changed:
            return
        self._saved_rows = {t: min(n, len(self.tables[t])) for t, n in self._saved_rows.items()}
        kept = {id(r) for rows in self.tables.values() for r in rows}
        self._log = [(t, r) for t, r in self._log if id(r) in kept]
        for table, rows in self.tables.items():
            if self._csv_rows.get(table, 0) > len(rows):
                self._write_csv(table, rows, self._columns[table])
        self._write_jsonl()

    def _write_csv(self, table: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_cell(row.get(c)) for c in columns])
        text = buffer.getvalue()
        atomic_write(self.csv_path(table), lambda tmp: Path(tmp).write_text(text, "utf-8"))
        self._csv_header[table] = list(columns)
        self._csv_rows[table] = len(rows)
        stem = _file_stem(table)
        if stem != table:
            self.hash_map[stem] = table

    def _write_jsonl(self) -> None:
        text = "".join(_json_line(t, r) for t, r in self._log)
        atomic_write(self.jsonl_path, lambda tmp: Path(tmp).write_text(text, "utf-8"))
        self._jsonl_done = len(self._log)
        self._rewrite_jsonl = False

    def _save_hash_map(self) -> None:
        if not self.hash_map:
            return
        text = json.dumps(self.hash_map, indent=1, sort_keys=True)
        atomic_write(self.folder / _HASH_MAP_NAME, lambda tmp: Path(tmp).write_text(text, "utf-8"))

    # ------------------------------------------------------------------ reload
    def _reload(self) -> None:
        hash_map_file = self.folder / _HASH_MAP_NAME
        if hash_map_file.is_file():
            self.hash_map = dict(json.loads(hash_map_file.read_text("utf-8")))
        if self.jsonl_path.is_file():
            self._reload_jsonl()
        else:
            self._reload_csvs()
        self._saved_rows = self.row_counts()

    def _reload_jsonl(self) -> None:
        with open(self.jsonl_path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                # A line cut short by a crash: drop it, and rewrite the file without it.
                config.LOGGER.warning(
                    "%s: line %d is not valid JSON (an interrupted write?); dropped",
                    os.fspath(self.jsonl_path),
                    i + 1,
                )
                self._rewrite_jsonl = True
                continue
            table = record.pop(_TABLE_KEY)
            self.tables.setdefault(table, []).append(record)
            self._log.append((table, record))
            columns = self._columns.setdefault(table, [ITERATION_COLUMN])
            columns.extend(c for c in record if c not in columns)
        self._jsonl_done = len(self._log)
        for table in self.tables:
            header, count = self._read_csv_shape(table)
            if header is not None:
                self._csv_header[table] = header
                self._csv_rows[table] = count
            if count != len(self.tables[table]) or header != self._columns[table]:
                self._csv_header.pop(table, None)  # rewritten from the JSON Lines next time

    def _read_csv_shape(self, table: str) -> tuple[list[str] | None, int]:
        path = self.csv_path(table)
        if not path.is_file():
            return None, 0
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            count = sum(1 for _ in reader)
        return header, count

    def _reload_csvs(self) -> None:
        for path in sorted(self.folder.glob("*.csv")):
            table = self.hash_map.get(path.stem, path.stem)
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.reader(f)
                header = next(reader, None)
                if not header or header[0] != ITERATION_COLUMN:
                    continue
                rows = []
                for cells in reader:
                    row = {
                        name: _parse_csv_cell(cell)
                        for name, cell in zip(header, cells, strict=False)
                        if cell != ""
                    }
                    if ITERATION_COLUMN in row:
                        rows.append(row)
            self.tables[table] = rows
            self._log.extend((table, r) for r in rows)  # records.jsonl gets them at next save
            self._columns[table] = list(header)
            self._csv_header[table] = list(header)
            self._csv_rows[table] = len(rows)
