"""``pml embed``: embeddings to .npy (+ sibling labels) or .npz, written atomically."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pml.cli._data import load_data, load_path
from pml.cli._settings import load_settings


def _one_line_error(code: int, out: str, err: str) -> str:
    assert code == 2, (code, out, err)
    assert err.startswith("pml: error: ") and err.count("\n") == 1, err
    return err


def test_embed_npy_writes_the_held_out_split_and_sibling_labels(fake_run, helpers, pml, tmp_path):
    out = tmp_path / "emb.npy"
    code, stdout, err = pml("embed", fake_run, "--out", out, "--device", "cpu")
    assert code == 0, err
    test = load_data(load_settings(fake_run / "config.toml")).test
    emb = np.load(out, allow_pickle=False)
    labels = np.load(tmp_path / "emb_labels.npy", allow_pickle=False)
    assert emb.dtype == np.float32 and emb.shape == (len(test), 8)
    assert labels.dtype == np.int64 and labels.tolist() == test.labels
    expected = helpers.embed_directly(fake_run, test.data.numpy())
    np.testing.assert_allclose(emb, expected, rtol=1e-5, atol=1e-6)
    assert f"wrote {len(test)} embeddings of size 8" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.npy", "emb_labels.npy"]


def test_embed_npy_output_reads_back_as_a_features_file(fake_run, pml, tmp_path):
    out = tmp_path / "emb.npy"
    assert pml("embed", fake_run, "--out", out)[0] == 0
    settings = load_settings(fake_run / "config.toml")
    again = load_path(out, settings)  # what `pml train --data emb.npy` reads
    assert (
        again.data.shape[1] == 8 and again.labels == np.load(tmp_path / "emb_labels.npy").tolist()
    )


def test_embed_npz_holds_embeddings_and_labels(fake_run, helpers, pml, tmp_path):
    features, labels = helpers.clustered_features(seed=3)
    data = tmp_path / "data.npz"
    np.savez(data, features=features, labels=labels)
    out = tmp_path / "sub" / "emb.npz"
    code, _, err = pml("embed", fake_run, "--data", data, "--out", out, "--batch-size", "7")
    assert code == 0, err
    with np.load(out, allow_pickle=False) as archive:
        assert sorted(archive.files) == ["embeddings", "labels"]
        np.testing.assert_allclose(
            archive["embeddings"], helpers.embed_directly(fake_run, features), rtol=1e-5, atol=1e-6
        )
        assert archive["labels"].tolist() == labels.tolist()
    settings = load_settings(fake_run / "config.toml")
    assert load_path(out, settings).data.shape == (len(labels), 8)


def test_embed_normalize_gives_unit_rows(fake_run, pml, tmp_path):
    out = tmp_path / "emb.npz"
    assert pml("embed", fake_run, "--out", out, "--normalize")[0] == 0
    emb = np.load(out)["embeddings"]
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)


def test_embed_labels_out_and_replacing_an_existing_file(fake_run, pml, tmp_path):
    out = tmp_path / "emb.npy"
    out.write_bytes(b"old content")
    labels_out = tmp_path / "y.npy"
    code, _, err = pml("embed", fake_run, "--out", out, "--labels-out", labels_out)
    assert code == 0, err
    assert np.load(out).shape[1] == 8 and np.load(labels_out).ndim == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.npy", "y.npy"]


def test_embed_failed_write_leaves_the_old_file_intact(fake_run, pml, tmp_path, monkeypatch):
    out = tmp_path / "emb.npz"
    out.write_bytes(b"old content")

    def broken_savez(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    err = _one_line_error(*pml("embed", fake_run, "--out", out))
    assert "disk full" in err
    assert out.read_bytes() == b"old content"
    assert [p.name for p in tmp_path.iterdir()] == ["emb.npz"]


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("name", ["emb.txt", "emb"])
def test_embed_out_must_be_npy_or_npz(fake_run, pml, tmp_path, name):
    err = _one_line_error(*pml("embed", fake_run, "--out", tmp_path / name))
    assert ".npy or .npz" in err


def test_embed_labels_out_with_npz_is_a_one_line_error(fake_run, pml, tmp_path):
    err = _one_line_error(
        *pml("embed", fake_run, "--out", tmp_path / "e.npz", "--labels-out", tmp_path / "y.npy")
    )
    assert "--labels-out" in err


def test_embed_missing_run_is_a_one_line_error(pml, tmp_path):
    _one_line_error(*pml("embed", tmp_path / "nothing", "--out", tmp_path / "e.npy"))
    assert not (tmp_path / "e.npy").exists()


def test_embed_data_of_the_wrong_width_is_a_one_line_error(fake_run, helpers, pml, tmp_path):
    features, labels = helpers.clustered_features(dim=helpers.DIM + 1)
    wide = tmp_path / "wide.npz"
    np.savez(wide, features=features, labels=labels)
    err = _one_line_error(*pml("embed", fake_run, "--data", wide, "--out", tmp_path / "e.npy"))
    assert f"({helpers.DIM + 1},)" in err
    assert not (tmp_path / "e.npy").exists()


def test_embed_bad_batch_size_is_a_one_line_error(fake_run, pml, tmp_path):
    err = _one_line_error(*pml("embed", fake_run, "--out", tmp_path / "e.npy", "--batch-size", "0"))
    assert "--batch-size" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_embed_cuda_without_cuda_is_a_one_line_error(fake_run, pml, tmp_path):
    err = _one_line_error(*pml("embed", fake_run, "--out", tmp_path / "e.npy", "--device", "cuda"))
    assert "CUDA is not available" in err


def test_embed_legacy_format_checkpoint(fake_run, pml, tmp_path):
    import shutil

    state = torch.load(fake_run / "checkpoints" / "best.pth", weights_only=True)
    legacy = tmp_path / "run" / "checkpoints" / "best.pth"
    legacy.parent.mkdir(parents=True)
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    shutil.copy(fake_run / "config.toml", tmp_path / "run" / "config.toml")
    code, _, err = pml("embed", tmp_path / "run", "--out", tmp_path / "e.npz")
    assert code == 0, err
