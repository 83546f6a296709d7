"""HookContainer: records, best/latest checkpoints, early stopping, split names, resume.

The trainers land separately; these tests drive the hooks with a small stand-in trainer that
has the attributes and methods the hooks use (spec §1 "Attributes useful to hooks", plus
``state_dict``/``load_state_dict`` of the pml trainers).
"""

from __future__ import annotations

import csv
import logging
import sys
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import pml.trainers.logging_presets as logging_presets
from pml.eval import AccuracyCalculator, GlobalEmbeddingSpaceTester
from pml.losses import TripletMarginLoss
from pml.miners import MultiSimilarityMiner
from pml.trainers import EmptyContainer, HookContainer, get_hook_container, get_record_keeper
from pml.trainers._checkpoint import rng_state, set_rng_state

IT = "~iteration~"
TABLE = "accuracies_normalized_GlobalEmbeddingSpaceTester_level_0"


class StandInTrainer:
    """What the hooks see of a trainer: dicts of objects, counters, losses, state."""

    def __init__(self, iterations_per_epoch=3, plateau=False, hooks=None, epoch_hook=None):
        torch.manual_seed(0)
        trunk, embedder = nn.Linear(4, 4), nn.Linear(4, 3)
        self.models = {"trunk": trunk, "embedder": embedder}
        self.loss_funcs = {"metric_loss": TripletMarginLoss(margin=0.1)}
        self.mining_funcs = {"tuple_miner": MultiSimilarityMiner()}
        self.optimizers = {"trunk_optimizer": torch.optim.SGD(trunk.parameters(), lr=0.1)}
        self.lr_schedulers = {}
        if plateau:
            self.lr_schedulers["trunk_scheduler_by_plateau"] = (
                torch.optim.lr_scheduler.ReduceLROnPlateau(
                    self.optimizers["trunk_optimizer"], mode="max", factor=0.5, patience=0
                )
            )
        self.loss_tracker = SimpleNamespace(
            losses={"metric_loss": 0, "total_loss": 0},
            loss_weights={"metric_loss": 1, "total_loss": 1},
        )
        self.losses = self.loss_tracker.losses
        self.loss_names = ["metric_loss", "total_loss"]
        self.iterations_per_epoch = iterations_per_epoch
        self.epoch, self.iteration = 0, 0
        self.end_of_iteration_hook = hooks.end_of_iteration_hook if hooks else None
        self.end_of_epoch_hook = epoch_hook

    def get_global_iteration(self):
        return self.iteration + self.iterations_per_epoch * (self.epoch - 1)

    def step_lr_plateau_schedulers(self, value):
        for key, scheduler in self.lr_schedulers.items():
            if key.endswith("_scheduler_by_plateau"):
                scheduler.step(value)

    def _dicts(self):
        return ("models", "loss_funcs", "mining_funcs", "optimizers", "lr_schedulers")

    def state_dict(self):
        state = {
            name: {k: v.state_dict() for k, v in getattr(self, name).items()}
            for name in self._dicts()
        }
        return {
            **state,
            "grad_scaler": None,
            "rng": rng_state(),
            "sampler": None,
            "epoch": self.epoch,
            "format": "pml-trainers/1",
        }

    def load_state_dict(self, state):
        assert set(state) == {*self._dicts(), "grad_scaler", "rng", "sampler", "epoch", "format"}
        for name in self._dicts():
            for key, obj in getattr(self, name).items():
                obj.load_state_dict(state[name][key])
        set_rng_state(state["rng"])
        self.epoch = state["epoch"]

    def train(self, start_epoch=1, num_epochs=1):
        trunk, embedder = self.models["trunk"], self.models["embedder"]
        for epoch in range(start_epoch, num_epochs + 1):
            self.epoch = epoch
            trunk.train()
            embedder.train()
            for iteration in range(self.iterations_per_epoch):
                self.iteration = iteration
                x, y = torch.randn(8, 4), torch.arange(8) % 2
                emb = embedder(trunk(x))
                loss = self.loss_funcs["metric_loss"](
                    emb, y, self.mining_funcs["tuple_miner"](emb, y)
                )
                self.optimizers["trunk_optimizer"].zero_grad()
                loss.backward()
                self.optimizers["trunk_optimizer"].step()
                self.losses["metric_loss"] = loss.detach()
                self.losses["total_loss"] = loss.detach()
                if self.end_of_iteration_hook is not None:
                    self.end_of_iteration_hook(self)
            for k in self.losses:
                self.losses[k] = 0
            if self.end_of_epoch_hook is not None and self.end_of_epoch_hook(self) is False:
                break


