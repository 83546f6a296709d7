"""BaseMiner's template forward, validation, records; constructor signatures of every miner."""

from __future__ import annotations

import inspect

import pytest
import torch

import pml.miners as M
from pml.core import config
from pml.core.validation import InvalidArgumentError
from pml.distances import CosineSimilarity, LpDistance
from pml.miners import BaseMiner, MultiSimilarityMiner, TripletMarginMiner

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

# the reference's arguments and defaults (besides distance / collect_stats)
DEFAULTS = {
    M.AngularMiner: {"angle": 20},
    M.BatchEasyHardMiner: {
        "pos_strategy": "easy",
        "neg_strategy": "semihard",
        "allowed_pos_range": None,
        "allowed_neg_range": None,
    },
    M.BatchHardMiner: {},
    M.DistanceWeightedMiner: {"cutoff": 0.5, "nonzero_loss_cutoff": 1.4},
    M.EmbeddingsAlreadyPackagedAsTriplets: {},
    M.HDCMiner: {"filter_percentage": 0.5},
    M.MultiSimilarityMiner: {"epsilon": 0.1},
    M.PairMarginMiner: {"pos_margin": 0.2, "neg_margin": 0.8},
    M.TripletMarginMiner: {"margin": 0.2, "type_of_triplets": "all"},
    M.UniformHistogramMiner: {"num_bins": 100, "pos_per_bin": 10, "neg_per_bin": 10},
}


@pytest.mark.parametrize("cls", ALL_MINERS, ids=lambda c: c.__name__)
def test_constructor_defaults(cls):
    params = inspect.signature(cls.__init__).parameters
    skip = ("self", "kwargs", "distance", "collect_stats")
    own = {k: p.default for k, p in params.items() if k not in skip}
    assert own == DEFAULTS[cls]
    miner = cls(collect_stats=True, distance=LpDistance())
    assert isinstance(miner, BaseMiner) and miner.collect_stats
    with pytest.raises(TypeError):
        cls(not_an_argument=1)


@pytest.mark.parametrize("cls", ALL_MINERS, ids=lambda c: c.__name__)
def test_every_miner_runs_without_grad(cls):
    emb = torch.randn(12, 4, requires_grad=True)
    labels = torch.arange(4).repeat(3)
    out = cls()(emb, labels)
    assert len(out) in (3, 4)
    assert all(t.dtype == torch.long and not t.requires_grad for t in out)


def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 3, generator=g), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])


def test_labels_required_and_checked():
    emb, labels = data()
    miner = TripletMarginMiner()
    with pytest.raises(ValueError, match="labels"):
        miner(emb, None)
    with pytest.raises(ValueError, match="labels"):
        miner(emb, labels[:7])
    with pytest.raises(ValueError, match="labels"):
        miner(emb, labels.view(4, 2))
    with pytest.raises(TypeError, match="labels"):
        miner(emb, [0, 0, 1, 1, 2, 2, 3, 3])
    with pytest.raises(TypeError, match="embeddings"):
        miner(emb.tolist(), labels)
    with pytest.raises(TypeError, match="embeddings"):
        miner(emb.long(), labels)
    with pytest.raises(ValueError, match="embeddings"):
        miner(emb[:, 0], labels)


def test_reference_set_validation():
    emb, labels = data()
    miner = TripletMarginMiner()
    with pytest.raises(ValueError, match="ref_labels"):
        miner(emb, labels, emb[:5])  # fix: the reference reuses labels as ref_labels
    with pytest.raises(ValueError, match="ref_labels"):
        miner(emb, labels, emb[:5], labels[:4])
    with pytest.raises(ValueError, match="ref_emb"):
        miner(emb, labels, torch.randn(5, 2), labels[:5])


def test_ref_labels_without_ref_emb_is_ignored():
    emb, labels = data()
    miner = TripletMarginMiner(margin=1.0)
    base = miner(emb, labels)
    same = miner(emb, labels, None, torch.zeros(8, dtype=torch.long))
    identical = miner(emb, labels, emb, labels)
    assert all(torch.equal(x, y) for x, y in zip(base, same))
    assert all(torch.equal(x, y) for x, y in zip(base, identical))


def test_float_labels_and_any_integer_dtype():
    emb, labels = data()
    base = MultiSimilarityMiner()(emb, labels)
    for lab in (labels.float(), labels.to(torch.int8), labels.to(torch.int32)):
        assert all(torch.equal(x, y) for x, y in zip(base, MultiSimilarityMiner()(emb, lab)))


class _Bad(BaseMiner):
    def __init__(self, out, **kwargs):
        super().__init__(**kwargs)
        self.out = out

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        return self.out


def test_output_assertion():
    emb, labels = data()
    t = torch.arange(3)
    with pytest.raises(InvalidArgumentError, match="different lengths"):
        _Bad((t, t, t[:2]))(emb, labels)
    with pytest.raises(AssertionError):
        _Bad((t, t[:1], t, t))(emb, labels)
    with pytest.raises(TypeError, match="3"):
        _Bad((t, t))(emb, labels)
    miner = _Bad((t, t, t[:2], t[:2]))
    miner(emb, labels)
    assert (miner.num_pos_pairs, miner.num_neg_pairs) == (3, 2)


def test_stats_records():
    emb, labels = data()
    quiet = TripletMarginMiner()
    quiet(emb, labels)
    assert quiet.num_triplets > 0  # set even without collect_stats
    assert not hasattr(quiet, "_record_these_stats")
    loud = MultiSimilarityMiner(collect_stats=True)
    assert {"num_pos_pairs", "num_neg_pairs", "num_triplets"} <= set(loud._record_these_stats)
    loud(emb, labels)
    assert loud.num_triplets == 0 and loud.num_pos_pairs > 0
    assert loud.distance.collect_stats is False  # the default distance keeps its own flag


def test_global_collect_stats_flag(monkeypatch):
    monkeypatch.setattr(config, "COLLECT_STATS", True)
    miner = TripletMarginMiner()
    assert miner.collect_stats and miner.distance.collect_stats


def test_default_distance_is_fresh_per_miner():
    a, b = TripletMarginMiner(), TripletMarginMiner()
    assert a.distance is not b.distance
    assert isinstance(a.distance, LpDistance)
    assert (a.distance.p, a.distance.power, a.distance.normalize_embeddings) == (2, 1, True)
    assert isinstance(MultiSimilarityMiner().distance, CosineSimilarity)


def test_repr_lists_hyper_parameters():
    assert "margin=0.2" in repr(TripletMarginMiner())


def test_labels_moved_to_embeddings_device(device):
    emb, labels = data()
    out = TripletMarginMiner()(emb.to(device), labels)
    assert out[0].device.type == device.type
