"""Mixed precision: autocast bf16/fp16 on the data device, GradScaler for fp16 (checkpointed)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from pml.losses import BaseMetricLossFunction, ContrastiveLoss, TripletMarginLoss
from pml.trainers import MetricLossOnly


def blobs(n_per_class: int = 16, num_classes: int = 4, dim: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_classes, dim, generator=g) * 3
    y = torch.arange(n_per_class * num_classes) % num_classes
    x = centers[y] + torch.randn(len(y), dim, generator=g)
    return x, y


class DtypeSpy(BaseMetricLossFunction):
    """Mean squared norm, recording the embeddings' dtype; a learnable scale."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.dtypes: list[torch.dtype] = []

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        self.dtypes.append(embeddings.dtype)
        losses = self.scale * embeddings.float().pow(2).sum(dim=1)
        return {
            "loss": {
                "losses": losses,
                "indices": torch.arange(len(losses)),
                "reduction_type": "element",
            }
        }


def make(mixed_precision, loss=None, lr=1e-2, optimizer=torch.optim.Adam, **kwargs):
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
    embedder = nn.Linear(16, 4)
    loss = TripletMarginLoss(margin=0.2) if loss is None else loss
    optimizers = {
        "trunk_optimizer": optimizer(list(trunk.parameters()) + list(embedder.parameters()), lr=lr)
    }
    if any(p.requires_grad for p in loss.parameters()):
        optimizers["metric_loss_optimizer"] = optimizer(loss.parameters(), lr=lr)
    args = {
        "models": {"trunk": trunk, "embedder": embedder},
        "optimizers": optimizers,
        "batch_size": 16,
        "loss_funcs": {"metric_loss": loss},
        "dataset": TensorDataset(*blobs()),
        "data_device": "cpu",
        "dataloader_num_workers": 0,
        "mixed_precision": mixed_precision,
    }
    args.update(kwargs)
    return MetricLossOnly(**args)


def full_batch_loss(trainer) -> float:
    x, y = blobs()
    trainer.set_to_eval()
    with torch.no_grad():
        return float(ContrastiveLoss()(trainer.compute_embeddings(x), y))


@pytest.mark.parametrize("mixed_precision", ["bf16", "fp16"])
def test_autocast_trains_and_the_loss_falls(mixed_precision) -> None:
    trainer = make(mixed_precision)
    assert (trainer.grad_scaler is not None) == (mixed_precision == "fp16")
    before = full_batch_loss(trainer)
    trainer.train(1, 6)
    after = full_batch_loss(trainer)
    assert np.isfinite(after) and after < 0.7 * before
    assert all(p.dtype == torch.float32 for m in trainer.models.values() for p in m.parameters())


def test_bfloat16_autocast_reaches_the_loss_and_trains_its_parameter() -> None:
    spy = DtypeSpy()
    trainer = make("bfloat16", loss=spy, dtype=torch.float64)  # dtype is not applied under autocast
    trainer.train()
    assert spy.dtypes == [torch.bfloat16] * 4
    assert spy.scale.dtype == torch.float32 and float(spy.scale.detach()) != 1.0


def test_mixed_precision_argument_is_checked() -> None:
    with pytest.raises(ValueError, match="mixed_precision"):
        make("int8")
    with pytest.raises(ValueError, match="mixed_precision"):
        make(torch.float32)


def test_fp16_gradients_are_unscaled_before_clipping() -> None:
    max_norm, lr = 1e-3, 0.5
    trainer = None

    def clip() -> None:
        params = [p for m in trainer.models.values() for p in m.parameters()]
        torch.nn.utils.clip_grad_norm_(params, max_norm)

    trainer = make(
        "fp16",
        lr=lr,
        optimizer=torch.optim.SGD,
        gradient_clippers={"trunk_grad_clipper": clip},
        iterations_per_epoch=1,
    )
    trainer.grad_scaler = torch.amp.GradScaler("cpu", init_scale=16.0)  # no overflow at step 1
    before = [p.detach().clone() for m in trainer.models.values() for p in m.parameters()]
    trainer.train()
    after = [p.detach() for m in trainer.models.values() for p in m.parameters()]
    step = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(after, before, strict=True)))
    assert float(step) == pytest.approx(lr * max_norm, rel=1e-2)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def test_fp16_grad_scaler_state_is_checkpointed_and_resumed_exactly(tmp_path) -> None:
    def run(log, hook=None):
        seed_everything(0)
        trainer = make(
            "fp16",
            loss=DtypeSpy(),
            end_of_iteration_hook=lambda t: log.append(float(t.losses["total_loss"].detach())),
            end_of_epoch_hook=hook,
        )
        # a small growth interval makes the scale change during the run
        trainer.grad_scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4, growth_interval=3)
        return trainer

    log_a: list[float] = []
    unbroken = run(log_a, lambda t: t.save_checkpoint(tmp_path / f"e{t.epoch}.pth"))
    unbroken.train(1, 4)
    state = torch.load(tmp_path / "e2.pth", weights_only=True)
    assert state["grad_scaler"]["scale"] > 2.0**4

    log_b: list[float] = []
    resumed = run(log_b)
    seed_everything(7)
    resumed.train(resumed.resume(tmp_path / "e2.pth"), 4)
    assert log_b == log_a[8:]
    assert resumed.grad_scaler.get_scale() == unbroken.grad_scaler.get_scale()
    for m in unbroken.models:
        for p, q in zip(
            unbroken.models[m].parameters(), resumed.models[m].parameters(), strict=True
        ):
            assert torch.equal(p, q)


def test_grad_scaler_state_without_fp16_is_ignored_with_a_warning(tmp_path, caplog) -> None:
    fp16 = make("fp16")
    fp16.save_checkpoint(tmp_path / "s.pth")
    plain = make(None)
    with caplog.at_level("WARNING", logger="PML"):
        plain.resume(tmp_path / "s.pth")
    assert "GradScaler" in caplog.text