class ScriptedTester(GlobalEmbeddingSpaceTester):
    """A real tester whose precision_at_1 of each epoch is given (to script best epochs)."""

    def __init__(self, scores, **kwargs):
        self.scores = scores
        super().__init__(**kwargs)

    def do_knn_and_accuracies(self, accuracies, embeddings_and_labels, query, references):
        accuracies["precision_at_1_level0"] = self.scores[accuracies["epoch"]]


def calculator_kwargs(hooks, metrics=("precision_at_1",)):
    calculator = AccuracyCalculator(include=metrics, device=torch.device("cpu"))
    return dict(
        end_of_testing_hook=hooks.end_of_testing_hook,
        accuracy_calculator=calculator,
        dataloader_num_workers=0,
        data_device="cpu",
    )


def dataset(seed=1, n=16):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 4, generator=g), torch.arange(n) % 4)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def files(folder):
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------------- the documented example
def test_reference_trainer_example_runs_with_only_its_imports_changed(tmp_path, monkeypatch):
    # the documented example asks for TensorBoard; it runs whether or not it is installed
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    record_keeper, _, _ = logging_presets.get_record_keeper(tmp_path / "logs", tmp_path / "tb")
    hooks = logging_presets.get_hook_container(
        record_keeper, primary_metric="precision_at_1", log_freq=2
    )
    dataset_dict = {"train": dataset(1), "val": dataset(2)}
    tester = GlobalEmbeddingSpaceTester(**calculator_kwargs(hooks))
    end_of_epoch_hook = hooks.end_of_epoch_hook(
        tester, dataset_dict, tmp_path / "models", test_interval=1, patience=1
    )
    trainer = StandInTrainer(hooks=hooks, epoch_hook=end_of_epoch_hook)
    start_epoch = hooks.load_latest_saved_models(trainer, tmp_path / "models")
    assert start_epoch == 1
    trainer.train(start_epoch, num_epochs=2)

    best_epoch, best_accuracy = hooks.get_best_epoch_and_accuracy(tester, "val")
    assert best_epoch in (1, 2) and 0 <= best_accuracy <= 1
    history = hooks.get_loss_history()
    assert history[IT] == [0, 2, 3, 5]  # iterations 0 and 2 of each 3-iteration epoch
    assert len(history["total_loss"]) == 4 and all(v > 0 for v in history["total_loss"])
    logs = tmp_path / "logs"
    assert read_csv(logs / "loss_histories.csv")[0] == [IT, "metric_loss", "total_loss"]
    assert read_csv(logs / "trunk_optimizer_SGD.csv") == [
        [IT, "lr"],
        ["0", "0.1"],
        ["2", "0.1"],
        ["3", "0.1"],
        ["5", "0.1"],
    ]
    val = read_csv(logs / f"{TABLE}_VAL_vs_self.csv")
    assert val[0] == [IT, "epoch", "precision_at_1_level0", "best_epoch", "best_accuracy"]
    assert [row[:2] for row in val[1:]] == [["1", "1"], ["2", "2"]]
    assert (logs / f"{TABLE}_TRAIN_vs_self.csv").is_file()
    assert (logs / "records.jsonl").is_file()
    assert hooks.get_accuracy_history(tester, "val")["epoch"] == [1, 2]
    assert hooks.load_latest_saved_models(trainer, tmp_path / "models") == 3
    assert hooks.load_latest_saved_models(trainer, tmp_path / "models", best=True) == best_epoch + 1


def test_iterations_are_logged_every_log_freq_within_each_epoch(tmp_path):
    record_keeper, _, _ = get_record_keeper(tmp_path)
    hooks = get_hook_container(record_keeper, log_freq=2)
    StandInTrainer(iterations_per_epoch=5, hooks=hooks).train(1, 2)
    assert hooks.get_loss_history()[IT] == [0, 2, 4, 5, 7, 9]  # spec §8
    assert hooks.get_loss_history(loss_names=["total_loss"]).keys() == {"total_loss"}


