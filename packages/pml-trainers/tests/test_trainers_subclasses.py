"""TrainWithClassifier, CascadedEmbeddings, DeepAdversarialMetricLearning, TwoStreamMetricLoss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from pml.core.validation import InvalidArgumentError
from pml.losses import ContrastiveLoss, TripletMarginLoss
from pml.miners import HDCMiner, MultiSimilarityMiner
from pml.trainers import (
    CascadedEmbeddings,
    DeepAdversarialMetricLearning,
    MetricLossOnly,
    TrainWithClassifier,
    TwoStreamMetricLoss,
)
from pml.trainers._daml import NegativeLpDistance


def blobs(n_per_class: int = 16, num_classes: int = 4, dim: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_classes, dim, generator=g) * 3
    y = torch.arange(n_per_class * num_classes) % num_classes
    x = centers[y] + torch.randn(len(y), dim, generator=g)
    return x, y


def adam(*modules: nn.Module, lr: float = 1e-2) -> torch.optim.Optimizer:
    return torch.optim.Adam([p for m in modules for p in m.parameters()], lr=lr)


class LossLog:
    """end_of_iteration_hook: every loss of every iteration, as floats."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def __call__(self, trainer) -> None:
        self.rows.append(
            {
                k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
                for k, v in trainer.losses.items()
            }
        )
        self.rows[-1]["epoch"] = trainer.epoch

    def mean(self, name: str, epoch: int) -> float:
        return float(np.mean([r[name] for r in self.rows if r["epoch"] == epoch]))


def full_batch_loss(trainer, loss_fn=None) -> float:
    """A fixed loss of the whole blob dataset's embeddings (eval mode, no grad)."""
    x, y = blobs()
    trainer.set_to_eval()
    with torch.no_grad():
        emb = trainer.compute_embeddings(x)
        return float((loss_fn or ContrastiveLoss())(emb, y))


def common(**kwargs):
    args = {
        "batch_size": 16,
        "dataset": TensorDataset(*blobs()),
        "data_device": "cpu",
        "dataloader_num_workers": 0,
    }
    args.update(kwargs)
    return args


def test_metric_loss_only_with_miner_loss_falls() -> None:
    trunk, embedder = nn.Sequential(nn.Linear(8, 16), nn.ReLU()), nn.Linear(16, 4)
    log = LossLog()
    trainer = MetricLossOnly(
        **common(
            models={"trunk": trunk, "embedder": embedder},
            optimizers={"trunk_optimizer": adam(trunk), "embedder_optimizer": adam(embedder)},
            loss_funcs={"metric_loss": ContrastiveLoss()},
            mining_funcs={"tuple_miner": MultiSimilarityMiner(epsilon=0.5)},
            end_of_iteration_hook=log,
        )
    )
    before = full_batch_loss(trainer)
    trainer.train(1, 5)
    assert full_batch_loss(trainer) < 0.7 * before


def test_train_with_classifier_trains_both_losses() -> None:
    trunk, embedder, classifier = (
        nn.Sequential(nn.Linear(8, 16), nn.ReLU()),
        nn.Linear(16, 4),
        nn.Linear(4, 4),
    )
    log = LossLog()
    trainer = TrainWithClassifier(
        **common(
            models={"trunk": trunk, "embedder": embedder, "classifier": classifier},
            optimizers={"trunk_optimizer": adam(trunk, embedder, classifier)},
            loss_funcs={
                "metric_loss": ContrastiveLoss(),
                "classifier_loss": nn.CrossEntropyLoss(),
            },
            loss_weights={"metric_loss": 1, "classifier_loss": 0.5},
            end_of_iteration_hook=log,
        )
    )
    before = full_batch_loss(trainer)
    trainer.train(1, 8)
    assert log.mean("classifier_loss", 8) < 0.5 * log.mean("classifier_loss", 1)
    assert full_batch_loss(trainer) < 0.7 * before
    row = log.rows[0]
    assert row["total_loss"] == pytest.approx(row["metric_loss"] + row["classifier_loss"])


