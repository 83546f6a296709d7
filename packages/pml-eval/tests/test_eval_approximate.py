"""ApproximateKNN: faiss IVF/HNSW search whose recall against exact search is reported."""

from __future__ import annotations

import pytest
import torch

from pml.core.testing import clustered_embeddings
from pml.eval import AccuracyCalculator, ApproximateKNN, IndexNotReadyError, TorchKNN
from pml.eval import functional as EF
from pml.eval._faiss import faiss_available
from pml.eval._neighbor_lists import known_search

pytestmark = pytest.mark.skipif(not faiss_available(), reason="faiss is not installed")

CPU = torch.device("cpu")
NO_CLUSTERING = ("NMI", "AMI")
METRICS = ("mean_average_precision", "mean_average_precision_at_r", "precision_at_1")


def _data(seed: int = 0, spread: float = 0.6):
    return clustered_embeddings(40, 25, 16, seed=seed, spread=spread)


@pytest.mark.parametrize(
    "knn",
    [
        pytest.param(lambda: ApproximateKNN("ivf", nlist=40, nprobe=4), id="ivf"),
        pytest.param(lambda: ApproximateKNN("hnsw", hnsw_m=16, ef_search=64), id="hnsw"),
    ],
)
def test_recall_is_reported_next_to_the_metrics_and_high_on_clustered_data(knn):
    x, labels = _data()
    kw = {"k": "max_bin_count", "exclude": NO_CLUSTERING, "device": CPU}
    calc = AccuracyCalculator(knn_func=knn(), **kw)
    assert known_search(calc, x).kind == "approximate"
    got = calc.get_accuracy(x, labels)
    exact = AccuracyCalculator(knn_func=TorchKNN(), **kw).get_accuracy(x, labels)
    assert "knn_recall_at_k" not in exact
    assert got["knn_recall_at_k"] >= 0.95
    for name in METRICS:
        assert got[name] == pytest.approx(exact[name], abs=0.05), name


def test_recall_equals_the_overlap_with_exact_neighbours():
    x, labels = _data(1, spread=1.2)
    knn = ApproximateKNN("ivf", nlist=64, nprobe=2, recall_sample=10_000)  # every query
    _, found = knn(x, 20, x, ref_includes_query=True)
    _, exact = EF.knn(x, x, 20, ref_includes_query=True)
    overlap = [len(set(a) & set(b)) / 20 for a, b in zip(found.tolist(), exact.tolist())]
    assert knn.last_recall == pytest.approx(sum(overlap) / len(overlap))
    assert knn.last_recall < 1.0  # two of 64 cells: some neighbours are missed


def test_sampled_recall_is_seeded_and_close_to_the_full_recall():
    x, _ = _data(2, spread=1.2)
    full = ApproximateKNN("ivf", nlist=64, nprobe=2, recall_sample=10_000)
    full(x, 20, x, ref_includes_query=True)
    sampled = [ApproximateKNN("ivf", nlist=64, nprobe=2, recall_sample=300) for _ in range(2)]
    for knn in sampled:
        knn(x, 20, x, ref_includes_query=True)
    assert sampled[0].last_recall == sampled[1].last_recall
    assert sampled[0].last_recall == pytest.approx(full.last_recall, abs=0.05)


def test_lists_route_with_a_custom_metric_reports_recall_too():
    class WithMean(AccuracyCalculator):
        def calculate_mean_distance(self, knn_distances, **kwargs):
            return float(knn_distances.mean())

        def requires_knn(self):
            return [*super().requires_knn(), "mean_distance"]

    x, labels = _data(3)
    calc = WithMean(include=("mean_distance", "precision_at_1"), k=5, device=CPU)
    calc.knn_func = ApproximateKNN("ivf", nlist=40, nprobe=8)
    got = calc.get_accuracy(x, labels)
    assert known_search(calc, x) is not None and got["knn_recall_at_k"] >= 0.95
    assert got["mean_distance"] > 0 and got["precision_at_1"] > 0.9