def test_records_are_flushed_at_every_epoch_end_without_an_evaluation(tmp_path):
    # fix (spec §8 Known issue): the reference writes records only when a tester runs
    record_keeper, _, _ = get_record_keeper(tmp_path / "logs")
    hooks = get_hook_container(record_keeper, primary_metric="precision_at_1", log_freq=1)
    tester = GlobalEmbeddingSpaceTester(**calculator_kwargs(hooks))
    epoch_hook = hooks.end_of_epoch_hook(
        tester, {"val": dataset()}, tmp_path / "m", test_interval=10
    )
    trainer = StandInTrainer(hooks=hooks, epoch_hook=epoch_hook)
    trainer.train(1, 1)
    assert len(read_csv(tmp_path / "logs" / "loss_histories.csv")) == 1 + 3
    assert not list((tmp_path / "m").iterdir())  # no evaluation, no checkpoint
    # the last iteration of an epoch flushes too (a trainer given only the iteration hook)
    trainer.end_of_epoch_hook = None
    trainer.train(2, 2)
    assert len(read_csv(tmp_path / "logs" / "loss_histories.csv")) == 1 + 6


def test_loss_function_tables_recurse_into_distance_and_reducer(tmp_path):
    record_keeper, _, _ = get_record_keeper(tmp_path)
    hooks = get_hook_container(record_keeper, log_freq=3)
    StandInTrainer(hooks=hooks).train(1, 1)
    assert files(tmp_path) == [
        "loss_histories.csv",
        "loss_weights.csv",
        "metric_loss_TripletMarginLoss.csv",
        "metric_loss_TripletMarginLoss__modules_distance_LpDistance.csv",
        "metric_loss_TripletMarginLoss__modules_reducer_AvgNonZeroReducer.csv",
        "records.jsonl",
        "trunk_optimizer_SGD.csv",
        "tuple_miner_MultiSimilarityMiner.csv",
    ]
    assert read_csv(tmp_path / "loss_weights.csv") == [
        [IT, "metric_loss", "total_loss"],
        ["0", "1", "1"],
    ]
    assert read_csv(tmp_path / "metric_loss_TripletMarginLoss.csv") == [
        [IT, "margin"],
        ["0", "0.1"],
    ]


# ---------------------------------------------------------------------- best model, patience
def test_best_and_latest_checkpoints_replace_the_ones_before(tmp_path):
    record_keeper, _, _ = get_record_keeper(tmp_path / "logs")
    hooks = get_hook_container(record_keeper, primary_metric="precision_at_1")
    tester = ScriptedTester({1: 0.1, 2: 0.3, 3: 0.2}, **calculator_kwargs(hooks))
    folder = tmp_path / "models"
    epoch_hook = hooks.end_of_epoch_hook(tester, {"val": dataset()}, folder)
    weights = {}

    def hook(trainer):
        out = epoch_hook(trainer)
        weights[trainer.epoch] = trainer.models["trunk"].weight.detach().clone()
        return out

    trainer = StandInTrainer(hooks=hooks, epoch_hook=hook)
    trainer.train(1, 3)
    keys = ["checkpoint", "embedder", "metric_loss", "trunk", "trunk_optimizer", "tuple_miner"]
    assert files(folder) == sorted([f"{k}_3.pth" for k in keys] + [f"{k}_best2.pth" for k in keys])
    best = torch.load(folder / "trunk_best2.pth", weights_only=True)
    torch.testing.assert_close(best["weight"], weights[2], rtol=0, atol=0)
    full = torch.load(folder / "checkpoint_best2.pth", weights_only=True)
    torch.testing.assert_close(full["models"]["trunk"]["weight"], weights[2], rtol=0, atol=0)
    assert full["epoch"] == 2
    assert hooks.get_best_epoch_and_accuracy(tester, "val") == (2, 0.3)
    val = read_csv(tmp_path / "logs" / f"{hooks.record_group_name(tester, 'val')}.csv")
    assert [row[3:] for row in val[1:]] == [["1", "0.1"], ["2", "0.3"], ["2", "0.3"]]


