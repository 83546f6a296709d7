"""The fast exact k-NN route: bounded selection, block-wise scoring, faiss and torch searches."""

from __future__ import annotations

import pytest
import torch

from pml.core.testing import clustered_embeddings
from pml.eval import AccuracyCalculator, FaissKNN, TorchKNN
from pml.eval import functional as EF
from pml.eval._faiss import faiss_available
from pml.eval._neighbor_lists import known_search
from pml.eval.functional._smallest_k import _smallest_k_bounded, _smallest_k_topk

CPU = torch.device("cpu")
NO_CLUSTERING = ("NMI", "AMI")
needs_faiss = pytest.mark.skipif(not faiss_available(), reason="faiss is not installed")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class ListedKNN(TorchKNN):
    """The same search, but a knn_func pml does not know: the (N, k) neighbour-list route."""

    def __call__(self, query, k, reference=None, ref_includes_query=False):
        return super().__call__(query, k, reference, ref_includes_query)


def naive_knn(query, reference, k, ref_includes_query=False):
    """Sorted by (exact float64 squared distance, index), self excluded: one query at a time."""
    q64, r64 = query.double(), reference.double()
    out = []
    for i in range(len(query)):
        pairs = sorted(
            (float(((q64[i] - r64[j]) ** 2).sum()), j)
            for j in range(len(reference))
            if not (ref_includes_query and j == i)
        )
        out.append([j for _, j in pairs[:k]])
    return out


def naive_values(q_labels, r_labels, neighbours, ref_includes_query):
    """Per-query metric values straight from the spec's definitions (lone queries -> None)."""
    rows = []
    for i, idx in enumerate(neighbours):
        y = int(q_labels[i])
        big_r = sum(int(v) == y for v in r_labels.tolist()) - int(ref_includes_query)
        if big_r <= 0:
            rows.append(None)
            continue
        rel = [int(r_labels[j]) == y for j in idx]
        m = min(big_r, len(rel))
        hits, ap, apr = 0, 0.0, 0.0
        for j, is_rel in enumerate(rel, start=1):
            if is_rel:
                hits += 1
                ap += hits / j
                apr += hits / j if j <= m else 0.0
        first = next((j for j, v in enumerate(rel, start=1) if v), None)
        rows.append(
            {
                "precision_at_1": float(rel[0]) if rel else 0.0,
                "r_precision": sum(rel[:m]) / m if m else float("nan"),
                "mean_average_precision_at_r": apr / big_r,
                "mean_average_precision": ap / big_r,
                "mean_reciprocal_rank": 0.0 if first is None else 1.0 / first,
            }
        )
    return rows


# ---------------------------------------------------------------------------- selection
def _tie_heavy_rows(kind: int, rows: int, cols: int, g: torch.Generator) -> torch.Tensor:
    if kind == 0:
        return torch.randn(rows, cols, generator=g)
    if kind == 1:  # a handful of distinct values: ties everywhere, also at the k-th value
        return torch.randint(0, 5, (rows, cols), generator=g).float()
    if kind == 2:  # -0.0 and 0.0 are equal values
        v = torch.randint(0, 50, (rows, cols), generator=g).float()
        v[:, ::3] = -0.0
        return v
    v = torch.randn(rows, cols, generator=g)  # one row almost all equal: a "heavy" row
    v[0, 3:] = v[0, 0]
    return v


