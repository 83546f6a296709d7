"""Index files: atomic saves (mode, fsync, failures) and loading across back-ends."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from pml.core import io as eval_io
from pml.eval import FaissKNN, InferenceModel, TorchKNN, _faiss

needs_faiss = pytest.mark.skipif(not _faiss.faiss_available(), reason="faiss not installed")

POINTS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [-1.0, 0.0], [0.99, 0.1]])


def _savers():
    return ["torch", pytest.param("faiss", marks=needs_faiss)]


def _trained(backend):
    knn = TorchKNN() if backend == "torch" else FaissKNN(reset_before=False, reset_after=False)
    knn.train(POINTS)
    return knn


@pytest.fixture
def umask():
    def set_umask(mask):
        old = os.umask(mask)
        restore.append(old)

    restore: list[int] = []
    yield set_umask
    for old in reversed(restore):
        os.umask(old)


# ---------------------------------------------------------------------------- atomic saves
@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("backend", _savers())
@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_saved_index_mode_follows_the_umask_not_0600(backend, mask, tmp_path, umask):
    # fix: the temporary file's 0600 (mkstemp) survived the rename
    umask(mask)
    path = tmp_path / "index.bin"
    _trained(backend).save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


@pytest.mark.parametrize("backend", _savers())
def test_save_fsyncs_the_file_before_the_rename_and_then_the_directory(
    backend, tmp_path, monkeypatch
):
    # fix: no fsync before os.replace: a crash could leave an empty or partial index file
    path = tmp_path / "index.bin"
    path.write_bytes(b"old")
    calls = []
    real_fsync = os.fsync

    def fsync(fd):
        st = os.fstat(fd)
        calls.append((stat.S_ISDIR(st.st_mode), st.st_size, path.read_bytes() == b"old"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    _trained(backend).save(path)
    assert len(calls) >= 1
    is_dir, size, target_still_old = calls[0]
    assert not is_dir and size > 0 and target_still_old  # the new data, before the rename
    if os.name == "posix":
        assert len(calls) == 2 and calls[1][0]  # then the directory (the rename itself)
    assert path.read_bytes() != b"old"


@pytest.mark.parametrize("backend", _savers())
def test_failed_save_keeps_the_old_file_and_leaves_no_temporary_file(
    backend, tmp_path, monkeypatch
):
    path = tmp_path / "index.bin"
    path.write_bytes(b"old")

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        _trained(backend).save(path)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["index.bin"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"old")

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(b"partial")
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        eval_io.atomic_write(path, write)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["data.bin"]
    eval_io.atomic_write(path, lambda tmp: open(tmp, "wb").write(b"new"))  # noqa: SIM115
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["data.bin"]


def test_atomic_write_in_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    eval_io.atomic_write("plain.bin", lambda tmp: open(tmp, "wb").write(b"x"))  # noqa: SIM115
    assert (tmp_path / "plain.bin").read_bytes() == b"x"


# ---------------------------------------------------------------------------- loading
def test_torch_knn_load_of_a_file_without_index_key_is_a_value_error(tmp_path):
    # fix: a TorchKNN-format file without "index" raised KeyError
    path = tmp_path / "broken.pt"
    torch.save({"format": "pml.eval.TorchKNN", "version": 1}, path)
    with pytest.raises(ValueError, match="filename.*broken.pt.*index"):
        TorchKNN().load(path)
    torch.save({"format": "pml.eval.TorchKNN", "version": 1, "index": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="filename.*broken.pt"):
        TorchKNN().load(path)


@pytest.mark.parametrize("backend", ["torch", pytest.param("faiss", marks=needs_faiss)])
def test_knn_load_of_garbage_is_a_value_error(tmp_path, backend):
    # fix: a non-torch file raised UnpicklingError / RuntimeError from torch.load
    path = tmp_path / "garbage.bin"
    path.write_bytes(b"\x00\x01not an index at all")
    knn = TorchKNN() if backend == "torch" else FaissKNN()
    with pytest.raises(ValueError, match="filename.*garbage.bin"):
        knn.load(path)
    with pytest.raises(FileNotFoundError):
        knn.load(tmp_path / "missing.bin")


@needs_faiss
def test_faiss_index_file_loads_where_faiss_is_not_installed(tmp_path, monkeypatch):
    # fix: a faiss file (InferenceModel's default where faiss is installed) raised
    # UnpicklingError in TorchKNN.load (the default where it is not)
    saved = InferenceModel(torch.nn.Identity(), data_device="cpu")
    saved.train_knn(POINTS)
    path = tmp_path / "model.index"
    saved.save_knn_func(path)
    expected = saved.get_nearest_neighbors(POINTS, 3)

    monkeypatch.setattr(_faiss, "get_faiss", lambda: None)
    loaded = InferenceModel(torch.nn.Identity(), data_device="cpu")
    assert isinstance(loaded.knn_func, TorchKNN)
    loaded.load_knn_func(path)
    d, i = loaded.get_nearest_neighbors(POINTS, 3)
    assert torch.equal(i, expected[1])
    torch.testing.assert_close(d, expected[0], rtol=1e-5, atol=1e-6)


@needs_faiss
def test_non_flat_l2_faiss_file_without_faiss_says_why(tmp_path, monkeypatch):
    faiss = _faiss.get_faiss()
    ip = FaissKNN(reset_before=False, reset_after=False, index_init_fn=faiss.IndexFlatIP)
    ip.train(POINTS)
    path = tmp_path / "ip.index"
    ip.save(path)
    monkeypatch.setattr(_faiss, "get_faiss", lambda: None)
    with pytest.raises(ValueError, match="filename.*ip.index.*faiss.*IndexFlatL2"):
        TorchKNN().load(path)


@needs_faiss
def test_torch_knn_file_loads_into_faiss_knn(tmp_path):
    knn = _trained("torch")
    path = tmp_path / "torch.index"
    knn.save(path)
    faiss_knn = FaissKNN(reset_before=False, reset_after=False)
    faiss_knn.load(path)
    assert torch.equal(faiss_knn(POINTS, 3)[1], knn(POINTS, 3)[1])


@pytest.mark.parametrize("content", [b"", b"ab", b"\x80\x02}q"])
def test_short_or_foreign_file_is_not_an_index_file_error_not_index_error(tmp_path, content):
    from pml.eval._index_files import read_faiss_flat_l2, read_torch_index

    path = tmp_path / "short.idx"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="is not a pml.eval.TorchKNN index file"):
        read_torch_index(path)
    with pytest.raises(ValueError, match="is not a faiss index file"):
        read_faiss_flat_l2(path)