def test_patience_stops_after_epoch_six_when_the_best_is_four_and_six_ties(tmp_path):
    # spec §8 observed: best at epoch 4, equal accuracy at 6, patience 1 -> stops after 6
    record_keeper, _, _ = get_record_keeper(tmp_path / "logs")
    hooks = get_hook_container(record_keeper, primary_metric="precision_at_1")
    scores = {1: 0.1, 2: 0.2, 3: 0.3, 4: 0.5, 5: 0.4, 6: 0.5, 7: 0.9, 8: 0.9}
    tester = ScriptedTester(scores, **calculator_kwargs(hooks))
    folder = tmp_path / "models"
    epoch_hook = hooks.end_of_epoch_hook(
        tester, {"val": dataset()}, folder, test_interval=1, patience=1
    )
    trainer = StandInTrainer(plateau=True, hooks=hooks, epoch_hook=epoch_hook)
    trainer.train(1, 8)
    assert trainer.epoch == 6
    keys = [
        "embedder",
        "metric_loss",
        "trunk",
        "trunk_optimizer",
        "trunk_scheduler_by_plateau",
        "tuple_miner",
    ]
    expected = [f"{k}_6.pth" for k in keys] + [f"{k}_best4.pth" for k in keys]
    assert files(folder) == sorted([*expected, "checkpoint_6.pth", "checkpoint_best4.pth"])
    assert hooks.get_best_epoch_and_accuracy(tester, "val") == (4, 0.5)
    assert hooks.patience_remaining(5, 4, 1) and not hooks.patience_remaining(6, 4, 1)
    assert hooks.patience_remaining(6, 4, None) and hooks.patience_remaining(6, None, 1)


def test_plateau_schedulers_are_stepped_with_the_validation_metric(tmp_path):
    record_keeper, _, _ = get_record_keeper(tmp_path / "logs")
    hooks = get_hook_container(record_keeper, primary_metric="precision_at_1", log_freq=3)
    tester = ScriptedTester({1: 0.5, 2: 0.5, 3: 0.5}, **calculator_kwargs(hooks))
    epoch_hook = hooks.end_of_epoch_hook(tester, {"val": dataset()}, tmp_path / "m")
    StandInTrainer(plateau=True, hooks=hooks, epoch_hook=epoch_hook).train(1, 3)
    # mode max, patience 0: no improvement at epochs 2 and 3 halves the lr each time
    assert read_csv(tmp_path / "logs" / "trunk_optimizer_SGD.csv")[1:] == [
        ["0", "0.1"],
        ["3", "0.1"],
        ["6", "0.05"],
    ]


# ---------------------------------------------------------------------- construction checks
def test_unknown_primary_metric_is_a_value_error_at_hook_creation(tmp_path):
    record_keeper, _, _ = get_record_keeper(tmp_path)
    hooks = get_hook_container(record_keeper)  # mean_average_precision_at_r
    tester = GlobalEmbeddingSpaceTester(**calculator_kwargs(hooks, metrics=("precision_at_1",)))
    with pytest.raises(
        ValueError, match=r"primary_metric 'mean_average_precision_at_r'.*precision_at_1"
    ):
        hooks.end_of_epoch_hook(tester, {"val": dataset()}, tmp_path / "m")


def test_bad_hook_arguments_name_the_argument(tmp_path):
    record_keeper, _, _ = get_record_keeper(tmp_path)
    with pytest.raises(ValueError, match="log_freq"):
        HookContainer(record_keeper, log_freq=0)
    with pytest.raises(TypeError, match="save_models"):
        HookContainer(record_keeper, save_models="yes")
    hooks = HookContainer(record_keeper, primary_metric="precision_at_1")
    tester = GlobalEmbeddingSpaceTester(**calculator_kwargs(hooks))
    with pytest.raises(ValueError, match="test_interval"):
        hooks.end_of_epoch_hook(tester, {"val": dataset()}, tmp_path / "m", test_interval=0)
    with pytest.raises(ValueError, match="patience"):
        hooks.end_of_epoch_hook(tester, {"val": dataset()}, tmp_path / "m", patience=-1)
    with pytest.raises(ValueError, match="missing from dataset_dict"):
        hooks.end_of_epoch_hook(
            tester, {"val": dataset()}, tmp_path / "m", splits_to_eval=[("val", ["gallery"])]
        )
    # a list of datasets used to be read as split names ("'val' is not one of [...]")
    with pytest.raises(TypeError, match=r"^dataset_dict must be Mapping; got list"):
        hooks.end_of_epoch_hook(tester, [dataset()], tmp_path / "m")


