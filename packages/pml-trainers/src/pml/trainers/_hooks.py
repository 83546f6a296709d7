"""Logging presets: HookContainer, EmptyContainer, get_hook_container (and get_record_keeper).

The reference's hooks (``utils.logging_presets``) with the same methods, table names and
checkpoint file names, backed by the built-in :class:`~pml.trainers.RecordKeeper` (CSV + JSON
Lines; no record-keeper, SQLite or TensorBoard needed). Beyond the reference:

* records reach disk at the end of every epoch (and at the last iteration of an epoch), not
  only when a tester runs;
* any split names work, and a primary metric the tester does not compute or a validation
  split it does not evaluate fails when the epoch hook is made (``_hook_splits.py``);
* each checkpoint also holds the trainer's whole state (exact resume), and a resumed run
  continues its logs without duplicates (``_hook_checkpoints.py``);
* under a ``torch.distributed`` process group (world size > 1) the tester runs on every rank
  with each rank embedding only its shard of every split
  (:func:`pml.eval.distributed_test`): every rank gets the accuracies of the whole splits
  (and so the same best epoch and early stop), and only rank 0 writes records and
  checkpoints. Every rank must run the hooks.

What the records say about accuracy and loss over epochs is read in ``_accuracy_history.py``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pml.core import config
from pml.core.distributed import is_distributed
from pml.core.validation import check_bool, check_int, check_type
from pml.trainers._accuracy_history import (
    LOSS_TABLE,
    AccuracyTable,
    accuracy_table_name,
    current_accuracy,
    earliest_best,
    loss_history,
    metric_column,
    new_best,
    patience_remaining,
    table_rows,
)
from pml.trainers._hook_checkpoints import (
    load_latest_checkpoint,
    save_checkpoint_files,
    saveable_objects,
)
from pml.trainers._hook_splits import check_primary_metric, query_splits, validation_split
from pml.trainers._record_keeper import RecordKeeper, get_record_keeper

if TYPE_CHECKING:
    from pml.eval import BaseTester
    from pml.trainers._records import RecordWriter

__all__ = ["EmptyContainer", "HookContainer", "get_hook_container", "get_record_keeper"]

_SAVEABLE = ("models", "optimizers", "lr_schedulers", "loss_funcs", "mining_funcs")


def _writes() -> bool:
    """Whether this process writes records and checkpoints: rank 0, or no process group."""
    return not is_distributed() or torch.distributed.get_rank() == 0


def _entries(trainer: Any, name: str) -> dict[str, Any]:
    """The trainer's dict ``name`` (empty when it has none)."""
    return getattr(trainer, name, None) or {}


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
        self.record_group_name_prefix = check_type(
            "record_group_name_prefix", record_group_name_prefix, str, allow_none=True
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
            keeper, tracker = self.record_keeper, trainer.loss_tracker
            keeper.update_records(
                {LOSS_TABLE: tracker.losses, "loss_weights": tracker.loss_weights}, it
            )
            keeper.update_records(_entries(trainer, "loss_funcs"), it, recursive_types=[nn.Module])
            keeper.update_records(_entries(trainer, "mining_funcs"), it)
            keeper.update_records(_entries(trainer, "models"), it)
            attrs = self.optimizer_custom_attr_func
            keeper.update_records(_entries(trainer, "optimizers"), it, custom_attr_func=attrs)
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
        check_type("dataset_dict", dataset_dict, Mapping)
        check_primary_metric(tester, self.primary_metric)
        pairs = query_splits(dataset_dict, splits_to_eval)
        validation = validation_split(pairs, dataset_dict, self.validation_split_name)
        self._known_reference_splits.update(pairs)
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
                validation_split=validation,
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

        epoch, trunk, embedder = trainer.epoch, trainer.models["trunk"], trainer.models["embedder"]
        distributed_test(tester, dataset_dict, epoch, trunk, embedder, splits_to_eval, collate_fn)
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
            if metric_column(tester, self.primary_metric, list(accuracies)) is None:
                continue  # no primary metric (no epoch hook checked it): no best columns
            _, _, best_epoch, best_accuracy = self.is_new_best_accuracy(tester, split_name, epoch)
            self.record_keeper.update_records(
                {table: {"best_epoch": best_epoch, "best_accuracy": best_accuracy}}, epoch
            )

    def _record_if_missing(self, tester: BaseTester, epoch: int) -> None:
        """Record the test's accuracies if the tester's end_of_testing_hook is not ours."""
        accuracies = getattr(tester, "all_accuracies", None) or {}
        if not all(self._accuracy_table(tester, split).has_epoch(epoch) for split in accuracies):
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
            splits = query_splits(dataset_dict, splits_to_eval)
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
        pairs = query_splits(dataset_dict, input_splits_to_eval)
        self._known_reference_splits.update(pairs)
        return [p for p in pairs if not self._accuracy_table(tester, p[0]).has_epoch(epoch)]

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
        objects = saveable_objects(trainer, self.saveable_trainer_objects)
        save_checkpoint_files(trainer, model_folder, curr_suffix, objects, self._writer)

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
        objects = saveable_objects(trainer, self.saveable_trainer_objects)
        return load_latest_checkpoint(trainer, model_folder, device, best, objects, self._writer)

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
        return accuracy_table_name(self.base_record_group_name(tester), split_name, refs)

    # ------------------------------------------------------------------ queries
    @property
    def _writer(self) -> RecordWriter | None:
        return self.record_keeper.record_writer

    def _rows(self, table: str) -> list[dict[str, Any]]:
        return table_rows(self._writer, table)

    def _accuracy_table(self, tester: BaseTester, split_name: str) -> AccuracyTable:
        """The recorded accuracies of ``split_name`` (table :meth:`record_group_name`)."""
        table = self.record_group_name(tester, split_name)
        return AccuracyTable(self._writer, table, tester, self.primary_metric)

    def get_curr_primary_metric(self, tester: BaseTester, split_name: str) -> Any:
        """The primary metric of ``split_name`` in ``tester.all_accuracies``.

        Raises:
            ValueError: the split was not evaluated, or has no value for the metric.
        """
        return current_accuracy(tester, split_name, self.primary_metric)

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
        selected = None if return_all_metrics else list(metrics) or [self.primary_metric]
        return self._accuracy_table(tester, split_name).history(selected)

    def get_loss_history(self, loss_names: Sequence[str] = ()) -> dict[str, list[Any]]:
        """``{column: [values...]}`` of ``loss_histories`` (all columns, or ``loss_names``).

        Empty if nothing was recorded.
        """
        return loss_history(self._writer, loss_names)

    def get_accuracies_of_epoch(
        self, tester: BaseTester, split_name: str, epoch: int, select_all: bool = True
    ) -> list[dict[str, Any]]:
        """The rows of ``split_name`` for ``epoch`` (all columns, or epoch + primary metric)."""
        return self._accuracy_table(tester, split_name).of_epoch(epoch, select_all)

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
        return self._accuracy_table(tester, split_name).best(select_all, ignore_epoch)

    def get_best_epoch_and_accuracy(
        self, tester: BaseTester, split_name: str, ignore_epoch: Sequence[int] = (-1,)
    ) -> tuple[int | None, Any]:
        """``(epoch, value)`` of the best primary metric; ``(None, 0)`` when none.

        The earliest epoch wins ties.
        """
        return earliest_best(
            *self.get_accuracies_of_best_epoch(tester, split_name, True, ignore_epoch)
        )

    def is_new_best_accuracy(
        self, tester: BaseTester, split_name: str, epoch: int
    ) -> tuple[bool, Any, int | None, Any]:
        """``(is_new_best, current, best_epoch, best_accuracy)`` for ``epoch``.

        The best includes ``epoch``; a tie keeps the older epoch.
        """
        best = self.get_best_epoch_and_accuracy(tester, split_name, ignore_epoch=(-1, epoch))
        return new_best(epoch, self.get_curr_primary_metric(tester, split_name), *best)

    def patience_remaining(self, epoch: int, best_epoch: int | None, patience: int | None) -> bool:
        """Whether to go on: no patience, no best yet, or ``epoch - best_epoch <= patience``."""
        return patience_remaining(epoch, best_epoch, patience)

    @staticmethod
    def optimizer_custom_attr_func(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """``{"lr": <learning rate of the first parameter group>}``."""
        return {"lr": optimizer.param_groups[0]["lr"]}