@pytest.mark.parametrize("kind", [0, 1, 2, 3])
def test_bounded_selection_equals_stable_sort(kind):
    g = _gen(kind)
    for _ in range(25):
        rows = int(torch.randint(1, 40, (1,), generator=g))
        cols = int(torch.randint(20, 600, (1,), generator=g))
        k = int(torch.randint(1, cols // 4, (1,), generator=g))
        values = _tie_heavy_rows(kind, rows, cols, g)
        want_vals, want_idx = torch.sort(values, dim=1, stable=True)
        for select in (EF.smallest_k, _smallest_k_topk, _smallest_k_bounded):
            out = select(values, k)
            if out is None:  # the bounded route declined (too many ties): topk instead
                continue
            assert out[1].tolist() == want_idx[:, :k].tolist(), select.__name__
            assert torch.equal(out[0], want_vals[:, :k]), select.__name__


def test_bounded_selection_handles_reference_sorted_by_class():
    # neighbours stored next to each other (a reference sorted by label) fall in different
    # groups, so the bound stays tight; the result is exact either way
    x, labels = clustered_embeddings(20, 50, 8, seed=1, spread=0.3)
    order = torch.argsort(labels, stable=True)
    x = x[order]
    values = EF.squared_l2_matrix(x[:64], x)
    got = EF.smallest_k(values, 40)
    want = torch.sort(values, dim=1, stable=True)
    assert got[1].tolist() == want.indices[:, :40].tolist()


@pytest.mark.parametrize("ref_includes_query", [False, True])
@pytest.mark.parametrize("k", [3, 12, 40])
def test_exact_search_equals_naive_neighbours_with_duplicates(k, ref_includes_query):
    g = _gen(4)
    x = torch.randint(-3, 4, (240, 3), generator=g).float()  # exact distances, many ties
    x[200:230] = x[:30]
    query = x if ref_includes_query else x[:50]
    _, idx = EF.knn(query, x, k, ref_includes_query=ref_includes_query)
    assert idx.tolist() == naive_knn(query, x, k, ref_includes_query)


def test_knn_blocks_cover_the_queries_in_order():
    x = torch.randn(300, 4, generator=_gen(5))
    blocks = list(EF.knn_blocks(x, x, 5, batch_size=64))
    assert [s for s, _, _ in blocks] == [0, 64, 128, 192, 256]
    idx = torch.cat([i for _, _, i in blocks])
    assert idx.tolist() == EF.knn(x, x, 5)[1].tolist()
    assert (idx[:, 0] == torch.arange(300)).all()  # each row's own entry first (distance 0)


# ---------------------------------------------------------------------------- scoring
def test_knn_retrieval_values_equal_naive_definitions():
    x, labels = clustered_embeddings(6, 9, 5, seed=6, spread=1.2)
    labels[-1] = 99  # a lone class
    _, _, classes = EF.label_ids(labels, labels)
    ids = torch.searchsorted(classes, labels)
    k = 7
    blocks = ((s, i) for s, _, i in EF.knn_blocks(x, x, k + 1, batch_size=10))
    got = EF.knn_retrieval_values(ids, ids, blocks, k, ref_includes_query=True)
    want = naive_values(labels, labels, naive_knn(x, x, k, True), True)
    for i, row in enumerate(want):
        if row is None:
            assert torch.isnan(got["precision_at_1"][i])
            continue
        for name, value in row.items():
            assert float(got[name][i]) == pytest.approx(value, rel=1e-6), (i, name)


def test_knn_retrieval_values_minus_one_is_never_relevant():
    ids = torch.tensor([0, 0, 1])
    blocks = [(0, torch.tensor([[-1, 1], [0, -1], [-1, -1]]))]
    out = EF.knn_retrieval_values(ids, ids, blocks, 2)
    assert out["precision_at_1"].tolist() == [0.0, 1.0, 0.0]
    assert out["mean_reciprocal_rank"].tolist() == [0.5, 1.0, 0.0]


def test_neighbour_recall_is_the_overlap_fraction():
    found = torch.tensor([[1, 2, 3], [4, 5, -1], [7, 8, 9]])
    exact = torch.tensor([[3, 2, 1], [4, 6, 5], [0, 1, 2]])
    assert EF.neighbour_recall(found, exact).tolist() == pytest.approx([1.0, 2 / 3, 0.0])


def test_drop_self_matches_with_given_own_indices():
    idx = torch.tensor([[5, 7, 9], [2, 4, 6]])
    assert EF.drop_self_matches(idx, own=torch.tensor([7, 3])).tolist() == [[5, 9], [2, 4]]


# ---------------------------------------------------------------------------- calculator
def _calculators(**kwargs):
    return {
        "fast": AccuracyCalculator(knn_func=TorchKNN(), device=CPU, **kwargs),
        "lists": AccuracyCalculator(knn_func=ListedKNN(), device=CPU, **kwargs),
    }


@pytest.mark.parametrize(
    "options",
    [{}, {"avg_of_avgs": True}, {"return_per_class": True}],
    ids=["mean", "avg_of_avgs", "per_class"],
)
@pytest.mark.parametrize("k", ["max_bin_count", 5])
def test_fast_route_equals_neighbour_lists(k, options):
    x, labels = clustered_embeddings(12, 20, 8, seed=7, spread=1.0)
    labels[:3] = 50  # a class of 3
    labels[3] = 51  # a lone class
    calcs = _calculators(k=k, exclude=NO_CLUSTERING, **options)
    assert known_search(calcs["fast"], x) is not None
    assert known_search(calcs["lists"], x) is None
    fast, lists = (c.get_accuracy(x, labels) for c in calcs.values())
    assert fast == lists


def test_fast_route_with_a_separate_reference_equals_naive():
    x, labels = clustered_embeddings(8, 30, 6, seed=8, spread=1.1)
    query, q_labels = x[:40], labels[:40].clone()
    q_labels[0] = 77  # absent from the reference: lone
    calc = AccuracyCalculator(k=6, exclude=NO_CLUSTERING, knn_func=TorchKNN(), device=CPU)
    got = calc.get_accuracy(query, q_labels, x[40:], labels[40:], ref_includes_query=False)
    rows = [r for r in naive_values(q_labels, labels[40:], naive_knn(query, x[40:], 6), False) if r]
    for name, value in got.items():
        want = sum(r[name] for r in rows) / len(rows)
        assert value == pytest.approx(want, rel=1e-6), name


def test_fast_route_with_ties_equals_naive():
    g = _gen(9)
    x = torch.randint(-2, 3, (160, 3), generator=g).float()
    x[120:150] = x[:30]
    labels = torch.randint(0, 5, (160,), generator=g)
    calc = AccuracyCalculator(k=8, exclude=NO_CLUSTERING, knn_func=TorchKNN(), device=CPU)
    got = calc.get_accuracy(x, labels)
    rows = [r for r in naive_values(labels, labels, naive_knn(x, x, 8, True), True) if r]
    for name, value in got.items():
        want = sum(r[name] for r in rows) / len(rows)
        assert value == pytest.approx(want, rel=1e-6), name


@needs_faiss
def test_default_knn_searches_with_faiss_when_installed():
    x = torch.randn(50, 4, generator=_gen(10))
    default = AccuracyCalculator(device=CPU)
    assert known_search(default, x).kind == "faiss"
    assert known_search(default, x.double()).kind == "torch"  # faiss would round float64
    assert known_search(AccuracyCalculator(knn_func=TorchKNN(), device=CPU), x).kind == "torch"
    assert known_search(AccuracyCalculator(knn_func=FaissKNN(), device=CPU), x).kind == "faiss"
    persistent = AccuracyCalculator(knn_func=FaissKNN(reset_before=False), device=CPU)
    assert known_search(persistent, x) is None  # its own held index: the lists route


def test_default_knn_searches_with_torch_without_faiss(monkeypatch):
    from pml.eval import _faiss

    monkeypatch.setattr(_faiss, "get_faiss", lambda: None)
    monkeypatch.setattr(
        "pml.eval._neighbor_lists.faiss_available", lambda: _faiss.get_faiss() is not None
    )
    x = torch.randn(50, 4, generator=_gen(11))
    assert known_search(AccuracyCalculator(device=CPU), x).kind == "torch"


@needs_faiss
@pytest.mark.parametrize("spread", [1.0, 2.0])
def test_faiss_and_torch_routes_give_the_same_metrics(spread):
    x, labels = clustered_embeddings(20, 40, 16, seed=12, spread=spread)
    kw = {"k": "max_bin_count", "exclude": NO_CLUSTERING, "device": CPU}
    results = [
        AccuracyCalculator(**kw).get_accuracy(x, labels),  # faiss
        AccuracyCalculator(knn_func=TorchKNN(), **kw).get_accuracy(x, labels),
        AccuracyCalculator(knn_func=FaissKNN(), **kw).get_accuracy(x, labels),
        AccuracyCalculator(knn_func=ListedKNN(), **kw).get_accuracy(x, labels),
    ]
    for other in results[1:]:
        assert other.keys() == results[0].keys()
        for name, value in results[0].items():
            assert other[name] == pytest.approx(value, rel=1e-9, abs=1e-9), name


@needs_faiss
def test_faiss_search_breaks_ties_by_index_like_torch():
    g = _gen(13)
    x = torch.randint(-2, 3, (200, 3), generator=g).float()
    labels = torch.randint(0, 6, (200,), generator=g)
    kw = {"k": 10, "exclude": NO_CLUSTERING, "device": CPU}
    faiss_result = AccuracyCalculator(**kw).get_accuracy(x, labels)
    torch_result = AccuracyCalculator(knn_func=TorchKNN(), **kw).get_accuracy(x, labels)
    assert faiss_result == torch_result


def test_selection_of_empty_and_non_contiguous_blocks():
    values = torch.randn(60, 30, generator=_gen(14)).T  # (30, 60), column-major
    want = torch.sort(values, dim=1, stable=True)
    vals, idx = EF.smallest_k(values, 5)
    assert idx.tolist() == want.indices[:, :5].tolist() and torch.equal(vals, want.values[:, :5])
    vals, idx = EF.smallest_k(torch.empty(0, 60), 5)
    assert vals.shape == idx.shape == (0, 5)
    d, i = EF.knn(torch.empty(0, 3), torch.randn(80, 3, generator=_gen(15)), 4)
    assert d.shape == i.shape == (0, 4)