# ---------------------------------------------------------------------- split names
def test_query_and_gallery_split_names_work(tmp_path):
    record_keeper, _, _ = get_record_keeper(tmp_path / "logs")
    hooks = get_hook_container(
        record_keeper, primary_metric="precision_at_1", validation_split_name="query"
    )
    tester = GlobalEmbeddingSpaceTester(**calculator_kwargs(hooks))
    dataset_dict = {"query": dataset(1), "gallery": dataset(2)}
    splits = [("query", ["gallery"])]
    epoch_hook = hooks.end_of_epoch_hook(
        tester, dataset_dict, tmp_path / "m", splits_to_eval=splits
    )
    StandInTrainer(hooks=hooks, epoch_hook=epoch_hook).train(1, 2)
    assert hooks.record_group_name(tester, "query") == f"{TABLE}_QUERY_vs_GALLERY"
    assert (tmp_path / "logs" / f"{TABLE}_QUERY_vs_GALLERY.csv").is_file()
    best_epoch, _ = hooks.get_best_epoch_and_accuracy(tester, "query")
    assert best_epoch in (1, 2)
    assert (tmp_path / "m" / f"trunk_best{best_epoch}.pth").is_file()


def test_default_validation_split_with_other_split_names_does_not_crash(tmp_path, caplog):
    # fix: the reference looks up "val" and fails with KeyError 'val' after the first epoch
    record_keeper, _, _ = get_record_keeper(tmp_path / "logs")
    hooks = get_hook_container(record_keeper, primary_metric="precision_at_1")
    tester = GlobalEmbeddingSpaceTester(**calculator_kwargs(hooks))
    dataset_dict = {"query": dataset(1), "gallery": dataset(2)}
    with caplog.at_level(logging.WARNING, logger="PML"):
        epoch_hook = hooks.end_of_epoch_hook(
            tester, dataset_dict, tmp_path / "m", splits_to_eval=[("query", ["gallery"])]
        )
    assert "'query'" in caplog.text
    StandInTrainer(hooks=hooks, epoch_hook=epoch_hook).train(1, 1)
    assert hooks.get_best_epoch_and_accuracy(tester, "query")[0] == 1
    assert (tmp_path / "m" / "trunk_best1.pth").is_file()


def test_validation_split_that_is_not_evaluated_is_a_value_error_at_hook_creation(tmp_path):
    record_keeper, _, _ = get_record_keeper(tmp_path)
    hooks = get_hook_container(
        record_keeper, primary_metric="precision_at_1", validation_split_name="test"
    )
    tester = GlobalEmbeddingSpaceTester(**calculator_kwargs(hooks))
    dataset_dict = {"train": dataset(1), "val": dataset(2), "test": dataset(3)}
    with pytest.raises(ValueError, match=r"validation_split_name 'test'.*\['train', 'val'\]"):
        hooks.end_of_epoch_hook(
            tester,
            dataset_dict,
            tmp_path / "m",
            splits_to_eval=[("train", ["train"]), ("val", ["test"])],
        )


# ---------------------------------------------------------------------- resume
def run(folder, num_epochs, start_fresh=True, stop_after=None):
    """Train with hooks logging to ``folder``; resume from its checkpoint unless fresh."""
    record_keeper, _, _ = get_record_keeper(folder / "logs")
    hooks = get_hook_container(record_keeper, primary_metric="precision_at_1", log_freq=2)
    tester = GlobalEmbeddingSpaceTester(**calculator_kwargs(hooks))
    epoch_hook = hooks.end_of_epoch_hook(
        tester, {"val": dataset()}, folder / "models", test_interval=2
    )
    trainer = StandInTrainer(hooks=hooks, epoch_hook=epoch_hook)
    start = 1 if start_fresh else hooks.load_latest_saved_models(trainer, folder / "models")
    trainer.train(start, stop_after or num_epochs)
    return trainer, hooks, tester, start


