"""BaseTrainer / MetricLossOnly: arguments, key checking, the loop, samplers, labels."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import BatchSampler, Dataset, SequentialSampler, TensorDataset

from pml.core.validation import InvalidArgumentError
from pml.losses import BaseMetricLossFunction, ContrastiveLoss, TripletMarginLoss
from pml.samplers import HierarchicalSampler, MPerClassSampler
from pml.trainers import (
    BaseTrainer,
    KeyChecker,
    KeyCheckerDict,
    LossTracker,
    MetricLossOnly,
)
from pml.trainers._trainer_data import LabelMapper, is_batch_sampler, process_label

# ---------------------------------------------------------------- toy problem


def blobs(n_per_class: int = 16, num_classes: int = 4, dim: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_classes, dim, generator=g) * 3
    y = torch.arange(n_per_class * num_classes) % num_classes
    x = centers[y] + torch.randn(len(y), dim, generator=g)
    return x, y


def toy_models() -> dict[str, nn.Module]:
    return {"trunk": nn.Sequential(nn.Linear(8, 16), nn.ReLU()), "embedder": nn.Linear(16, 4)}


def sgd(models: dict[str, nn.Module], lr: float = 0.05) -> torch.optim.Optimizer:
    return torch.optim.SGD([p for m in models.values() for p in m.parameters()], lr=lr)


def make_trainer(cls=MetricLossOnly, dataset=None, models=None, **kwargs):
    models = toy_models() if models is None else models
    if dataset is None:
        dataset = TensorDataset(*blobs())
    optimizers = {}
    if isinstance(models, dict) and all(isinstance(m, nn.Module) for m in models.values()):
        optimizers = {"trunk_optimizer": sgd(models)} if models else {}
    args = {
        "models": models,
        "optimizers": optimizers,
        "batch_size": 16,
        "loss_funcs": {"metric_loss": ContrastiveLoss()},
        "dataset": dataset,
        "data_device": "cpu",
        "dataloader_num_workers": 0,
    }
    args.update(kwargs)
    return cls(**args)


class Recorder:
    """An end_of_iteration_hook keeping (epoch, iteration, global, total_loss, labels)."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, int, int, float]] = []

    def __call__(self, trainer: BaseTrainer) -> None:
        total = trainer.losses["total_loss"]
        total = float(total.detach()) if isinstance(total, torch.Tensor) else float(total)
        self.rows.append((trainer.epoch, trainer.iteration, trainer.get_global_iteration(), total))


