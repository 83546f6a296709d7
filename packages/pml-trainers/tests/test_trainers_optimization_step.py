"""The optimisation step's functions and the trainer's key schema, outside a trainer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pml.core.validation import InvalidArgumentError
from pml.trainers._optimization_step import (
    backward,
    clip_gradients,
    is_frozen_optimizer,
    step_lr_schedulers,
    step_optimizer,
)
from pml.trainers._trainer_schema import (
    LR_SCHEDULER_SUFFIXES,
    base_schema,
    check_freeze_these_keys,
    check_trainable_loss_parameters,
)


class _Scaler:
    """Records what a GradScaler is asked to do."""

    def __init__(self):
        self.calls = []

    def scale(self, x):
        self.calls.append("scale")
        return x * 2

    def unscale_(self, opt):
        self.calls.append("unscale")

    def step(self, opt):
        self.calls.append("step")


def _layer_and_optimizer():
    torch.manual_seed(0)
    layer = nn.Linear(2, 1)
    return layer, torch.optim.SGD(layer.parameters(), lr=1.0)


def test_backward_skips_a_total_off_the_graph_and_scales_with_a_scaler():
    backward(0, None)  # every loss 0: nothing to do
    layer, _ = _layer_and_optimizer()
    scaler = _Scaler()
    backward(layer(torch.ones(1, 2)).sum(), scaler)
    assert scaler.calls == ["scale"]
    torch.testing.assert_close(layer.bias.grad, torch.tensor([2.0]))


def test_scaler_steps_only_optimizers_with_gradients():
    layer, opt = _layer_and_optimizer()
    scaler = _Scaler()
    assert step_optimizer(opt, scaler) is False and scaler.calls == []
    layer(torch.ones(1, 2)).sum().backward()
    clip_gradients({"trunk_grad_clipper": lambda: scaler.calls.append("clip")}, {"o": opt}, scaler)
    assert step_optimizer(opt, scaler) is True
    assert scaler.calls == ["unscale", "clip", "step"]


def test_step_without_scaler_updates_the_weights():
    layer, opt = _layer_and_optimizer()
    before = layer.bias.detach().clone()
    layer(torch.ones(1, 2)).sum().backward()
    assert step_optimizer(opt, None) is False
    torch.testing.assert_close(layer.bias.detach(), before - 1.0)


class _Scheduler:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def step(self, *args):
        self.log.append((self.name, args))


def test_schedulers_are_stepped_by_suffix():
    stepped = []
    schedulers = {f"trunk{s}": _Scheduler(s, stepped) for s in LR_SCHEDULER_SUFFIXES.values()}
    step_lr_schedulers(schedulers, LR_SCHEDULER_SUFFIXES["plateau"], 0.5)
    step_lr_schedulers(schedulers, LR_SCHEDULER_SUFFIXES["epoch"])
    assert stepped == [("_scheduler_by_plateau", (0.5,)), ("_scheduler_by_epoch", ())]


def test_frozen_optimizer_keys():
    assert is_frozen_optimizer("trunk_optimizer", ("trunk",))
    assert not is_frozen_optimizer("embedder_optimizer", ("trunk",))


def test_schema_follows_the_model_and_loss_keys():
    schema = base_schema(["metric_loss", "total_loss"], ["trunk"], LR_SCHEDULER_SUFFIXES)
    schema["models"].keys += ["classifier"]
    assert "classifier_optimizer" in schema.keys_of("optimizers")
    assert "classifier_scheduler_by_epoch" in schema.keys_of("lr_schedulers")
    with pytest.raises(InvalidArgumentError, match="freeze_these keys must be one of"):
        check_freeze_these_keys(("generator",), schema, {})


def test_trainable_loss_parameters_need_an_optimizer():
    loss = nn.Linear(2, 2)
    with pytest.raises(ValueError, match='optimizers\\["metric_loss_optimizer"\\]'):
        check_trainable_loss_parameters({"metric_loss": loss}, {}, ())
    check_trainable_loss_parameters({"metric_loss": loss}, {}, ("metric_loss",))
    held = {"metric_loss_optimizer": torch.optim.SGD(loss.parameters(), lr=0.1)}
    check_trainable_loss_parameters({"metric_loss": loss}, held, ())