def test_a_resumed_run_continues_its_records_and_weights_exactly(tmp_path):
    whole, _, _, _ = run(tmp_path / "a", 4)
    # killed after epoch 3: records of epoch 3 were flushed, the last checkpoint is epoch 2
    run(tmp_path / "b", 4, stop_after=3)
    resumed, hooks, tester, start = run(tmp_path / "b", 4, start_fresh=False)
    assert start == 3
    torch.testing.assert_close(
        resumed.models["trunk"].weight, whole.models["trunk"].weight, rtol=0, atol=0
    )
    a, b = tmp_path / "a" / "logs", tmp_path / "b" / "logs"
    assert files(a) == files(b)
    for name in files(a):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert hooks.get_loss_history()[IT] == [0, 2, 3, 5, 6, 8, 9, 11]
    assert hooks.get_accuracy_history(tester, "val")["epoch"] == [2, 4]


def test_load_falls_back_to_per_object_files_and_strips_module_prefixes(tmp_path):
    trained, hooks, _, _ = run(tmp_path, 2)
    folder = tmp_path / "models"
    (folder / "checkpoint_2.pth").unlink()
    wrapped = {f"module.{k}": v for k, v in torch.load(folder / "embedder_2.pth").items()}
    torch.save(wrapped, folder / "embedder_2.pth")  # as saved from a DataParallel model
    fresh = StandInTrainer()
    assert hooks.load_latest_saved_models(fresh, folder) == 3
    for key in ("trunk", "embedder"):
        for name, value in trained.models[key].state_dict().items():
            torch.testing.assert_close(fresh.models[key].state_dict()[name], value, rtol=0, atol=0)
    assert (
        fresh.optimizers["trunk_optimizer"].state_dict()
        == trained.optimizers["trunk_optimizer"].state_dict()
    )


def test_load_with_nothing_saved_returns_epoch_one(tmp_path):
    record_keeper, _, _ = get_record_keeper(tmp_path / "logs")
    hooks = get_hook_container(record_keeper)
    assert hooks.load_latest_saved_models(StandInTrainer(), tmp_path / "none") == 1


def test_per_object_checkpoint_with_pickled_code_is_refused(tmp_path):
    record_keeper, _, _ = get_record_keeper(tmp_path / "logs")
    hooks = get_hook_container(record_keeper)
    torch.save(
        {"weight": torch.zeros(4, 4), "bias": SimpleNamespace(a=1)}, tmp_path / "trunk_1.pth"
    )
    with pytest.raises(Exception, match="(?i)weights_only|unpickl"):
        hooks.load_latest_saved_models(StandInTrainer(), tmp_path)


# ---------------------------------------------------------------------- queries
class StubTester:
    """The tester attributes the query helpers read (as in the reference observation)."""

    def __init__(self):
        self.accuracy_calculator = AccuracyCalculator(include=("precision_at_1", "r_precision"))
        self.label_hierarchy_level = 0
        self.reference_split_names = {"val": ["val"]}
        self.all_accuracies = {}

    def description_suffixes(self, base):
        return base + "_T"

    def accuracies_keyname(self, metric, label_hierarchy_level=0, average=False):
        return f"AVERAGE_{metric}" if average else f"{metric}_level{label_hierarchy_level}"


