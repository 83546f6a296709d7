"""Miner constructors reject bad arguments at once, naming them (the reference fails far away)."""

from __future__ import annotations

import pytest
import torch

import pml.miners as M
from pml.distances import CosineSimilarity, LpDistance

EMB = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
LABELS = torch.arange(4).repeat_interleave(4)

MINERS = [
    "AngularMiner",
    "BatchEasyHardMiner",
    "BatchHardMiner",
    "DistanceWeightedMiner",
    "HDCMiner",
    "MultiSimilarityMiner",
    "PairMarginMiner",
    "TripletMarginMiner",
    "UniformHistogramMiner",
]


@pytest.mark.parametrize("name", MINERS)
@pytest.mark.parametrize("bad", ["cosine", CosineSimilarity, 2, torch.nn.Identity()])
def test_miner_distance_that_is_not_a_distance_fails_only_at_forward(name, bad) -> None:
    with pytest.raises(TypeError, match="distance"):
        getattr(M, name)(distance=bad)


NUMERIC = [
    ("MultiSimilarityMiner", "epsilon"),
    ("PairMarginMiner", "pos_margin"),
    ("PairMarginMiner", "neg_margin"),
    ("HDCMiner", "filter_percentage"),
    ("TripletMarginMiner", "margin"),
    ("AngularMiner", "angle"),
    ("DistanceWeightedMiner", "cutoff"),
    ("DistanceWeightedMiner", "nonzero_loss_cutoff"),
]


@pytest.mark.parametrize(("name", "arg"), NUMERIC)
@pytest.mark.parametrize("bad", ["x", None, True])
def test_miner_non_numeric_hyperparameter_fails_only_at_forward(name, arg, bad) -> None:
    with pytest.raises(TypeError, match=arg):
        getattr(M, name)(**{arg: bad})


@pytest.mark.parametrize(("name", "arg"), NUMERIC)
def test_miner_nan_hyperparameter_is_silent(name, arg) -> None:
    with pytest.raises(ValueError, match=arg):
        getattr(M, name)(**{arg: float("nan")})


@pytest.mark.parametrize("arg", ["allowed_pos_range", "allowed_neg_range"])
@pytest.mark.parametrize("bad", [("x", 1.0), (0.0, None)])
def test_batch_easy_hard_range_bound_not_a_number_fails_only_at_forward(arg, bad) -> None:
    with pytest.raises(TypeError, match=arg):
        M.BatchEasyHardMiner(**{arg: bad})


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("MultiSimilarityMiner", {"epsilon": 0}),
        ("PairMarginMiner", {"pos_margin": 0, "neg_margin": torch.tensor(1.0)}),
        ("TripletMarginMiner", {"margin": -0.1}),
        ("AngularMiner", {"angle": 35}),
        ("DistanceWeightedMiner", {"cutoff": 1, "nonzero_loss_cutoff": 2}),
        ("HDCMiner", {"filter_percentage": 1}),
        ("BatchEasyHardMiner", {"allowed_pos_range": (0, 2), "allowed_neg_range": [0.1, 1.5]}),
        ("PairMarginMiner", {"distance": LpDistance(p=1)}),
    ],
)
def test_reference_accepted_miner_values_still_work(name, kwargs) -> None:
    out = getattr(M, name)(**kwargs)(EMB, LABELS)
    assert isinstance(out, tuple) and len(out) in (3, 4)
