"""Settings layers, config files (TOML, YAML), the TOML writer; data splits and statistics."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest

from pml.cli._data import LabeledData, dataset_stats, load_path, split_indices
from pml.cli._errors import UsageError
from pml.cli._progress import Progress
from pml.cli._recipe import choose_m
from pml.cli._settings import (
    Settings,
    changed_settings,
    dump_toml,
    load_settings,
    merge_settings,
    read_config,
)


def test_layers_override_in_order_and_arguments_follow_their_class() -> None:
    config = {"loss": "ContrastiveLoss", "loss_args": {"pos_margin": 0.1}, "epochs": 5}
    cli = {"loss_args": ["neg_margin=0.9"], "lr": "0.01"}
    s = merge_settings([config, cli])
    assert s.loss == "ContrastiveLoss" and s.epochs == 5 and s.lr == 0.01
    # the same class: arguments add up; another class: the old ones are dropped
    assert s.loss_args == {"pos_margin": 0.1, "neg_margin": 0.9}
    assert merge_settings([config, {"loss": "NTXentLoss"}]).loss_args == {}
    # the default loss keeps its default margin when only more arguments are given
    assert merge_settings([{"loss_args": ["swap=True"]}]).loss_args == {"margin": 0.1, "swap": True}
    assert merge_settings([{"miner": "none"}]).miner is None
    assert merge_settings([{"miner": "none"}]).miner_args == {}


def test_unknown_and_bad_settings_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="unknown setting 'epoch' in c.toml; did you mean epochs"):
        merge_settings([{"epoch": 3}], where=["c.toml"])
    with pytest.raises(UsageError, match="epochs in settings must be an integer; got 'x'"):
        merge_settings([{"epochs": "x"}])
    with pytest.raises(UsageError, match="test_size .* between 0 and 1"):
        merge_settings([{"test_size": 1.5}])
    with pytest.raises(UsageError, match="loss in settings is required"):
        merge_settings([{"loss": "none"}])
    with pytest.raises(UsageError, match="plot_method .* one of pca, tsne"):
        merge_settings([{"plot_method": "umap"}])


def test_toml_round_trip(tmp_path) -> None:
    s = merge_settings(
        [
            {
                "loss": "MarginLoss",
                "loss_args": {"margin": 0.2, "beta": None, "note": 'a "quoted" \\ path'},
                "miner": None,
                "sampler_args": {"m": 4, "odd key": [1, 2.5, "x"]},
                "optimizer_args": {"betas": (0.8, 0.99), "weight_decay": 1e-5},
                "scheduler": "none",
                "name": "ünïcode",
                "test_data": "/data/test.npz",
            }
        ]
    )
    (tmp_path / "config.toml").write_text(dump_toml(s, "header\nline two"))
    back = load_settings(tmp_path / "config.toml")
    assert back.loss_args == {"margin": 0.2, "beta": None, "note": 'a "quoted" \\ path'}
    assert back.optimizer_args == {"betas": [0.8, 0.99], "weight_decay": 1e-5}
    assert back.sampler_args == {"m": 4, "odd key": [1, 2.5, "x"]}
    back.optimizer_args["betas"] = (0.8, 0.99)
    assert back == s
    # a run folder reads its config.toml
    assert load_settings(tmp_path) == load_settings(tmp_path / "config.toml")


def test_relative_paths_in_a_config_are_relative_to_its_folder(tmp_path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.toml").write_text('data = "feats.npz"\ntest_data = "digits:test"\n')
    raw = read_config(tmp_path / "sub" / "c.toml")
    assert raw["data"] == str(tmp_path / "sub" / "feats.npz")
    assert raw["test_data"] == "digits:test"


def test_yaml_config(tmp_path) -> None:
    pytest.importorskip("yaml")
    (tmp_path / "c.yaml").write_text("loss: ContrastiveLoss\nloss_args:\n  pos_margin: 0.05\n")
    s = load_settings(tmp_path / "c.yaml")
    assert s.loss == "ContrastiveLoss" and s.loss_args == {"pos_margin": 0.05}


def test_yaml_config_without_pyyaml_says_what_to_install(tmp_path, monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_yaml(name, *args, **kwargs):
        if name == "yaml":
            raise ImportError("no yaml")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_yaml)
    (tmp_path / "c.yml").write_text("epochs: 3\n")
    with pytest.raises(UsageError, match=r"needs PyYAML: pip install 'pml-all\[yaml\]'"):
        load_settings(tmp_path / "c.yml")


def test_changed_settings() -> None:
    assert changed_settings(Settings()) == {}
    assert changed_settings(merge_settings([{"epochs": 3}])) == {"epochs": 3}


@pytest.mark.parametrize(
    ("batch_size", "sizes", "m"),
    [
        (64, [122] * 10, 8),  # the digits
        (16, [8] * 6, 4),
        (6, [4] * 3, 3),  # no class smaller than m
        (64, [2] * 100, 2),
        (8, [1, 1], 4),  # nothing fits the smallest class: the smallest m >= 4 that fills
    ],
)
def test_choose_m(batch_size, sizes, m) -> None:
    assert choose_m(batch_size, sizes) == m


def test_split_by_samples_is_stratified_seeded_and_keeps_every_class() -> None:
    labels = np.repeat(np.arange(6), [2, 3, 10, 20, 7, 4]).tolist()
    train, test = split_indices(labels, "samples", 0.3, seed=4)
    assert sorted(train.tolist() + test.tolist()) == list(range(len(labels)))
    y = np.asarray(labels)
    # round(n * 0.3), at least 1 and at most n - 1; 2 to n - 2 for classes of 4 or more
    assert Counter(y[test].tolist()) == {0: 1, 1: 1, 2: 3, 3: 6, 4: 2, 5: 2}
    assert set(y[train].tolist()) == set(range(6))
    again = split_indices(labels, "samples", 0.3, seed=4)
    assert np.array_equal(again[1], test)
    assert not np.array_equal(split_indices(labels, "samples", 0.3, seed=5)[1], test)


def test_split_by_classes() -> None:
    labels = np.repeat(np.arange(10), 3).tolist()
    train, test = split_indices(labels, "classes", 0.3, seed=0)
    y = np.asarray(labels)
    assert len(set(y[test].tolist())) == 3
    assert not set(y[test].tolist()) & set(y[train].tolist())
    with pytest.raises(UsageError, match="at least 2 classes"):
        split_indices([0, 0, 0], "classes", 0.3, seed=0)


def test_dataset_stats_counts_lone_queries() -> None:
    import torch

    ds = LabeledData(torch.zeros(6, 2), [0, 0, 0, 1, 2, 2], {0: "a", 1: "b", 2: "c"}, "x")
    assert dataset_stats(ds) == {
        "items": 6,
        "classes": 3,
        "smallest_class": "b",
        "smallest_class_items": 1,
        "largest_class": "a",
        "largest_class_items": 3,
        "lone_queries": 1,
    }


def test_load_path_digits_splits() -> None:
    s = Settings()
    assert len(load_path("digits:train", s)) == 1257
    assert len(load_path("digits:test", s)) == 540
    assert len(load_path("digits", s)) == 1797
    with pytest.raises(UsageError, match="digits split must be one of"):
        load_path("digits:val", s)


def test_progress_bar_on_a_terminal_and_plain_lines_elsewhere() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    bar = Progress("epoch 1/2", 4, tty)
    for _ in range(4):
        bar.update(postfix="loss 0.5")
    bar.close()
    text = tty.getvalue()
    assert "epoch 1/2 [" in text and "4/4" in text and "loss 0.5" in text
    assert text.endswith("\r\033[K")  # erased: the table row follows on a clean line
    plain = io.StringIO()
    bar = Progress("epoch 1/2", 4, plain, interval=0.0)
    bar.update()
    bar.close()
    assert plain.getvalue() == "epoch 1/2: 1/4\n"
    quiet = io.StringIO()
    bar = Progress("epoch 1/2", 4, quiet)  # short epochs print nothing off a terminal
    bar.update()
    bar.close()
    assert quiet.getvalue() == ""


def test_registry_does_not_offer_bases_or_wrappers_that_need_a_loss_object() -> None:
    from pml.cli._registry import names

    offered = set(names("loss"))
    assert {
        "GenericPairLoss",
        "CrossBatchMemory",
        "MultipleLosses",
        "SelfSupervisedLoss",
    }.isdisjoint(offered)
    assert {"TripletMarginLoss", "ArcFaceLoss", "ProxyAnchorLoss"} <= offered


def test_recipe_fills_class_counts_and_descriptors_dim_from_the_data() -> None:
    # DynamicArcFaceLoss (class_counts) and P2SGradLoss (descriptors_dim) used to stop with
    # "needs ..." although the training data gives both
    import torch
    from torch import nn

    from pml.cli._recipe import build_recipe
    from pml.cli._settings import Settings

    labels = [0] * 5 + [1] * 3 + [2] * 4
    model = nn.Module()
    model.trunk, model.embedder = nn.Linear(4, 6), nn.Identity()
    dynamic = build_recipe(
        Settings(loss="DynamicArcFaceLoss", loss_args={}, miner=None, batch_size=4),
        model,
        labels,
        3,
        6,
        torch.device("cpu"),
    ).loss
    assert dynamic.W.shape == (6, 3 * 3)  # 3 classes x 3 sub-centres
    want = torch.tensor([5, 3, 4], dtype=torch.float64) ** -0.25
    margins = 0.05 + (0.5 - 0.05) * (want - want.min()) / (want.max() - want.min())
    assert torch.allclose(dynamic.margins.double(), margins, atol=1e-6)
    p2s = build_recipe(
        Settings(loss="P2SGradLoss", loss_args={}, miner=None, batch_size=4),
        model,
        labels,
        3,
        6,
        torch.device("cpu"),
    ).loss
    assert p2s.weight.shape == (6, 3)