def test_query_helpers_match_the_reference_observation(tmp_path):
    record_keeper, _, _ = get_record_keeper(tmp_path)
    hooks = get_hook_container(record_keeper, primary_metric="precision_at_1")
    tester = StubTester()
    best = []
    for epoch, acc in [(-1, 0.9), (1, 0.1), (2, 0.3), (3, 0.2), (4, 0.5), (5, 0.4), (6, 0.5)]:
        tester.all_accuracies = {
            "val": {"epoch": epoch, "precision_at_1_level0": acc, "r_precision_level0": acc / 2}
        }
        hooks.end_of_testing_hook(tester)
        best.append(hooks.get_best_epoch_and_accuracy(tester, "val"))
    assert best == [(None, 0), (1, 0.1), (2, 0.3), (2, 0.3), (4, 0.5), (4, 0.5), (4, 0.5)]
    key = "precision_at_1_level0"
    assert hooks.get_accuracies_of_epoch(tester, "val", 4, select_all=False) == [
        {"epoch": 4, key: 0.5}
    ]
    assert hooks.get_accuracies_of_epoch(tester, "val", 4)[0]["r_precision_level0"] == 0.25
    rows, k = hooks.get_accuracies_of_best_epoch(tester, "val", select_all=False)
    assert (rows, k) == ([{"epoch": 4, key: 0.5}, {"epoch": 6, key: 0.5}], key)
    rows, _ = hooks.get_accuracies_of_best_epoch(tester, "val", ignore_epoch=())
    assert [r["epoch"] for r in rows] == [-1]
    epochs = [-1, 1, 2, 3, 4, 5, 6]
    assert hooks.get_accuracy_history(tester, "val") == {
        "epoch": epochs,
        key: [0.9, 0.1, 0.3, 0.2, 0.5, 0.4, 0.5],
    }
    assert list(
        hooks.get_accuracy_history(tester, "val", metrics=("r_precision", "precision_at_1"))
    ) == ["epoch", "r_precision_level0", key]
    assert list(hooks.get_accuracy_history(tester, "val", return_all_metrics=True)) == [
        IT,
        "epoch",
        key,
        "r_precision_level0",
        "best_epoch",
        "best_accuracy",
    ]
    assert hooks.get_accuracy_history(tester, "val", return_all_metrics=True)["best_epoch"][1:] == [
        1,
        2,
        2,
        4,
        4,
        4,
    ]
    assert hooks.get_curr_primary_metric(tester, "val") == 0.5
    tester.reference_split_names["zz"] = ["zz"]
    assert hooks.get_best_epoch_and_accuracy(tester, "zz") == (None, 0)
    assert hooks.get_accuracy_history(tester, "zz") == {}
    assert get_hook_container(get_record_keeper(tmp_path / "empty")[0]).get_loss_history() == {}
    with pytest.raises(ValueError, match="validation_split_name 'zz'"):
        hooks.get_curr_primary_metric(tester, "zz")


def test_record_group_names(tmp_path):
    record_keeper, _, _ = get_record_keeper(tmp_path)
    tester = StubTester()
    tester.reference_split_names = {"val": ["val", "train"]}
    hooks = get_hook_container(record_keeper)
    assert hooks.base_record_group_name(tester) == "accuracies_T"
    assert hooks.record_group_name(tester, "val") == "accuracies_T_VAL_vs_TRAIN_and_VAL"
    prefixed = get_hook_container(record_keeper, record_group_name_prefix="pre")
    assert prefixed.record_group_name(tester, "val") == "pre_accuracies_T_VAL_vs_TRAIN_and_VAL"
    assert hooks.record_group_name(tester, "test") == "accuracies_T_TEST_vs_self"
    assert HookContainer.optimizer_custom_attr_func(
        torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.3)
    ) == {"lr": 0.3}


def test_run_tester_separately_skips_splits_already_evaluated(tmp_path):
    record_keeper, _, _ = get_record_keeper(tmp_path)
    hooks = get_hook_container(record_keeper, primary_metric="precision_at_1")
    tester = GlobalEmbeddingSpaceTester(**calculator_kwargs(hooks))
    trunk, embedder = nn.Linear(4, 4), nn.Identity()
    dataset_dict = {"val": dataset()}
    assert hooks.run_tester_separately(tester, dataset_dict, -1, trunk, embedder) is True
    assert hooks.run_tester_separately(tester, dataset_dict, -1, trunk, embedder) is False
    assert hooks.get_accuracies_of_epoch(tester, "val", -1)
    assert hooks.get_best_epoch_and_accuracy(tester, "val") == (None, 0)  # -1 is ignored
    assert hooks.run_tester_separately(
        tester, dataset_dict, -1, trunk, embedder, skip_eval_if_already_done=False
    )
    assert len(hooks.get_accuracies_of_epoch(tester, "val", -1)) == 2


def test_empty_container_when_there_is_no_record_keeper(caplog):
    with caplog.at_level(logging.WARNING, logger="PML"):
        hooks = get_hook_container(None)
    assert isinstance(hooks, EmptyContainer) and "No record_keeper" in caplog.text
    assert hooks.end_of_epoch_hook(1, 2, 3) is None
    assert hooks.end_of_iteration_hook is None and hooks.end_of_testing_hook is None
    with pytest.raises(TypeError, match="record_keeper"):
        HookContainer(None)
