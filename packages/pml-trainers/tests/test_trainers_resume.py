"""Checkpoints and exact resume: a run killed after epoch 2 and resumed equals an unbroken run."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import BatchSampler, RandomSampler, TensorDataset

from pml.losses import BaseMetricLossFunction, TripletMarginLoss
from pml.samplers import HierarchicalSampler, MPerClassBatchSampler, MPerClassSampler
from pml.trainers import DeepAdversarialMetricLearning, MetricLossOnly
from pml.trainers._checkpoint import CheckpointError, load_checkpoint


@pytest.fixture(autouse=True)
def _deterministic():
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before)


class ProxyLoss(BaseMetricLossFunction):
    """Cross-entropy against learnable class vectors (a loss with a trainable parameter)."""

    def __init__(self, num_classes: int = 4, dim: int = 4) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(dim, num_classes))

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        losses = nn.functional.cross_entropy(
            embeddings @ self.W, labels.to(embeddings.device), reduction="none"
        )
        return {
            "loss": {
                "losses": losses,
                "indices": torch.arange(len(losses)),
                "reduction_type": "element",
            }
        }


class Log:
    """end_of_iteration_hook: (epoch, iteration, global iteration, every loss)."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def __call__(self, trainer) -> None:
        losses = tuple(
            (k, float(v.detach()) if isinstance(v, torch.Tensor) else float(v))
            for k, v in trainer.losses.items()
        )
        self.rows.append((trainer.epoch, trainer.iteration, trainer.get_global_iteration(), losses))


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def build(kind: str, log: Log, end_of_epoch_hook=None):
    """A trainer built from scratch the same way every time (global seeds reset first)."""
    seed_everything(0)
    centers = torch.randn(4, 8) * 3
    y = torch.arange(64) % 4
    x = centers[y] + torch.randn(64, 8)
    two_level = torch.stack([y, y // 2], dim=1)
    dataset = TensorDataset(x, two_level if kind == "hierarchical" else y)
    trunk = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2))
    embedder = nn.Linear(16, 4)
    models = {"trunk": trunk, "embedder": embedder}
    opt = torch.optim.SGD(
        list(trunk.parameters()) + list(embedder.parameters()), lr=0.1, momentum=0.9
    )
    loss = ProxyLoss()
    loss_opt = torch.optim.Adam(loss.parameters(), lr=0.01)
    schedulers = {
        "trunk_scheduler_by_epoch": torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.8),
        "metric_loss_scheduler_by_iteration": torch.optim.lr_scheduler.StepLR(
            loss_opt, 3, gamma=0.5
        ),
    }
    kwargs = {}
    sampler, batch_size = None, 16
    if kind == "m_per_class":
        sampler = MPerClassSampler(y, m=4, batch_size=16, length_before_new_iter=48)
    elif kind == "m_per_class_seeded":
        sampler = MPerClassSampler(y, m=4, batch_size=16, length_before_new_iter=48, seed=3)
    elif kind == "batch_m_per_class":
        sampler = BatchSampler(
            MPerClassSampler(y, m=4, batch_size=16, length_before_new_iter=48), 16, True
        )
    elif kind == "m_per_class_mid_pass":
        sampler = MPerClassSampler(y, m=4, batch_size=16, length_before_new_iter=64)
        kwargs["iterations_per_epoch"] = 3  # passes of 4 batches: epochs end mid-pass
    elif kind in ("m_per_class_batches_coverage", "m_per_class_batches_seeded"):
        seed = None if kind.endswith("coverage") else 5
        coverage = seed is None
        sampler = MPerClassBatchSampler(y, 4, 16, None if coverage else 5, coverage=coverage,
                                        seed=seed)  # fmt: skip
        batch_size, kwargs["iterations_per_epoch"] = None, 3
    elif kind == "hierarchical":
        sampler = HierarchicalSampler(
            two_level, batch_size=16, samples_per_class=4, batches_per_super_tuple=3
        )
        batch_size = None
    elif kind == "mid_pass":
        kwargs["iterations_per_epoch"] = 3  # passes of 4 batches: epochs end mid-pass
    elif kind == "mid_pass_random_sampler":
        sampler = RandomSampler(dataset)  # draws its seed from the global torch RNG
        kwargs["iterations_per_epoch"] = 5
    if kind == "daml":
        generator = nn.Linear(48, 16)
        models["generator"] = generator
        return DeepAdversarialMetricLearning(
            1,
            1,
            2,
            models=models,
            optimizers={
                "trunk_optimizer": opt,
                "generator_optimizer": torch.optim.Adam(generator.parameters(), lr=0.01),
            },
            batch_size=16,
            loss_funcs={
                "metric_loss": TripletMarginLoss(margin=0.2),
                "synth_loss": TripletMarginLoss(margin=0.2),
                "g_adv_loss": TripletMarginLoss(margin=0.2),
            },
            dataset=dataset,
            lr_schedulers={"trunk_scheduler_by_epoch": schedulers["trunk_scheduler_by_epoch"]},
            data_device="cpu",
            dataloader_num_workers=0,
            end_of_iteration_hook=log,
            end_of_epoch_hook=end_of_epoch_hook,
        )
    return MetricLossOnly(
        models=models,
        optimizers={"trunk_optimizer": opt, "metric_loss_optimizer": loss_opt},
        batch_size=batch_size,
        loss_funcs={"metric_loss": loss},
        dataset=dataset,
        sampler=sampler,
        lr_schedulers=schedulers,
        data_device="cpu",
        dataloader_num_workers=0,
        end_of_iteration_hook=log,
        end_of_epoch_hook=end_of_epoch_hook,
        **kwargs,
    )


