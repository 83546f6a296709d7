"""pml.eval.functional against naive per-query loops."""

from __future__ import annotations

import math

import pytest
import torch

from pml.core.testing import assert_close, clustered_embeddings
from pml.eval import functional as EF


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def naive_knn(query, reference, k, ref_includes_query=False):
    """Sorted by (exact float64 squared distance, index), self excluded: one query at a time."""
    out_d, out_i = [], []
    q64, r64 = query.double(), reference.double()
    for i in range(len(query)):
        pairs = [
            (float(((q64[i] - r64[j]) ** 2).sum()), j)
            for j in range(len(reference))
            if not (ref_includes_query and j == i)
        ]
        pairs.sort()
        out_d.append([d for d, _ in pairs[:k]])
        out_i.append([j for _, j in pairs[:k]])
    return torch.tensor(out_d, dtype=torch.float64), torch.tensor(out_i)


def naive_metrics(query, q_labels, reference, r_labels, k, ref_includes_query):
    """Per-query values straight from the spec's definitions (lone queries -> None)."""
    num_k = len(reference) - int(ref_includes_query) if k is None else k
    _, idx = naive_knn(query, reference, num_k, ref_includes_query)
    rows = []
    for i in range(len(query)):
        y = int(q_labels[i])
        count = sum(int(v) == y for v in r_labels.tolist())
        big_r = count - 1 if ref_includes_query else count
        if big_r <= 0:
            rows.append(None)
            continue
        rel = [int(r_labels[j]) == y for j in idx[i].tolist()]
        m = min(big_r, len(rel))
        hits, ap, apr = 0, 0.0, 0.0
        for j, is_rel in enumerate(rel, start=1):
            if is_rel:
                hits += 1
                ap += hits / j
                if j <= m:
                    apr += hits / j
        first = next((j for j, v in enumerate(rel, start=1) if v), None)
        rows.append(
            {
                "precision_at_1": float(rel[0]),
                "r_precision": sum(rel[:m]) / m,
                "mean_average_precision_at_r": apr / big_r,
                "mean_average_precision": ap / big_r,
                "mean_reciprocal_rank": 0.0 if first is None else 1.0 / first,
            }
        )
    return rows