def test_train_with_classifier_without_classifier_warns_and_skips(caplog) -> None:
    trunk = nn.Linear(8, 4)
    log = LossLog()
    with caplog.at_level("WARNING", logger="PML"):
        trainer = TrainWithClassifier(
            **common(
                models={"trunk": trunk},
                optimizers={"trunk_optimizer": adam(trunk)},
                loss_funcs={"metric_loss": ContrastiveLoss()},
                end_of_iteration_hook=log,
            )
        )
    assert 'models is missing "classifier"' in caplog.text
    trainer.train()
    assert all(r["classifier_loss"] == 0 for r in log.rows)


def test_cascaded_embeddings_slices_and_hdc_miner() -> None:
    trunk = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 6))
    classifier_1 = nn.Linear(2, 4)
    log = LossLog()
    hdc = HDCMiner(filter_percentage=0.5)
    seen = []
    original = hdc.forward

    def spy(*args, **kwargs):
        seen.append(hdc.was_set_externally)
        return original(*args, **kwargs)

    hdc.forward = spy
    trainer = CascadedEmbeddings(
        [4, 2],
        **common(
            models={"trunk": trunk, "classifier_1": classifier_1},
            optimizers={"trunk_optimizer": adam(trunk, classifier_1)},
            loss_funcs={
                "metric_loss_0": ContrastiveLoss(),
                "metric_loss_1": ContrastiveLoss(),
                "classifier_loss_1": nn.CrossEntropyLoss(),
            },
            mining_funcs={"tuple_miner_0": MultiSimilarityMiner(epsilon=0.5), "tuple_miner_1": hdc},
            end_of_iteration_hook=log,
        ),
    )
    assert trainer.embedding_sizes == [4, 2]
    trainer.train(1, 5)
    assert seen and all(seen)  # mined from the previous slice's tuple
    assert not hdc.was_set_externally  # reset afterwards
    for name in ("metric_loss_0", "metric_loss_1", "classifier_loss_1"):
        assert log.mean(name, 5) < log.mean(name, 1), name


def test_cascaded_embeddings_schema() -> None:
    trunk = nn.Linear(8, 4)
    args = common(models={"trunk": trunk}, optimizers={"trunk_optimizer": adam(trunk)})
    with pytest.raises(InvalidArgumentError, match="loss_funcs keys must be one of metric_loss_"):
        CascadedEmbeddings([4], loss_funcs={"metric_loss": ContrastiveLoss()}, **args)
    with pytest.raises(InvalidArgumentError, match="'subset_batch_miner'"):
        CascadedEmbeddings(
            [4],
            loss_funcs={"metric_loss_0": ContrastiveLoss()},
            mining_funcs={"subset_batch_miner": lambda e, y: None},
            **args,
        )
    with pytest.raises(TypeError, match="embedding_sizes"):
        CascadedEmbeddings(4, loss_funcs={"metric_loss_0": ContrastiveLoss()}, **args)
    too_wide = CascadedEmbeddings([4, 2], loss_funcs={"metric_loss_0": ContrastiveLoss()}, **args)
    with pytest.raises(ValueError, match="add up to 6"):
        too_wide.train()


def test_cascaded_embeddings_slice_without_loss_is_skipped() -> None:
    # fix: the reference raises KeyError for a slice without "metric_loss_<i>"
    trunk = nn.Linear(8, 6)
    log = LossLog()
    CascadedEmbeddings(
        [4, 2],
        **common(
            models={"trunk": trunk},
            optimizers={"trunk_optimizer": adam(trunk)},
            loss_funcs={"metric_loss_0": ContrastiveLoss()},
            end_of_iteration_hook=log,
        ),
    ).train()
    assert set(log.rows[0]) == {"metric_loss_0", "total_loss", "epoch"}


