"""RecordKeeper: the reference's record-keeping interface over a :class:`RecordWriter`.

:func:`get_record_keeper` makes one writing CSV + JSON Lines (and TensorBoard if asked).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pml.core import config
from pml.core.records import list_of_recordable_attributes_list_names
from pml.trainers._records import RecordWriter, _plain

__all__ = ["RecordKeeper", "get_record_keeper"]


class RecordKeeper:
    """Walks objects and dicts and records their recordable values (record-keeper's API).

    Args:
        tensorboard_writer: a ``torch.utils.tensorboard.SummaryWriter`` (or anything with
            ``add_scalar(tag, value, step)`` and ``flush()``), or None.
        record_writer: the :class:`RecordWriter` holding the tables (None: nothing is kept).
        attributes_to_search_for: names of the attribute lists that hold recordable attribute
            names (default ``["_record_these", "_record_these_stats"]``).
    """

    def __init__(
        self,
        tensorboard_writer: Any = None,
        record_writer: RecordWriter | None = None,
        attributes_to_search_for: Iterable[str] | None = None,
    ) -> None:
        self.tensorboard_writer = tensorboard_writer
        self.record_writer = record_writer
        self.attributes_to_search_for = (
            list_of_recordable_attributes_list_names()
            if attributes_to_search_for is None
            else list(attributes_to_search_for)
        )

    @property
    def hash_map(self) -> dict[str, str]:
        """File stem -> table name, for tables whose names were hashed into file names."""
        return {} if self.record_writer is None else self.record_writer.hash_map

    # ------------------------------------------------------------------ recording
    def append_data(self, group_name: str, series_name: str, value: Any, iteration: int) -> None:
        """Record one value in table ``group_name``, column ``series_name``."""
        self._add_row(group_name, iteration, {series_name: value})

    def append_primitive(self, group: str, series: str, value: Any, global_iteration: int) -> None:
        """Same as :meth:`append_data`."""
        self.append_data(group, series, value, global_iteration)

    def get_attr_list_for_record_keeper(self, input_obj: Any) -> list[str]:
        """The attribute names ``input_obj`` lists as recordable."""
        names: list[str] = []
        for list_name in self.attributes_to_search_for:
            for name in getattr(input_obj, list_name, None) or ():
                if name not in names:
                    names.append(name)
        return names

    def get_record_name(
        self, name_in_dict: str, input_obj: Any, key_name: str | None = None
    ) -> str:
        """``<name_in_dict>_<ClassName>`` (``key_name`` appended when given)."""
        name = f"{name_in_dict}_{type(input_obj).__name__}"
        return name if key_name is None else f"{name}_{key_name}"

    def update_records(
        self,
        record_these: Mapping[str, Any],
        global_iteration: int,
        custom_attr_func: Callable[[Any], Mapping[str, Any]] | None = None,
        parent_name: str = "",
        recursive_types: Iterable[type] | None = None,
    ) -> None:
        """Record every entry of ``record_these`` at ``global_iteration``.

        * a dict entry ``name -> {column: value}`` is recorded as one row of table ``name``
          (``{"loss_histories": trainer.loss_tracker.losses}``);
        * an object entry ``key -> obj`` is recorded in table ``<key>_<ClassName>``: the
          attributes it lists as recordable plus ``custom_attr_func(obj)``; with
          ``recursive_types``, its attributes that are dicts or instances of those types are
          then walked the same way (``recursive_types=[nn.Module]`` gives tables like
          ``metric_loss_NTXentLoss__modules_distance_CosineSimilarity``).

        Args:
            record_these: ``{name: dict or object}``.
            global_iteration: the ``~iteration~`` value of the rows.
            custom_attr_func: extra values of each top-level object (``{"lr": ...}``).
            parent_name: prefix of the table names (``"<parent_name>_"``).
            recursive_types: attribute types to walk into (and then dicts too); None: no
                walking (only the top-level objects are recorded).
        """
        types = tuple(recursive_types) if recursive_types is not None else None
        prefix = f"{parent_name}_" if parent_name else ""
        for name, obj in record_these.items():
            full = f"{prefix}{name}"
            if isinstance(obj, Mapping):
                self._add_row(full, global_iteration, obj)
            else:
                self._record_object(full, obj, global_iteration, custom_attr_func, types, set())

    def _record_object(
        self,
        name: str,
        obj: Any,
        iteration: int,
        custom_attr_func: Callable[[Any], Mapping[str, Any]] | None,
        types: tuple[type, ...] | None,
        seen: set[int],
    ) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        table = self.get_record_name(name, obj)
        values = {a: getattr(obj, a, None) for a in self.get_attr_list_for_record_keeper(obj)}
        if custom_attr_func is not None:
            values.update(custom_attr_func(obj))
        self._add_row(table, iteration, values)
        if types is None or not hasattr(obj, "__dict__"):
            return
        for attr, value in list(vars(obj).items()):
            if isinstance(value, types):
                self._record_object(f"{table}_{attr}", value, iteration, None, types, seen)
            elif isinstance(value, Mapping):
                self._record_mapping(f"{table}_{attr}", value, iteration, types, seen)

    def _record_mapping(
        self,
        name: str,
        mapping: Mapping[Any, Any],
        iteration: int,
        types: tuple[type, ...],
        seen: set[int],
    ) -> None:
        if id(mapping) in seen:
            return
        seen.add(id(mapping))
        for key, value in mapping.items():
            if not isinstance(key, str):  # e.g. an optimizer's state, keyed by parameters
                continue
            if isinstance(value, types) or self.get_attr_list_for_record_keeper(value):
                self._record_object(f"{name}_{key}", value, iteration, None, types, seen)
            elif isinstance(value, Mapping):
                self._record_mapping(f"{name}_{key}", value, iteration, types, seen)

    def _add_row(self, table: str, iteration: int, values: Mapping[str, Any]) -> None:
        if self.record_writer is not None:
            self.record_writer.add_row(table, iteration, values)
        if self.tensorboard_writer is not None:
            for column, value in values.items():
                v = _plain(value, False)
                if isinstance(v, int | float) and not (isinstance(v, float) and math.isnan(v)):
                    self.tensorboard_writer.add_scalar(f"{table}/{column}", v, iteration)

    # ------------------------------------------------------------------ files and queries
    def save_records(self) -> None:
        """Write the new rows to disk (and flush the TensorBoard writer)."""
        if self.record_writer is not None:
            self.record_writer.save_records()
        if self.tensorboard_writer is not None and hasattr(self.tensorboard_writer, "flush"):
            self.tensorboard_writer.flush()

    def get_record(self, group_name: str) -> dict[str, list[Any]]:
        """``{column: [values...]}`` of table ``group_name`` (None where a row lacks it)."""
        if self.record_writer is None:
            return {}
        rows = self.record_writer.tables.get(group_name, [])
        return {c: [r.get(c) for r in rows] for c in self.record_writer.columns(group_name)}

    def table_exists(self, table_name: str, *args: Any, **kwargs: Any) -> bool:
        """Whether table ``table_name`` has rows."""
        return self.record_writer is not None and self.record_writer.table_exists(table_name)

    def query(self, query: str, *args: Any, **kwargs: Any) -> Any:
        """Not supported (no SQL database); see :meth:`RecordWriter.rows`."""
        if self.record_writer is None:
            raise NotImplementedError("this RecordKeeper has no record_writer")
        return self.record_writer.query(query, *args, **kwargs)


def get_record_keeper(
    csv_folder: str | os.PathLike[str],
    tensorboard_folder: str | os.PathLike[str] | None = None,
    global_db_path: str | os.PathLike[str] | None = None,
    experiment_name: str | None = None,
    is_new_experiment: bool = True,
    save_lists: bool = False,
) -> tuple[RecordKeeper, RecordWriter, Any]:
    """A record keeper writing CSV + JSON Lines to ``csv_folder`` (and TensorBoard if asked).

    Records already in ``csv_folder`` are reloaded (a resumed run continues its logs).

    Args:
        csv_folder: where the tables are written (see :class:`~pml.trainers.RecordWriter`).
        tensorboard_folder: also write TensorBoard scalars there, if the ``tensorboard``
            package is installed (``pip install 'pml-trainers[tensorboard]'``); without it a
            warning says so and only the CSV/JSON Lines records are written (the
            reference's documented example passes a folder: it still runs). None: no
            TensorBoard.
        global_db_path: accepted and ignored (no SQLite database; a warning is logged).
        experiment_name: accepted for compatibility.
        is_new_experiment: accepted for compatibility.
        save_lists: record list values as JSON lists instead of skipping them.

    Returns:
        ``(record_keeper, record_writer, tensorboard_writer)``; the last is None without
        ``tensorboard_folder`` or without TensorBoard.
    """
    record_writer = RecordWriter(
        csv_folder,
        global_db_path=global_db_path,
        experiment_name=experiment_name,
        is_new_experiment=is_new_experiment,
        save_lists=save_lists,
    )
    tensorboard_writer = None
    if tensorboard_folder is not None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            # compat: the reference then returns (None, None, None) (no hooks at all)
            config.LOGGER.warning(
                "tensorboard_folder=%r is ignored: TensorBoard is not installed (%s; pip "
                "install 'pml-trainers[tensorboard]'); records are written to %s only",
                os.fspath(tensorboard_folder),
                err,
                os.fspath(csv_folder),
            )
        else:
            tensorboard_writer = SummaryWriter(log_dir=os.fspath(tensorboard_folder))
    record_keeper = RecordKeeper(tensorboard_writer, record_writer)
    return record_keeper, record_writer, tensorboard_writer
