"""BaseDistance.acc_matrix / self_matrix (the symmetric-Gram routes) and cosine_similarity_matrix."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torch.nn import functional as F

from pml.core.testing import gradcheck
from pml.distances import (
    BaseDistance,
    CosineSimilarity,
    DotProductSimilarity,
    LpDistance,
    SNRDistance,
)
from pml.distances.functional import cosine_similarity_matrix


def data(n: int = 10, d: int = 5, seed: int = 0, dtype: torch.dtype = torch.float64) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype)


def takes_gram_route(mat: Tensor) -> bool:
    node, seen = mat.grad_fn, set()
    stack = [node]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if "SymmetricGram" in type(node).__name__:
            return True
        stack.extend(f for f, _ in node.next_functions)
    return False


GRAM_CASES = [
    CosineSimilarity,
    lambda: DotProductSimilarity(normalize_embeddings=False),
    lambda: LpDistance(power=2),
    lambda: LpDistance(power=2, normalize_embeddings=False),
]
PLAIN_CASES = [
    LpDistance,  # p=2, power 1: torch.cdist
    lambda: LpDistance(p=1, power=2),
    lambda: CosineSimilarity(power=2),
    SNRDistance,
]


@pytest.mark.parametrize(
    "make",
    GRAM_CASES + PLAIN_CASES,
    ids=["cosine", "dot", "sq_l2", "sq_l2_raw", "l2", "l1_sq", "cos_sq", "snr"],
)
@pytest.mark.parametrize("n", [7, 40])
def test_self_matrix_matches_the_distance(make, n):
    emb = data(n)
    a, b = emb.clone().requires_grad_(), emb.clone().requires_grad_()
    dist = make()
    fast = dist.acc_matrix(a)
    slow = dist(b)
    assert takes_gram_route(fast) == (make in GRAM_CASES)
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-13)
    w = torch.randn(n, n, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    w.fill_diagonal_(0)  # squared L2 on the diagonal: cdist special-cases its gradient
    (fast * w).sum().backward()
    (slow * w).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("make", GRAM_CASES, ids=["cosine", "dot", "sq_l2", "sq_l2_raw"])
def test_gram_routes_gradcheck(make):
    dist = make()
    assert gradcheck(lambda x: dist.acc_matrix(x), data(6, 3))


def test_the_batch_itself_as_ref_takes_the_self_route():
    emb = data(8)
    dist = CosineSimilarity()
    assert takes_gram_route(dist.acc_matrix(emb.requires_grad_(), emb))
    assert not takes_gram_route(dist.acc_matrix(emb, emb.clone()))


def test_self_matrix_with_distance_stats_uses_the_distance():
    # the stats rule: a distance collecting stats is called, so its stats are recorded
    for dist in (CosineSimilarity(collect_stats=True), LpDistance(power=2, collect_stats=True)):
        dist.acc_matrix(data() * 3)
        emb = (data(seed=1) * 5).requires_grad_()
        mat = dist.acc_matrix(emb)
        assert not takes_gram_route(mat)
        assert dist.initial_avg_query_norm == pytest.approx(emb.norm(dim=1).mean().item())


def test_a_subclass_changing_the_matrix_takes_the_plain_call():
    class Shifted(CosineSimilarity):
        def compute_mat(self, query_emb: Tensor, ref_emb: Tensor) -> Tensor:
            return super().compute_mat(query_emb, ref_emb) + 1

    class Custom(BaseDistance):
        def compute_mat(self, query_emb: Tensor, ref_emb: Tensor) -> Tensor:
            return query_emb @ ref_emb.T * 2

    class Lenient(LpDistance):
        def check_shapes(self, query_emb: Tensor, ref_emb: Tensor | None) -> None:
            pass

    emb = data(6).requires_grad_()
    for dist in (Shifted(), Custom(), Lenient(power=2)):
        mat = dist.acc_matrix(emb)
        assert not takes_gram_route(mat)
        torch.testing.assert_close(mat, dist(emb), rtol=0, atol=0)
    assert takes_gram_route(type("Plain", (CosineSimilarity,), {})().acc_matrix(emb))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("with_ref", [False, True])
def test_acc_matrix_is_computed_in_the_accumulation_dtype(dtype, with_ref):
    emb, ref = data(9, dtype=dtype), data(4, seed=1, dtype=dtype)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    for dist in (CosineSimilarity(), LpDistance(power=2), LpDistance()):
        mat = dist.acc_matrix(emb, ref if with_ref else None)
        assert mat.dtype == acc
        expected = dist(emb.to(acc), ref.to(acc) if with_ref else None)
        torch.testing.assert_close(mat, expected, rtol=1e-6, atol=1e-6)


def test_cosine_similarity_matrix_matches_torch_per_pair():
    x, y = data(6), data(4, seed=1)
    x[2] = 0  # a zero row: scaled by 1 / eps, cosine 0
    expected = F.cosine_similarity(x.unsqueeze(1), y.unsqueeze(0), dim=2)
    torch.testing.assert_close(cosine_similarity_matrix(x, y), expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(
        cosine_similarity_matrix(x, x), F.cosine_similarity(x.unsqueeze(1), x.unsqueeze(0), dim=2)
    )
    assert gradcheck(cosine_similarity_matrix, (data(5, 3), data(3, 3, seed=2)))


def test_cosine_similarity_matrix_dtypes(dtype, device):
    x = data(5).to(device=device, dtype=dtype)
    out = cosine_similarity_matrix(x, x)
    assert out.dtype == dtype and out.device == x.device
    torch.testing.assert_close(
        out.double(), cosine_similarity_matrix(x.double(), x.double()), rtol=1e-2, atol=1e-2
    )


@pytest.mark.parametrize(
    "make", [LpDistance, CosineSimilarity, DotProductSimilarity, lambda: LpDistance(power=2)]
)
def test_against_equals_the_plain_call_block_by_block(make):
    g = torch.Generator().manual_seed(0)
    q, r = torch.randn(7, 5, generator=g), torch.randn(11, 5, generator=g)
    dist = make()
    f = dist.against(r)
    torch.testing.assert_close(torch.cat([f(q[:3]), f(q[3:])]), dist(q, r))


def test_against_uses_a_subclass_forward():
    class Halved(LpDistance):
        def forward(self, query_emb, ref_emb=None):
            return super().forward(query_emb, ref_emb) / 2

    q, r = torch.randn(4, 3), torch.randn(5, 3)
    torch.testing.assert_close(Halved().against(r)(q), LpDistance()(q, r) / 2)
