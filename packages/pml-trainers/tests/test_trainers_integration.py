"""The trainers, the hook container and a pml.eval tester together, with a real resume."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset

from pml.eval import AccuracyCalculator, GlobalEmbeddingSpaceTester
from pml.losses import TripletMarginLoss
from pml.trainers import MetricLossOnly, get_hook_container, get_record_keeper


def _blobs(seed: int, per_class: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(4).repeat_interleave(per_class)
    centers = 3 * torch.randn(4, 8, generator=torch.Generator().manual_seed(99))
    return TensorDataset(centers[labels] + torch.randn(len(labels), 8, generator=g), labels)


def _run(tmp, *, epochs: int, resume: bool = False) -> tuple[MetricLossOnly, object]:
    torch.manual_seed(0)
    record_keeper, _, _ = get_record_keeper(tmp / "logs")
    hooks = get_hook_container(record_keeper, primary_metric="precision_at_1", log_freq=1)
    tester = GlobalEmbeddingSpaceTester(
        end_of_testing_hook=hooks.end_of_testing_hook,
        dataloader_num_workers=0,
        data_device="cpu",
        accuracy_calculator=AccuracyCalculator(include=("precision_at_1",), k=5),
    )
    epoch_hook = hooks.end_of_epoch_hook(tester, {"val": _blobs(2, 8)}, tmp / "models")
    trunk = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8))
    trainer = MetricLossOnly(
        models={"trunk": trunk},
        optimizers={"trunk_optimizer": torch.optim.SGD(trunk.parameters(), lr=0.05)},
        batch_size=16,
        loss_funcs={"metric_loss": TripletMarginLoss(margin=0.2)},
        dataset=_blobs(1, 16),
        dataloader_num_workers=0,
        data_device="cpu",
        end_of_iteration_hook=hooks.end_of_iteration_hook,
        end_of_epoch_hook=epoch_hook,
    )
    start = hooks.load_latest_saved_models(trainer, tmp / "models") if resume else 1
    trainer.train(start, epochs)
    return trainer, hooks


def test_killed_run_resumed_through_the_hooks_equals_an_unbroken_run(tmp_path):
    unbroken, _ = _run(tmp_path / "a", epochs=3)
    _run(tmp_path / "b", epochs=2)
    resumed, _ = _run(tmp_path / "b", epochs=3, resume=True)
    for a, b in zip(unbroken.models["trunk"].parameters(), resumed.models["trunk"].parameters()):
        assert torch.equal(a, b)
    assert (tmp_path / "b" / "models" / "checkpoint_3.pth").is_file()
    assert not (tmp_path / "b" / "models" / "checkpoint_2.pth").exists()
    a_log = (tmp_path / "a" / "logs" / "loss_histories.csv").read_text()
    b_log = (tmp_path / "b" / "logs" / "loss_histories.csv").read_text()
    assert a_log == b_log


def test_trainer_resume_reads_a_hook_checkpoint(tmp_path):
    _run(tmp_path, epochs=1)
    trainer, _ = _run(tmp_path / "fresh", epochs=0)
    assert trainer.resume(tmp_path / "models" / "checkpoint_1.pth") == 2