def all_tensors(trainer) -> dict[str, torch.Tensor]:
    out = {}
    for name in ("models", "loss_funcs"):
        for key, obj in getattr(trainer, name).items():
            for pname, value in obj.state_dict().items():
                out[f"{name}.{key}.{pname}"] = value
    for key, opt in trainer.optimizers.items():
        for i, st in opt.state_dict()["state"].items():
            for sname, value in st.items():
                if isinstance(value, torch.Tensor):
                    out[f"optimizers.{key}.{i}.{sname}"] = value
    return out


def assert_identical(a, b) -> None:
    ta, tb = all_tensors(a), all_tensors(b)
    assert ta.keys() == tb.keys()
    different = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not different, different
    for key in a.optimizers:
        assert a.optimizers[key].param_groups[0]["lr"] == b.optimizers[key].param_groups[0]["lr"]


KINDS = [
    "shuffle",
    "m_per_class",
    "m_per_class_seeded",
    "batch_m_per_class",
    "m_per_class_mid_pass",
    "m_per_class_batches_coverage",
    "m_per_class_batches_seeded",
    "hierarchical",
    "mid_pass",
    "mid_pass_random_sampler",
    "daml",
]


@pytest.mark.parametrize("kind", KINDS)
def test_resumed_run_is_bit_identical_to_an_unbroken_run(kind, tmp_path) -> None:
    def save_each_epoch(trainer) -> None:
        trainer.save_checkpoint(tmp_path / f"epoch{trainer.epoch}.pth")

    log_a = Log()
    unbroken = build(kind, log_a, end_of_epoch_hook=save_each_epoch)
    unbroken.train(1, 4)

    log_b = Log()
    resumed = build(kind, log_b)
    seed_everything(1234)  # whatever the process did meanwhile
    start = resumed.resume(tmp_path / "epoch2.pth")
    assert start == 3
    resumed.train(start_epoch=start, num_epochs=4)

    assert_identical(unbroken, resumed)
    later = [row for row in log_a.rows if row[0] >= 3]
    assert log_b.rows == later
    assert resumed.get_global_iteration() == unbroken.get_global_iteration()


def test_train_save_fresh_trainer_resume_equals_unbroken(tmp_path) -> None:
    log_a = Log()
    unbroken = build("m_per_class", log_a)
    unbroken.train(1, 4)

    log_b = Log()
    killed = build("m_per_class", log_b)
    killed.train(1, 2)
    killed.save_checkpoint(tmp_path / "ckpt.pth")
    del killed
    resumed = build("m_per_class", log_b)
    seed_everything(99)
    resumed.train(start_epoch=resumed.resume(tmp_path / "ckpt.pth"), num_epochs=4)

    assert_identical(unbroken, resumed)
    assert log_b.rows == log_a.rows
    assert [row[:3] for row in log_b.rows[-3:]] == [(4, 0, 9), (4, 1, 10), (4, 2, 11)]


