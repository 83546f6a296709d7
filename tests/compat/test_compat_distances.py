"""pml.distances vs the reference: same constructor arguments, same matrices and gradients."""

from __future__ import annotations

import pytest
import torch

ref = pytest.importorskip("pytorch_metric_learning.distances")
import pml.distances as ours  # noqa: E402

pytestmark = pytest.mark.compat

CONFIGS = [
    ("LpDistance", {}),
    ("LpDistance", {"p": 1}),
    ("LpDistance", {"power": 2}),
    ("LpDistance", {"normalize_embeddings": False, "p": 3}),
    ("CosineSimilarity", {}),
    ("CosineSimilarity", {"power": 2}),
    ("DotProductSimilarity", {}),
    ("DotProductSimilarity", {"normalize_embeddings": False}),
    ("SNRDistance", {}),
    ("SNRDistance", {"normalize_embeddings": False}),
]


def both(name: str, kwargs: dict):
    return getattr(ours, name)(**kwargs), getattr(ref, name)(**kwargs)


@pytest.mark.parametrize(("name", "kwargs"), CONFIGS)
@pytest.mark.parametrize(("n", "m"), [(7, 5), (40, 30)])
@pytest.mark.parametrize("with_ref", [False, True])
def test_matrix_and_gradients(name: str, kwargs: dict, n: int, m: int, with_ref: bool) -> None:
    g = torch.Generator().manual_seed(n + m)
    q = torch.randn(n, 16, generator=g, dtype=torch.float64)
    r = torch.randn(m, 16, generator=g, dtype=torch.float64) if with_ref else None
    a, b = both(name, kwargs)
    qa, qb = q.clone().requires_grad_(), q.clone().requires_grad_()
    ra = None if r is None else r.clone().requires_grad_()
    rb = None if r is None else r.clone().requires_grad_()
    ma, mb = a(qa, ra), b(qb, rb)
    torch.testing.assert_close(ma, mb, rtol=1e-9, atol=1e-12)
    (ma * torch.arange(ma.numel(), dtype=ma.dtype).view_as(ma)).sum().backward()
    (mb * torch.arange(mb.numel(), dtype=mb.dtype).view_as(mb)).sum().backward()
    torch.testing.assert_close(qa.grad, qb.grad, rtol=1e-8, atol=1e-10)
    if r is not None:
        torch.testing.assert_close(ra.grad, rb.grad, rtol=1e-8, atol=1e-10)
    k = min(n, m) if r is not None else n
    other = q if r is None else r
    torch.testing.assert_close(
        a.pairwise_distance(q[:k], other[:k]), b.pairwise_distance(q[:k], other[:k])
    )
    assert a.is_inverted == b.is_inverted and a.normalize_embeddings == b.normalize_embeddings
    assert (a.p, a.power) == (b.p, b.power)


@pytest.mark.parametrize(("name", "kwargs"), CONFIGS)
def test_helpers_and_records(name: str, kwargs: dict) -> None:
    a, b = both(name, kwargs)
    x, y = torch.tensor([1.0, 5.0]), torch.tensor([2.0, 3.0])
    assert torch.equal(a.smallest_dist(x, y), b.smallest_dist(x, y))
    assert torch.equal(a.largest_dist(x, y), b.largest_dist(x, y))
    assert torch.equal(a.margin(x, y), b.margin(x, y))
    assert a._record_these == b._record_these


def test_stats_match() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(5, 4), torch.randn(3, 4)
    a, b = ours.CosineSimilarity(collect_stats=True), ref.CosineSimilarity(collect_stats=True)
    a(x, 3 * y)
    b(x, 3 * y)
    for name in (
        "initial_avg_query_norm",
        "initial_avg_ref_norm",
        "final_avg_query_norm",
        "final_avg_ref_norm",
    ):
        assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-6)
    assert sorted(a._record_these_stats) == sorted(b._record_these_stats)


def test_batched_distance_calls_match() -> None:
    q, r = torch.randn(10, 6, dtype=torch.float64), torch.randn(7, 6, dtype=torch.float64)
    calls_a, calls_b = [], []
    ours.BatchedDistance(ours.CosineSimilarity(), lambda m, s, e: calls_a.append((m, s, e)), 4)(
        q, r
    )
    ref.BatchedDistance(ref.CosineSimilarity(), lambda m, s, e: calls_b.append((m, s, e)), 4)(q, r)
    assert [(s, e) for _, s, e in calls_a] == [(s, e) for _, s, e in calls_b]
    for (ma, _, _), (mb, _, _) in zip(calls_a, calls_b):
        torch.testing.assert_close(ma, mb)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_low_precision_close_to_reference(dtype: torch.dtype) -> None:
    q = torch.randn(30, 8).to(dtype)
    for name in ("LpDistance", "CosineSimilarity"):
        a, b = both(name, {})
        tol = 2e-2 if dtype == torch.float16 else 1e-5
        torch.testing.assert_close(a(q).float(), b(q).float(), rtol=tol, atol=tol)
