"""k-NN back-ends, MatchFinder and InferenceModel."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch.utils.data import TensorDataset

from pml.distances import CosineSimilarity, LpDistance
from pml.eval import (
    CustomKNN,
    FaissKMeans,
    FaissKNN,
    IndexNotReadyError,
    InferenceModel,
    MatchFinder,
    TorchKMeans,
    TorchKNN,
    _faiss,
    run_pca,
)

needs_faiss = pytest.mark.skipif(not _faiss.faiss_available(), reason="faiss not installed")

POINTS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [-1.0, 0.0], [0.99, 0.1]])


# ---------------------------------------------------------------------------- k-NN back-ends
def test_torch_knn_index_lifecycle(tmp_path):
    knn = TorchKNN()
    with pytest.raises(IndexNotReadyError, match="train"):
        knn(POINTS, 1)
    with pytest.raises(AttributeError):  # the reference's error type from add()
        knn.add(POINTS)
    knn.train(POINTS[:3])
    knn.add(POINTS[3:])
    d, i = knn(POINTS[:1], 2)
    assert i.tolist() == [[0, 4]]
    path = tmp_path / "index.pt"
    knn.save(path)
    loaded = TorchKNN()
    loaded.load(path)
    assert torch.equal(loaded.index, knn.index)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left
    knn.reset()
    assert knn.index is None


def test_torch_knn_load_rejects_other_files(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="filename"):
        TorchKNN().load(path)


def test_torch_knn_validation():
    with pytest.raises(ValueError, match="batch_size"):
        TorchKNN(batch_size=0)
    with pytest.raises(TypeError, match="batch_size"):
        TorchKNN(batch_size=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k must"):
        TorchKNN()(POINTS, -1, POINTS)
    with pytest.raises(ValueError, match="dim"):
        TorchKNN()(POINTS, 1, torch.zeros(3, 4))


@pytest.mark.parametrize("k", [1.0, True, "2"])
def test_knn_k_of_a_wrong_type_is_a_type_error(k):
    # one vocabulary: a k that is not an int is a TypeError (was a ValueError)
    with pytest.raises(TypeError, match="k must be an int"):
        TorchKNN()(POINTS, k, POINTS)


def test_knn_numpy_integer_k_is_accepted():
    import numpy as np

    assert TorchKNN()(POINTS, np.int64(2), POINTS)[1].shape == (5, 2)


def test_custom_knn_distance_values():
    knn = CustomKNN(LpDistance(normalize_embeddings=False), batch_size=2)
    d, i = knn(POINTS, 1, POINTS, True)
    assert i.flatten().tolist() == [4, 2, 4, 1, 0]
    assert d[0, 0] == pytest.approx(((POINTS[0] - POINTS[4]) ** 2).sum().sqrt().item())
    sim = CustomKNN(CosineSimilarity())
    d, i = sim(POINTS[:1], 2, POINTS)
    assert i.tolist() == [[0, 4]] and d[0, 0] == pytest.approx(1.0)
    with pytest.raises(TypeError, match="distance"):  # a wrong type (was a ValueError)
        CustomKNN(None)  # type: ignore[arg-type]


@needs_faiss
def test_faiss_knn_matches_torch_knn(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 8, generator=g)
    fd, fi = FaissKNN()(x, 5, x, True)
    td, ti = TorchKNN()(x, 5, x, True)
    assert torch.equal(fi, ti)
    torch.testing.assert_close(fd, td, rtol=1e-4, atol=1e-4)
    assert fd.dtype == torch.float32 and fi.dtype == torch.int64


@needs_faiss
def test_faiss_knn_index_and_files(tmp_path):
    knn = FaissKNN(reset_before=False, reset_after=False)
    with pytest.raises(ValueError, match="train"):
        knn(POINTS, 1)
    with pytest.raises(AttributeError):
        knn.add(POINTS)
    knn.train(POINTS)
    path = tmp_path / "index.faiss"
    knn.save(path)
    other = FaissKNN(reset_before=False, reset_after=False)
    other.load(path)
    assert torch.equal(other(POINTS, 2)[1], knn(POINTS, 2)[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.faiss"]


@needs_faiss
def test_faiss_knn_k_clamped_not_padded():
    d, i = FaissKNN()(POINTS, 10, POINTS, True)
    assert i.shape == (5, 4) and (i >= 0).all()


@needs_faiss
def test_faiss_gpus_validation():
    with pytest.raises(TypeError, match="gpus"):
        FaissKNN(gpus=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="gpus"):
        FaissKNN(gpus=[])


@needs_faiss
def test_faiss_kmeans():
    x = torch.cat([torch.zeros(20, 2), torch.ones(20, 2) * 5]) + 0.01 * torch.randn(40, 2)
    ids = FaissKMeans(niter=5)(x, 2)
    assert ids.dtype == torch.long and len(set(zip(ids.tolist(), [0] * 20 + [1] * 20))) == 2
    with pytest.raises(ValueError, match="nmb_clusters"):
        FaissKMeans()(x, 41)


def test_without_faiss_clear_import_errors(monkeypatch):
    monkeypatch.setattr(_faiss, "get_faiss", lambda: None)
    with pytest.raises(ImportError, match="FaissKNN.*faiss-cpu.*pml-eval\\[faiss\\]"):
        FaissKNN()
    with pytest.raises(ImportError, match="FaissKMeans"):
        FaissKMeans()
    im = InferenceModel(torch.nn.Identity(), data_device="cpu")
    assert isinstance(im.knn_func, TorchKNN)


_NO_FAISS = """
import sys
sys.modules["faiss"] = None  # any `import faiss` now raises ImportError
import torch
from pml.eval import AccuracyCalculator, FaissKNN, InferenceModel
x = torch.eye(4).repeat_interleave(3, 0) + 0.01 * torch.arange(12.0)[:, None]
acc = AccuracyCalculator(include=("precision_at_1", "NMI"), k=2).get_accuracy(
    x, torch.arange(4).repeat_interleave(3)
)
assert acc["precision_at_1"] == 1.0 and abs(acc["NMI"] - 1.0) < 1e-6, acc
try:
    FaissKNN()