def test_rows_the_index_cannot_fill_are_searched_exactly():
    # 200 cells for 1000 points, one probed: many cells hold fewer than k = 30 points
    x, labels = _data(4)
    knn = ApproximateKNN("ivf", nlist=200, nprobe=1)
    dist, idx = knn(x, 30, x, ref_includes_query=True)
    assert knn.last_exact_rows > 0 and bool((idx >= 0).all())
    assert idx.shape == (1000, 30) and bool((dist >= 0).all())
    calc = AccuracyCalculator(k=30, exclude=NO_CLUSTERING, knn_func=knn, device=CPU)
    assert 0.0 < calc.get_accuracy(x, labels)["knn_recall_at_k"] <= 1.0


def test_distances_are_squared_l2_of_the_returned_neighbours():
    x, _ = _data(5)
    dist, idx = ApproximateKNN("hnsw")(x[:50], 4, x)
    want = ((x[idx] - x[:50].unsqueeze(1)) ** 2).sum(-1)
    torch.testing.assert_close(dist, want)


def test_no_recall_sample_reports_none():
    x, labels = _data(6)
    calc = AccuracyCalculator(
        k=5, exclude=NO_CLUSTERING, knn_func=ApproximateKNN(recall_sample=0), device=CPU
    )
    assert calc.get_accuracy(x, labels)["knn_recall_at_k"] is None


def test_held_index_lifecycle():
    x, _ = _data(7)
    knn = ApproximateKNN("ivf", nlist=20)
    with pytest.raises(IndexNotReadyError):
        knn(x, 3)
    with pytest.raises(IndexNotReadyError):
        knn.add(x)
    knn.train(x[:600])
    knn.add(x[600:])
    dist, idx = knn(x[:5], 3)
    assert idx[:, 0].tolist() == list(range(5)) and knn.last_recall is None
    assert dist[:, 0].tolist() == [0.0] * 5
    with pytest.raises(ValueError, match="query must have dim 16"):
        knn(torch.randn(2, 3), 3)
    knn.reset()
    assert knn.index is None


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"index_type": "lsh"}, ValueError, "index_type"),
        ({"nlist": 0}, ValueError, "nlist"),
        ({"nlist": 2.5}, TypeError, "nlist"),
        ({"nprobe": 0}, ValueError, "nprobe"),
        ({"hnsw_m": 1}, ValueError, "hnsw_m"),
        ({"ef_search": 0}, ValueError, "ef_search"),
        ({"ef_construction": "40"}, TypeError, "ef_construction"),
        ({"recall_sample": -1}, ValueError, "recall_sample"),
        ({"seed": None}, TypeError, "seed"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        ApproximateKNN(**kwargs)


def test_bad_search_inputs_name_the_argument():
    x, _ = _data(8)
    knn = ApproximateKNN()
    with pytest.raises(TypeError, match="k"):
        knn(x, 2.0, x)
    with pytest.raises(ValueError, match="reference"):
        knn(x, 2, x[:, :3])
    bad = x.clone()
    bad[3, 0] = float("nan")
    with pytest.raises(ValueError, match="reference must be finite"):
        knn(x, 2, bad)


def test_without_faiss_the_error_says_how_to_install(monkeypatch):
    from pml.eval import _faiss

    monkeypatch.setattr(_faiss, "get_faiss", lambda: None)
    with pytest.raises(ImportError, match="ApproximateKNN needs faiss"):
        ApproximateKNN()


def test_zero_k_and_an_empty_reference_give_empty_lists():
    x, _ = _data(9)
    knn = ApproximateKNN()
    dist, idx = knn(x[:10], 0, x)
    assert dist.shape == idx.shape == (10, 0) and knn.last_recall is None
    dist, idx = knn(x[:10], 3, x[:0])
    assert idx.shape == (10, 0)
