"""Bad input to pml train: one line saying what to fix, exit status 2, no traceback, no run."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pml.cli.__main__ import main

SMALL = ["--batch-size", "8", "--hidden-size", "8", "--epochs", "1"]


def features(path: Path, labels: np.ndarray, dims: int = 4) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, features=rng.normal(size=(len(labels), dims)), labels=labels)
    return path


def images(root: Path, counts: dict[str, int]) -> Path:
    rng = np.random.default_rng(0)
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 255, size=(6, 6, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def fails(argv: list[str], runs: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``pml train`` expecting exit 2; returns the one-line message (checked)."""
    rc = main(["train", *argv, "--runs-dir", str(runs)])
    captured = capsys.readouterr()
    assert rc == 2, captured
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("pml: error: ")
    assert "Traceback" not in captured.err + captured.out
    assert not runs.exists() or not any(runs.iterdir())  # no run folder at all
    return lines[0]


def test_unknown_loss_suggests_the_closest_names(tmp_path, capsys) -> None:
    msg = fails(["--loss", "TripletMarginLos"], tmp_path / "runs", capsys)
    assert "unknown loss 'TripletMarginLos'; did you mean TripletMarginLoss" in msg


def test_unknown_miner_suggests_the_closest_names(tmp_path, capsys) -> None:
    msg = fails(["--miner", "MultiSimilarityMine"], tmp_path / "runs", capsys)
    assert "unknown miner 'MultiSimilarityMine'; did you mean MultiSimilarityMiner" in msg


def test_unknown_sampler_and_optimizer(tmp_path, capsys) -> None:
    assert "did you mean MPerClassSampler" in fails(
        ["--sampler", "MPerClass"], tmp_path / "runs", capsys
    )
    assert "did you mean Adam" in fails(["--optimizer", "Adamm"], tmp_path / "runs", capsys)


def test_bad_keyword_argument_names_the_class(tmp_path, capsys) -> None:
    msg = fails(["--loss-arg", "marginn=0.2"], tmp_path / "runs", capsys)
    assert "TripletMarginLoss takes no argument 'marginn'; did you mean margin? it takes" in msg
    msg = fails(["--miner-arg", "epsilonn=0.2"], tmp_path / "runs", capsys)
    assert "MultiSimilarityMiner takes no argument 'epsilonn'; did you mean epsilon?" in msg
    msg = fails(["--optimizer-arg", "momentun=0.2"], tmp_path / "runs", capsys)
    assert "Adam takes no argument 'momentun'" in msg


def test_bad_keyword_value_names_the_class(tmp_path, capsys) -> None:
    msg = fails(["--loss-arg", "margin='wide'"], tmp_path / "runs", capsys)
    assert "TripletMarginLoss" in msg and "margin" in msg


def test_keyword_argument_without_equals(tmp_path, capsys) -> None:
    msg = fails(["--loss-arg", "margin"], tmp_path / "runs", capsys)
    assert "--loss-arg expects key=value; got 'margin'" in msg


def test_missing_data_folder(tmp_path, capsys) -> None:
    msg = fails(["--data", str(tmp_path / "photos")], tmp_path / "runs", capsys)
    assert f"data {str(tmp_path / 'photos')!r} does not exist" in msg
    assert "a folder with one sub-folder of images per class" in msg


def test_data_folder_without_class_folders(tmp_path, capsys) -> None:
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "flat" / "a.png")
    msg = fails(["--data", str(tmp_path / "flat")], tmp_path / "runs", capsys)
    assert "holds no class folder" in msg


def test_empty_class_folder(tmp_path, capsys) -> None:
    root = images(tmp_path / "imgs", {"cat": 4, "dog": 4})
    (root / "eel").mkdir()
    msg = fails(["--data", str(root)], tmp_path / "runs", capsys)
    assert f"class folder {str(root / 'eel')!r} holds no image" in msg
    assert "add images or remove the folder" in msg


def test_class_with_one_sample(tmp_path, capsys) -> None:
    root = images(tmp_path / "imgs", {"cat": 4, "dog": 1})
    msg = fails(["--data", str(root)], tmp_path / "runs", capsys)
    assert "class 'dog'" in msg and "has a single sample" in msg
    data = features(tmp_path / "f.npz", np.array([0, 0, 0, 1, 1, 1, 2]))
    msg = fails(["--data", str(data)], tmp_path / "runs", capsys)
    assert "class '2'" in msg and "at least 2" in msg


def test_unreadable_image(tmp_path, capsys) -> None:
    root = images(tmp_path / "imgs", {"cat": 4, "dog": 4})
    (root / "dog" / "broken.png").write_bytes(b"not a png at all")
    msg = fails(["--data", str(root)], tmp_path / "runs", capsys)
    assert f"cannot read image {str(root / 'dog' / 'broken.png')!r}" in msg
    assert "fix or remove the file" in msg


