"""pml train end to end on tiny fabricated data: run folder, config re-run, exact resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pml.cli.__main__ import main
from pml.cli._run_folder import load_model, read_checkpoint
from pml.cli._settings import Settings, load_settings

SMALL = ["--batch-size", "16", "--hidden-size", "16", "--embedding-size", "8"]


def clustered_features(path: Path, classes: int = 6, per_class: int = 12, dims: int = 8) -> Path:
    """Separable clusters hidden in noise: a features .npz of classes * per_class rows."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(classes, dims)) * 3
    labels = np.repeat(np.arange(classes), per_class)
    features = centres[labels] + rng.normal(size=(len(labels), dims))
    np.savez(path, features=features.astype(np.float32), labels=labels)
    return path


def image_folder(root: Path, classes: int = 3, per_class: int = 6, size: int = 10) -> Path:
    """root/<class>/<i>.png: one bright quadrant per class, plus noise."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
            r, k = divmod(c, 2)
            pixels[r * 5 : r * 5 + 5, k * 5 : k * 5 + 5] = 250
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def only_run(runs: Path) -> Path:
    folders = [p for p in runs.iterdir() if p.is_dir()]
    assert len(folders) == 1, folders
    return folders[0]


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def model_weights(run: Path, name: str = "last.pth") -> dict[str, torch.Tensor]:
    state = read_checkpoint(run / "checkpoints" / name)
    return {
        f"{part}.{k}": v for part in ("trunk", "embedder") for k, v in state["models"][part].items()
    }


def test_features_file_run_writes_every_file(tmp_path, capsys) -> None:
    data = clustered_features(tmp_path / "feats.npz")
    runs = tmp_path / "runs"
    rc = main(["train", "--data", str(data), "--epochs", "2", "--runs-dir", str(runs), *SMALL])
    out = " ".join(capsys.readouterr().out.split())
    assert rc == 0
    run = only_run(runs)
    assert run.name.endswith("-feats-TripletMarginLoss")
    for name in (
        "config.toml",
        "env.json",
        "metrics.csv",
        "metrics.jsonl",
        "checkpoints/last.pth",
        "checkpoints/best.pth",
        "report.md",
        "plots/loss.png",
        "plots/accuracy.png",
        "plots/embeddings_pca.png",
        "COMPLETE",
    ):
        assert (run / name).is_file(), name
    assert not list(run.rglob(".*.tmp"))  # atomic writes leave no temporary file
    # console: non-default settings, data statistics, baseline, epoch table, run folder
    assert "epochs = 2" in out and "batch_size = 16" in out
    assert "train 48 items, 6 classes, smallest class 0 (8 items)" in out
    assert "test 24 items, 6 classes, smallest class 0 (4 items), 0 lone queries" in out
    assert "untrained model P@1" in out and "raw inputs" in out
    assert "MAP@R" in out and f"run folder: {run}" in out
    # metrics: epoch 0 (untrained) then one row per epoch, identical in csv and jsonl
    history = rows(run)
    assert [r["epoch"] for r in history] == [0, 1, 2]
    assert history[0]["loss"] is None and history[1]["loss"] > 0
    with (run / "metrics.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in table] == [0, 1, 2]
    for r, j in zip(table, history):
        assert float(r["mean_average_precision_at_r"]) == j["mean_average_precision_at_r"]
    # env.json: versions of torch and every pml package, seed, device
    env = json.loads((run / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["seed"] == 0 and env["device"] == "cpu"
    assert set(env["pml"]) >= {"pml-core", "pml-losses", "pml-trainers", "pml-all"}
    # report: data statistics, settings, table, results, protocol, time, citation
    report = (run / "report.md").read_text()
    for text in ("## Data", "`epochs` = `2`", "| epoch |", "MAP@R", "Evaluation protocol"):
        assert text in report
    assert "peak memory" in report and "Weinberger and Saul" in report
    # the best checkpoint is the epoch of the best MAP@R
    best = max(history[1:], key=lambda r: r["mean_average_precision_at_r"])
    assert read_checkpoint(run / "checkpoints" / "best.pth")["epoch"] == best["epoch"]


@pytest.mark.parametrize(
    ("loss", "loss_args", "param", "shape"),
    [
        ("MarginLoss", ["--loss-arg", "learn_beta=True"], "beta", (6,)),
        ("ArcFaceLoss", [], "W", (8, 6)),
    ],
)
def test_checkpoints_load_weights_only_with_loss_parameters(
    tmp_path, capsys, loss, loss_args, param, shape
) -> None:
    from pml.cli._registry import names

    if loss not in names("loss"):
        pytest.skip(f"{loss} is not in this pml.losses yet")
    data = clustered_features(tmp_path / "feats.npz")
    runs = tmp_path / "runs"
    args = ["train", "--data", str(data), "--epochs", "1", "--runs-dir", str(runs), *SMALL]
    assert main([*args, "--loss", loss, *loss_args, "--miner", "none"]) == 0
    run = only_run(runs)
    state = torch.load(run / "checkpoints" / "last.pth", weights_only=True)
    # the loss's parameters (num_classes/embedding_size filled in): trained by their own
    # optimizer and saved
    assert state["loss_funcs"]["metric_loss"][param].shape == shape
    assert "metric_loss_optimizer" in state["optimizers"]
    assert state["cli"]["format"] == "pml-cli/1"


def test_image_folder_run(tmp_path, capsys) -> None:
    root = image_folder(tmp_path / "images", classes=3, per_class=6)
    runs = tmp_path / "runs"
    args = ["train", "--data", str(root), "--image-size", "8", "--epochs", "1"]
    rc = main([*args, "--runs-dir", str(runs), "--batch-size", "6", "--hidden-size", "8"])
    out = capsys.readouterr().out
    assert rc == 0
    run = only_run(runs)
    assert (run / "COMPLETE").is_file()
    assert "MLP 3x8x8 -> 8 -> 8 -> 64" in out
    model, settings = load_model(run)
    assert settings.image_size == 8
    x = torch.rand(2, 3, 8, 8)
    assert model(x).shape == (2, 64)


def test_digits_default_recipe_few_epochs(tmp_path, capsys) -> None:
    runs = tmp_path / "runs"
    assert main(["train", "--epochs", "2", "--runs-dir", str(runs)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "digits (scikit-learn's 8x8 digits), split by samples" in out
    assert "train 1257 items, 10 classes" in out and "test 540 items, 10 classes" in out
    assert "TripletMarginLoss(margin=0.1) + MultiSimilarityMiner(epsilon=0.1)" in out
    assert "MPerClassSampler(m=8)" in out
    history = rows(only_run(runs))
    # raw pixels give MAP@R ~0.53; the untrained MLP less; two epochs already far more
    assert history[0]["mean_average_precision_at_r"] < 0.6
    assert history[-1]["mean_average_precision_at_r"] > 0.8


def test_config_toml_repeats_the_run(tmp_path, capsys) -> None:
    data = clustered_features(tmp_path / "feats.npz")
    runs = tmp_path / "runs"
    args = ["train", "--data", str(data), "--epochs", "2", "--runs-dir", str(runs), *SMALL]
    assert main([*args, "--name", "first", "--loss-arg", "margin=0.2", "--seed", "3"]) == 0
    first = only_run(runs)
    assert main(["train", "--config", str(first / "config.toml"), "--name", "second"]) == 0
    second = next(p for p in runs.iterdir() if p.name.endswith("second"))
    assert load_settings(second / "config.toml") == Settings(
        **{**load_settings(first / "config.toml").to_dict(), "name": "second"}
    )
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in rows(first)]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in rows(second)]
    for key, value in model_weights(first).items():
        assert torch.equal(value, model_weights(second)[key]), key


def test_resume_after_a_kill_gives_the_weights_of_an_uninterrupted_run(tmp_path, capsys) -> None:
    data = clustered_features(tmp_path / "feats.npz")
    runs = tmp_path / "runs"
    args = ["train", "--data", str(data), "--epochs", "4", "--runs-dir", str(runs), *SMALL]
    assert main([*args, "--name", "whole"]) == 0
    # the hidden --stop-after-epoch stops like a kill after epoch 2's checkpoint
    assert main([*args, "--name", "killed", "--stop-after-epoch", "2"]) == 0
    killed = next(p for p in runs.iterdir() if p.name.endswith("killed"))
    whole = next(p for p in runs.iterdir() if p.name.endswith("whole"))
    assert not (killed / "COMPLETE").exists() and not (killed / "report.md").exists()
    assert [r["epoch"] for r in rows(killed)] == [0, 1, 2]
    out = capsys.readouterr().out
    assert f"continue with: pml train --resume {killed}" in out
    assert main(["train", "--resume", str(killed)]) == 0
    assert (killed / "COMPLETE").is_file()
    for key, value in model_weights(whole).items():
        assert torch.equal(value, model_weights(killed)[key]), key
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in rows(whole)]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in rows(killed)]
    # and the resumed run's optimizer and loss states match too
    a = read_checkpoint(whole / "checkpoints" / "last.pth")
    b = read_checkpoint(killed / "checkpoints" / "last.pth")
    for k, v in a["optimizers"]["trunk_optimizer"]["state"].items():
        assert torch.equal(v["exp_avg"], b["optimizers"]["trunk_optimizer"]["state"][k]["exp_avg"])


def test_resume_with_more_epochs_keeps_the_schedule(tmp_path, capsys) -> None:
    """--epochs 2, then --resume --epochs 4 == one 4-epoch run with T_max pinned to 2."""
    data = clustered_features(tmp_path / "feats.npz")
    runs = tmp_path / "runs"
    args = ["train", "--data", str(data), "--runs-dir", str(runs), *SMALL]
    assert main([*args, "--epochs", "4", "--scheduler-arg", "T_max=2", "--name", "whole"]) == 0
    assert main([*args, "--epochs", "2", "--name", "short"]) == 0
    short = next(p for p in runs.iterdir() if p.name.endswith("short"))
    whole = next(p for p in runs.iterdir() if p.name.endswith("whole"))
    assert (short / "COMPLETE").is_file()
    assert main(["train", "--resume", str(short), "--epochs", "4"]) == 0
    assert (short / "COMPLETE").is_file()
    settings = load_settings(short / "config.toml")
    assert settings.epochs == 4 and settings.scheduler_args == {"T_max": 2}
    for key, value in model_weights(whole).items():
        assert torch.equal(value, model_weights(short)[key]), key


def test_resume_refuses_other_settings_and_finished_runs(tmp_path, capsys) -> None:
    data = clustered_features(tmp_path / "feats.npz")
    runs = tmp_path / "runs"
    args = ["train", "--data", str(data), "--epochs", "1", "--runs-dir", str(runs), *SMALL]
    assert main(args) == 0
    run = only_run(runs)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--lr", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "--lr cannot change when resuming" in err
    assert main(["train", "--resume", str(run)]) == 2
    assert "is complete (1 of 1 epochs); pass --epochs N" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_user_model_factory(tmp_path, capsys, monkeypatch) -> None:
    (tmp_path / "my_nets.py").write_text(
        "import torch\n"
        "def make(input_shape, embedding_size):\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(),\n"
        "        torch.nn.Linear(input_shape[0], embedding_size))\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    data = clustered_features(tmp_path / "feats.npz")
    args = ["train", "--data", str(data), "--epochs", "1", "--runs-dir", "runs", *SMALL]
    assert main([*args, "--model", "my_nets:make"]) == 0
    run = only_run(tmp_path / "runs")
    model, settings = load_model(run)
    assert settings.model == "my_nets:make"
    assert model(torch.randn(3, 8)).shape == (3, 8)
    assert isinstance(model.embedder, torch.nn.Identity)


def test_tsne_plot_and_other_recipe_options(tmp_path, capsys) -> None:
    data = clustered_features(tmp_path / "feats.npz")
    runs = tmp_path / "runs"
    args = ["train", "--data", str(data), "--epochs", "1", "--runs-dir", str(runs), *SMALL]
    extra = [
        "--loss", "ContrastiveLoss", "--loss-arg", "pos_margin=0.1",
        "--miner", "BatchHardMiner", "--sampler", "none", "--distance", "CosineSimilarity",
        "--reducer", "MeanReducer", "--optimizer", "SGD", "--optimizer-arg", "momentum=0.9",
        "--scheduler", "ReduceLROnPlateau", "--plot-method", "tsne",
    ]  # fmt: skip
    assert main([*args, *extra]) == 0
    run = only_run(runs)
    assert (run / "plots" / "embeddings_tsne.png").is_file()
    state = read_checkpoint(run / "checkpoints" / "last.pth")
    assert "trunk_scheduler_by_plateau" in state["lr_schedulers"]
    report = (run / "report.md").read_text()
    assert "CosineSimilarity" in report and "Hadsell" in report


def test_load_model_from_a_run_or_a_checkpoint_file_alone(tmp_path, capsys) -> None:
    import shutil

    from pml.cli._errors import UsageError

    data = clustered_features(tmp_path / "feats.npz")
    runs = tmp_path / "runs"
    args = ["train", "--data", str(data), "--epochs", "1", "--runs-dir", str(runs), *SMALL]
    assert main([*args, "--data-protocol", "classes"]) == 0
    run = only_run(runs)
    model, settings = load_model(run)
    assert not model.training and settings.data_protocol == "classes"
    alone = tmp_path / "model.pth"
    shutil.copy(run / "checkpoints" / "best.pth", alone)
    again, settings_again = load_model(alone)
    assert settings_again == settings
    x = torch.randn(5, 8)
    assert torch.equal(model(x), again(x))
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(UsageError, match="is not a checkpoint of pml train"):
        load_model(tmp_path / "other.pth")
    with pytest.raises(UsageError, match="neither a run folder nor a checkpoint"):
        load_model(tmp_path / "missing")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        # a batch sampler: one epoch = as many batches as one pass over the training items
        (["--sampler", "MPerClassBatchSampler"], "1 epochs of 19 batches of 64"),
        # coverage: the pass's own length (every item of every class once)
        (["--sampler-arg", "coverage=True"], "1 epochs of 20 batches of 64"),
    ],
)
def test_batch_sampler_and_coverage_recipes_get_one_pass_per_epoch(
    tmp_path, capsys, args, expected
) -> None:
    runs = tmp_path / "runs"
    assert main(["train", "--epochs", "1", "--runs-dir", str(runs), *args]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert expected in out, out[-2000:]
    assert len(rows(only_run(runs))) == 2
