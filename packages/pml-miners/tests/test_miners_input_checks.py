"""Input checks of every miner's template forward: non-finite values, mixed float dtypes."""

from __future__ import annotations

import warnings

import pytest
import torch

import pml.miners as M
from pml.core.testing import clustered_embeddings

ALL_MINERS = [
    M.AngularMiner,
    M.BatchEasyHardMiner,
    M.BatchHardMiner,
    M.DistanceWeightedMiner,
    M.EmbeddingsAlreadyPackagedAsTriplets,
    M.HDCMiner,
    M.MultiSimilarityMiner,
    M.PairMarginMiner,
    M.TripletMarginMiner,
    M.UniformHistogramMiner,
]

# a few non-default configurations, so that every strategy path sees the checks
CONFIGS = [(cls, {}) for cls in ALL_MINERS] + [
    (M.BatchEasyHardMiner, {"pos_strategy": "hard", "neg_strategy": "hard"}),
    (M.BatchEasyHardMiner, {"pos_strategy": "all", "neg_strategy": "all"}),
    (M.TripletMarginMiner, {"type_of_triplets": "semihard"}),
]
IDS = [f"{cls.__name__}-{i}" for i, (cls, _) in enumerate(CONFIGS)]

BAD_VALUES = [float("nan"), float("inf"), float("-inf")]


def _data(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    emb, labels = clustered_embeddings(4, 3, 5, seed=1, dtype=dtype)
    ref, ref_labels = clustered_embeddings(4, 2, 5, seed=2, dtype=dtype)
    return emb, labels, ref, ref_labels


def _poison(x: torch.Tensor, value: float) -> torch.Tensor:
    x = x.clone()
    x[2, 1] = value
    return x


@pytest.mark.parametrize("value", BAD_VALUES, ids=str)
@pytest.mark.parametrize(("cls", "kwargs"), CONFIGS, ids=IDS)
def test_non_finite_embeddings_are_rejected(cls, kwargs, value) -> None:
    emb, labels, ref, ref_labels = _data()
    miner = cls(**kwargs)
    with pytest.raises(ValueError, match=r"^embeddings must be finite"):
        miner(_poison(emb, value), labels)
    with pytest.raises(ValueError, match=r"^embeddings must be finite"):
        miner(_poison(emb, value), labels, ref, ref_labels)


@pytest.mark.parametrize("value", BAD_VALUES, ids=str)
@pytest.mark.parametrize(("cls", "kwargs"), CONFIGS, ids=IDS)
def test_non_finite_ref_emb_is_rejected(cls, kwargs, value) -> None:
    emb, labels, ref, ref_labels = _data()
    with pytest.raises(ValueError, match=r"^ref_emb must be finite"):
        cls(**kwargs)(emb, labels, _poison(ref, value), ref_labels)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64], ids=str)
def test_non_finite_embeddings_are_rejected_in_every_float_dtype(dtype) -> None:
    emb, labels, ref, ref_labels = _data(dtype)
    with pytest.raises(ValueError, match="^embeddings must be finite"):
        M.MultiSimilarityMiner()(_poison(emb, float("nan")), labels)
    with pytest.raises(ValueError, match="^ref_emb must be finite"):
        M.TripletMarginMiner()(emb, labels, _poison(ref, float("inf")), ref_labels)


def test_non_finite_embeddings_are_rejected_without_labels() -> None:
    emb = _poison(torch.randn(6, 4), float("nan"))
    with pytest.raises(ValueError, match="^embeddings must be finite"):
        M.EmbeddingsAlreadyPackagedAsTriplets()(emb, None)


def test_non_finite_embeddings_are_rejected_by_the_distributed_wrapper() -> None:
    emb, labels, _, _ = _data()
    wrapper = M.DistributedMinerWrapper(M.MultiSimilarityMiner())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no process group: local batch
        with pytest.raises(ValueError, match="^embeddings must be finite"):
            wrapper(_poison(emb, float("nan")), labels)


def test_largest_finite_half_values_are_not_rejected() -> None:
    emb, labels, _, _ = _data(torch.float16)
    emb[0, 0] = torch.finfo(torch.float16).max
    emb[1, 0] = torch.finfo(torch.float16).min
    a, p, n = M.TripletMarginMiner()(emb, labels)
    assert len(a) == len(p) == len(n)


MIXED = [
    (torch.float32, torch.float16),
    (torch.float32, torch.float64),
    (torch.float16, torch.float32),
    (torch.bfloat16, torch.float32),
]


@pytest.mark.parametrize(("emb_dtype", "ref_dtype"), MIXED, ids=str)
@pytest.mark.parametrize(("cls", "kwargs"), CONFIGS, ids=IDS)
def test_ref_emb_in_another_float_dtype_mines_in_the_promoted_dtype(
    cls, kwargs, emb_dtype, ref_dtype
) -> None:
    emb, labels, ref, ref_labels = _data(torch.float64)
    emb, ref = emb.to(emb_dtype), ref.to(ref_dtype)
    promoted = torch.promote_types(emb_dtype, ref_dtype)
    torch.manual_seed(3)  # DistanceWeightedMiner and UniformHistogramMiner draw
    got = cls(**kwargs)(emb, labels, ref, ref_labels)
    torch.manual_seed(3)
    expected = cls(**kwargs)(emb.to(promoted), labels, ref.to(promoted), ref_labels)
    assert len(got) == len(expected)
    assert sum(len(t) for t in expected) > 0
    for g, e in zip(got, expected):
        assert g.dtype == torch.int64
        assert g.tolist() == e.tolist()


def test_ref_emb_in_another_float_dtype_leaves_the_inputs_unchanged() -> None:
    emb, labels, ref, ref_labels = _data()
    ref16 = ref.half()
    M.MultiSimilarityMiner()(emb, labels, ref16, ref_labels)
    assert emb.dtype == torch.float32 and ref16.dtype == torch.float16


def test_empty_embeddings_and_ref_emb_pass_the_finite_check() -> None:
    empty, no_labels = torch.zeros(0, 5), torch.zeros(0, dtype=torch.long)
    emb, labels, _, _ = _data()
    assert [len(t) for t in M.MultiSimilarityMiner()(empty, no_labels)] == [0, 0, 0, 0]
    assert [len(t) for t in M.TripletMarginMiner()(emb, labels, empty, no_labels)] == [0, 0, 0]
    with pytest.raises(ValueError, match="^ref_emb must be finite"):
        M.TripletMarginMiner()(empty, no_labels, _poison(emb, float("nan")), labels)
