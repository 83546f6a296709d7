"""NDCG@k with graded relevance against a per-query loop."""

from __future__ import annotations

import math

import pytest
import torch

from pml.distances import CosineSimilarity
from pml.eval import functional as EF
from pml.eval import ndcg_at_k


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def column_gains(q, r):
    q, r = torch.as_tensor(q), torch.as_tensor(r)
    return float((q == r).sum()) if q.ndim else float(q == r)


def naive_ndcg(
    x, labels, ref, ref_labels, k, ref_includes_query, gain_fn=column_gains, exponential=False
):
    """One query at a time: rank by (float64 squared distance, index), DCG / ideal DCG."""
    out = []
    for i in range(len(x)):
        items = [
            (float(((x[i].double() - ref[j].double()) ** 2).sum()), j)
            for j in range(len(ref))
            if not (ref_includes_query and j == i)
        ]
        items.sort()
        gains = {j: gain_fn(labels[i], ref_labels[j]) for _, j in items}
        if exponential:
            gains = {j: 2.0**g - 1 for j, g in gains.items()}
        cut = len(items) if k is None else min(k, len(items))
        dcg = sum(gains[j] / math.log2(r + 2) for r, (_, j) in enumerate(items[:cut]))
        ideal = sorted(gains.values(), reverse=True)[:cut]
        idcg = sum(g / math.log2(r + 2) for r, g in enumerate(ideal))
        out.append(dcg / idcg if idcg > 0 else float("nan"))
    return torch.tensor(out, dtype=torch.float64)


def data(n=30, columns=2, seed=0):
    g = _gen(seed)
    x = torch.randn(n, 5, generator=g)
    labels = torch.randint(0, 3, (n, columns) if columns else (n,), generator=g)
    return x, labels


@pytest.mark.parametrize("k", [1, 3, 10, None])
@pytest.mark.parametrize("columns", [0, 2])
@pytest.mark.parametrize("ref_includes_query", [True, False])
def test_ndcg_values_match_naive(k, columns, ref_includes_query):
    x, labels = data(columns=columns)
    if ref_includes_query:
        ref, ref_labels = x, labels
    else:
        ref, ref_labels = data(25, columns, seed=1)
    got = EF.ndcg_values(
        x.double(), labels, ref.double(), ref_labels, k, ref_includes_query=ref_includes_query
    )
    want = naive_ndcg(x, labels, ref, ref_labels, k, ref_includes_query)
    torch.testing.assert_close(got, want, equal_nan=True, rtol=1e-12, atol=1e-12)


def test_exponential_gain_and_custom_relevance():
    x, labels = data(columns=0)
    ordinal = labels.double()

    def closeness(q, r):  # graded by how close two ordinal labels are: 2, 1, 0
        return (2 - (q - r).abs()).clamp(min=0)

    got = EF.ndcg_values(
        x.double(),
        ordinal,
        x.double(),
        ordinal,
        5,
        relevance_fn=closeness,
        gain="exponential",
        ref_includes_query=True,
    )
    want = naive_ndcg(
        x,
        ordinal,
        x,
        ordinal,
        5,
        True,
        gain_fn=lambda q, r: float(max(2 - abs(q - r), 0)),
        exponential=True,
    )
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_ndcg_hand_computed():
    # query 0 (labels (0, 0)) ranks r1 (gain 1), r2 (gain 0), r3 (gain 1): DCG@2 = 1,
    # IDCG@2 = 1 + 1/log2(3)
    x = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    labels = torch.tensor([[0, 0], [0, 1], [1, 1], [0, 1]])
    values = EF.ndcg_values(x, labels, x, labels, 2, ref_includes_query=True)
    assert values[0].item() == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert values[2].item() == pytest.approx(1.0)  # r1 and r3 (gain 1) ranked first
    out = ndcg_at_k(x, labels, k=2)
    assert out["ndcg_at_2"] == pytest.approx(values.mean().item())
    assert (out["num_queries"], out["num_skipped_queries"]) == (4, 0)


def test_ties_in_distance_rank_by_reference_index():
    x = torch.zeros(4, 2)  # every distance ties
    labels = torch.tensor([1, 0, 0, 1])
    q, q_labels = torch.zeros(1, 2), torch.tensor([1])
    # ranking r0 (gain 1), r1, r2, r3 (gain 1): DCG@4 = 1 + 1/log2(5)
    got = EF.ndcg_values(q, q_labels, x, labels, 4)
    assert got.item() == pytest.approx((1 + 1 / math.log2(5)) / (1 + 1 / math.log2(3)))


