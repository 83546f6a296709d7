"""pml.distances: formulas, dtypes x devices, helpers, records and errors."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

from pml.core.testing import assert_close
from pml.core.validation import InvalidArgumentError
from pml.distances import (
    BaseDistance,
    BatchedDistance,
    CosineSimilarity,
    DotProductSimilarity,
    LpDistance,
    SNRDistance,
    assert_distance_type,
)
from pml.distances import functional as DF

ALL = [LpDistance, CosineSimilarity, DotProductSimilarity, SNRDistance]


def data(n: int = 7, m: int = 5, d: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(
        m, d, generator=g, dtype=torch.float64
    )


def naive(
    cls: type,
    q: torch.Tensor,
    r: torch.Tensor,
    p: float = 2,
    power: float = 1,
    normalize: bool = True,
):
    if normalize:
        q = q / q.norm(p=p, dim=1, keepdim=True).clamp(min=1e-12)
        r = r / r.norm(p=p, dim=1, keepdim=True).clamp(min=1e-12)
    out = torch.empty(len(q), len(r), dtype=torch.float64)
    for i in range(len(q)):
        for j in range(len(r)):
            if cls is LpDistance:
                out[i, j] = (q[i] - r[j]).abs().pow(p).sum().pow(1 / p)
            elif cls is SNRDistance:
                out[i, j] = (q[i] - r[j]).var() / q[i].var()
            else:
                out[i, j] = (q[i] * r[j]).sum()
    return out**power


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("power", [1, 2])
def test_matrix_matches_naive_loop(cls: type, power: int) -> None:
    q, r = data()
    kwargs = {"power": power}
    got = cls(**kwargs)(q, r)
    assert_close(got, naive(cls, q, r, power=power))
    self_mat = cls(**kwargs)(q)
    assert self_mat.shape == (7, 7)


@pytest.mark.parametrize("p", [1, 3])
def test_lp_other_orders_normalise_with_the_same_p(p: int) -> None:
    q, r = data()
    assert_close(LpDistance(p=p)(q, r), naive(LpDistance, q, r, p=p))
    assert_close(
        LpDistance(p=p, normalize_embeddings=False)(q, r),
        naive(LpDistance, q, r, p=p, normalize=False),
    )


@pytest.mark.parametrize("cls", ALL)
def test_dtype_and_device(cls: type, dtype: torch.dtype, device: torch.device) -> None:
    q, r = data(30, 28)  # > 25 rows: cdist's matmul route
    want = cls()(q, r)
    got = cls()(q.to(device, dtype), r.to(device, dtype))
    assert got.dtype == dtype and got.device.type == device.type
    tol = {torch.float16: 3e-2, torch.bfloat16: 1e-1}.get(dtype)
    assert_close(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("cls", ALL)
def test_gradcheck(cls: type) -> None:
    q, r = data(4, 3, 5)
    q.requires_grad_()
    r.requires_grad_()
    assert gradcheck(lambda a, b: cls()(a, b), (q, r))


def test_functional_gradcheck_snr() -> None:
    q, r = data(3, 4, 5)
    assert gradcheck(DF.snr_distance_matrix, (q.requires_grad_(), r.requires_grad_()))


def test_snr_self_distance_is_exactly_zero_and_matches_spec_numbers() -> None:
    q, _ = data(40, 1, 16)
    mat = SNRDistance()(q)
    assert torch.all(mat.diagonal() == 0)
    torch.manual_seed(0)
    x, y = torch.randn(5, 4), torch.randn(3, 4)
    assert_close(
        SNRDistance().pairwise_distance(x[:3], y),
        torch.tensor([4.163007, 0.714713, 0.543248]),
        atol=1e-5,
    )


def test_helpers_follow_the_distance_direction() -> None:
    a, b = torch.tensor([1.0, 5.0]), torch.tensor([2.0, 3.0])
    assert LpDistance().smallest_dist(a, b).tolist() == [1, 3]
    assert CosineSimilarity().smallest_dist(a, b).tolist() == [2, 5]
    assert LpDistance().largest_dist(a, b).tolist() == [2, 5]
    assert LpDistance().margin(a, b).tolist() == [-1, 2]
    assert CosineSimilarity().margin(a, b).tolist() == [1, -2]
    vals, idx = LpDistance().smallest_dist(torch.tensor([[3.0, 1.0, 2.0]]), dim=1)
    assert vals.tolist() == [1.0] and idx.tolist() == [1]


def test_zero_rows_and_pairwise_semantics() -> None:
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    assert CosineSimilarity()(x).tolist() == [[0.0, 0.0], [0.0, 1.0]]
    # pairwise_distance adds eps to the difference and never normalises
    assert_close(
        LpDistance().pairwise_distance(x, x), torch.full((2,), 2**0.5 * 1e-6), rtol=1e-3, atol=0
    )
    assert CosineSimilarity().pairwise_distance(2 * x, x).tolist() == [0.0, 2.0]


def test_constructor_rules() -> None:
    with pytest.raises(InvalidArgumentError, match="is_inverted"):
        LpDistance(is_inverted=True)
    with pytest.raises(AssertionError):
        SNRDistance(is_inverted=True)
    with pytest.raises(TypeError, match="multiple values"):
        CosineSimilarity(normalize_embeddings=False)
    with pytest.raises(TypeError, match="multiple values"):
        DotProductSimilarity(is_inverted=False)
    assert isinstance(CosineSimilarity(), DotProductSimilarity)
    assert DotProductSimilarity().normalize_embeddings is True
    d = LpDistance(p=1, power=2)
    assert d._record_these == ["p", "power"] and (d.p, d.power) == (1, 2)


def test_bad_inputs_name_the_argument() -> None:
    with pytest.raises(ValueError, match="query_emb must have shape"):
        LpDistance()(torch.zeros(3))
    with pytest.raises(ValueError, match="ref_emb must have shape"):
        LpDistance()(torch.zeros(3, 2), torch.zeros(2, 2, 2))
    with pytest.raises(ValueError, match="ref_emb must have embedding size 2"):
        LpDistance()(torch.zeros(3, 2), torch.zeros(2, 3))
    with pytest.raises(TypeError, match="query_emb must be a floating-point"):
        CosineSimilarity()(torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.Tensor"):
        CosineSimilarity()([[1.0, 2.0]])


def test_nan_propagates() -> None:
    x = torch.randn(4, 3)
    x[1, 0] = float("nan")
    assert torch.isnan(LpDistance()(x)[1]).all()
    assert torch.isnan(CosineSimilarity()(x)[:, 1]).all()


def test_stats_with_collect_stats() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(5, 4), torch.randn(3, 4)
    d = CosineSimilarity(collect_stats=True)
    d(x, 3 * y)
    assert d.initial_avg_query_norm == pytest.approx(x.norm(dim=1).mean().item())
    assert d.initial_avg_ref_norm == pytest.approx((3 * y).norm(dim=1).mean().item(), rel=1e-6)
    assert d.final_avg_query_norm == pytest.approx(1.0) and d.final_avg_ref_norm == pytest.approx(
        1.0
    )
    quiet = CosineSimilarity(collect_stats=False)
    quiet(x)
    assert not hasattr(quiet, "initial_avg_query_norm")


def test_power_half_on_negative_similarity_gives_nan_like_the_reference() -> None:
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert torch.isnan(CosineSimilarity(power=0.5)(x)[0, 1])


def test_batched_distance_blocks_concatenate_to_the_full_matrix() -> None:
    q, r = data(10, 8)
    blocks: list = []
    bd = BatchedDistance(
        CosineSimilarity(), lambda mat, s, e: blocks.append((mat, s, e)), batch_size=4
    )
    assert bd(q, r) is None
    assert [(s, e) for _, s, e in blocks] == [(0, 4), (4, 8), (8, 12)]
    assert_close(torch.cat([m for m, _, _ in blocks]), CosineSimilarity()(q, r))
    assert bd.is_inverted is True and bd.normalize_embeddings is True
    assert bd.margin(torch.tensor(1.0), torch.tensor(2.0)) == 1.0
    with pytest.raises(TypeError, match="iter_fn"):
        BatchedDistance(LpDistance())(q)
    with pytest.raises(ValueError, match="batch_size"):
        BatchedDistance(LpDistance(), batch_size=0)
    with pytest.raises(AttributeError):
        bd.no_such_attribute  # noqa: B018


def test_assert_distance_type() -> None:
    class Holder:
        distance = LpDistance(power=2)

    assert_distance_type(Holder(), LpDistance)
    assert_distance_type(Holder(), (CosineSimilarity, LpDistance), power=2)
    with pytest.raises(InvalidArgumentError, match="CosineSimilarity"):
        assert_distance_type(Holder(), CosineSimilarity)
    with pytest.raises(AssertionError, match="power"):
        assert_distance_type(Holder(), power=1)


def test_base_distance_is_abstract() -> None:
    with pytest.raises(NotImplementedError):
        BaseDistance()(torch.zeros(2, 2))


@pytest.mark.parametrize("cls", [LpDistance, CosineSimilarity, DotProductSimilarity, SNRDistance])
def test_ref_emb_of_another_dtype_or_device_is_a_value_error_naming_it(cls) -> None:
    # torch's matmul/cdist raised "expected m1 and m2 to have the same dtype"
    q = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"^ref_emb must have the dtype and device of query_emb"):
        cls()(q, q.double())
    with pytest.raises(ValueError, match=r"got torch.float32, meta"):
        cls()(q, torch.empty(3, 4, device="meta"))