# ---------------------------------------------------------------------------- k-NN
def test_squared_l2_matrix_matches_formula(dtype, device):
    g = _gen()
    q, r = torch.randn(7, 5, generator=g), torch.randn(9, 5, generator=g)
    got = EF.squared_l2_matrix(q.to(device, dtype), r.to(device, dtype))
    assert got.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    want = ((q.double()[:, None] - r.double()[None]) ** 2).sum(-1)
    tol = {torch.float16: 5e-2, torch.bfloat16: 2e-1}.get(dtype, 1e-4)
    torch.testing.assert_close(got.double().cpu(), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("ref_includes_query", [False, True])
@pytest.mark.parametrize("k", [1, 4, 30])
def test_knn_matches_naive_with_duplicates(k, ref_includes_query):
    g = _gen(1)
    x = torch.randint(-2, 3, (31, 3), generator=g).double()  # many exact ties
    x[20:25] = x[:5]
    query = x if ref_includes_query else x[:11]
    dist, idx = EF.knn(query, x, k, ref_includes_query=ref_includes_query, batch_size=4)
    want_d, want_i = naive_knn(query, x, k, ref_includes_query)
    # integer coordinates: distances are exact, so the (distance, index) order must match
    assert idx.tolist() == want_i.tolist()
    torch.testing.assert_close(dist, want_d)


def test_knn_clamps_k_and_handles_empty():
    x = torch.randn(4, 2, generator=_gen())
    d, i = EF.knn(x, x, 10, ref_includes_query=True)
    assert i.shape == (4, 3)
    d, i = EF.knn(x[:0], x, 2)
    assert d.shape == (0, 2) and i.shape == (0, 2) and i.dtype == torch.long


def test_knn_inverted_distance_orders_descending():
    from pml.distances import CosineSimilarity

    q = torch.tensor([[1.0, 0.0]])
    r = torch.tensor([[0.0, 1.0], [1.0, 0.1], [1.0, 0.0], [-1.0, 0.0]])
    d, i = EF.knn(q, r, 4, distance_fn=CosineSimilarity(), is_inverted=True)
    assert i.tolist() == [[2, 1, 0, 3]]
    assert d[0, 0] == pytest.approx(1.0)


def test_smallest_k_ties_by_index():
    values = torch.tensor([[1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    vals, idx = EF.smallest_k(values, 2)  # topk route (4k < M)
    assert idx.tolist() == [[1, 3]]
    vals, idx = EF.smallest_k(values, 3)  # boundary tie: lowest index wins
    assert idx.tolist() == [[1, 3, 0]]
    assert vals.tolist() == [[0.0, 0.0, 1.0]]


@pytest.mark.parametrize("k", [1, 2, 5, 9])
def test_smallest_k_equals_stable_sort_with_boundary_ties(k):
    # integer values in a narrow range: the k-th value ties outside the selection in most rows
    values = torch.randint(0, 4, (64, 40), generator=_gen(2)).float()
    vals, idx = EF.smallest_k(values, k)
    want_vals, want_idx = torch.sort(values, dim=1, stable=True)
    assert idx.tolist() == want_idx[:, :k].tolist()
    assert torch.equal(vals, want_vals[:, :k])


@pytest.mark.parametrize("inverted", [False, True])
def test_knn_nan_distances_rank_last_and_report_nan(inverted):
    from pml.distances import CosineSimilarity

    x = torch.randn(12, 3, generator=_gen(3))
    base = CosineSimilarity() if inverted else EF.squared_l2_matrix

    def fn(q, r):  # a distance that is NaN for reference item 4 (finite inputs)
        mat = base(q, r).clone()
        mat[:, 4] = float("nan")
        return mat

    d, i = EF.knn(x, x, 11, distance_fn=fn, is_inverted=inverted, ref_includes_query=True)
    clean = [r for r in range(12) if r != 4]
    assert (i[clean, -1] == 4).all()  # the NaN item is everyone's last neighbour
    assert torch.isnan(d[clean, -1]).all() and not torch.isnan(d[clean, :-1]).any()
    assert not torch.isnan(d[4]).any() and 4 not in i[4].tolist()  # its own NaN is removed
    # the block's own NaN-free values come back exactly (negation undone bit for bit)
    fn = CosineSimilarity() if inverted else None
    d_clean, i_clean = EF.knn(
        x[clean], x[clean], 3, distance_fn=fn, is_inverted=inverted, ref_includes_query=True
    )
    mat = fn(x[clean], x[clean]) if inverted else EF.squared_l2_matrix(x[clean], x[clean])
    assert torch.equal(d_clean, mat.gather(1, i_clean))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_knn_and_ranking_reject_nan_or_inf_embeddings(bad):
    # fix: NaN rows were ranked last, so AccuracyCalculator reported finite metrics
    x = torch.randn(12, 3, generator=_gen(3))
    x[4, 1] = bad
    ids = torch.arange(12) % 3
    with pytest.raises(ValueError, match="query must be finite"):
        EF.knn(x, x, 3, ref_includes_query=True)
    with pytest.raises(ValueError, match="reference must be finite"):
        EF.knn(x[:4], x, 3)
    with pytest.raises(ValueError, match="query must be finite"):
        EF.retrieval_values(x, ids, x, ids, ref_includes_query=True)
    with pytest.raises(ValueError, match="reference must be finite"):
        EF.retrieval_values(x[:4], ids[:4], x, ids)


@pytest.mark.parametrize("k", [1, 3])
def test_accuracy_small_k_route_matches_naive_metrics(k):
    # 4k < reference size: AccuracyCalculator takes the k-NN route, not the ranking route
    from pml.eval import AccuracyCalculator

    emb, labels = _data("ties")
    calc = AccuracyCalculator(k=k, exclude=("NMI", "AMI"))
    got = calc.get_accuracy(emb, labels)
    rows = [r for r in naive_metrics(emb, labels, emb, labels, k, True) if r is not None]
    for name, value in got.items():
        want = sum(r[name] for r in rows) / len(rows)
        assert value == pytest.approx(want, rel=1e-6), name  # float32 averages


def test_remove_self_matches_drops_last_when_self_missing():
    d = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 2.0]])
    i = torch.tensor([[5, 6, 7], [1, 0, 2]])  # row 0: self (0) not retrieved
    rd, ri = EF.remove_self_matches(d, i)
    assert ri.tolist() == [[5, 6], [0, 2]]
    assert rd.tolist() == [[0.0, 0.0], [1.0, 2.0]]


# ---------------------------------------------------------------------------- metrics
def test_relevance_multi_dim_labels():
    gt = torch.tensor([[[1, 2]], [[3, 4]]])
    knn = torch.tensor([[[1, 2], [1, 3]], [[3, 4], [3, 4]]])
    assert EF.relevance(gt, knn).tolist() == [[True, False], [True, True]]


def test_metric_values_match_definitions():
    rel = torch.tensor([[False, True, True, False], [True, False, False, False]])
    r = torch.tensor([3, 1])
    assert EF.precision_at_k_values(rel, 1).tolist() == [0.0, 1.0]
    assert EF.r_precision_values(rel, r).tolist() == [2 / 3, 1.0]
    ap = EF.average_precision_values(rel, r)
    assert ap.tolist() == pytest.approx([(1 / 2 + 2 / 3) / 3, 1.0], rel=1e-15)
    apr = EF.average_precision_values(rel, r, at_r=True)
    assert apr.tolist() == pytest.approx([(1 / 2 + 2 / 3) / 3, 1.0], rel=1e-15)
    rr = EF.reciprocal_rank_values(rel)
    assert rr.dtype == torch.float32 and rr.tolist() == [0.5, 1.0]


def test_class_means_rows_and_float32():
    values = torch.tensor([1.0, 0.0, 0.5, 0.25])
    labels = torch.tensor([[1, 0], [0, 1], [1, 0], [0, 1]])
    classes, means = EF.class_means(values, labels)
    assert classes.tolist() == [[0, 1], [1, 0]]
    assert means.dtype == torch.float32 and means.tolist() == [0.125, 0.75]


def test_label_ids_exact_above_2_pow_24():
    q = torch.tensor([16777216, 16777217])
    r = torch.tensor([16777217, 16777217, 16777216])
    q_ids, r_ids, unique = EF.label_ids(q, r)
    assert q_ids.tolist() == [0, 1] and r_ids.tolist() == [1, 1, 0]
    assert unique.tolist() == [16777216, 16777217]


def _data(kind: str):
    if kind == "clustered":  # mostly the ragged route (few entries ranked per row)
        return clustered_embeddings(6, 7, 4, seed=3, spread=1.5, dtype=torch.float64)
    g = _gen(8)
    labels = torch.randint(0, 4, (42,), generator=g)
    if kind == "random":  # no class structure: the dense route (searchsorted of whole rows)
        return torch.randn(42, 3, generator=g, dtype=torch.float64), labels
    # integer coordinates: many exact ties (exact in float32 too), flagged by the dense route
    dtype = torch.float32 if kind == "ties32" else torch.float64
    return torch.randint(-1, 2, (42, 3), generator=g).to(dtype), labels


@pytest.mark.parametrize("kind", ["clustered", "random", "ties", "ties32"])
@pytest.mark.parametrize("k", [None, 1, 3, 7, 1000])
@pytest.mark.parametrize("ref_includes_query", [True, False])
def test_retrieval_values_match_naive(k, ref_includes_query, kind):
    emb, labels = _data(kind)
    if ref_includes_query:
        query, q_lab, reference, r_lab = emb, labels, emb, labels
    else:
        query, q_lab, reference, r_lab = emb[:15], labels[:15], emb[15:], labels[15:]
    q_ids, r_ids, _ = EF.label_ids(q_lab, r_lab)
    out = EF.retrieval_values(
        query, q_ids, reference, r_ids, k, ref_includes_query=ref_includes_query, batch_size=4
    )
    clamped = None if k is None else min(k, len(reference) - int(ref_includes_query))
    want = naive_metrics(query, q_lab, reference, r_lab, clamped, ref_includes_query)
    for i, row in enumerate(want):
        for name in EF.RETRIEVAL_METRICS:
            got = float(out[name][i])
            if row is None:
                assert math.isnan(got)
            else:
                assert got == pytest.approx(row[name], rel=1e-6 if "rank" in name else 1e-12)


def test_retrieval_values_small_k_cap_equals_uncapped():
    # k * 64 <= M takes the top-k bounded route; it must agree with the neighbour lists
    emb, labels = clustered_embeddings(10, 30, 8, seed=4, spread=2.0)
    ids = labels
    capped = EF.retrieval_values(emb, ids, emb, ids, 2, ref_includes_query=True)
    _, idx = EF.knn(emb, emb, 2, ref_includes_query=True)
    rel = labels[idx] == labels[:, None]
    r = torch.bincount(labels)[labels] - 1
    assert_close(capped["mean_average_precision"], EF.average_precision_values(rel, r))
    assert_close(capped["r_precision"], EF.r_precision_values(rel, r, 2))
    assert_close(capped["mean_reciprocal_rank"], EF.reciprocal_rank_values(rel))


def test_retrieval_values_dtype_and_device(dtype, device):
    emb, labels = clustered_embeddings(4, 6, 5, seed=5)
    ref = EF.retrieval_values(emb.double(), labels, emb.double(), labels, ref_includes_query=True)
    out = EF.retrieval_values(
        emb.to(device, dtype),
        labels.to(device),
        emb.to(device, dtype),
        labels.to(device),
        ref_includes_query=True,
    )
    assert out["mean_average_precision"].device == device
    tol = 0.05 if dtype in (torch.float16, torch.bfloat16) else 1e-9
    # well-separated clusters: the ranking of same-class items does not depend on precision
    torch.testing.assert_close(
        out["precision_at_1"].cpu(), ref["precision_at_1"], rtol=tol, atol=tol
    )


def test_retrieval_values_lone_and_empty():
    x = torch.tensor([[0.0], [1.0], [5.0]])
    ids = torch.tensor([0, 0, 1])
    out = EF.retrieval_values(x, ids, x, ids, ref_includes_query=True)
    assert math.isnan(out["precision_at_1"][2]) and out["num_relevant"].tolist() == [1, 1, 0]
    empty = EF.retrieval_values(x, ids, x[:0], ids[:0])
    assert all(torch.isnan(empty[n]).all() for n in EF.RETRIEVAL_METRICS)


# ---------------------------------------------------------------------------- clustering
def test_kmeans_finds_separated_clusters():
    emb, labels = clustered_embeddings(5, 20, 8, seed=6, spread=0.05)
    ids, centroids = EF.kmeans(emb, 5)
    assert centroids.shape == (5, 8)
    # same partition as the labels (ids are a permutation of the labels)
    pairs = set(zip(labels.tolist(), ids.tolist()))
    assert len(pairs) == 5


def test_kmeans_is_deterministic_and_validates():
    x = torch.randn(50, 3, generator=_gen())
    assert torch.equal(EF.kmeans(x, 4)[0], EF.kmeans(x, 4)[0])
    with pytest.raises(ValueError, match="n_clusters"):
        EF.kmeans(x, 51)


def test_kmeans_subsamples_for_training():
    x = torch.randn(200, 2, generator=_gen())
    ids, _ = EF.kmeans(x, 2, max_points_per_centroid=10)
    assert ids.shape == (200,) and set(ids.tolist()) <= {0, 1}


def test_pca_matches_svd_up_to_sign():
    x = torch.randn(40, 6, generator=_gen(2), dtype=torch.float64)
    got = EF.pca(x, 3)
    centred = x - x.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    want = centred @ v[:3].T
    torch.testing.assert_close(got.abs(), want.abs())
    with pytest.raises(ValueError, match="output_dimensionality"):
        EF.pca(x, 7)


def test_knn_honours_a_distance_subclass_that_overrides_forward():
    from pml.distances import LpDistance

    class Reversed(LpDistance):
        """Largest distance first: the nearest neighbour becomes the farthest."""

        def forward(self, query_emb, ref_emb=None):
            return -super().forward(query_emb, ref_emb)

    g = torch.Generator().manual_seed(0)
    q, r = torch.randn(6, 3, generator=g), torch.randn(9, 3, generator=g)
    _, got = EF.knn(q, r, 1, distance_fn=Reversed(normalize_embeddings=False))
    want = torch.cdist(q, r).argmax(dim=1, keepdim=True)
    assert torch.equal(got, want)
