"""Distance constructors and distance holders reject bad arguments at once, naming them."""

from __future__ import annotations

import pytest
import torch

from pml.distances import (
    CosineSimilarity,
    DotProductSimilarity,
    LpDistance,
    ModuleWithRecordsAndDistance,
    SNRDistance,
)

ALL = [LpDistance, SNRDistance, DotProductSimilarity, CosineSimilarity]


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("p", [0, 0.0, -1, -2.5, float("nan")])
def test_non_positive_p_is_accepted_silently_or_fails_in_cdist(cls, p) -> None:
    # the reference takes p=0 (normalises by the count of non-zero entries) and fails
    # inside torch.cdist at the first forward for p < 0
    with pytest.raises(ValueError, match="p must be"):
        cls(p=p)


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize(("arg", "bad"), [("p", "x"), ("p", None), ("power", "2"), ("power", None)])
def test_non_numeric_p_or_power_fails_only_at_forward(cls, arg, bad) -> None:
    with pytest.raises(TypeError, match=arg):
        cls(**{arg: bad})


@pytest.mark.parametrize("cls", [LpDistance, SNRDistance, DotProductSimilarity])
@pytest.mark.parametrize("bad", ["False", 0, None])
def test_normalize_embeddings_given_a_truthy_string_normalises_silently(cls, bad) -> None:
    with pytest.raises(TypeError, match="normalize_embeddings"):
        cls(normalize_embeddings=bad)


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize(
    "kwargs", [{"p": 1}, {"p": 3}, {"p": 1.5}, {"p": float("inf")}, {"power": 2}, {"power": 3}]
)
def test_reference_accepted_distance_arguments_still_work(cls, kwargs) -> None:
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mat = cls(**kwargs)(x)
    assert mat.shape == (5, 5) and torch.isfinite(mat).all()


@pytest.mark.parametrize("bad", ["cosine", CosineSimilarity, 2.0, torch.nn.Identity()])
def test_distance_holder_given_a_non_distance_fails_only_at_forward(bad) -> None:
    with pytest.raises(TypeError, match="distance must be a BaseDistance"):
        ModuleWithRecordsAndDistance(distance=bad)


def test_distance_holder_given_a_class_suggests_an_instance() -> None:
    with pytest.raises(TypeError, match=r"pass an instance: CosineSimilarity\(\)"):
        ModuleWithRecordsAndDistance(distance=CosineSimilarity)


def test_distance_holder_keeps_the_given_instance_and_builds_the_default() -> None:
    d = CosineSimilarity()
    assert ModuleWithRecordsAndDistance(distance=d).distance is d
    assert isinstance(ModuleWithRecordsAndDistance().distance, LpDistance)