def test_queries_without_any_gain_are_skipped_and_counted():
    x, _ = data(6, columns=0)
    labels = torch.tensor([0, 0, 1, 1, 2, 3])  # labels 2 and 3 have no other item
    out = ndcg_at_k(x, labels, k=3)
    values = naive_ndcg(x, labels, x, labels, 3, True)
    assert (out["num_queries"], out["num_skipped_queries"]) == (4, 2)
    assert out["ndcg_at_3"] == pytest.approx(values[:4].mean().item())
    none = ndcg_at_k(x, torch.arange(6), k=3)
    assert math.isnan(none["ndcg_at_3"]) and none["num_skipped_queries"] == 6


def test_per_class_results():
    x, labels = data(40, columns=0)
    ref, ref_labels = data(30, columns=0, seed=1)
    out = ndcg_at_k(x, labels, ref, ref_labels, k=4, return_per_class=True)
    values = naive_ndcg(x, labels, ref, ref_labels, 4, False)
    assert out["class_labels"] == sorted(set(labels.tolist()))
    want = [values[labels == c].mean().item() for c in out["class_labels"]]
    assert out["ndcg_at_4"] == pytest.approx(want)
    multi = ndcg_at_k(*data(20), k=3, return_per_class=True)
    assert all(isinstance(c, list) and len(c) == 2 for c in multi["class_labels"])
    assert len(multi["ndcg_at_3"]) == len(multi["class_labels"])


def test_distance_and_blocks():
    x, labels = data()
    cos = CosineSimilarity()
    blocked = EF.ndcg_values(
        x,
        labels,
        x,
        labels,
        5,
        ref_includes_query=True,
        distance_fn=cos,
        is_inverted=True,
        batch_size=3,
    )
    whole = EF.ndcg_values(
        x, labels, x, labels, 5, ref_includes_query=True, distance_fn=cos, is_inverted=True
    )
    torch.testing.assert_close(blocked, whole, equal_nan=True)
    # cosine ranks like squared L2 of the normalised embeddings
    unit = torch.nn.functional.normalize(x.double(), dim=1)
    want = naive_ndcg(unit, labels, unit, labels, 5, True)
    torch.testing.assert_close(blocked.double(), want, equal_nan=True, rtol=1e-5, atol=1e-6)
    out = ndcg_at_k(x, labels, k=5, distance=cos)
    assert out["ndcg_at_5"] == pytest.approx(whole[~whole.isnan()].mean().item())


def test_ndcg_dtypes(dtype):
    x, labels = data()
    got = ndcg_at_k(x.to(dtype), labels, k=5)["ndcg_at_5"]
    want = ndcg_at_k(x.to(dtype).float(), labels, k=5)["ndcg_at_5"]
    assert got == want
    numpy_in = ndcg_at_k(x.numpy(), labels.numpy(), k=5)["ndcg_at_5"]
    assert numpy_in == ndcg_at_k(x, labels, k=5)["ndcg_at_5"]


def test_k_none_is_the_whole_ranking():
    x, labels = data(12, columns=0)
    out = ndcg_at_k(x, labels, k=None)
    assert out["ndcg"] == pytest.approx(
        naive_ndcg(x, labels, x, labels, None, True).nanmean().item()
    )


def test_ndcg_errors():
    x, labels = data(10, columns=0)
    with pytest.raises(ValueError, match="k must be"):
        ndcg_at_k(x, labels, k=0)
    with pytest.raises(TypeError, match="k must be"):
        ndcg_at_k(x, labels, k=2.5)
    with pytest.raises(ValueError, match="gain"):
        ndcg_at_k(x, labels, gain="log")
    with pytest.raises(ValueError, match="query_labels"):
        ndcg_at_k(x, labels[:4])
    with pytest.raises(ValueError, match="query must be finite"):
        ndcg_at_k(torch.full((3, 2), float("nan")), torch.zeros(3))
    with pytest.raises(ValueError, match="relevance_fn must return gains of shape"):
        ndcg_at_k(x, labels, relevance_fn=lambda q, r: (q == r).sum(1))
    with pytest.raises(ValueError, match="non-negative"):
        ndcg_at_k(x, labels, relevance_fn=lambda q, r: (q == r).double() - 1)
    with pytest.raises(TypeError, match="relevance_fn must be callable"):
        ndcg_at_k(x, labels, relevance_fn=3)
    with pytest.raises(TypeError, match="distance"):
        ndcg_at_k(x, labels, distance="cos")
    with pytest.raises(ValueError, match="ref_includes_query"):
        ndcg_at_k(x[:5], labels[:5], x.flip(0), labels, ref_includes_query=True)