def test_features_file_with_mismatched_lengths(tmp_path, capsys) -> None:
    path = tmp_path / "f.npz"
    np.savez(path, features=np.zeros((10, 4)), labels=np.arange(9) % 3)
    msg = fails(["--data", str(path)], tmp_path / "runs", capsys)
    assert "has 10 feature rows but labels of shape (9,): give exactly one label per row" in msg


def test_features_file_problems(tmp_path, capsys) -> None:
    runs = tmp_path / "runs"
    np.save(tmp_path / "x.npy", np.zeros((6, 3)))
    assert "comes without labels: pass --labels" in fails(
        ["--data", str(tmp_path / "x.npy")], runs, capsys
    )
    np.savez(tmp_path / "k.npz", a=np.zeros((6, 3)), b=np.zeros(6), c=np.zeros(6))
    assert "expected 'features' and 'labels'" in fails(
        ["--data", str(tmp_path / "k.npz")], runs, capsys
    )
    np.savez(tmp_path / "fl.npz", features=np.zeros((6, 3)), labels=np.zeros(6))
    assert "must be integers" in fails(["--data", str(tmp_path / "fl.npz")], runs, capsys)
    bad = np.zeros((6, 3))
    bad[2, 1] = np.nan
    np.savez(tmp_path / "nan.npz", features=bad, labels=np.arange(6) % 2)
    assert "1 NaN or infinite values" in fails(["--data", str(tmp_path / "nan.npz")], runs, capsys)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    assert "cannot read features file" in fails(
        ["--data", str(tmp_path / "junk.npz")], runs, capsys
    )


def test_npy_features_with_labels_beside_them(tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.normal(size=(24, 3)))
    np.save(tmp_path / "x_labels.npy", np.arange(24) % 3)
    runs = tmp_path / "runs"
    assert main(["train", "--data", str(tmp_path / "x.npy"), *SMALL, "--runs-dir", str(runs)]) == 0
    assert len(list(runs.iterdir())) == 1


def test_bad_settings(tmp_path, capsys) -> None:
    runs = tmp_path / "runs"
    assert "batch_size in the options must be >= 2" in fails(["--batch-size", "1"], runs, capsys)
    assert "lr in the options must be a positive number" in fails(["--lr", "-1"], runs, capsys)
    assert "invalid choice: 'fp8'" in fails(["--mixed-precision", "fp8"], runs, capsys)
    assert "unrecognized arguments: --lossy" in fails(["--lossy", "x"], runs, capsys)
    assert "device in the options must be auto, cpu, cuda or cuda:N" in fails(
        ["--device", "tpu"], runs, capsys
    )
    data = features(tmp_path / "f.npz", np.arange(12) % 3)
    assert "batch size 64 is larger than the training split (6 items)" in fails(
        ["--data", str(data)], runs, capsys
    )
    assert "--model must be mlp or package.module:factory" in fails(
        ["--model", "resnet"], runs, capsys
    )
    assert "cannot import 'no_such_module_xyz'" in fails(
        ["--model", "no_such_module_xyz:make"], runs, capsys
    )


def test_bad_config_files(tmp_path, capsys) -> None:
    runs = tmp_path / "runs"
    (tmp_path / "a.toml").write_text('losss = "ContrastiveLoss"\n')
    msg = fails(["--config", str(tmp_path / "a.toml")], runs, capsys)
    assert "unknown setting 'losss'" in msg and "did you mean loss" in msg
    (tmp_path / "b.toml").write_text("epochs = \n")
    assert "cannot read config file" in fails(["--config", str(tmp_path / "b.toml")], runs, capsys)
    assert "is missing" in fails(["--config", str(tmp_path / "none.toml")], runs, capsys)


def test_multi_line_parser_error_of_a_yaml_config_is_one_line(tmp_path, capsys) -> None:
    # PyYAML's message spans four lines; the error must still be one line
    pytest.importorskip("yaml")
    (tmp_path / "c.yaml").write_text("epochs: [1\n")
    msg = fails(["--config", str(tmp_path / "c.yaml")], tmp_path / "runs", capsys)
    assert "cannot read config file" in msg and "c.yaml" in msg


def test_a_run_that_fails_midway_is_not_complete(tmp_path, capsys, monkeypatch) -> None:
    from pml.cli import _training

    calls = []
    original = _training.Evaluator.model

    def failing(self, model):
        calls.append(1)
        if len(calls) == 3:  # epoch 0, epoch 1, then the failure at epoch 2
            raise RuntimeError("disk on fire")
        return original(self, model)

    monkeypatch.setattr(_training.Evaluator, "model", failing)
    data = features(tmp_path / "f.npz", np.arange(30) % 3)
    runs = tmp_path / "runs"
    with pytest.raises(RuntimeError, match="disk on fire"):
        main(["train", "--data", str(data), *SMALL, "--epochs", "3", "--runs-dir", str(runs)])
    (run,) = runs.iterdir()
    assert not (run / "COMPLETE").exists() and not (run / "report.md").exists()
    assert (run / "checkpoints" / "last.pth").is_file()
    monkeypatch.setattr(_training.Evaluator, "model", original)
    assert main(["train", "--resume", str(run)]) == 0
    assert (run / "COMPLETE").is_file()