def test_state_dict_is_plain_and_holds_loss_parameters(tmp_path) -> None:
    trainer = build("shuffle", Log())
    trainer.train(1, 1)
    state = trainer.state_dict()
    assert state["format"] == "pml-trainers/1" and state["epoch"] == 1
    assert set(state) == {
        "models",
        "loss_funcs",
        "mining_funcs",
        "optimizers",
        "lr_schedulers",
        "grad_scaler",
        "rng",
        "sampler",
        "epoch",
        "format",
    }
    assert torch.equal(state["loss_funcs"]["metric_loss"]["W"], trainer.loss_funcs["metric_loss"].W)
    assert state["grad_scaler"] is None
    trainer.save_checkpoint(tmp_path / "a" / "b.pth")
    back = load_checkpoint(tmp_path / "a" / "b.pth")  # weights_only=True
    assert back["sampler"]["passes"] == 1 and back["sampler"]["consumed"] == 0


def test_numpy_values_in_a_state_are_converted(tmp_path) -> None:
    class Sched:
        def __init__(self) -> None:
            self.best = np.float64(0.25)
            self.history = np.arange(3)

        def step(self, value=None) -> None:
            pass

        def state_dict(self):
            return {"best": self.best, "history": self.history}

        def load_state_dict(self, state) -> None:
            self.best, self.history = state["best"], state["history"]

    trainer = build("shuffle", Log())
    trainer.lr_schedulers["embedder_scheduler_by_plateau"] = Sched()
    trainer.save_checkpoint(tmp_path / "c.pth")
    saved = load_checkpoint(tmp_path / "c.pth")["lr_schedulers"]["embedder_scheduler_by_plateau"]
    assert saved["best"] == 0.25 and saved["history"].tolist() == [0, 1, 2]


def test_unsafe_state_is_rejected_at_save_naming_where() -> None:
    class Sched:
        def step(self):
            pass

        def state_dict(self):
            return {"fn": print}

    trainer = build("shuffle", Log())
    trainer.lr_schedulers["trunk_scheduler_by_epoch"] = Sched()
    with pytest.raises(TypeError, match=r"'lr_schedulers'\]\['trunk_scheduler_by_epoch'\]\['fn'\]"):
        trainer.state_dict()


def test_load_state_dict_with_other_keys_names_them(tmp_path) -> None:
    trainer = build("shuffle", Log())
    state = trainer.state_dict()
    other = build("daml", Log())
    with pytest.raises(ValueError, match="the checkpoint's models keys"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="pml-trainers/1"):
        trainer.load_state_dict({"models": {}})
    sampler_state = dict(state)
    shuffled = build("m_per_class", Log())
    with pytest.raises(ValueError, match="same kind of sampler"):
        shuffled.load_state_dict(sampler_state)


def test_resume_refuses_a_pickled_checkpoint(tmp_path) -> None:
    class Payload:
        def __reduce__(self):
            return (print, ("executed",))

    torch.save({"format": "pml-trainers/1", "x": Payload()}, tmp_path / "evil.pth")
    trainer = build("shuffle", Log())
    with pytest.raises(CheckpointError, match="refusing to load"):
        trainer.resume(tmp_path / "evil.pth")


def test_resume_before_training_starts_at_epoch_one(tmp_path) -> None:
    trainer = build("shuffle", Log())
    trainer.save_checkpoint(tmp_path / "zero.pth")
    assert build("shuffle", Log()).resume(tmp_path / "zero.pth") == 1


def test_checkpoint_with_the_old_class_order_entry_restores_the_order() -> None:
    from pml.trainers._trainer_state import restore_sampler_objects, snapshot_sampler_objects

    sampler = MPerClassSampler([0, 0, 1, 1, 2, 2, 3, 3], m=2)
    order = torch.tensor([2, 0, 3, 1])
    restore_sampler_objects([sampler], [{"class_order": order}])
    assert sampler.labels == [2, 0, 3, 1]
    (snap,) = snapshot_sampler_objects([sampler])
    assert "class_order" not in snap and snap["state_dict"]["order"].tolist() == [2, 0, 3, 1]
    with pytest.raises(ValueError, match="order"):
        restore_sampler_objects([sampler], [{"class_order": torch.tensor([0, 1])}])
