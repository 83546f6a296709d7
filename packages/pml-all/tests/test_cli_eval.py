"""``pml eval``: the run's protocol by default, any AccuracyCalculator metric, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pml.cli._cmd_eval import DEFAULT_METRICS, metric_names
from pml.cli._data import load_data
from pml.cli._settings import load_settings
from pml.distances import CosineSimilarity, LpDistance
from pml.eval import AccuracyCalculator, CustomKNN


def _expected(h, run: Path, features, labels, metrics, k="max_bin_count", distance=None, ref=None):
    emb = torch.from_numpy(h.embed_directly(run, features))
    calc = AccuracyCalculator(
        include=tuple(metrics), k=k, knn_func=CustomKNN(distance or LpDistance()), device="cpu"
    )
    if ref is None:
        return calc.get_accuracy(emb, torch.as_tensor(labels))
    ref_emb = torch.from_numpy(h.embed_directly(run, ref[0]))
    return calc.get_accuracy(emb, torch.as_tensor(labels), ref_emb, torch.as_tensor(ref[1]))


def _test_split(run: Path):
    test = load_data(load_settings(run / "config.toml")).test
    return test.data.numpy(), np.asarray(test.labels)


def _json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def _one_line_error(code: int, out: str, err: str) -> str:
    assert code == 2, (code, out, err)
    assert err.startswith("pml: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def test_eval_defaults_to_the_run_protocol_on_its_held_out_split(helpers, fake_run, pml) -> None:
    code, out, err = pml("eval", fake_run, "--device", "cpu")
    assert code == 0, err
    features, labels = _test_split(fake_run)
    expected = _expected(helpers, fake_run, features, labels, DEFAULT_METRICS)
    for name in DEFAULT_METRICS:
        line = next(x for x in out.splitlines() if x.startswith(name + " "))
        assert float(line.split()[-1]) == pytest.approx(expected[name], abs=5e-5)
    assert "best.pth (epoch 1)" in out
    assert f"{len(labels)} items, 6 classes" in out
    assert "k = max_bin_count" in out and "LpDistance(normalize_embeddings=True)" in out


def test_eval_json_with_every_metric(helpers, fake_run, pml) -> None:
    code, out, err = pml("eval", fake_run, "--metric", "all", "--json", "--device", "cpu")
    assert code == 0, err
    values = _json(out)
    assert sorted(values) == sorted(metric_names())
    assert set(metric_names()) >= {"precision_at_1", "mean_reciprocal_rank", "NMI", "AMI"}
    features, labels = _test_split(fake_run)
    expected = _expected(
        helpers, fake_run, features, labels, [m for m in values if m not in ("NMI", "AMI")]
    )
    for name, value in expected.items():
        assert values[name] == pytest.approx(value, abs=1e-6)
    assert 0.0 <= values["NMI"] <= 1.0


def test_eval_metric_is_repeatable_and_takes_short_names(fake_run, pml) -> None:
    code, out, err = pml(
        "eval", fake_run, "--metric", "P@1", "--metric", "map@r,mrr", "--json", "--device", "cpu"
    )
    assert code == 0, err
    assert list(_json(out)) == [
        "precision_at_1",
        "mean_average_precision_at_r",
        "mean_reciprocal_rank",
    ]


def test_eval_k_and_distance_options(helpers, fake_run, pml) -> None:
    features, labels = _test_split(fake_run)
    code, out, err = pml(
        "eval", fake_run, "--k", "2", "--metric", "mean_average_precision", "--json",
        "--distance", "CosineSimilarity", "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    expected = _expected(
        helpers,
        fake_run,
        features,
        labels,
        ["mean_average_precision"],
        k=2,
        distance=CosineSimilarity(),
    )
    assert _json(out)["mean_average_precision"] == pytest.approx(
        expected["mean_average_precision"], abs=1e-6
    )
    code, out, err = pml("eval", fake_run, "--k", "all", "--metric", "r_precision", "--json")
    assert code == 0, err


def test_eval_on_other_data_and_a_separate_reference(helpers, fake_run, pml, tmp_path) -> None:
    q_features, q_labels = helpers.clustered_features(seed=0)
    queries = tmp_path / "queries.npz"
    np.savez(queries, features=q_features[::2], labels=q_labels[::2])
    gallery = tmp_path / "gallery.npy"
    np.save(gallery, q_features[1::2])
    np.save(tmp_path / "gallery_labels.npy", q_labels[1::2])
    code, out, err = pml(
        "eval", fake_run, "--data", queries, "--reference", gallery, "--metric", "all",
        "--json", "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    values = _json(out)
    metrics = [m for m in values if m not in ("NMI", "AMI")]
    expected = _expected(
        helpers,
        fake_run,
        q_features[::2],
        q_labels[::2],
        metrics,
        ref=(q_features[1::2], q_labels[1::2]),
    )
    for name in metrics:
        assert values[name] == pytest.approx(expected[name], abs=1e-6)
    code, out, err = pml("eval", fake_run, "--data", queries, "--reference", gallery)
    assert code == 0 and "queries against features" in out


def test_eval_accepts_a_checkpoint_file_alone(fake_run, pml, tmp_path) -> None:
    alone = tmp_path / "model.pth"
    shutil.copy(fake_run / "checkpoints" / "best.pth", alone)
    (tmp_path / "config.toml").write_text("this is not read\n")
    code_run, out_run, _ = pml("eval", fake_run, "--json", "--device", "cpu")
    code, out, err = pml("eval", alone, "--json", "--device", "cpu")
    assert code == code_run == 0, err
    assert _json(out) == _json(out_run)


def test_eval_reports_nan_as_null_when_no_query_has_a_match(
    helpers, fake_run, pml, tmp_path
) -> None:
    features, labels = helpers.clustered_features(seed=1)
    lone = tmp_path / "lone.npz"
    np.savez(lone, features=features[:: len(features) // 6][:6], labels=np.arange(6))
    code, out, err = pml("eval", fake_run, "--data", lone, "--json")
    assert code == 0, err
    assert _json(out)["precision_at_1"] is None


# ---------------------------------------------------------------------------- bad input
def test_eval_missing_run_is_a_one_line_error(pml, tmp_path) -> None:
    err = _one_line_error(*pml("eval", tmp_path / "no-such-run"))
    assert "neither a run folder nor a checkpoint" in err


def test_eval_run_folder_without_checkpoint_is_a_one_line_error(pml, tmp_path) -> None:
    (tmp_path / "empty-run").mkdir()
    err = _one_line_error(*pml("eval", tmp_path / "empty-run"))
    assert "best.pth or last.pth" in err


def test_eval_of_a_folder_of_runs_names_the_newest_run(pml, tmp_path) -> None:
    # `pml eval runs` (the parent folder) used to say it "holds no checkpoints"
    for name in ("20260101-000000-a", "20260102-000000-b"):
        (tmp_path / "runs" / name / "checkpoints").mkdir(parents=True)
    err = _one_line_error(*pml("eval", tmp_path / "runs"))
    assert "holds 2 run folders, not a run; pass one of them" in err
    assert err.rstrip().endswith(f"{str(tmp_path / 'runs' / '20260102-000000-b')!r}")


class _Payload:
    """Unpickling this runs code (it would create ``flag``)."""

    def __init__(self, flag: Path) -> None:
        self.flag = flag

    def __reduce__(self):
        return (exec, (f"open({str(self.flag)!r}, 'w').write('ran')",))


def test_eval_checkpoint_carrying_pickled_code_is_refused(fake_run, pml, tmp_path) -> None:
    state = torch.load(fake_run / "checkpoints" / "best.pth", weights_only=True)
    flag = tmp_path / "code-ran"
    state["cli"]["extra"] = _Payload(flag)
    evil = tmp_path / "evil.pth"
    torch.save(state, evil)
    err = _one_line_error(*pml("eval", evil))
    assert "refusing to load" in err
    assert not flag.exists()


def test_eval_file_that_is_not_a_checkpoint_is_a_one_line_error(pml, tmp_path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    _one_line_error(*pml("eval", junk))
    other = tmp_path / "other.pth"
    torch.save({"weights": torch.zeros(2)}, other)
    err = _one_line_error(*pml("eval", other))
    assert "not a checkpoint of pml train" in err


def test_eval_unknown_metric_suggests_the_closest_names(fake_run, pml) -> None:
    err = _one_line_error(*pml("eval", fake_run, "--metric", "precison_at_1"))
    assert "unknown metric 'precison_at_1'" in err and "did you mean precision_at_1" in err
    err = _one_line_error(*pml("eval", fake_run, "--metric", "zzz"))
    assert "choose from" in err and "mean_average_precision_at_r" in err


def test_eval_data_of_the_wrong_width_is_a_one_line_error(helpers, fake_run, pml, tmp_path) -> None:
    features, labels = helpers.clustered_features(dim=helpers.DIM - 3)
    narrow = tmp_path / "narrow.npz"
    np.savez(narrow, features=features, labels=labels)
    err = _one_line_error(*pml("eval", fake_run, "--data", narrow))
    assert f"shape ({helpers.DIM - 3},)" in err and f"shape ({helpers.DIM},)" in err
    err = _one_line_error(*pml("eval", fake_run, "--reference", narrow))
    assert "--reference" in err


@pytest.mark.parametrize("k", ["0", "-3", "many"])
def test_eval_bad_k_is_a_one_line_error(fake_run, pml, k) -> None:
    err = _one_line_error(*pml("eval", fake_run, "--k", k))
    assert "--k" in err


def test_eval_unknown_distance_is_a_one_line_error(fake_run, pml) -> None:
    err = _one_line_error(*pml("eval", fake_run, "--distance", "CosineSimilarty"))
    assert "did you mean CosineSimilarity" in err


def test_eval_missing_data_is_a_one_line_error(fake_run, pml, tmp_path) -> None:
    _one_line_error(*pml("eval", fake_run, "--data", tmp_path / "missing.npz"))


def test_eval_run_whose_data_is_gone_asks_for_data(helpers, pml, tmp_path) -> None:
    features, labels = helpers.clustered_features()
    data = tmp_path / "features.npz"
    np.savez(data, features=features, labels=labels)
    run = helpers.make_run(tmp_path, data)
    data.unlink()
    err = _one_line_error(*pml("eval", run))
    assert "cannot load the run's held-out data" in err and "--data" in err


def test_eval_of_a_real_pml_train_run_repeats_its_best_epoch_metrics(helpers, pml, tmp_path):
    features, labels = helpers.clustered_features()
    data = tmp_path / "features.npz"
    np.savez(data, features=features, labels=labels)
    runs = tmp_path / "runs"
    code, _, err = pml(
        "train", "--data", data, "--epochs", "2", "--runs-dir", runs, "--batch-size", "16",
        "--hidden-size", "16", "--embedding-size", "8", "--device", "cpu", "--name", "tiny",
    )  # fmt: skip
    assert code == 0, err
    (run,) = runs.iterdir()
    state = torch.load(run / "checkpoints" / "best.pth", weights_only=True)
    best = state["cli"]["best_epoch"]
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    (row,) = [r for r in rows if r["epoch"] == best]
    code, out, err = pml("eval", run, "--json", "--device", "cpu")
    assert code == 0, err
    values = _json(out)
    assert list(values) == list(DEFAULT_METRICS)
    for name in DEFAULT_METRICS:
        assert values[name] == pytest.approx(row[name], abs=1e-6), name
    code, out, err = pml("eval", run, "--metric", "all", "--data", data, "--device", "cpu")
    assert code == 0, err
    assert f"best.pth (epoch {best})" in out