class LabelSpy(BaseMetricLossFunction):
    """A loss recording the shapes it is called with (mean squared norm as the loss)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[tuple[int, ...], torch.Tensor]] = []

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        self.calls.append((tuple(embeddings.shape), labels.clone()))
        losses = embeddings.pow(2).sum(dim=1)
        return {
            "loss": {
                "losses": losses,
                "indices": torch.arange(len(losses)),
                "reduction_type": "element",
            }
        }


# ---------------------------------------------------------------- KeyChecker


def test_key_checker_rejects_an_unknown_key_naming_dict_key_and_patterns() -> None:
    schema = KeyCheckerDict({"models": KeyChecker(["trunk", "embedder"], essential=["trunk"])})

    holder = SimpleNamespace(models={"trunk": 1, "foo": 2})

    with pytest.raises(
        InvalidArgumentError, match=r"models keys must be one of trunk, embedder.*'foo'"
    ):
        schema.verify(holder)
    with pytest.raises(AssertionError):
        schema.verify(holder)


def test_key_checker_missing_essential_key_is_an_error() -> None:
    schema = KeyCheckerDict({"models": KeyChecker(["trunk", "embedder"], essential=["trunk"])})

    holder = SimpleNamespace(models={"embedder": 1})

    with pytest.raises(ValueError, match='models must contain "trunk"'):
        schema.verify(holder)


def test_key_checker_warns_about_missing_important_and_empty(caplog) -> None:
    schema = KeyCheckerDict(
        {
            "a": KeyChecker(["x", "y"]),
            "b": KeyChecker(["z"]),
            "c": KeyChecker(["w"], warn_empty=False),
        }
    )

    holder = SimpleNamespace(a={"x": 1}, b={}, c=None)

    with caplog.at_level(logging.WARNING, logger="PML"):
        schema.verify(holder)
    assert 'a is missing "y"' in caplog.text
    assert "b is empty" in caplog.text
    assert "c is empty" not in caplog.text


def test_key_checker_prefix_match_passes_with_a_warning(caplog) -> None:
    schema = KeyCheckerDict({"loss_funcs": KeyChecker(["metric_loss"])})

    holder = SimpleNamespace(loss_funcs={"metric_lossX": 1})

    with caplog.at_level(logging.WARNING, logger="PML"):
        schema.verify(holder)
    assert "'metric_lossX'" in caplog.text and "misspelling" in caplog.text


def test_key_checker_callable_keys_see_the_other_checkers() -> None:
    schema = KeyCheckerDict(
        {
            "models": KeyChecker(["trunk", "classifier_[0-9]+"]),
            "optimizers": KeyChecker(
                lambda s, d: [k + "_optimizer" for k in d["models"].resolve("keys", d)]
            ),
        }
    )

    holder = SimpleNamespace(
        models={"trunk": 1, "classifier_3": 2}, optimizers={"classifier_3_optimizer": 1}
    )

    schema.verify(holder)
    holder.optimizers = {"classifier_optimizer": 1}
    with pytest.raises(InvalidArgumentError, match="classifier_optimizer"):
        schema.verify(holder)


# ---------------------------------------------------------------- LossTracker


def test_loss_tracker_weights_in_place_and_sums() -> None:
    names = ["a", "b"]
    tracker = LossTracker(names)
    assert names == ["a", "b", "total_loss"]
    tracker.losses["a"] = torch.tensor(2.0)
    tracker.losses["b"] = 3
    tracker.update({"a": 0.5, "total_loss": 100})
    assert tracker.loss_weights == {"a": 0.5, "b": 1.0, "total_loss": 100}
    assert float(tracker.losses["a"]) == 1.0 and tracker.losses["b"] == 3
    assert float(tracker.losses["total_loss"]) == 4.0


def test_loss_tracker_all_zero_total_is_int_zero() -> None:
    tracker = LossTracker(["a"])
    tracker.update({})
    assert tracker.losses["total_loss"] == 0


# ---------------------------------------------------------------- construction


def test_base_trainer_calculate_loss_is_abstract() -> None:
    trainer = make_trainer(cls=BaseTrainer)
    with pytest.raises(NotImplementedError):
        trainer.train()


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("models", [nn.Linear(2, 2)], "models must be a dict"),
        ("optimizers", None, "optimizers must be a dict"),
        ("loss_funcs", ContrastiveLoss(), "loss_funcs must be a dict"),
        ("mining_funcs", [1], "mining_funcs must be a dict or None"),
        ("loss_weights", {"metric_loss": "1"}, r'loss_weights\["metric_loss"\]'),
        ("lr_schedulers", {"trunk_scheduler_by_epoch": 3}, r'lr_schedulers\["trunk_scheduler'),
        ("batch_size", 2.5, "batch_size"),
        ("dataset", 3, "dataset must be a map-style dataset"),
        ("freeze_these", "trunk", "freeze_these must be a list"),
        ("dataloader_num_workers", 1.5, "dataloader_num_workers"),
        ("dtype", "float16", "dtype"),
        ("end_of_epoch_hook", 3, "end_of_epoch_hook"),
    ],
)
def test_bad_argument_types_name_the_argument(name, value, match) -> None:
    with pytest.raises(TypeError, match=match):
        make_trainer(**{name: value})


def test_model_that_is_not_a_module_names_its_key() -> None:
    with pytest.raises(TypeError, match=r'models\["trunk"\] must be a torch.nn.Module'):
        make_trainer(models={"trunk": lambda x: x})


def test_unknown_model_key_is_named() -> None:
    models = toy_models()
    models["foo"] = nn.Identity()
    with pytest.raises(
        InvalidArgumentError, match=r"models keys must be one of trunk, embedder.*'foo'"
    ):
        make_trainer(models=models)


def test_missing_trunk_is_an_assertion_error() -> None:
    with pytest.raises(AssertionError, match='models must contain "trunk"'):
        make_trainer(models={}, optimizers={})


def test_misspelt_loss_key_passes_with_a_warning(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="PML"):
        make_trainer(loss_funcs={"metric_lossX": ContrastiveLoss()})
    assert "'metric_lossX'" in caplog.text


def test_scheduler_keys_need_a_suffix() -> None:
    models = toy_models()
    opt = sgd(models)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    with pytest.raises(
        InvalidArgumentError, match="lr_schedulers keys must be one of.*'trunk_scheduler'"
    ):
        make_trainer(
            models=models,
            optimizers={"trunk_optimizer": opt},
            lr_schedulers={"trunk_scheduler": sched},
        )
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
    make_trainer(
        models=models,
        optimizers={"trunk_optimizer": opt},
        lr_schedulers={"metric_loss_scheduler_by_plateau": plateau},
    )


def test_loss_weights_must_name_every_loss() -> None:
    with pytest.raises(InvalidArgumentError, match='loss_weights must contain "metric_loss"'):
        make_trainer(loss_weights={})
    with pytest.raises(InvalidArgumentError, match="'total_loss'"):
        make_trainer(loss_weights={"metric_loss": 1, "total_loss": 1})


def test_unknown_freeze_these_name_is_an_error(caplog) -> None:
    with pytest.raises(
        InvalidArgumentError,
        match="freeze_these keys must be one of trunk, embedder, metric_loss; got 'foo'",
    ):
        make_trainer(freeze_these=["foo"])
    with caplog.at_level(logging.WARNING, logger="PML"):
        make_trainer(freeze_these=["trunk"])
    assert "optimizer for trunk, but are freezing" in caplog.text


def test_embedder_is_added_to_the_callers_dict_and_defaults() -> None:
    models = {"trunk": nn.Linear(8, 4)}
    trainer = make_trainer(models=models, mining_funcs=None)
    assert isinstance(models["embedder"], nn.Identity)
    assert trainer.loss_names == ["metric_loss", "total_loss"]
    assert trainer.loss_weights == {"metric_loss": 1, "total_loss": 1}
    assert trainer.losses is trainer.loss_tracker.losses
    assert trainer.mining_funcs == {} and trainer.lr_schedulers == {}
    assert trainer.dataloader_num_workers == 0


def test_defaults_of_device_and_workers() -> None:
    trainer = make_trainer(data_device=None, dataloader_num_workers=2)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert trainer.data_device == torch.device(expected)
    assert trainer.dataloader_num_workers == 2


# ---------------------------------------------------------------- learnable losses


class ProxyLoss(BaseMetricLossFunction):
    """A loss with a trainable parameter: cross-entropy against learnable proxies."""

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


def test_learnable_loss_without_optimizer_is_a_value_error() -> None:
    with pytest.raises(
        ValueError, match=r'loss_funcs\["metric_loss"\].*\[.W.\].*metric_loss_optimizer'
    ):
        make_trainer(loss_funcs={"metric_loss": ProxyLoss()})


def test_learnable_loss_is_trained_by_its_optimizer() -> None:
    loss = ProxyLoss()
    before = loss.W.detach().clone()
    trainer = make_trainer(
        loss_funcs={"metric_loss": loss},
        optimizers={
            "trunk_optimizer": torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.0),
            "metric_loss_optimizer": torch.optim.SGD(loss.parameters(), lr=0.1),
        },
    )
    trainer.train()
    assert not torch.equal(before, loss.W)


def test_learnable_loss_held_by_another_optimizer_or_frozen_is_accepted() -> None:
    models = toy_models()
    loss = ProxyLoss()
    params = [p for m in models.values() for p in m.parameters()] + list(loss.parameters())
    make_trainer(
        models=models,
        loss_funcs={"metric_loss": loss},
        optimizers={"trunk_optimizer": torch.optim.SGD(params, lr=0.1)},
    )
    frozen = ProxyLoss()
    before = frozen.W.detach().clone()
    trainer = make_trainer(loss_funcs={"metric_loss": frozen}, freeze_these=["metric_loss"])
    trainer.train()
    assert torch.equal(before, frozen.W) and not frozen.W.requires_grad


@pytest.mark.skipif(
    not hasattr(__import__("pml.losses", fromlist=["x"]), "ArcFaceLoss"),
    reason="pml.losses.ArcFaceLoss not available yet",
)
def test_arcface_without_optimizer_is_a_value_error() -> None:
    from pml.losses import ArcFaceLoss  # type: ignore[attr-defined]

    with pytest.raises(ValueError, match="metric_loss_optimizer"):
        make_trainer(loss_funcs={"metric_loss": ArcFaceLoss(num_classes=4, embedding_size=4)})


# ---------------------------------------------------------------- the loop


def test_loss_falls_on_blobs() -> None:
    rec = Recorder()
    models = toy_models()
    trainer = make_trainer(
        models=models,
        optimizers={
            "trunk_optimizer": torch.optim.Adam(
                [p for m in models.values() for p in m.parameters()], lr=1e-2
            )
        },
        loss_funcs={"metric_loss": TripletMarginLoss(margin=0.2)},
        end_of_iteration_hook=rec,
    )
    trainer.train(1, 6)
    first = np.mean([r[3] for r in rec.rows if r[0] == 1])
    last = np.mean([r[3] for r in rec.rows if r[0] == 6])
    assert last < 0.5 * first


def test_epoch_is_one_pass_and_hooks_see_iterations(caplog) -> None:
    rec = Recorder()
    epochs = []
    trainer = make_trainer(
        end_of_iteration_hook=rec,
        end_of_epoch_hook=lambda t: epochs.append((t.epoch, dict(t.losses))),
    )
    with caplog.at_level(logging.INFO, logger="PML"):
        trainer.train(1, 2)
    assert trainer.iterations_per_epoch == 4  # 64 items / 16
    assert [r[:3] for r in rec.rows] == [(e, i, 4 * (e - 1) + i) for e in (1, 2) for i in range(4)]
    assert [e for e, _ in epochs] == [1, 2]
    assert all(v == 0 for _, losses in epochs for v in losses.values())  # zeroed before the hook
    assert (
        "TRAINING EPOCH 2" in caplog.text
        and "epoch 2: 4 iterations, mean total_loss" in caplog.text
    )


def test_iterations_per_epoch_keeps_the_pass_across_epochs() -> None:
    spy = LabelSpy()
    x = torch.arange(8.0)[:, None].repeat(1, 8)
    dataset = TensorDataset(x, torch.arange(8))
    trainer = make_trainer(
        dataset=dataset,
        models={"trunk": nn.Linear(8, 4)},
        batch_size=4,
        sampler=SequentialSampler(dataset),
        iterations_per_epoch=3,
        loss_funcs={"metric_loss": spy},
    )
    trainer.train(1, 2)
    seen = [labels.tolist() for _, labels in spy.calls]
    # reference semantics: 6 batches = 3 passes of 2 batches, the pass continuing over epochs
    assert seen == [[0, 1, 2, 3], [4, 5, 6, 7]] * 3
    assert trainer.get_global_iteration() == 5


def test_end_of_epoch_hook_returning_false_stops() -> None:
    calls = []
    trainer = make_trainer(end_of_epoch_hook=lambda t: calls.append(t.epoch) or t.epoch < 2)
    trainer.train(1, 5)
    assert calls == [1, 2] and trainer.epoch == 2
    calls.clear()
    trainer = make_trainer(end_of_epoch_hook=lambda t: calls.append(t.epoch))  # None continues
    trainer.train(1, 3)
    assert calls == [1, 2, 3]


def test_schedulers_and_clippers_are_stepped() -> None:
    models = toy_models()
    opt = sgd(models, lr=1.0)
    it = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    clipped = []
    trainer = make_trainer(
        models=models,
        optimizers={"trunk_optimizer": opt},
        lr_schedulers={"trunk_scheduler_by_iteration": it},
        gradient_clippers={"trunk_grad_clipper": lambda: clipped.append(1)},
    )
    trainer.train(1, 2)
    assert opt.param_groups[0]["lr"] == 0.5**8 and len(clipped) == 8
    models = toy_models()
    opt = sgd(models, lr=1.0)
    ep = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.1)
    trainer = make_trainer(
        models=models,
        optimizers={"trunk_optimizer": opt},
        lr_schedulers={"trunk_scheduler_by_epoch": ep, "embedder_scheduler_by_plateau": plateau},
    )
    trainer.train(1, 2)
    assert opt.param_groups[0]["lr"] == 0.25
    trainer.step_lr_plateau_schedulers(1.0)
    trainer.step_lr_plateau_schedulers(2.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.025)


def test_freeze_these_and_frozen_trunk_batchnorm() -> None:
    trunk = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU())
    embedder = nn.Linear(16, 4)
    models = {"trunk": trunk, "embedder": embedder}
    trunk_before = [p.detach().clone() for p in trunk.parameters()]
    trainer = make_trainer(
        models=models,
        optimizers={
            "trunk_optimizer": sgd({"t": trunk}),
            "embedder_optimizer": sgd({"e": embedder}),
        },
        freeze_these=["trunk"],
    )
    trainer.train()
    assert all(torch.equal(a, b) for a, b in zip(trunk_before, trunk.parameters(), strict=True))
    assert not trunk.training
    bn = nn.BatchNorm1d(16)
    models = {"trunk": nn.Sequential(nn.Linear(8, 16), bn), "embedder": nn.Linear(16, 4)}
    trainer = make_trainer(models=models, freeze_trunk_batchnorm=True)
    trainer.train()
    assert torch.equal(bn.running_mean, torch.zeros(16)) and not bn.training
    assert not torch.equal(bn.weight.detach(), torch.ones(16))  # affine weights still trained


def test_mining_funcs_empty_or_omitted_and_tuple_miner() -> None:
    from pml.miners import MultiSimilarityMiner

    make_trainer(mining_funcs={}).train()
    make_trainer().train()
    make_trainer(mining_funcs={"tuple_miner": MultiSimilarityMiner()}).train()


def test_subset_batch_miner_keeps_its_rows() -> None:
    spy = LabelSpy()

    def first_half(embeddings, labels):
        assert not torch.is_grad_enabled()
        return torch.arange(len(labels) // 2)

    make_trainer(
        loss_funcs={"metric_loss": spy}, mining_funcs={"subset_batch_miner": first_half}
    ).train()
    assert all(shape == (8, 4) for shape, _ in spy.calls)


def test_weight_zero_everywhere_does_not_crash() -> None:
    rec = Recorder()
    make_trainer(loss_weights={"metric_loss": 0}, end_of_iteration_hook=rec).train()
    assert [r[3] for r in rec.rows] == [0.0] * 4


def test_empty_dataloader_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="yields no batch"):
        make_trainer(batch_size=100).train()


def test_empty_dataset_and_bare_tensor_are_refused_at_construction() -> None:
    # an empty dataset failed in torch's RandomSampler ("num_samples should be a positive
    # integer value"); a bare tensor inside the data getter
    with pytest.raises(ValueError, match=r"^dataset is empty"):
        make_trainer(dataset=TensorDataset(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)))
    with pytest.raises(TypeError, match=r"got a Tensor \(wrap it with its labels"):
        make_trainer(dataset=torch.randn(8, 2))


def test_bad_batch_shape_from_getter_is_named() -> None:
    trainer = make_trainer(data_and_label_getter=lambda batch: batch[0])
    with pytest.raises(ValueError, match=r"data_and_label_getter must return \(data, labels\)"):
        trainer.train()


# ---------------------------------------------------------------- samplers


def test_is_batch_sampler() -> None:
    labels = [[0, 0], [0, 0], [1, 0], [1, 0], [2, 1], [2, 1], [3, 1], [3, 1]]
    assert is_batch_sampler(HierarchicalSampler(labels, batch_size=4, samples_per_class=2))
    assert is_batch_sampler(BatchSampler(range(4), 2, drop_last=False))
    assert not is_batch_sampler(MPerClassSampler([0, 0, 1, 1], m=2))
    assert not is_batch_sampler(SequentialSampler(range(3)))


def test_hierarchical_sampler_batches_train_with_2d_data_and_1d_labels() -> None:
    x, y = blobs()
    labels = torch.stack([y, y // 2], dim=1)
    spy = LabelSpy()
    sampler = HierarchicalSampler(
        labels, batch_size=16, samples_per_class=4, batches_per_super_tuple=3
    )
    trainer = make_trainer(
        dataset=TensorDataset(x, labels),
        sampler=sampler,
        batch_size=None,
        loss_funcs={"metric_loss": spy},
    )
    trainer.train(1, 2)
    assert trainer.iterations_per_epoch == len(sampler) == 3
    assert len(spy.calls) == 6
    for shape, lab in spy.calls:
        assert shape == (16, 4) and lab.ndim == 1
        assert torch.bincount(lab, minlength=4).tolist().count(4) == 4  # 4 per class


def test_m_per_class_sampler_as_sampler_and_as_batch_sampler() -> None:
    x, y = blobs()
    for sampler in (
        MPerClassSampler(y, m=4, batch_size=8, length_before_new_iter=32),
        BatchSampler(MPerClassSampler(y, m=4, batch_size=8, length_before_new_iter=32), 8, True),
    ):
        spy = LabelSpy()
        trainer = make_trainer(
            dataset=TensorDataset(x, y),
            sampler=sampler,
            batch_size=8,
            loss_funcs={"metric_loss": spy},
        )
        trainer.train()
        assert trainer.iterations_per_epoch == 4
        for _, lab in spy.calls:
            counts = torch.bincount(lab, minlength=4)
            assert sorted(counts.tolist()) == [0, 0, 4, 4]


# ---------------------------------------------------------------- labels


class StringLabels(Dataset):
    def __init__(self) -> None:
        self.x, y = blobs()
        self.names = ["cat", "dog", "emu", "fox"]
        self.y = [self.names[int(i)] for i in y]

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def test_string_labels_mapped_to_ranks() -> None:
    dataset = StringLabels()
    spy = LabelSpy()
    make_trainer(
        dataset=dataset,
        loss_funcs={"metric_loss": spy},
        set_min_label_to_zero=True,
        dataset_labels=dataset.y,
    ).train()
    assert all(
        lab.dtype == torch.int64 and set(lab.tolist()) <= {0, 1, 2, 3} for _, lab in spy.calls
    )
    with pytest.raises(TypeError, match="labels must be numbers"):
        make_trainer(dataset=dataset).train()
    with pytest.raises(ValueError, match="dataset_labels must be given"):
        make_trainer(dataset=dataset, set_min_label_to_zero=True)


def test_process_label_levels_and_mapping() -> None:
    mapper = LabelMapper(True, np.array([[5, 1], [3, 7], [9, 7]]))
    labels = torch.tensor([[9, 7], [3, 1]])
    assert process_label(labels, 0, mapper).tolist() == [2, 0]
    assert process_label(labels, 1, mapper).tolist() == [1, 0]
    assert process_label(labels, "all", mapper).tolist() == [[2, 1], [0, 0]]
    identity = LabelMapper(False)
    assert process_label(torch.tensor([[9, 3, 4]]), [0, 2], identity).tolist() == [[9, 4]]
    assert process_label([torch.tensor([9, 3]), torch.tensor([7, 1])], 1, identity).tolist() == [
        7,
        1,
    ]
    with pytest.raises(AssertionError, match="label_hierarchy_level = 1"):
        process_label(torch.tensor([9, 3]), 1, identity)
    with pytest.raises(ValueError, match="not among dataset_labels"):
        process_label(torch.tensor([4]), 0, LabelMapper(True, [5, 3]))


def test_label_hierarchy_level_trains_on_a_column() -> None:
    x, y = blobs()
    spy = LabelSpy()
    make_trainer(
        dataset=TensorDataset(x, torch.stack([y, y // 2], 1)),
        label_hierarchy_level=1,
        loss_funcs={"metric_loss": spy},
    ).train()
    assert all(set(lab.tolist()) <= {0, 1} for _, lab in spy.calls)
