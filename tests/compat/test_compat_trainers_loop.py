"""pml.trainers vs the reference's trainers: same losses and weights; the fixed crashes."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, SequentialSampler, TensorDataset

rt = pytest.importorskip("pytorch_metric_learning.trainers")
import pytorch_metric_learning.losses as rl  # noqa: E402
import pytorch_metric_learning.miners as rm  # noqa: E402
import pytorch_metric_learning.samplers as rs  # noqa: E402

import pml.losses as pl  # noqa: E402
import pml.miners as pm  # noqa: E402
import pml.samplers as ps  # noqa: E402
import pml.trainers as pt  # noqa: E402

pytestmark = pytest.mark.compat


def blobs(n_per_class: int = 8, num_classes: int = 4, dim: int = 8):
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(num_classes, dim, generator=g, dtype=torch.float64) * 3
    y = torch.arange(n_per_class * num_classes) % num_classes
    return centers[y] + torch.randn(len(y), dim, generator=g, dtype=torch.float64), y


class PairDataset(Dataset):
    def __init__(self) -> None:
        self.x, self.y = blobs()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.x[i] * 0.9, self.y[i]


class Log:
    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def __call__(self, trainer) -> None:
        self.rows.append({k: float(v) for k, v in trainer.losses.items()})


def run(lib, kind: str, models: dict[str, nn.Module], epochs: int = 2) -> Log:
    """Train a fresh copy of ``models`` with library ``lib`` ("pml" or "ref")."""
    T, L, M = (pt, pl, pm) if lib == "pml" else (rt, rl, rm)
    models = copy.deepcopy(models)
    params = [p for m in models.values() for p in m.parameters()]
    log = Log()
    args = {
        "models": models,
        "optimizers": {"trunk_optimizer": torch.optim.SGD(params, lr=0.1)},
        "batch_size": 8,
        "data_device": torch.device("cpu"),
        "dataloader_num_workers": 0,
        "end_of_iteration_hook": log,
    }
    x, y = blobs()
    # the reference's DAML builds its synthetic batch in float32 (float64 models crash)
    dataset = TensorDataset(x.float() if kind == "daml" else x, y)
    torch.manual_seed(0)
    if kind == "metric_loss_only":
        trainer = T.MetricLossOnly(
            loss_funcs={"metric_loss": L.ContrastiveLoss()},
            mining_funcs={"tuple_miner": M.MultiSimilarityMiner(epsilon=0.5)},
            dataset=dataset,
            sampler=SequentialSampler(dataset),
            **args,
        )
    elif kind == "with_classifier":
        trainer = T.TrainWithClassifier(
            loss_funcs={
                "metric_loss": L.TripletMarginLoss(),
                "classifier_loss": nn.CrossEntropyLoss(),
            },
            loss_weights={"metric_loss": 1, "classifier_loss": 0.5},
            dataset=dataset,
            sampler=SequentialSampler(dataset),
            **args,
        )
    elif kind == "cascaded":
        trainer = T.CascadedEmbeddings(
            [2, 2],
            loss_funcs={
                "metric_loss_0": L.ContrastiveLoss(),
                "metric_loss_1": L.TripletMarginLoss(),
            },
            dataset=dataset,
            sampler=SequentialSampler(dataset),
            **args,
        )
    elif kind == "two_stream":
        pairs = PairDataset()
        trainer = T.TwoStreamMetricLoss(
            loss_funcs={"metric_loss": L.TripletMarginLoss()},
            dataset=pairs,
            sampler=SequentialSampler(pairs),
            **args,
        )
    elif kind == "daml":
        trainer = T.DeepAdversarialMetricLearning(
            1,
            1,
            2,
            loss_funcs={
                "metric_loss": L.TripletMarginLoss(),
                "synth_loss": L.TripletMarginLoss(),
                "g_adv_loss": L.TripletMarginLoss(),
            },
            dataset=dataset,
            sampler=SequentialSampler(dataset),
            **{
                **args,
                "optimizers": {
                    "trunk_optimizer": torch.optim.SGD(models["trunk"].parameters(), lr=0.1),
                    "generator_optimizer": torch.optim.SGD(
                        models["generator"].parameters(), lr=0.1
                    ),
                },
            },
        )
    elif kind == "m_per_class":
        np.random.seed(3)
        sampler_cls = (ps if lib == "pml" else rs).MPerClassSampler
        trainer = T.MetricLossOnly(
            loss_funcs={"metric_loss": L.ContrastiveLoss()},
            dataset=dataset,
            sampler=sampler_cls(dataset.tensors[1], 2, batch_size=8, length_before_new_iter=32),
            **args,
        )
    trainer.train(1, epochs)
    log.models = models  # type: ignore[attr-defined]
    return log


def toy_models(kind: str) -> dict[str, nn.Module]:
    torch.manual_seed(1)
    models = {
        "trunk": nn.Sequential(nn.Linear(8, 16), nn.ReLU()).double(),
        "embedder": nn.Linear(16, 4).double(),
    }
    if kind == "with_classifier":
        models["classifier"] = nn.Linear(4, 4).double()
    if kind == "daml":
        models["generator"] = nn.Linear(48, 16)
        return {k: m.float() for k, m in models.items()}
    return models


@pytest.mark.parametrize(
    "kind",
    ["metric_loss_only", "with_classifier", "cascaded", "two_stream", "daml", "m_per_class"],
)
def test_same_losses_and_weights_as_the_reference(kind: str) -> None:
    models = toy_models(kind)
    ours = run("pml", kind, models, epochs=3 if kind == "daml" else 2)
    theirs = run("ref", kind, models, epochs=3 if kind == "daml" else 2)
    assert len(ours.rows) == len(theirs.rows) > 0
    rtol, atol = (1e-4, 1e-6) if kind == "daml" else (1e-9, 1e-12)
    for a, b in zip(ours.rows, theirs.rows, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=rtol, abs=atol), k
    for key in models:
        for p, q in zip(
            ours.models[key].parameters(), theirs.models[key].parameters(), strict=True
        ):
            torch.testing.assert_close(p, q, rtol=rtol, atol=atol)


def test_hierarchical_sampler_batches_are_2d_here_5d_in_the_reference() -> None:
    x, y = blobs()
    labels = torch.stack([y, y // 2], dim=1)
    shapes = {}
    for lib, T in (("pml", pt), ("ref", rt)):
        trunk = nn.Linear(8, 4).double()
        seen = []

        def spy(t, seen=seen):
            seen.append(t.losses["metric_loss"])

        class Flat(nn.Module):
            def __init__(self, trunk=trunk) -> None:
                super().__init__()
                self.trunk = trunk

            def forward(self, data, seen=seen):
                seen.append(tuple(data.shape))
                return self.trunk(data.reshape(-1, 8))

        sampler = ps.HierarchicalSampler(
            labels, batch_size=8, samples_per_class=2, batches_per_super_tuple=8
        )
        trainer = T.MetricLossOnly(
            models={"trunk": Flat()},
            optimizers={},
            batch_size=8,
            loss_funcs={"metric_loss": (pl if lib == "pml" else rl).ContrastiveLoss()},
            dataset=TensorDataset(x, labels),
            sampler=sampler,
            data_device=torch.device("cpu"),
            dataloader_num_workers=0,
        )
        try:
            trainer.train()
        except Exception as exc:  # the reference cannot train on 5-D label batches
            seen.append(type(exc).__name__)
        shapes[lib] = seen[0] if seen else None
    assert shapes["pml"] == (8, 8)
    assert shapes["ref"] == (8, 8, 8)  # a batch of 8 batches


def test_learnable_loss_without_optimizer_ref_silently_untrained_pml_error() -> None:
    x, y = blobs()
    common = {
        "optimizers": {},
        "batch_size": 8,
        "dataset": TensorDataset(x.float(), y),
        "data_device": torch.device("cpu"),
        "dataloader_num_workers": 0,
    }
    loss = rl.ProxyAnchorLoss(num_classes=4, embedding_size=4)
    before = loss.proxies.detach().clone()
    rt.MetricLossOnly(
        models={"trunk": nn.Linear(8, 4)}, loss_funcs={"metric_loss": loss}, **common
    ).train()
    assert torch.equal(before, loss.proxies)  # the reference never trains it
    ours = pl.ContrastiveLoss()
    ours.W = nn.Parameter(torch.ones(1))  # any trainable parameter
    with pytest.raises(ValueError, match="metric_loss_optimizer"):
        pt.MetricLossOnly(
            models={"trunk": nn.Linear(8, 4)}, loss_funcs={"metric_loss": ours}, **common
        )


def test_all_loss_weights_zero_ref_crashes_pml_skips_backward() -> None:
    x, y = blobs()
    for T, L in ((rt, rl), (pt, pl)):
        trunk = nn.Linear(8, 4).double()
        trainer = T.MetricLossOnly(
            models={"trunk": trunk},
            optimizers={"trunk_optimizer": torch.optim.SGD(trunk.parameters(), lr=0.1)},
            batch_size=8,
            loss_funcs={"metric_loss": L.ContrastiveLoss()},
            loss_weights={"metric_loss": 0},
            dataset=TensorDataset(x, y),
            data_device=torch.device("cpu"),
            dataloader_num_workers=0,
        )
        if T is rt:
            with pytest.raises(AttributeError):
                trainer.train()
        else:
            trainer.train()


def test_string_labels_ref_crashes_pml_maps_them() -> None:
    x, y = blobs()
    names = ["a", "b", "c", "d"]

    class Strings(Dataset):
        def __len__(self) -> int:
            return len(y)

        def __getitem__(self, i):
            return x[i], names[int(y[i])]

    dataset_labels = [names[int(i)] for i in y]
    for T, L in ((rt, rl), (pt, pl)):
        trainer = T.MetricLossOnly(
            models={"trunk": nn.Linear(8, 4).double()},
            optimizers={},
            batch_size=8,
            loss_funcs={"metric_loss": L.ContrastiveLoss()},
            dataset=Strings(),
            data_device=torch.device("cpu"),
            dataloader_num_workers=0,
            set_min_label_to_zero=True,
            dataset_labels=dataset_labels,
        )
        if T is rt:
            with pytest.raises(np.exceptions.AxisError):
                trainer.train()
        else:
            trainer.train()
