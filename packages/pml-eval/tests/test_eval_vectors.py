"""AccuracyCalculator against the reference's outputs (tests/vectors/accuracy.json).

NMI/AMI are checked through the stored k-means assignments (``details.cluster_labels``):
they are exact functions of those. The retrieval metrics use our default (plain-torch) k-NN,
and again faiss's k-NN (generic neighbour-list path) when faiss is installed.
"""

from __future__ import annotations

import math

import pytest
import torch

from pml.core.testing import build_from_spec, load_vectors
from pml.eval import AccuracyCalculator, CustomKNN, TorchKNN
from pml.eval._faiss import faiss_available

CASES = load_vectors("accuracy")
CPU = torch.device("cpu")


def _inputs(case: dict) -> dict:
    inp = case["inputs"]

    def emb(v):
        return None if v is None else torch.tensor(v, dtype=torch.float64)

    def lab(v):
        return None if v is None else torch.tensor(v, dtype=torch.long)

    return {
        "query": emb(inp["query"]),
        "query_labels": lab(inp["query_labels"]),
        "reference": emb(inp["reference"]),
        "reference_labels": lab(inp["reference_labels"]),
        "ref_includes_query": inp["ref_includes_query"],
    }


def _stored_kmeans(case: dict):
    stored = case["expected"]["details"].get("cluster_labels")
    if stored is None:
        return None
    return lambda x, n: torch.tensor(stored, dtype=torch.long, device=x.device)


def _assert_metrics(out: dict, expected: dict) -> None:
    assert list(out) == list(expected)  # same metrics, same order
    for name, want in expected.items():
        got = out[name]
        # AccuracyCalculator works in float32 in the reference; MRR is float32 itself.
        rtol = 1e-6 if name == "mean_reciprocal_rank" else 1e-9
        if isinstance(want, list):
            assert isinstance(got, list) and len(got) == len(want), name
            for g, w in zip(got, want):
                assert math.isclose(g, w, rel_tol=rtol, abs_tol=1e-12), (name, got, want)
        else:
            assert isinstance(got, float), name
            assert math.isclose(got, want, rel_tol=rtol, abs_tol=1e-12), (name, got, want)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_vectors_default_knn(case: dict) -> None:
    kwargs = build_from_spec(case["kwargs"])
    calc = AccuracyCalculator(**kwargs, kmeans_func=_stored_kmeans(case), device=CPU)
    _assert_metrics(calc.get_accuracy(**_inputs(case)), case["expected"]["metrics"])


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_vectors_generic_knn_path(case: dict) -> None:
    # a CustomKNN with squared L2 ranks like faiss; a subclass forces the neighbour-list path
    from pml.distances import LpDistance

    class ListKNN(CustomKNN):
        def __call__(self, *args, **kwargs):
            return super().__call__(*args, **kwargs)

    knn = ListKNN(LpDistance(normalize_embeddings=False, power=2))
    kwargs = build_from_spec(case["kwargs"])
    calc = AccuracyCalculator(**kwargs, knn_func=knn, kmeans_func=_stored_kmeans(case), device=CPU)
    _assert_metrics(calc.get_accuracy(**_inputs(case)), case["expected"]["metrics"])


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_vectors_neighbour_lists(case: dict) -> None:
    inp = _inputs(case)
    details = case["expected"]["details"]
    query, reference = inp["query"], inp["reference"]
    riq = inp["ref_includes_query"]
    if reference is None:
        reference, riq = query, True
    k = len(details["knn_indices"][0])
    distances, indices = TorchKNN()(query, k, reference, riq)
    assert indices.tolist() == details["knn_indices"]
    want = torch.tensor(details["knn_distances"], dtype=torch.float64)
    torch.testing.assert_close(distances, want, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not faiss_available(), reason="faiss not installed")
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_vectors_with_faiss_backends(case: dict) -> None:
    from pml.eval import FaissKMeans, FaissKNN

    inp = _inputs(case)
    details = case["expected"]["details"]
    kwargs = build_from_spec(case["kwargs"])
    calc = AccuracyCalculator(**kwargs, knn_func=FaissKNN(), device=CPU)
    assert isinstance(calc.kmeans_func, FaissKMeans)  # the default when faiss is installed
    _assert_metrics(calc.get_accuracy(**inp), case["expected"]["metrics"])
    if "cluster_labels" in details:
        num_clusters = len(set(case["inputs"]["query_labels"]))
        ids = FaissKMeans(niter=20)(inp["query"], num_clusters)
        assert ids.tolist() == details["cluster_labels"]


def test_well_separated_clusters_with_torch_kmeans() -> None:
    # any k-means that finds the obvious partition gives NMI = AMI = 1 (see the case notes)
    from pml.eval import TorchKMeans

    (case,) = [c for c in CASES if c["name"] == "well_separated_clusters"]
    calc = AccuracyCalculator(kmeans_func=TorchKMeans(), device=CPU)
    _assert_metrics(calc.get_accuracy(**_inputs(case)), case["expected"]["metrics"])
