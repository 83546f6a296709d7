"""KNNClassifier against a per-query vote loop and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from pml.distances import CosineSimilarity, LpDistance
from pml.eval import InferenceModel, KNNClassifier, TorchKNN, _faiss
from pml.eval import functional as EF

needs_faiss = pytest.mark.skipif(not _faiss.faiss_available(), reason="faiss not installed")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def data(n=50, seed=0):
    g = _gen(seed)
    labels = torch.randint(0, 4, (n,), generator=g) * 3 + 10  # labels 10, 13, 16, 19
    centres = torch.randn(4, 5, generator=g)
    x = centres[(labels - 10) // 3] + 0.9 * torch.randn(n, 5, generator=g)
    return x, labels


def naive_vote(ref, labels, query, k, weighted):
    """Nearest by (Euclidean distance, index); votes summed per label; ties -> smallest."""
    preds = []
    for q in query.double():
        d = sorted((float(((q - r) ** 2).sum().sqrt()), j) for j, r in enumerate(ref.double()))
        votes: dict[int, float] = {}
        near = d[:k]
        zero = [j for dist, j in near if dist == 0]
        for dist, j in near:
            w = 1.0 if not weighted else (float(dist == 0) if zero else 1 / dist)
            votes[int(labels[j])] = votes.get(int(labels[j]), 0.0) + w
        top = max(votes.values())
        preds.append(min(c for c, v in votes.items() if v == top))
    return preds


@pytest.mark.parametrize("k", [1, 4, 7])
@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_knn_classifier_matches_naive_and_sklearn(k, weights):
    ref, labels = data()
    query, _ = data(30, seed=1)
    clf = KNNClassifier(ref.double(), labels, k=k, weights=weights)
    assert clf.predict(query.double()).tolist() == naive_vote(
        ref, labels, query, k, weights == "distance"
    )
    sk = KNeighborsClassifier(n_neighbors=k, weights=weights, algorithm="brute")
    sk.fit(ref.double().numpy(), labels.numpy())
    assert clf.classes_.tolist() == sk.classes_.tolist()
    np.testing.assert_allclose(
        clf.predict_proba(query.double()).numpy(),
        sk.predict_proba(query.double().numpy()),
        rtol=1e-10,
        atol=1e-12,
    )
    assert clf.predict(query.double()).tolist() == sk.predict(query.double().numpy()).tolist()


def test_ties_go_to_the_smallest_label():
    ref = torch.tensor([[0.0], [1.0], [-1.0], [2.0]])
    clf = KNNClassifier(ref, torch.tensor([5, 2, 5, 2]), k=2)
    # neighbours of 0.5: 0.0 (label 5) and 1.0 (label 2): one vote each
    assert clf.predict(torch.tensor([[0.5]])).tolist() == [2]
    assert clf.predict_proba(torch.tensor([[0.5]])).tolist() == [[0.5, 0.5]]
    weighted = KNNClassifier(ref, torch.tensor([5, 2, 5, 2]), k=4, weights="distance")
    # at 0.5: 5 gets 1/0.5 + 1/1.5, 2 gets 1/0.5 + 1/1.5: a tie
    assert weighted.predict(torch.tensor([[0.5]])).tolist() == [2]


def test_distance_weights_exact_match_takes_the_vote():
    ref = torch.tensor([[0.0], [0.1], [0.2]])
    clf = KNNClassifier(ref, torch.tensor([1, 0, 0]), k=3, weights="distance")
    assert clf.predict_proba(torch.tensor([[0.0]])).tolist() == [[0.0, 1.0]]
    assert EF.inverse_distance_weights(torch.tensor([[0.0, 0.0, 2.0]])).tolist() == [
        [1.0, 1.0, 0.0]
    ]


def test_callable_weights_and_distance():
    ref, labels = data()
    query, _ = data(20, seed=1)
    clf = KNNClassifier(ref, labels, k=5, weights=lambda d: torch.exp(-d))
    d, i = clf.kneighbors(query)
    ids = torch.unique(labels, return_inverse=True)[1][i]
    want = EF.class_probabilities(ids, torch.exp(-d), 4)
    torch.testing.assert_close(clf.predict_proba(query), want)
    cos = KNNClassifier(ref, labels, k=5, distance=CosineSimilarity())
    unit = torch.nn.functional.normalize
    plain = KNNClassifier(unit(ref, dim=1), labels, k=5)
    assert cos.predict(query).tolist() == plain.predict(unit(query, dim=1)).tolist()
    lp = KNNClassifier(ref, labels, k=5, weights="distance", distance=LpDistance())
    assert (
        lp.predict(query).tolist()
        == KNNClassifier(unit(ref, dim=1), labels, k=5, weights="distance")
        .predict(unit(query, dim=1))
        .tolist()
    )


def _model(knn_func):
    return InferenceModel(torch.nn.Identity(), knn_func=knn_func, data_device="cpu")


@pytest.mark.parametrize(
    "knn_func", [TorchKNN, pytest.param("faiss", marks=needs_faiss)], ids=["torch", "faiss"]
)
@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_on_an_inference_model(knn_func, weights):
    from pml.eval import FaissKNN

    ref, labels = data()
    query, _ = data(20, seed=1)
    model = _model(
        FaissKNN(reset_before=False, reset_after=False) if knn_func == "faiss" else knn_func()
    )
    model.train_knn(ref)
    clf = KNNClassifier(model, labels, k=5, weights=weights)
    unit = torch.nn.functional.normalize
    want = KNNClassifier(unit(ref, dim=1), labels, k=5, weights=weights)
    assert clf.predict(query).tolist() == want.predict(unit(query, dim=1)).tolist()
    torch.testing.assert_close(
        clf.predict_proba(query), want.predict_proba(unit(query, dim=1)), rtol=1e-4, atol=1e-5
    )


def test_knn_classifier_dtypes(dtype):
    ref, labels = data()
    query, _ = data(20, seed=1)
    clf = KNNClassifier(ref.to(dtype), labels, k=3)
    want = KNNClassifier(ref.to(dtype).float(), labels, k=3)
    assert clf.predict(query.to(dtype)).tolist() == want.predict(query.to(dtype).float()).tolist()
    assert clf.predict_proba(query.to(dtype)).dtype in (torch.float32, torch.float64)
    numpy_in = KNNClassifier(ref.numpy(), labels.numpy(), k=3)
    assert (
        numpy_in.predict(query.numpy()).tolist()
        == KNNClassifier(ref, labels, k=3).predict(query).tolist()
    )


def test_k_larger_than_the_references_is_clamped():
    clf = KNNClassifier(torch.tensor([[0.0], [1.0]]), torch.tensor([1, 2]), k=10)
    assert clf.predict_proba(torch.tensor([[0.0]])).tolist() == [[0.5, 0.5]]


def test_knn_classifier_errors():
    ref, labels = data()
    with pytest.raises(ValueError, match="k must be"):
        KNNClassifier(ref, labels, k=0)
    with pytest.raises(TypeError, match="k must be"):
        KNNClassifier(ref, labels, k=2.0)
    with pytest.raises(ValueError, match="weights"):
        KNNClassifier(ref, labels, weights="inverse")
    with pytest.raises(ValueError, match="labels must have length"):
        KNNClassifier(ref, labels[:3])
    with pytest.raises(ValueError, match="labels must be 1-D"):
        KNNClassifier(ref, torch.stack([labels, labels], 1))
    with pytest.raises(ValueError, match="source must be finite"):
        KNNClassifier(torch.full((3, 2), float("nan")), torch.zeros(3))
    with pytest.raises(ValueError, match="weights='distance'"):
        KNNClassifier(ref, labels, weights="distance", distance=CosineSimilarity())
    with pytest.raises(TypeError, match="distance"):
        KNNClassifier(ref, labels, distance="cos")
    clf = KNNClassifier(ref, labels)
    with pytest.raises(ValueError, match="x must have dim"):
        clf.predict(ref[:, :2])
    with pytest.raises(ValueError, match="weights must return"):
        KNNClassifier(ref, labels, weights=lambda d: d[:, :1]).predict(ref)
    model = _model(TorchKNN())
    model.train_knn(ref)
    with pytest.raises(ValueError, match="distance applies to reference embeddings"):
        KNNClassifier(model, labels, distance=LpDistance())
    with pytest.raises(ValueError, match="labels must label every row"):
        KNNClassifier(model, labels[:10]).predict(ref)
    cos_model = _model(TorchKNN(CosineSimilarity()))
    with pytest.raises(ValueError, match="weights='distance'"):
        KNNClassifier(cos_model, labels, weights="distance")