class PairDataset(Dataset):
    """(anchor, posneg, label): two noisy views of the same blob point."""

    def __init__(self) -> None:
        self.x, self.y = blobs()
        g = torch.Generator().manual_seed(1)
        self.noise = torch.randn(len(self.y), 8, generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.x[i] + 0.3 * self.noise[i], self.y[i]


def test_two_stream_metric_loss_falls() -> None:
    trunk = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    log = LossLog()
    trainer = TwoStreamMetricLoss(
        **common(
            models={"trunk": trunk},
            optimizers={"trunk_optimizer": adam(trunk)},
            loss_funcs={"metric_loss": TripletMarginLoss(margin=0.2)},
            dataset=PairDataset(),
            end_of_iteration_hook=log,
        )
    )
    before = full_batch_loss(trainer)
    trainer.train(1, 5)
    assert full_batch_loss(trainer) < 0.7 * before
    assert log.mean("total_loss", 5) < log.mean("total_loss", 1)


def test_two_stream_all_triplets_and_shift() -> None:
    trunk = nn.Linear(8, 4)
    trainer = TwoStreamMetricLoss(
        **common(
            models={"trunk": trunk},
            optimizers={},
            loss_funcs={"metric_loss": TripletMarginLoss()},
            dataset=PairDataset(),
        )
    )
    emb = (torch.randn(4, 4), torch.randn(4, 4))
    a, p, n = trainer.maybe_mine_embeddings(emb, torch.tensor([0, 1, 3, 3]))
    assert len(a) == 14
    assert list(zip(a.tolist(), p.tolist(), n.tolist(), strict=True))[:4] == [
        (0, 0, 1),
        (0, 0, 2),
        (0, 0, 3),
        (1, 1, 0),
    ]
    with pytest.raises(InvalidArgumentError, match="'subset_batch_miner'"):
        TwoStreamMetricLoss(
            **common(
                models={"trunk": trunk},
                optimizers={},
                loss_funcs={"metric_loss": TripletMarginLoss()},
                mining_funcs={"subset_batch_miner": lambda e, y: None},
                dataset=PairDataset(),
            )
        )


def test_two_stream_with_a_two_item_dataset_is_a_clear_error() -> None:
    trunk = nn.Linear(8, 4)
    trainer = TwoStreamMetricLoss(
        **common(
            models={"trunk": trunk}, optimizers={}, loss_funcs={"metric_loss": TripletMarginLoss()}
        )
    )
    with pytest.raises(ValueError, match=r"\(anchors, posnegs, labels\)"):
        trainer.train()


def daml(metric_alone_epochs=1, g_alone_epochs=1, log=None, **kwargs):
    trunk = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
    embedder = nn.Linear(16, 4)
    generator = nn.Sequential(nn.Linear(48, 16))
    args = common(
        models={"trunk": trunk, "embedder": embedder, "generator": generator},
        optimizers={
            "trunk_optimizer": adam(trunk),
            "embedder_optimizer": adam(embedder),
            "generator_optimizer": adam(generator),
        },
        loss_funcs={
            "metric_loss": TripletMarginLoss(margin=0.2),
            "synth_loss": TripletMarginLoss(margin=0.2),
            "g_adv_loss": TripletMarginLoss(margin=0.2),
        },
        end_of_iteration_hook=log,
    )
    args.update(kwargs)
    return DeepAdversarialMetricLearning(metric_alone_epochs, g_alone_epochs, 2, **args)


def test_daml_setup_mutates_g_adv_loss_and_mining_funcs() -> None:
    mining = {}
    trainer = daml(mining_funcs=mining)
    g_adv = trainer.loss_funcs["g_adv_loss"]
    assert g_adv.margin == -0.2 and isinstance(g_adv.distance, NegativeLpDistance)
    assert "synth_packaged_as_triplets" in mining
    assert trainer.loss_names == [
        "metric_loss",
        "synth_loss",
        "g_adv_loss",
        "g_hard_loss",
        "g_reg_loss",
        "total_loss",
    ]
    with pytest.raises(AssertionError, match="TripletMarginLoss"):
        daml(
            loss_funcs={
                "metric_loss": ContrastiveLoss(),
                "synth_loss": ContrastiveLoss(),
                "g_adv_loss": ContrastiveLoss(),
            }
        )
    with pytest.raises(InvalidArgumentError, match='models must contain "generator"'):
        daml(models={"trunk": nn.Linear(8, 4)}, optimizers={})
    with pytest.raises(InvalidArgumentError, match='loss_funcs must contain "metric_loss"'):
        daml(loss_funcs={"synth_loss": ContrastiveLoss(), "g_adv_loss": TripletMarginLoss()})


def test_negative_lp_distance_turns_triplet_loss_adversarial() -> None:
    loss = TripletMarginLoss(margin=-0.1, distance=NegativeLpDistance(normalize_embeddings=False))
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 0.0]])  # d_ap = 1, d_an = 0.5
    triplet = (torch.tensor([0]), torch.tensor([1]), torch.tensor([2]))
    # relu(d_an - d_ap - margin) with the original margin 0.1: relu(0.5 - 1 - 0.1) = 0
    assert float(loss(emb, None, triplet)) == 0.0
    emb = torch.tensor([[0.0, 0.0], [0.5, 0.0], [1.0, 0.0]])  # d_ap = 0.5, d_an = 1
    assert float(loss(emb, None, triplet)) == pytest.approx(0.4)


