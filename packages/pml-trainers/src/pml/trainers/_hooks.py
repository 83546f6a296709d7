"""Logging presets: HookContainer, EmptyContainer, get_record_keeper, get_hook_container.

The reference's hooks (``utils.logging_presets``) with the same methods, table names and
checkpoint file names, backed by the built-in :class:`~pml.trainers.RecordKeeper` (CSV + JSON
Lines; no record-keeper, SQLite or TensorBoard needed). Beyond the reference:

* records reach disk at the end of every epoch (and at the last iteration of an epoch), not
  only when a tester runs;
* a primary metric that the tester's calculator does not compute, or a validation split that
  is not evaluated, is a ``ValueError`` when the epoch hook is made (before training), not an
  error at the first evaluation;
* any split names work (the validation split defaults to the only evaluated query split when
  ``"val"`` is not evaluated);
* each checkpoint also goes into one ``checkpoint_<suffix>.pth`` holding the trainer's whole
  state (``trainer.state_dict()``: models, loss/miner parameters, optimizers, schedulers, RNG
  states, ...), which :meth:`HookContainer.load_latest_saved_models` prefers (exact resume);
  the reference's per-object ``<key>_<suffix>.pth`` files are written too;
* a resumed run continues its logs: records written after the checkpoint it resumes from are
  dropped, so nothing is logged twice;
* under a ``torch.distributed`` process group (world size > 1) the tester runs on every rank
  with each rank embedding only its shard of every split
  (:func:`pml.eval.distributed_test`): every rank gets the accuracies of the whole splits
  (and so the same best epoch and early stop), and only rank 0 writes records and
  checkpoints. Every rank must run the hooks.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pml.core import config
from pml.core.distributed import is_distributed
from pml.core.validation import check_bool, check_int, check_type
from pml.trainers._hook_checkpoints import load_latest_checkpoint, save_checkpoint_files, unwrap
from pml.trainers._record_keeper import RecordKeeper
from pml.trainers._records import RecordWriter

if TYPE_CHECKING:
    from pml.eval import BaseTester

__all__ = ["EmptyContainer", "HookContainer", "get_hook_container", "get_record_keeper"]

_SAVEABLE = ("models", "optimizers", "lr_schedulers", "loss_funcs", "mining_funcs")


def _writes() -> bool:
    """Whether this process writes records and checkpoints: rank 0, or no process group."""
    return not is_distributed() or torch.distributed.get_rank() == 0


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


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


def get_hook_container(
    record_keeper: RecordKeeper | None, **kwargs: Any
) -> HookContainer | EmptyContainer:
    """``HookContainer(record_keeper, **kwargs)``; an EmptyContainer (warning) for None."""
    if record_keeper is None:
        config.LOGGER.warning("No record_keeper, so no preset hooks are being returned.")
        return EmptyContainer()
    return HookContainer(record_keeper, **kwargs)


class EmptyContainer:
    """Hooks that do nothing.

    ``end_of_epoch_hook(...)`` returns None (a trainer then has no epoch hook);
    ``end_of_iteration_hook`` and ``end_of_testing_hook`` are None.
    """

    end_of_iteration_hook = None
    end_of_testing_hook = None

    def end_of_epoch_hook(self, *args: Any) -> None:
        """No hook."""
        return None


class HookContainer:
    """Trainer and tester hooks: records, best/latest checkpoints, early stopping.

    Records losses, loss weights, learning rates and accuracies; saves the best and latest
    checkpoints; stops training after ``patience`` epochs without improvement.

    Args:
        record_keeper: where records go (:func:`get_record_keeper`).
        record_group_name_prefix: prefix ``"<prefix>_"`` of the accuracy table names.
        primary_metric: the metric deciding the best epoch; it must be one of the tester's
            ``accuracy_calculator.get_curr_metrics()`` (checked by :meth:`end_of_epoch_hook`).
        validation_split_name: the query split whose primary metric decides the best epoch.
        save_models: write checkpoints.
        log_freq: record every ``log_freq`` iterations (of each epoch, 0-based: iteration 0
            of every epoch is recorded).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     record_keeper, _, _ = get_record_keeper(folder)
        ...     hooks = get_hook_container(record_keeper, primary_metric="precision_at_1")
        >>> hooks.primary_metric
        'precision_at_1'
    """

    def __init__(
        self,
        record_keeper: RecordKeeper,
        record_group_name_prefix: str | None = None,
        primary_metric: str = "mean_average_precision_at_r",
        validation_split_name: str = "val",
        save_models: bool = True,
        log_freq: int = 50,
    ) -> None:
        if record_keeper is None:
            raise TypeError(
                "record_keeper must be a RecordKeeper (see get_record_keeper); got None "
                "(get_hook_container(None) returns an EmptyContainer)"
            )
        self.record_keeper = record_keeper
        self.record_group_name_prefix = (
            None
            if record_group_name_prefix is None
            else check_type("record_group_name_prefix", record_group_name_prefix, str)
        )
        self.primary_metric = check_type("primary_metric", primary_metric, str)
        self.validation_split_name = check_type("validation_split_name", validation_split_name, str)
        self.do_save_models = check_bool("save_models", save_models)
        self.log_freq = check_int("log_freq", log_freq, min=1)
        self.saveable_trainer_objects = list(_SAVEABLE)
        # reference splits of each query split, as given to end_of_epoch_hook (names the
        # accuracy tables before a tester has run)
        self._known_reference_splits: dict[str, list[str]] = {}

    def _save_records(self) -> None:
        """Write the records to disk (rank 0 only under a process group)."""
        if _writes():
            self.record_keeper.save_records()

    # ------------------------------------------------------------------ trainer hooks
    def end_of_iteration_hook(self, trainer: Any) -> None:
        """Record losses, loss weights, loss/miner/model attributes and learning rates.

        Every ``log_freq`` iterations (``trainer.iteration % log_freq == 0``) at
        ``trainer.get_global_iteration()``. At the last iteration of an epoch the records
        are written to disk.
        """
        if trainer.iteration % self.log_freq == 0:
            it = trainer.get_global_iteration()
            keeper = self.record_keeper
            keeper.update_records(
                {
                    "loss_histories": trainer.loss_tracker.losses,
                    "loss_weights": trainer.loss_tracker.loss_weights,
                },
                it,
            )
            keeper.update_records(
                getattr(trainer, "loss_funcs", None) or {}, it, recursive_types=[nn.Module]
            )
            keeper.update_records(getattr(trainer, "mining_funcs", None) or {}, it)
            keeper.update_records(getattr(trainer, "models", None) or {}, it)
            keeper.update_records(
                getattr(trainer, "optimizers", None) or {},
                it,
                custom_attr_func=self.optimizer_custom_attr_func,
            )
        per_epoch = getattr(trainer, "iterations_per_epoch", None)
        if per_epoch and trainer.iteration == per_epoch - 1:
            # fix: the reference writes records only when a tester runs
            self._save_records()

    def end_of_epoch_hook(
        self,
        tester: BaseTester,
        dataset_dict: Mapping[str, Any],
        model_folder: str | os.PathLike[str],
        test_interval: int = 1,
        patience: int | None = None,
        splits_to_eval: Sequence[tuple[str, Sequence[str]]] | None = None,
        test_collate_fn: Callable[..., Any] | None = None,
    ) -> Callable[[Any], bool]:
        """The epoch hook to give a trainer: test, save checkpoints, stop early.

        Every ``test_interval`` epochs the hook runs ``tester.test`` on ``dataset_dict``
        (``splits_to_eval``: ``[(query_split, [reference_splits])]``; None: each split
        against itself), steps the trainer's plateau schedulers with the validation split's
        primary metric, saves the latest checkpoint (suffix = the epoch) and, on a new best
        (strictly greater), the best one (suffix ``best<epoch>``), deleting the ones they
        replace. It returns False (stop training) once more than ``patience`` epochs have
        passed since the best epoch. Records are written to disk at the end of every epoch.

        Give the tester this container's :meth:`end_of_testing_hook` so accuracies are
        recorded (if it has another hook, the accuracies are recorded after ``test``).

        Raises:
            ValueError: ``primary_metric`` is not computed by ``tester.accuracy_calculator``;
                the validation split is not one of the evaluated query splits; splits that
                ``dataset_dict`` lacks.
            TypeError/ValueError: bad ``test_interval`` or ``patience``.
        """
        test_interval = check_int("test_interval", test_interval, min=1)
        patience = check_int("patience", patience, min=0, allow_none=True)
        self._check_primary_metric(tester)
        validation_split = self._check_splits(dataset_dict, splits_to_eval)
        folder = Path(os.fspath(model_folder))
        folder.mkdir(parents=True, exist_ok=True)

        def actual_hook(trainer: Any) -> bool:
            epoch = trainer.epoch
            self._save_records()
            if epoch % test_interval != 0:
                return True
            best_epoch = self.save_models_and_eval(
                trainer,
                dataset_dict,
                folder,
                test_interval,
                tester,
                splits_to_eval,
                test_collate_fn,
                validation_split=validation_split,
            )
            return self.patience_remaining(epoch, best_epoch, patience)

        return actual_hook

    def save_models_and_eval(
        self,
        trainer: Any,
        dataset_dict: Mapping[str, Any],
        model_folder: str | os.PathLike[str],
        test_interval: int,
        tester: BaseTester,
        splits_to_eval: Sequence[tuple[str, Sequence[str]]] | None = None,
        collate_fn: Callable[..., Any] | None = None,
        *,
        validation_split: str | None = None,
    ) -> int:
        """Test at ``trainer.epoch``, step plateau schedulers, save checkpoints.

        Returns:
            the best epoch (this one if its primary metric beats every earlier one).
        """
        from pml.eval import distributed_test

        epoch = trainer.epoch
        distributed_test(
            tester,
            dataset_dict,
            epoch,
            trainer.models["trunk"],
            trainer.models["embedder"],
            splits_to_eval,
            collate_fn,
        )
        self._record_if_missing(tester, epoch)
        split = self.validation_split_name if validation_split is None else validation_split
        is_new_best, curr, _, _ = self.is_new_best_accuracy(tester, split, epoch)
        prev_best_epoch, _ = self.get_best_epoch_and_accuracy(
            tester, split, ignore_epoch=(-1, epoch)
        )
        self._save_records()
        step_plateau = getattr(trainer, "step_lr_plateau_schedulers", None)
        if step_plateau is not None:
            step_plateau(curr)
        if self.do_save_models and _writes():
            self.save_models(trainer, model_folder, epoch, epoch - test_interval)
            if is_new_best:
                prev = None if prev_best_epoch is None else f"best{prev_best_epoch}"
                self.save_models(trainer, model_folder, f"best{epoch}", prev)
        return epoch if is_new_best else prev_best_epoch

    def end_of_testing_hook(self, tester: BaseTester) -> None:
        """Record each evaluated split's accuracies, then its best epoch and accuracy.

        Rows go to :meth:`record_group_name` at iteration = epoch; ``best_epoch`` and
        ``best_accuracy`` include this epoch (a tie keeps the older epoch).
        """
        for split_name, accuracies in tester.all_accuracies.items():
            epoch = accuracies["epoch"]
            table = self.record_group_name(tester, split_name)
            self.record_keeper.update_records({table: accuracies}, epoch)
            if self._metric_key(tester, self.primary_metric, list(accuracies)) is None:
                continue  # no primary metric (no epoch hook checked it): no best columns
            _, _, best_epoch, best_accuracy = self.is_new_best_accuracy(tester, split_name, epoch)
            self.record_keeper.update_records(
                {table: {"best_epoch": best_epoch, "best_accuracy": best_accuracy}}, epoch
            )

    def _record_if_missing(self, tester: BaseTester, epoch: int) -> None:
        """Record the test's accuracies if the tester's end_of_testing_hook is not ours."""
        accuracies = getattr(tester, "all_accuracies", None) or {}
        missing = [
            split
            for split in accuracies
            if not any(
                r.get("epoch") == epoch for r in self._rows(self.record_group_name(tester, split))
            )
        ]
        if missing:
            self.end_of_testing_hook(tester)

    def run_tester_separately(
        self,
        tester: BaseTester,
        dataset_dict: Mapping[str, Any],
        epoch: int,
        trunk: nn.Module,
        embedder: nn.Module,
        splits_to_eval: Sequence[tuple[str, Sequence[str]]] | None = None,
        collate_fn: Callable[..., Any] | None = None,
        skip_eval_if_already_done: bool = True,
    ) -> bool:
        """Run ``tester.test`` outside training (e.g. the pretrained model at epoch -1).

        With ``skip_eval_if_already_done``, query splits that already have records for
        ``epoch`` are skipped. Returns False when nothing was left to evaluate, else True.
        """
        splits = self.get_splits_to_eval(tester, dataset_dict, epoch, splits_to_eval)
        if skip_eval_if_already_done:
            if not splits:
                config.LOGGER.info("Already evaluated epoch %s", epoch)
                return False
        else:
            splits = self._all_splits(dataset_dict, splits_to_eval)
        from pml.eval import distributed_test

        distributed_test(tester, dataset_dict, epoch, trunk, embedder, splits, collate_fn)
        self._record_if_missing(tester, epoch)
        self._save_records()
        return True

    def get_splits_to_eval(
        self,
        tester: BaseTester,
        dataset_dict: Mapping[str, Any],
        epoch: int,
        input_splits_to_eval: Sequence[tuple[str, Sequence[str]]] | None,
    ) -> list[tuple[str, list[str]]]:
        """The ``(query, references)`` pairs that have no records for ``epoch`` yet."""
        out = []
        for query, refs in self._all_splits(dataset_dict, input_splits_to_eval):
            self._known_reference_splits[query] = list(refs)
            table = self.record_group_name(tester, query)
            if not any(r.get("epoch") == epoch for r in self._rows(table)):
                out.append((query, refs))
        return out

    @staticmethod
    def _all_splits(
        dataset_dict: Mapping[str, Any],
        splits_to_eval: Sequence[tuple[str, Sequence[str]]] | None,
    ) -> list[tuple[str, list[str]]]:
        if splits_to_eval is None:
            return [(name, [name]) for name in dataset_dict]
        return [(query, list(refs)) for query, refs in splits_to_eval]

    # ------------------------------------------------------------------ checkpoints
    def save_models(
        self,
        trainer: Any,
        model_folder: str | os.PathLike[str],
        curr_suffix: int | str,
        prev_suffix: int | str | None = None,
    ) -> None:
        """Write checkpoint ``curr_suffix`` and delete the one it replaces.

        Writes ``checkpoint_<suffix>.pth`` (``trainer.state_dict()``, if the trainer has it,
        plus the record counts that make a resume continue the logs exactly) and
        ``<key>_<suffix>.pth`` (each object's ``state_dict()``) for every entry of the
        trainer's models, optimizers, lr_schedulers, loss_funcs and mining_funcs. Then
        deletes the files of the same series (numbered, or ``best``-numbered) other than
        ``curr_suffix`` (``prev_suffix`` included: superseded files are found by name).
        Write errors are logged, not raised.
        """
        objects = self._saveable_objects(trainer)
        save_checkpoint_files(trainer, model_folder, curr_suffix, objects, self._record_counts())

    def _saveable_objects(self, trainer: Any) -> dict[str, Any]:
        objects: dict[str, Any] = {}
        for name in self.saveable_trainer_objects:
            for key, obj in (getattr(trainer, name, None) or {}).items():
                if callable(getattr(unwrap(obj), "state_dict", None)):
                    objects[key] = obj
        return objects

    def _record_counts(self) -> dict[str, int]:
        writer = self.record_keeper.record_writer
        return {} if writer is None else writer.row_counts()

    def load_latest_saved_models(
        self,
        trainer: Any,
        model_folder: str | os.PathLike[str],
        device: torch.device | str | None = None,
        best: bool = False,
    ) -> int:
        """Load the latest (or best) checkpoint in ``model_folder`` into ``trainer``.

        Prefers ``checkpoint_<suffix>.pth`` (the whole trainer state: exact resume; records
        written after it are dropped so the resumed logs continue without duplicates), else
        the per-object ``<key>_<suffix>.pth`` files (missing ones are skipped with a
        warning; a ``module.`` prefix from DataParallel is stripped if needed).

        Returns:
            the epoch to resume from: the checkpoint's epoch + 1 (1 when there is none).
        """
        objects = self._saveable_objects(trainer)
        writer = self.record_keeper.record_writer
        return load_latest_checkpoint(trainer, model_folder, device, best, objects, writer)

    # ------------------------------------------------------------------ names
    def base_record_group_name(self, tester: BaseTester) -> str:
        """``[<prefix>_]`` + ``tester.description_suffixes("accuracies")``."""
        prefix = f"{self.record_group_name_prefix}_" if self.record_group_name_prefix else ""
        return prefix + tester.description_suffixes("accuracies")

    def record_group_name(self, tester: BaseTester, split_name: str) -> str:
        """The accuracy table of ``split_name``.

        Base + ``_<SPLIT>_vs_<REF1>_and_<REF2>`` (references sorted, upper case), or
        ``_vs_self`` when the split is its only reference. Splits the tester has not
        evaluated yet use the references given to :meth:`end_of_epoch_hook`, else
        themselves.
        """
        refs = (getattr(tester, "reference_split_names", None) or {}).get(split_name)
        if refs is None:
            refs = self._known_reference_splits.get(split_name, [split_name])
        base = f"{self.base_record_group_name(tester)}_{split_name.upper()}"
        if list(refs) == [split_name]:
            return f"{base}_vs_self"
        return f"{base}_vs_" + "_and_".join(name.upper() for name in sorted(refs))

    # ------------------------------------------------------------------ queries
    def _rows(self, table: str) -> list[dict[str, Any]]:
        writer = self.record_keeper.record_writer
        return [] if writer is None else writer.rows(table)

    def _metric_key(self, tester: BaseTester, metric: str, columns: Sequence[str]) -> str | None:
        """The column holding ``metric``: ``AVERAGE_<metric>``, then ``<metric>_level<L>``."""
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

    def _table_columns(self, table: str) -> list[str]:
        writer = self.record_keeper.record_writer
        return [] if writer is None else writer.columns(table)

    def get_curr_primary_metric(self, tester: BaseTester, split_name: str) -> Any:
        """The primary metric of ``split_name`` in ``tester.all_accuracies``.

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
        key = self._metric_key(tester, self.primary_metric, list(accuracies))
        if key is None:
            raise ValueError(
                f"primary_metric {self.primary_metric!r} is not among the accuracies of "
                f"split {split_name!r}: {sorted(accuracies)}"
            )
        return accuracies[key]

    def get_accuracy_history(
        self,
        tester: BaseTester,
        split_name: str,
        return_all_metrics: bool = False,
        metrics: Sequence[str] = (),
    ) -> dict[str, list[Any]]:
        """``{"epoch": [...], <metric column>: [...]}`` of ``split_name``.

        The primary metric's column (or those of ``metrics``); every column with
        ``return_all_metrics``. Empty if nothing was recorded.
        """
        table = self.record_group_name(tester, split_name)
        rows, columns = self._rows(table), self._table_columns(table)
        if not rows:
            return {}
        if return_all_metrics:
            selected = columns
        else:
            keys = [self._metric_key(tester, m, columns) for m in metrics or [self.primary_metric]]
            selected = ["epoch", *(k for k in keys if k is not None)]
        return {c: [r.get(c) for r in rows] for c in selected}

    def get_loss_history(self, loss_names: Sequence[str] = ()) -> dict[str, list[Any]]:
        """``{column: [values...]}`` of ``loss_histories`` (all columns, or ``loss_names``).

        Empty if nothing was recorded.
        """
        rows = self._rows("loss_histories")
        if not rows:
            return {}
        columns = list(loss_names) or self._table_columns("loss_histories")
        return {c: [r.get(c) for r in rows] for c in columns}

    def get_accuracies_of_epoch(
        self, tester: BaseTester, split_name: str, epoch: int, select_all: bool = True
    ) -> list[dict[str, Any]]:
        """The rows of ``split_name`` for ``epoch`` (all columns, or epoch + primary metric)."""
        table = self.record_group_name(tester, split_name)
        rows = [r for r in self._rows(table) if r.get("epoch") == epoch]
        if select_all:
            return rows
        key = self._metric_key(tester, self.primary_metric, self._table_columns(table))
        return [{"epoch": r.get("epoch"), key: r.get(key)} for r in rows] if key else []

    def get_accuracies_of_best_epoch(
        self,
        tester: BaseTester,
        split_name: str,
        select_all: bool = True,
        ignore_epoch: Sequence[int] = (-1,),
    ) -> tuple[list[dict[str, Any]], str | None]:
        """``(rows, key)``: the rows with the highest primary metric, and its column.

        Epochs in ``ignore_epoch`` and NaN values are left out; ties give several rows.
        ``([], None)`` when the table has no such column.
        """
        table = self.record_group_name(tester, split_name)
        key = self._metric_key(tester, self.primary_metric, self._table_columns(table))
        if key is None:
            return [], None
        rows = [
            r
            for r in self._rows(table)
            if r.get("epoch") not in ignore_epoch
            and isinstance(r.get(key), int | float)
            and not _is_nan(r.get(key))
        ]
        if not rows:
            return [], key
        best = max(r[key] for r in rows)
        rows = [r for r in rows if r[key] == best]
        if not select_all:
            rows = [{"epoch": r.get("epoch"), key: r[key]} for r in rows]
        return rows, key

    def get_best_epoch_and_accuracy(
        self, tester: BaseTester, split_name: str, ignore_epoch: Sequence[int] = (-1,)
    ) -> tuple[int | None, Any]:
        """``(epoch, value)`` of the best primary metric; ``(None, 0)`` when none.

        The earliest epoch wins ties.
        """
        rows, key = self.get_accuracies_of_best_epoch(tester, split_name, True, ignore_epoch)
        if not rows or key is None:
            return None, 0
        first = min(rows, key=lambda r: r.get("epoch", 0))
        return first.get("epoch"), first[key]

    def is_new_best_accuracy(
        self, tester: BaseTester, split_name: str, epoch: int
    ) -> tuple[bool, Any, int | None, Any]:
        """``(is_new_best, current, best_epoch, best_accuracy)`` for ``epoch``.

        The best includes ``epoch``; a tie keeps the older epoch.
        """
        prev_epoch, prev = self.get_best_epoch_and_accuracy(
            tester, split_name, ignore_epoch=(-1, epoch)
        )
        curr = self.get_curr_primary_metric(tester, split_name)
        if prev_epoch is None or (not _is_nan(curr) and curr > prev):
            return True, curr, epoch, curr
        return False, curr, prev_epoch, prev

    def patience_remaining(self, epoch: int, best_epoch: int | None, patience: int | None) -> bool:
        """Whether to go on: no patience, no best yet, or ``epoch - best_epoch <= patience``."""
        if patience is None or best_epoch is None:
            return True
        return epoch - best_epoch <= patience

    @staticmethod
    def optimizer_custom_attr_func(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """``{"lr": <learning rate of the first parameter group>}``."""
        return {"lr": optimizer.param_groups[0]["lr"]}

    # ------------------------------------------------------------------ checks
    def _check_primary_metric(self, tester: BaseTester) -> None:
        calculator = getattr(tester, "accuracy_calculator", None)
        if calculator is None:
            return
        metrics = list(calculator.get_curr_metrics())
        if self.primary_metric not in metrics:
            raise ValueError(
                f"primary_metric {self.primary_metric!r} is not computed by the tester's "
                f"AccuracyCalculator; it computes {metrics} (add it to the calculator's "
                "include=, or choose one of these)"
            )

    def _check_splits(
        self,
        dataset_dict: Mapping[str, Any],
        splits_to_eval: Sequence[tuple[str, Sequence[str]]] | None,
    ) -> str:
        """The validation split to use; remembers the reference splits of each query."""
        pairs = self._all_splits(dataset_dict, splits_to_eval)
        missing = sorted({s for q, refs in pairs for s in [q, *refs] if s not in dataset_dict})
        if missing:
            raise ValueError(
                f"splits_to_eval names splits missing from dataset_dict: {missing}; "
                f"dataset_dict has {list(dataset_dict)}"
            )
        for query, refs in pairs:
            self._known_reference_splits[query] = refs
        queries = [q for q, _ in pairs]
        name = self.validation_split_name
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