except ImportError as exc:
    print("ImportError:", exc)
"""


def test_package_imports_and_evaluates_without_faiss():
    out = subprocess.run(
        [sys.executable, "-c", _NO_FAISS], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ImportError:" in out.stdout and "faiss-cpu" in out.stdout


def test_torch_kmeans_and_pca():
    x = torch.cat([torch.zeros(10, 3), torch.ones(10, 3) * 5]) + 0.01 * torch.randn(20, 3)
    ids = TorchKMeans()(x.numpy(), 2)
    assert ids.tolist() == [ids[0].item()] * 10 + [ids[10].item()] * 10
    with pytest.raises(TypeError, match="nmb_clusters"):
        TorchKMeans()(x, 2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nmb_clusters"):
        TorchKMeans()(x, 0)
    reduced = run_pca(x, 1)
    assert reduced.shape == (20, 1)
    assert (reduced[:10].sign() != reduced[10:].sign()).all()


def test_torch_kmeans_zero_points_per_centroid_is_rejected():
    # fix: the sub-sample was empty and k-means++ seeding failed deep inside (RuntimeError)
    with pytest.raises(ValueError, match="max_points_per_centroid"):
        TorchKMeans(max_points_per_centroid=0)
    with pytest.raises(TypeError, match="niter"):
        TorchKMeans(niter=2.5)  # type: ignore[arg-type]


def test_run_pca_float_dimensionality_names_the_argument():
    # fix: a float output dimension failed in tensor slicing without naming the argument
    with pytest.raises(TypeError, match="output_dimensionality"):
        run_pca(POINTS, 1.5)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- MatchFinder
def test_match_finder_pairs_and_tuples():
    mf = MatchFinder(CosineSimilarity(), threshold=0.9)
    matches = mf.get_matching_pairs(POINTS)
    assert matches.dtype == bool and matches.shape == (5, 5) and matches.diagonal().all()
    assert matches[0, 4] and not matches[0, 1]
    pairs = mf.get_matching_pairs(POINTS, return_tuples=True)
    assert pairs[:3] == [(0, 0), (0, 4), (1, 1)]
    loose = mf.get_matching_pairs(POINTS[:1], POINTS, threshold=0.5)
    assert loose.tolist() == [[True, False, True, False, True]]


def test_match_finder_distance_direction_and_is_match():
    mf = MatchFinder(LpDistance(normalize_embeddings=False), threshold=0.5)
    assert mf.get_matching_pairs(POINTS[:1], POINTS).tolist() == [[True, False, False, False, True]]
    assert mf.is_match(POINTS[:1], POINTS[4:5]) is True
    result = mf.is_match(POINTS[:2], POINTS[3:5])
    assert result.tolist() == [False, False]


def test_match_finder_needs_threshold():
    mf = MatchFinder(CosineSimilarity())
    with pytest.raises(TypeError, match="threshold"):
        mf.get_matching_pairs(POINTS)
    assert mf.is_match(POINTS[:1], POINTS[:1], threshold=0.9) is True
    with pytest.raises(TypeError, match="distance"):
        MatchFinder(None)  # type: ignore[arg-type]


def test_nan_match_threshold_is_rejected_not_matching_nothing():
    # fix: a NaN threshold silently matched no pair (every comparison with NaN is False)
    mf = MatchFinder(CosineSimilarity(), threshold=float("nan"))
    with pytest.raises(ValueError, match="threshold"):
        mf.get_matching_pairs(POINTS)
    with pytest.raises(ValueError, match="threshold"):
        mf.is_match(POINTS, POINTS)


# ---------------------------------------------------------------------------- InferenceModel
class Doubler(torch.nn.Module):
    def forward(self, x):
        return x * 2


def test_inference_model_embeddings_and_matches():
    im = InferenceModel(Doubler(), data_device="cpu", knn_func=TorchKNN())
    emb = im.get_embeddings([POINTS[0], POINTS[1]])
    torch.testing.assert_close(emb, POINTS[:2])  # normalised
    assert im.trunk.training is False
    assert im.get_matches(POINTS).shape == (5, 5)
    assert im.get_matches(POINTS[:1], POINTS, return_tuples=True) == [(0, 0), (0, 4)]
    assert im.is_match(POINTS[:1], POINTS[4:5]) is True


@pytest.mark.parametrize("backend", ["torch", pytest.param("faiss", marks=needs_faiss)])
def test_inference_model_knn(backend, tmp_path):
    knn = TorchKNN() if backend == "torch" else None  # None -> FaissKNN persistent index
    im = InferenceModel(torch.nn.Identity(), data_device="cpu", knn_func=knn)
    if backend == "faiss":
        assert isinstance(im.knn_func, FaissKNN)
    with pytest.raises(ValueError, match="train"):
        im.get_nearest_neighbors(POINTS, 1)
    im.train_knn(POINTS[:3], batch_size=2)
    im.add_to_knn(TensorDataset(POINTS[3:], torch.zeros(2)), batch_size=1)
    d, i = im.get_nearest_neighbors(POINTS[:1], 2)
    assert i.tolist() == [[0, 4]]
    # squared L2 of normalised embeddings = 2 - 2 cos
    cos = torch.nn.functional.cosine_similarity(POINTS[:1], POINTS[4:5]).item()
    assert d[0, 1].item() == pytest.approx(2 - 2 * cos, abs=1e-5)
    path = tmp_path / "knn.index"
    im.save_knn_func(path)
    fresh = InferenceModel(torch.nn.Identity(), data_device="cpu", knn_func=knn and TorchKNN())
    fresh.load_knn_func(path)
    assert fresh.get_nearest_neighbors(POINTS[:1], 2)[1].tolist() == [[0, 4]]


def test_inference_model_bad_inputs():
    im = InferenceModel(torch.nn.Identity(), data_device="cpu", knn_func=TorchKNN())
    with pytest.raises(TypeError, match="inputs.*dict"):
        im.train_knn({"x": POINTS})
    with pytest.raises(ValueError, match="batch_size"):
        im.train_knn(POINTS, batch_size=0)
    with pytest.raises(TypeError, match="batch_size"):  # was a ValueError
        im.train_knn(POINTS, batch_size=2.0)


def test_inference_model_passes_non_tensors_through():
    class Lengths(torch.nn.Module):
        def forward(self, words):
            return torch.tensor([[float(len(w)), 1.0] for w in words])

    im = InferenceModel(
        Lengths(), data_device="cpu", normalize_embeddings=False, knn_func=TorchKNN()
    )
    im.train_knn(["a", "abc", "abcdef"], batch_size=2)
    assert im.get_nearest_neighbors(["ab"], 1)[1].tolist() == [[0]]


def test_inference_model_dtype():
    im = InferenceModel(torch.nn.Identity(), data_device="cpu", dtype=torch.float64)
    assert im.get_embeddings(POINTS).dtype == torch.float64


# ---------------------------------------------------------------------------- reliability
def _with_nan(x: torch.Tensor, value: float = float("nan")) -> torch.Tensor:
    x = x.clone()
    x[1, 0] = value
    return x


def _knn_backends():
    return ["torch", pytest.param("faiss", marks=needs_faiss)]


def _make_knn(backend, **kwargs):
    return TorchKNN() if backend == "torch" else FaissKNN(**kwargs)


@pytest.mark.parametrize("backend", _knn_backends())
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_knn_nan_or_inf_query_is_rejected_not_index_minus_one(backend, bad):
    # fix: FaissKNN returned index -1 for a NaN query; TorchKNN ranked it last silently
    knn = _make_knn(backend)
    with pytest.raises(ValueError, match="query must be finite"):
        knn(_with_nan(POINTS, bad), 1, POINTS)
    with pytest.raises(ValueError, match="reference must be finite"):
        knn(POINTS, 1, _with_nan(POINTS, bad))


@pytest.mark.parametrize("backend", _knn_backends())
def test_knn_index_with_nan_embeddings_is_rejected(backend):
    knn = _make_knn(backend, reset_before=False, reset_after=False)
    with pytest.raises(ValueError, match="embeddings must be finite"):
        knn.train(_with_nan(POINTS))
    knn.train(POINTS)
    with pytest.raises(ValueError, match="embeddings must be finite"):
        knn.add(_with_nan(POINTS))
    with pytest.raises(ValueError, match="query must be finite"):
        knn(_with_nan(POINTS), 1)


def test_functional_knn_nan_is_rejected():
    from pml.eval import functional as EF

    with pytest.raises(ValueError, match="query must be finite"):
        EF.knn(_with_nan(POINTS), POINTS, 1)
    with pytest.raises(ValueError, match="reference must be finite"):
        EF.knn(POINTS, _with_nan(POINTS, float("-inf")), 1)


def test_functional_knn_mixed_dtypes():
    # fix: a float64 query with a float32 reference raised a dtype error with a pml distance
    from pml.eval import functional as EF

    dist = LpDistance(normalize_embeddings=False)
    d, i = EF.knn(POINTS.double(), POINTS, 2, distance_fn=dist)
    d64, i64 = EF.knn(POINTS.double(), POINTS.double(), 2, distance_fn=dist)
    assert torch.equal(i, i64) and d.dtype == torch.float64
    torch.testing.assert_close(d, d64)
    d, i = CustomKNN(dist)(POINTS.numpy(), 2, POINTS.double())
    assert torch.equal(i, i64)


class NaNModel(torch.nn.Module):
    def forward(self, x):
        out = x.clone()
        out[0, 0] = float("nan")
        return out


def test_inference_model_nan_embeddings_are_rejected():
    im = InferenceModel(NaNModel(), data_device="cpu", knn_func=TorchKNN())
    with pytest.raises(ValueError, match="embeddings must be finite"):
        im.train_knn(POINTS)
    im.knn_func.train(POINTS)
    with pytest.raises(ValueError, match="query.*must be finite"):
        im.get_nearest_neighbors(POINTS, 1)
    with pytest.raises(ValueError, match="must be finite"):
        im.get_matches(POINTS)
    with pytest.raises(ValueError, match="must be finite"):
        im.is_match(POINTS, POINTS)


@pytest.mark.parametrize("backend", _knn_backends())
def test_knn_query_of_the_wrong_dimension_is_a_value_error(backend):
    # fix: faiss raised a bare AssertionError (empty message), a 1-D query an IndexError
    knn = _make_knn(backend, reset_before=False, reset_after=False)
    knn.train(POINTS)
    with pytest.raises(ValueError, match="query.*2.*got 3"):
        knn(torch.zeros(2, 3), 1)
    with pytest.raises(ValueError, match="query"):
        knn(torch.zeros(2), 1)
    with pytest.raises(ValueError, match="embeddings.*2.*got 3"):
        knn.add(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="embeddings"):
        knn.train(torch.zeros(3))
    fresh = _make_knn(backend)
    with pytest.raises(ValueError, match="reference.*3"):
        fresh(POINTS, 1, torch.zeros(4, 3))


@pytest.mark.parametrize("backend", _knn_backends())
def test_inference_model_query_of_the_wrong_dimension_is_a_value_error(backend):
    im = InferenceModel(torch.nn.Identity(), data_device="cpu", knn_func=_make_knn(backend))
    if backend == "faiss":
        im = InferenceModel(torch.nn.Identity(), data_device="cpu")
    im.train_knn(POINTS)
    with pytest.raises(ValueError, match="query"):
        im.get_nearest_neighbors(torch.zeros(2, 3), 1)


@needs_faiss
def test_faiss_knn_minus_one_from_an_approximate_index_is_documented_not_hidden():
    # an index that finds fewer than k (here: an IVF probing one empty list) pads with -1;
    # FaissKNN passes that through (faiss's convention); AccuracyCalculator rejects it
    faiss = _faiss.get_faiss()
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [100.0, 100.0]] * 50) + torch.rand(100, 2, generator=g)
    centres = centres.numpy()

    def ivf(dim):
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, 2)  # nprobe 1 of 2 lists
        index.train(centres)
        return index

    knn = FaissKNN(index_init_fn=ivf)
    _, i = knn(torch.tensor([[0.0, 0.0]]), 2, torch.tensor([[0.0, 0.1], [100.0, 100.0]]))
    assert i.tolist() == [[0, -1]]
    from pml.eval import AccuracyCalculator

    calc = AccuracyCalculator(exclude=("NMI", "AMI"), knn_func=knn, k=3, device="cpu")
    ref = torch.tensor([[0.0, 0.1], [0.1, 0.0], [100.0, 100.0], [100.0, 100.1]])
    with pytest.raises(ValueError, match="knn_func.*-1"):
        calc.get_accuracy(ref[:1], torch.tensor([0]), ref, torch.tensor([0, 0, 1, 1]))


def test_match_finder_length_mismatch_is_a_value_error():
    # fix: is_match with different lengths raised a raw RuntimeError from torch
    mf = MatchFinder(LpDistance(normalize_embeddings=False), threshold=0.5)
    with pytest.raises(ValueError, match="x.*y.*same shape"):
        mf.is_match(POINTS[:2], POINTS[:3])
    with pytest.raises(ValueError, match="x"):
        mf.is_match(POINTS[0], POINTS[0])
    with pytest.raises(ValueError, match="ref_emb.*2.*got 3"):
        mf.get_matching_pairs(POINTS, torch.zeros(2, 3))
    im = InferenceModel(torch.nn.Identity(), data_device="cpu", knn_func=TorchKNN())
    with pytest.raises(ValueError, match="x.*y"):
        im.is_match(POINTS[:2], POINTS[:3])


@needs_faiss
def test_faiss_knn_with_reset_before_and_no_reference_says_how_to_search_a_trained_index():
    # InferenceModel(knn_func=FaissKNN()) then train_knn + get_nearest_neighbors searched a
    # fresh empty index and faiss raised a bare AssertionError
    im = InferenceModel(torch.nn.Identity(), knn_func=FaissKNN())
    im.train_knn(torch.randn(10, 4))
    with pytest.raises(IndexNotReadyError, match=r"FaissKNN\(reset_before=False, reset_after"):
        im.get_nearest_neighbors(torch.randn(2, 4), k=3)


@needs_faiss
@pytest.mark.parametrize("k", [0, 3])
def test_faiss_knn_search_of_zero_neighbours_gives_empty_results(k):
    # faiss asserts k > 0: k=0, or an empty reference, used to raise a bare AssertionError
    knn = FaissKNN()
    reference = torch.randn(5, 4) if k == 0 else torch.zeros(0, 4)
    d, i = knn(torch.randn(2, 4), k, reference)
    assert d.shape == (2, 0) and i.shape == (2, 0) and i.dtype == torch.long


@pytest.mark.parametrize("method", ["is_match", "get_embeddings"])
def test_input_without_a_batch_dimension_is_a_value_error(method):
    # a 1-D item used to fail with "IndexError: Dimension out of range" in normalize
    im = InferenceModel(torch.nn.Identity(), knn_func=TorchKNN())
    args = (torch.randn(4), torch.randn(4)) if method == "is_match" else (torch.randn(4),)
    with pytest.raises(ValueError, match=r"embeddings of shape \(batch, size\); got shape \(4,\)"):
        getattr(im, method)(*args)
