"""BaseTrainer: the training loop shared by every trainer (reference-compatible API).

The reference's overridable methods stay methods, called in its order; the logic of the
families around the loop lives in plain functions: the key schema (``_trainer_schema.py``),
the optimisation step (``_optimization_step.py``), modes and freezing
(``_trainer_modes.py``), batches and the DataLoader (``_trainer_data.py``,
``_batch_stream.py``), the state of a checkpoint (``_trainer_state.py``) and the
constructor's argument checks (``_arguments.py``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from pml.core import config
from pml.core.validation import check_bool, check_callable, check_device, check_int, check_type
from pml.trainers import _optimization_step as step
from pml.trainers._arguments import (
    MixedPrecision,
    check_batch_size,
    check_dataset,
    check_dict,
    check_freeze_these,
    check_hierarchy_level,
    check_mixed_precision,
    check_sampler,
)
from pml.trainers._batch_stream import BatchStream
from pml.trainers._checkpoint import load_checkpoint, save_checkpoint
from pml.trainers._loss_tracker import LossTracker
from pml.trainers._trainer_data import (
    LabelMapper,
    batch_parts,
    batch_to_device,
    build_dataloader,
    count_batches,
    process_label,
)
from pml.trainers._trainer_modes import freeze_batchnorm, set_eval_mode, set_train_mode
from pml.trainers._trainer_schema import (
    LR_SCHEDULER_SUFFIXES,
    base_schema,
    check_freeze_these_keys,
    check_trainable_loss_parameters,
)
from pml.trainers._trainer_state import STATE_FORMAT, load_trainer_state, trainer_state

__all__ = ["STATE_FORMAT", "BaseTrainer"]

Hook = Callable[["BaseTrainer"], Any]


def _no_hook(trainer: BaseTrainer) -> None:
    return None


class BaseTrainer:
    """The training loop of the trainers; subclasses implement :meth:`calculate_loss`.

    Every iteration: zero the losses and gradients, compute the losses of one batch
    (``calculate_loss(get_batch())``), weight them and sum them into ``"total_loss"``,
    backpropagate, clip gradients, step the optimizers, call ``end_of_iteration_hook``, step
    the ``*_scheduler_by_iteration`` schedulers. Every epoch ends with the
    ``*_scheduler_by_epoch`` schedulers, a log line on the ``"PML"`` logger (iterations
    and mean ``total_loss``) and ``end_of_epoch_hook``; a hook returning exactly ``False``
    stops training.

    **Epochs.** Without ``iterations_per_epoch`` an epoch is one pass of the sampler (of
    the dataset when there is no sampler: shuffled batches of ``batch_size``, the last
    incomplete one dropped). With ``iterations_per_epoch`` an epoch is that many batches,
    like the reference: the pass continues across epochs and a new pass starts whenever
    one is exhausted. Samplers with ``set_epoch`` get the number of passes started so far
    before each pass.

    **Samplers.** ``sampler`` may be a sampler of indices (batches of ``batch_size`` are
    made from it) or a *batch sampler*, passed to the DataLoader as ``batch_sampler``:
    a ``torch.utils.data.BatchSampler`` (e.g. around an ``MPerClassSampler``) or any
    ``Sampler`` subclass declared with batches as items, ``Sampler[list[int]]``, like
    ``pml.samplers.HierarchicalSampler``; ``batch_size`` is then unused (may be None).

    **Learnable losses.** A loss with trainable parameters (proxies, class weights) needs
    an optimizer holding them, conventionally ``optimizers["<loss key>_optimizer"]``;
    otherwise construction fails (unless the loss is in ``freeze_these``).

    **Mixed precision.** ``mixed_precision="bf16"`` or ``"fp16"`` runs the forward passes
    and losses under ``torch.autocast`` on ``data_device``; ``"fp16"`` also scales the loss
    with a ``torch.amp.GradScaler`` (``grad_scaler``; unscaled before gradient clipping).

    **Checkpoints.** :meth:`state_dict`/:meth:`load_state_dict` and
    :meth:`save_checkpoint`/:meth:`resume` hold the models, the losses' and miners'
    parameters and buffers, optimizers, schedulers, the grad scaler, the random generators
    (torch, numpy, Python; they are global: loading sets them), the sampler's position and
    the last finished epoch. Resuming a checkpoint written at the end of an epoch and
    training on gives the same weights and losses as an uninterrupted run (on CPU with
    ``dataloader_num_workers=0`` bit for bit).

    Args:
        models: ``{"trunk": module, "embedder": module, ...}``; ``"trunk"`` is required,
            an ``nn.Identity`` embedder is added to this dict when missing.
        optimizers: ``{"<model or loss key>_optimizer": optimizer}`` (may be empty).
        batch_size: items per batch (None with a batch sampler).
        loss_funcs: ``{"metric_loss": loss, ...}``.
        dataset: a map-style dataset of ``(data, label)`` items (see
            ``data_and_label_getter``).
        mining_funcs: ``{"tuple_miner": miner, "subset_batch_miner": miner}``; optional.
        iterations_per_epoch: batches per epoch; None (or 0): one pass of the sampler.
        data_device: device of the batches; None: cuda when available, else cpu.
        dtype: cast the batches to this dtype (not under mixed precision).
        loss_weights: loss name -> multiplier; if given it must name every loss.
        sampler: a sampler, or a batch sampler (see above).
        collate_fn: the DataLoader's collate_fn.
        lr_schedulers: ``{"<key>_scheduler_by_iteration|epoch|plateau": scheduler}``;
            plateau schedulers are stepped by :meth:`step_lr_plateau_schedulers`.
        gradient_clippers: ``{"<key>_grad_clipper": callable with no arguments}``.
        freeze_these: model/loss keys whose parameters are frozen (and put in eval mode).
        freeze_trunk_batchnorm: keep the trunk's BatchNorm layers in eval mode.
        label_hierarchy_level: column of 2-D labels to train on; a list of columns, or
            ``"all"``, passes 2-D labels through.
        dataloader_num_workers: DataLoader worker processes.
        data_and_label_getter: maps a DataLoader batch to ``(data, labels)``.
        dataset_labels: every label of the dataset (with ``set_min_label_to_zero``).
        set_min_label_to_zero: map labels to their rank among the sorted distinct
            ``dataset_labels``.
        end_of_iteration_hook: ``hook(trainer)`` after every iteration.
        end_of_epoch_hook: ``hook(trainer)`` after every epoch; ``False`` stops training.
        mixed_precision: None, ``"bf16"`` or ``"fp16"`` (keyword only; not in the reference).

    Raises:
        TypeError: a dict argument that is not a dict (naming it), a value of the wrong
            kind (``models["trunk"]`` not a module, ...), or another argument of the wrong
            type.
        InvalidArgumentError: (``ValueError`` and ``AssertionError``) a key no pattern
            allows, a missing essential key, an unknown name in ``freeze_these``.
        ValueError: a loss with trainable parameters that no optimizer holds; bad values.

    Example:
        >>> from pml.losses import ContrastiveLoss
        >>> class MyTrainer(BaseTrainer):
        ...     def calculate_loss(self, curr_batch):
        ...         data, labels = curr_batch
        ...         emb = self.compute_embeddings(data)
        ...         self.losses["metric_loss"] = self.loss_funcs["metric_loss"](emb, labels)
        >>> trunk = torch.nn.Linear(4, 2)
        >>> dataset = torch.utils.data.TensorDataset(torch.randn(8, 4), torch.arange(8) % 2)
        >>> trainer = MyTrainer({"trunk": trunk}, {"trunk_optimizer": torch.optim.SGD(
        ...     trunk.parameters(), lr=0.1)}, 4, {"metric_loss": ContrastiveLoss()}, dataset,
        ...     data_device="cpu", dataloader_num_workers=0)
        >>> trainer.train(num_epochs=2); trainer.epoch, trainer.iterations_per_epoch
        (2, 2)
    """

    def __init__(
        self,
        models: dict[str, nn.Module],
        optimizers: dict[str, torch.optim.Optimizer],
        batch_size: int | None,
        loss_funcs: dict[str, Callable[..., Any]],
        dataset: Any,
        mining_funcs: dict[str, Callable[..., Any]] | None = None,
        iterations_per_epoch: int | None = None,
        data_device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        loss_weights: dict[str, float] | None = None,
        sampler: Any = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        lr_schedulers: dict[str, Any] | None = None,
        gradient_clippers: dict[str, Callable[[], Any]] | None = None,
        freeze_these: tuple[str, ...] | list[str] = (),
        freeze_trunk_batchnorm: bool = False,
        label_hierarchy_level: int | list[int] | str = 0,
        dataloader_num_workers: int = 2,
        data_and_label_getter: Callable[[Any], Any] | None = None,
        dataset_labels: Any = None,
        set_min_label_to_zero: bool = False,
        end_of_iteration_hook: Hook | None = None,
        end_of_epoch_hook: Hook | None = None,
        *,
        mixed_precision: MixedPrecision = None,
    ) -> None:
        self.models = check_dict("models", models)
        self.optimizers = check_dict("optimizers", optimizers)
        self.loss_funcs = check_dict("loss_funcs", loss_funcs)
        self.mining_funcs = check_dict("mining_funcs", mining_funcs, allow_none=True)
        if self.mining_funcs is None:
            self.mining_funcs = {}
        self.loss_weights = check_dict("loss_weights", loss_weights, allow_none=True)
        self.lr_schedulers = check_dict("lr_schedulers", lr_schedulers, allow_none=True)
        self.gradient_clippers = check_dict("gradient_clippers", gradient_clippers, allow_none=True)
        self.dataset = check_dataset(dataset)
        self.sampler = check_sampler(sampler)
        self.batch_size = check_batch_size(batch_size, sampler)
        # compat: spec §1 (a falsy iterations_per_epoch means one pass of the sampler)
        ipe = check_int("iterations_per_epoch", iterations_per_epoch, min=0, allow_none=True)
        self.iterations_per_epoch = ipe or None
        self._epoch_is_pass = self.iterations_per_epoch is None
        self.data_device = data_device
        self.dtype = check_type("dtype", dtype, torch.dtype, allow_none=True)
        self.collate_fn = check_callable("collate_fn", collate_fn)
        self.freeze_these = check_freeze_these(freeze_these)
        self.freeze_trunk_batchnorm = check_bool("freeze_trunk_batchnorm", freeze_trunk_batchnorm)
        self.label_hierarchy_level = check_hierarchy_level(label_hierarchy_level)
        self.dataloader_num_workers = check_int(
            "dataloader_num_workers", dataloader_num_workers, min=0
        )
        self.data_and_label_getter = check_callable("data_and_label_getter", data_and_label_getter)
        self.dataset_labels = dataset_labels
        self.set_min_label_to_zero = check_bool("set_min_label_to_zero", set_min_label_to_zero)
        self.end_of_iteration_hook = check_callable("end_of_iteration_hook", end_of_iteration_hook)
        self.end_of_epoch_hook = check_callable("end_of_epoch_hook", end_of_epoch_hook)
        self.loss_names = list(self.loss_funcs.keys())
        self.epoch = 0
        self.iteration = 0
        self.custom_setup()
        self.verify_dict_keys()
        self.initialize_models()
        self.initialize_data_device()
        self.initialize_label_mapper()
        self.initialize_loss_tracker()
        self.initialize_loss_weights()
        self.initialize_data_and_label_getter()
        self.initialize_hooks()
        self.initialize_lr_schedulers()
        if self.gradient_clippers is None:
            self.gradient_clippers = {}
        self.mixed_precision = check_mixed_precision(mixed_precision, self.data_device)
        self.grad_scaler: Any = step.grad_scaler(self.mixed_precision, self.data_device)
        self.check_trainable_loss_parameters()
        self.dataloader: Any = None
        self._stream = BatchStream(self.sampler)
        self._finished_epoch = 0
        self._scaler_stepped = False

    # ----------------------------------------------------------------- subclass hooks
    def custom_setup(self) -> None:
        """Called first in construction, before the keys are verified (no-op here)."""

    def calculate_loss(self, curr_batch: Any) -> None:
        """Fill ``self.losses`` from one batch (abstract)."""
        raise NotImplementedError

    def update_loss_weights(self) -> None:
        """Called at the start of every iteration (no-op here)."""

    def modify_schema(self) -> None:
        """Adjust ``self.schema`` (the allowed keys) in a subclass (no-op here)."""

    # ----------------------------------------------------------------- construction
    def set_schema(self) -> None:
        """The base key schema (spec §1): ``self.schema``, a KeyCheckerDict."""
        suffixes = self.allowed_lr_scheduler_key_suffixes
        self.schema = base_schema(self.loss_names, self.models, suffixes)

    def verify_dict_keys(self) -> None:
        """Build the schema, let the subclass modify it, verify every dict and freeze_these."""
        self.allowed_lr_scheduler_key_suffixes = dict(LR_SCHEDULER_SUFFIXES)
        self.set_schema()
        self.modify_schema()
        self.schema.verify(self)
        self.verify_freeze_these_keys()

    def verify_freeze_these_keys(self) -> None:
        """Every name of ``freeze_these`` must be an allowed model or loss key."""
        check_freeze_these_keys(self.freeze_these, self.schema, self.optimizers)

    def initialize_models(self) -> None:
        """Add an ``nn.Identity`` embedder to ``models`` when it has none."""
        if "embedder" not in self.models:
            self.models["embedder"] = nn.Identity()

    def initialize_data_device(self) -> None:
        """``data_device`` as a torch.device (default: cuda when available, else cpu)."""
        self.data_device = check_device("data_device", self.data_device)

    def initialize_label_mapper(self) -> None:
        """The label mapper of ``set_min_label_to_zero``."""
        self.label_mapper = LabelMapper(self.set_min_label_to_zero, self.dataset_labels)

    def initialize_loss_tracker(self) -> None:
        """The LossTracker (appends ``"total_loss"`` to ``loss_names``); ``losses`` is its dict."""
        self.loss_tracker = LossTracker(self.loss_names)
        self.losses = self.loss_tracker.losses

    def initialize_loss_weights(self) -> None:
        """Default weights: 1 for every loss name (``"total_loss"`` included)."""
        if self.loss_weights is None:
            self.loss_weights = {k: 1 for k in self.loss_names}

    def initialize_data_and_label_getter(self) -> None:
        """Default: the batch is ``(data, labels)``."""
        if self.data_and_label_getter is None:
            self.data_and_label_getter = lambda data: data

    def initialize_hooks(self) -> None:
        """Missing hooks become no-ops."""
        if self.end_of_iteration_hook is None:
            self.end_of_iteration_hook = _no_hook
        if self.end_of_epoch_hook is None:
            self.end_of_epoch_hook = _no_hook

    def initialize_lr_schedulers(self) -> None:
        """None becomes an empty dict."""
        if self.lr_schedulers is None:
            self.lr_schedulers = {}

    def check_trainable_loss_parameters(self) -> None:
        """Every trainable parameter of a (not frozen) loss must be held by an optimizer.

        Raises:
            ValueError: naming the loss and the optimizer key to add.
        """
        check_trainable_loss_parameters(self.loss_funcs, self.optimizers, self.freeze_these)

    # ----------------------------------------------------------------- modes
    def trainable_attributes(self) -> list[dict[str, Any]]:
        """The dicts whose entries are put in train/eval mode: models and loss_funcs."""
        return [self.models, self.loss_funcs]

    def set_to_train(self) -> None:
        """Train mode; entries of ``freeze_these`` get ``requires_grad=False`` and eval mode."""
        set_train_mode(self.trainable_attributes(), self.freeze_these)
        self.maybe_freeze_trunk_batchnorm()

    def set_to_eval(self) -> None:
        """Eval mode for every model and loss."""
        set_eval_mode(self.trainable_attributes())

    def maybe_freeze_trunk_batchnorm(self) -> None:
        """With ``freeze_trunk_batchnorm``, the trunk's BatchNorm layers go to eval mode."""
        if self.freeze_trunk_batchnorm:
            freeze_batchnorm(self.models["trunk"])

    # ----------------------------------------------------------------- training loop
    def initialize_dataloader(self) -> None:
        """Build ``self.dataloader`` (at every :meth:`train` call) and count the iterations."""
        self.dataloader = build_dataloader(
            self.dataset,
            self.batch_size,
            self.sampler,
            self.collate_fn,
            self.dataloader_num_workers,
            self._stream.generator,
        )
        self._stream.set_dataloader(self.dataloader, self.sampler)
        if self._epoch_is_pass:
            self.iterations_per_epoch = count_batches(
                self.dataloader, self.dataset, self.batch_size
            )

    def train(self, start_epoch: int = 1, num_epochs: int = 1) -> None:
        """Train epochs ``start_epoch`` to ``num_epochs`` (inclusive).

        After :meth:`resume`, pass its return value as ``start_epoch``.
        """
        start_epoch = check_int("start_epoch", start_epoch, min=1)
        num_epochs = check_int("num_epochs", num_epochs, min=0)
        self.initialize_dataloader()
        for epoch in range(start_epoch, num_epochs + 1):
            self.epoch = epoch
            self.set_to_train()
            config.LOGGER.info(f"TRAINING EPOCH {epoch}")
            done, loss_sum = self._train_one_epoch()
            self.step_lr_schedulers(end_of_epoch=True)
            self._finished_epoch = epoch
            self.zero_losses()
            mean = float(loss_sum) / done if isinstance(loss_sum, Tensor) else loss_sum / done
            config.LOGGER.info(f"epoch {epoch}: {done} iterations, mean total_loss {mean:.6g}")
            if self.end_of_epoch_hook(self) is False:
                break

    def _train_one_epoch(self) -> tuple[int, Any]:
        limit = None if self._epoch_is_pass else self.iterations_per_epoch
        done, loss_sum = 0, 0.0
        while limit is None or done < limit:
            if self._epoch_is_pass and not self._stream.has_next():
                break
            self.iteration = done
            self.forward_and_backward()
            total = self.losses["total_loss"]
            if isinstance(total, Tensor):
                total = total.detach().float()
            loss_sum = loss_sum + total
            self.end_of_iteration_hook(self)
            self.step_lr_schedulers(end_of_epoch=False)
            done += 1
        if done == 0:
            raise ValueError("the sampler yielded no batch in this epoch")
        return done, loss_sum

    def forward_and_backward(self) -> None:
        """One iteration: zero, compute the losses of a batch, weight, backward, step."""
        self.zero_losses()
        self.zero_grad()
        self.update_loss_weights()
        with self._autocast():
            self.calculate_loss(self.get_batch())
        self.loss_tracker.update(self.loss_weights)
        self.backward()
        self.clip_gradients()
        self.step_optimizers()
        step.update_grad_scaler(self.grad_scaler, self._scaler_stepped)
        self._scaler_stepped = False

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        return step.autocast(self.mixed_precision, self.data_device)

    def zero_losses(self) -> None:
        """Every entry of ``losses`` to 0."""
        for k in self.losses:
            self.losses[k] = 0

    def zero_grad(self) -> None:
        """``zero_grad()`` on every model and optimizer."""
        step.zero_grad(self.models, self.optimizers)

    def backward(self) -> None:
        """Backpropagate ``losses["total_loss"]`` (scaled under float16 mixed precision).

        An iteration whose total is not on the autograd graph (every loss 0) has nothing
        to backpropagate and is skipped.
        """
        step.backward(self.losses["total_loss"], self.grad_scaler)

    def clip_gradients(self) -> None:
        """Call every gradient clipper (gradients are unscaled first under float16)."""
        step.clip_gradients(self.gradient_clippers, self.optimizers, self.grad_scaler)

    def step_optimizers(self) -> None:
        """Step every optimizer whose key (minus ``"_optimizer"``) is not frozen."""
        for key, opt in self.optimizers.items():
            if not step.is_frozen_optimizer(key, self.freeze_these):
                self.step_optimizer(opt)

    def step_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``, through the grad scaler under float16 mixed precision."""
        if step.step_optimizer(optimizer, self.grad_scaler):
            self._scaler_stepped = True

    def step_lr_schedulers(self, end_of_epoch: bool = False) -> None:
        """Step the ``*_scheduler_by_epoch`` (end of epoch) or ``*_by_iteration`` schedulers."""
        suffix = LR_SCHEDULER_SUFFIXES["epoch" if end_of_epoch else "iteration"]
        step.step_lr_schedulers(self.lr_schedulers, suffix)

    def step_lr_plateau_schedulers(self, validation_info: Any) -> None:
        """``step(validation_info)`` on every ``*_scheduler_by_plateau`` scheduler."""
        step.step_lr_schedulers(
            self.lr_schedulers, LR_SCHEDULER_SUFFIXES["plateau"], validation_info
        )

    def get_global_iteration(self) -> int:
        """The 0-based iteration counted over epochs: ``iteration + ipe * (epoch - 1)``."""
        return self.iteration + (self.iterations_per_epoch or 0) * (self.epoch - 1)

    # ----------------------------------------------------------------- batches
    def get_batch(self) -> tuple[Any, Tensor]:
        """The next batch as ``(data, labels)`` (labels processed, subset mining applied)."""
        batch = self._next_batch()
        data, labels = batch_parts(self.data_and_label_getter(batch), 2)
        labels = process_label(labels, self.label_hierarchy_level, self.label_mapper)
        return self.maybe_do_batch_mining(data, labels)

    def maybe_do_batch_mining(self, data: Any, labels: Tensor) -> tuple[Any, Tensor]:
        """With a ``"subset_batch_miner"``: keep the rows it selects (computed in eval mode)."""
        miner = self.mining_funcs.get("subset_batch_miner")
        if miner is None:
            return data, labels
        with torch.no_grad():
            self.set_to_eval()
            embeddings = self.compute_embeddings(data)
            idx = miner(embeddings, labels)
            self.set_to_train()
        idx = idx.cpu() if isinstance(idx, Tensor) else idx
        return data[idx], labels[idx]

    def maybe_mine_embeddings(self, embeddings: Tensor, labels: Tensor) -> Any:
        """The ``"tuple_miner"``'s indices tuple, or None without one."""
        miner = self.mining_funcs.get("tuple_miner")
        return None if miner is None else miner(embeddings, labels)

    def compute_embeddings(self, data: Tensor) -> Tensor:
        """``embedder(trunk(data))``."""
        return self.get_final_embeddings(self.get_trunk_output(data))

    def get_final_embeddings(self, base_output: Tensor) -> Tensor:
        """``models["embedder"](base_output)``."""
        return self.models["embedder"](base_output)

    def get_trunk_output(self, data: Tensor) -> Tensor:
        """``models["trunk"]`` on the data moved to ``data_device`` (cast to ``dtype``)."""
        dtype = None if self.mixed_precision is not None else self.dtype  # autocast casts
        return self.models["trunk"](batch_to_device(data, self.data_device, dtype))

    def _next_batch(self) -> Any:
        """The next batch of the sampler (reference semantics with ``iterations_per_epoch``)."""
        # compat: spec §1 (with iterations_per_epoch, a new pass starts when one ends)
        return self._stream.next(start_new_pass=not self._epoch_is_pass)

    # ----------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything an exact resume needs, as plain data (``torch.load(weights_only=True)``).

        Keys: ``models``, ``loss_funcs``, ``mining_funcs``, ``optimizers``,
        ``lr_schedulers`` (key -> state dict, None for objects without state),
        ``grad_scaler``, ``rng`` (torch, numpy and Python generators), ``sampler`` (the
        position in the sampler's passes), ``epoch`` (the last finished epoch) and
        ``format``. Exact at the end of an epoch (e.g. from ``end_of_epoch_hook``).

        Raises:
            TypeError: a state holding something a weights-only checkpoint cannot hold
                (naming where).
        """
        return trainer_state(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (also sets the global RNG states).

        Raises:
            ValueError: not a trainer state, or its dict keys differ from this trainer's
                (naming the dict and the keys).
        """
        load_trainer_state(self, state)

    def save_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`state_dict` to ``path`` atomically."""
        save_checkpoint(path, self.state_dict())

    def resume(self, path: str | os.PathLike[str]) -> int:
        """Load a checkpoint written by :meth:`save_checkpoint`; returns the next epoch.

        Example: ``trainer.train(start_epoch=trainer.resume(path), num_epochs=10)``.
        """
        self.load_state_dict(load_checkpoint(path, map_location="cpu"))
        return self._finished_epoch + 1