def test_daml_phases_weights_gradients_and_steps() -> None:
    log = LossLog()
    phases = []

    def hook(trainer):
        log(trainer)
        phases.append(
            (
                trainer.epoch,
                dict(trainer.loss_weights),
                trainer.models["trunk"][0].weight.requires_grad,
                trainer.models["generator"][0].weight.requires_grad,
            )
        )

    trainer = daml(log=None, end_of_iteration_hook=hook)
    gen_before = trainer.models["generator"][0].weight.detach().clone()
    trunk_before = trainer.models["trunk"][0].weight.detach().clone()
    trainer.train(1, 1)  # metric alone
    assert torch.equal(gen_before, trainer.models["generator"][0].weight)
    assert not torch.equal(trunk_before, trainer.models["trunk"][0].weight)
    trunk_before = trainer.models["trunk"][0].weight.detach().clone()
    trainer.train(2, 2)  # generator alone
    assert not torch.equal(gen_before, trainer.models["generator"][0].weight)
    assert torch.equal(trunk_before, trainer.models["trunk"][0].weight)
    trainer.train(3, 3)  # both
    by_epoch = {e: (w, t, g) for e, w, t, g in phases}
    w1, t1, g1 = by_epoch[1]
    assert w1["metric_loss"] == 1 and w1["g_adv_loss"] == 0 and w1["synth_loss"] == 0
    assert t1 and not g1
    w2, t2, g2 = by_epoch[2]
    assert w2["metric_loss"] == 0 and w2["g_hard_loss"] == 1 and w2["synth_loss"] == 0
    assert not t2 and g2
    w3, t3, g3 = by_epoch[3]
    assert all(w3[k] == 1 for k in ("metric_loss", "synth_loss", "g_adv_loss", "g_reg_loss"))
    assert w3["total_loss"] == 0 and t3 and g3
    rows3 = [r for r in log.rows if r["epoch"] == 3]
    assert all(r["synth_loss"] > 0 or r["g_adv_loss"] >= 0 for r in rows3)
    assert all(r["g_hard_loss"] > 0 and r["g_reg_loss"] > 0 for r in rows3)


def test_daml_metric_loss_falls() -> None:
    log = LossLog()
    trainer = daml(metric_alone_epochs=0, g_alone_epochs=0, log=log)
    trainer.train(1, 5)
    assert log.mean("metric_loss", 5) < log.mean("metric_loss", 1)


def test_daml_trains_float64_models() -> None:
    # fix: the reference interleaves the synthetic batch into a float32 tensor (float64 crashes)
    log = LossLog()
    trainer = daml(metric_alone_epochs=0, g_alone_epochs=0, log=log)
    for model in trainer.models.values():
        model.double()
    trainer.dataset = TensorDataset(blobs()[0].double(), blobs()[1])
    trainer.train()
    assert all(np.isfinite(r["g_adv_loss"]) and r["g_hard_loss"] > 0 for r in log.rows)


def test_daml_without_random_triplets_gives_zero_losses_not_nan() -> None:
    # fix: no (anchor, positive, negative) in a batch gave NaN mean squared errors
    log = LossLog()
    x, _ = blobs()
    trainer = daml(
        metric_alone_epochs=0,
        g_alone_epochs=0,
        log=log,
        dataset=TensorDataset(x, torch.arange(len(x))),  # every label unique: no positives
    )
    trainer.train()
    assert all(r["g_hard_loss"] == 0 and r["g_reg_loss"] == 0 for r in log.rows)