def test_python_m_pml_cli_exits_2_without_traceback(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    runs = tmp_path / "runs"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pml.cli",
            "train",
            "--loss",
            "Contrastive",
            "--runs-dir",
            str(runs),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(
        "pml: error: unknown loss 'Contrastive'; did you mean ContrastiveLoss"
    )
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not runs.exists()


def test_held_out_data_without_two_items_of_a_class(tmp_path, capsys) -> None:
    train = features(tmp_path / "train.npz", np.arange(24) % 3)
    test = features(tmp_path / "test.npz", np.arange(3))
    msg = fails(["--data", str(train), "--test-data", str(test)], tmp_path / "runs", capsys)
    assert "has no two items of one class, so retrieval cannot be measured" in msg


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--optimizer", "LBFGS"], "optimizer LBFGS is not supported by pml train: it needs a"),
        (["--optimizer", "SparseAdam"], "optimizer SparseAdam is not supported by pml train"),
        (["--scheduler", "LambdaLR"], "scheduler LambdaLR is not supported by pml train"),
        (["--scheduler", "LRScheduler"], "scheduler LRScheduler is not supported by pml train"),
        (["--loss", "VICRegLoss"], "loss VICRegLoss is not supported by pml train"),
        (["--reducer", "DoNothingReducer"], "reducer DoNothingReducer is not supported"),
        (["--sampler", "TuplesToWeightsSampler"], "sampler TuplesToWeightsSampler is not"),
        (
            ["--miner", "EmbeddingsAlreadyPackagedAsTriplets"],
            "miner EmbeddingsAlreadyPackagedAsTriplets is not supported by pml train",
        ),
    ],
)
def test_classes_that_cannot_train_here_are_refused_with_the_reason(
    argv, expected, tmp_path, capsys
) -> None:
    # LBFGS and SparseAdam used to fail in the first step with a traceback and a run folder
    msg = fails([*SMALL, *argv], tmp_path / "runs", capsys)
    assert expected in msg and "choose from" in msg


def test_base_classes_are_not_offered_as_choices(tmp_path, capsys) -> None:
    msg = fails(["--optimizer", "Adamm"], tmp_path / "runs", capsys)
    msg = fails(["--optimizer", "NoSuchOptimizer"], tmp_path / "runs", capsys)
    assert "choose from" in msg and "Optimizer," not in msg and "LBFGS" not in msg


def test_missing_required_argument_says_which_option_gives_it(tmp_path, capsys) -> None:
    msg = fails([*SMALL, "--scheduler", "StepLR"], tmp_path / "runs", capsys)
    assert msg.endswith("StepLR needs step_size; pass --scheduler-arg step_size=VALUE")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["--loss", "InstanceLoss"],
            "InstanceLoss with MultiSimilarityMiner fails on a first batch of",
        ),
        (["--reducer", "PerAnchorReducer"], "PerAnchorReducer does not support triplet losses"),
        (["--reducer", "DivisorReducer"], "MissingDivisorError: DivisorReducer needs a 'divisor'"),
    ],
)
def test_recipe_that_fails_on_a_first_batch_is_refused_before_the_run(
    argv, expected, tmp_path, capsys
) -> None:
    # these used to fail inside the first training step, with a traceback, after the run
    # folder had been written
    msg = fails([*SMALL, *argv], tmp_path / "runs", capsys)
    assert expected in msg
    if argv[1] == "InstanceLoss":
        assert msg.endswith("(try --miner none)")


def test_first_batch_check_changes_nothing_the_run_computes(tmp_path) -> None:
    # the check runs the model in eval mode and restores the random state: two runs, one
    # whose check is skipped, end with the same weights
    from unittest import mock

    import pml.cli._training as training_module

    def train(runs: Path, skip: bool) -> list[dict[str, str]]:
        patch = mock.patch.object(training_module, "check_first_batch", lambda *a, **k: None)
        with patch if skip else mock.MagicMock():
            assert main(["train", *SMALL, "--epochs", "2", "--runs-dir", str(runs)]) == 0
        (run,) = runs.iterdir()
        rows = list(csv.DictReader((run / "metrics.csv").read_text().splitlines()))
        return [{k: v for k, v in row.items() if "second" not in k} for row in rows]

    assert train(tmp_path / "a", skip=False) == train(tmp_path / "b", skip=True)
