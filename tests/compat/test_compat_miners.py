"""pml.miners vs the reference: same index tuples (and order), stats, and random draws per seed."""

from __future__ import annotations

import pytest
import torch

ref = pytest.importorskip("pytorch_metric_learning.miners")
import pytorch_metric_learning.distances as ref_distances  # noqa: E402

import pml.distances as our_distances  # noqa: E402
import pml.miners as ours  # noqa: E402
from pml.core.indices import get_all_pairs_indices  # noqa: E402
from pml.core.testing import clustered_embeddings  # noqa: E402

pytestmark = pytest.mark.compat

COS = ("CosineSimilarity", {})
LP2 = ("LpDistance", {"power": 2})
SNR = ("SNRDistance", {})

DETERMINISTIC = [
    ("AngularMiner", {}, None),
    ("AngularMiner", {"angle": 35}, None),
    ("BatchEasyHardMiner", {}, None),
    ("BatchEasyHardMiner", {"pos_strategy": "hard", "neg_strategy": "hard"}, COS),
    ("BatchEasyHardMiner", {"pos_strategy": "semihard", "neg_strategy": "easy"}, None),
    ("BatchEasyHardMiner", {"pos_strategy": "easy", "neg_strategy": "hard"}, COS),
    ("BatchEasyHardMiner", {"pos_strategy": "all", "neg_strategy": "easy"}, None),
    ("BatchEasyHardMiner", {"pos_strategy": "hard", "neg_strategy": "all"}, COS),
    ("BatchEasyHardMiner", {"pos_strategy": "all", "neg_strategy": "all"}, None),
    (
        "BatchEasyHardMiner",
        {
            "pos_strategy": "hard",
            "neg_strategy": "semihard",
            "allowed_pos_range": (0.3, 1.0),
            "allowed_neg_range": (0.5, 1.6),
        },
        None,
    ),
    ("BatchHardMiner", {}, None),
    ("BatchHardMiner", {}, COS),
    ("BatchHardMiner", {"allowed_neg_range": (0.8, 2.0)}, None),
    ("EmbeddingsAlreadyPackagedAsTriplets", {}, None),
    ("HDCMiner", {}, None),
    ("HDCMiner", {"filter_percentage": 0.07}, COS),
    ("MultiSimilarityMiner", {}, None),
    ("MultiSimilarityMiner", {"epsilon": 0.3}, ("LpDistance", {})),
    ("MultiSimilarityMiner", {"epsilon": 0.0}, SNR),
    ("PairMarginMiner", {}, None),
    ("PairMarginMiner", {"pos_margin": 0.7, "neg_margin": 0.3}, COS),
    ("PairMarginMiner", {"pos_margin": 0.5, "neg_margin": 1.5}, LP2),
    ("TripletMarginMiner", {}, None),
    ("TripletMarginMiner", {"type_of_triplets": "hard"}, None),
    ("TripletMarginMiner", {"type_of_triplets": "semihard", "margin": 0.4}, None),
    ("TripletMarginMiner", {"type_of_triplets": "easy"}, COS),
    ("TripletMarginMiner", {"margin": 0.1}, LP2),
]


def build(name: str, kwargs: dict, distance: tuple | None, **extra: object):
    a_kwargs, b_kwargs = dict(kwargs, **extra), dict(kwargs, **extra)
    if distance is not None:
        a_kwargs["distance"] = getattr(our_distances, distance[0])(**distance[1])
        b_kwargs["distance"] = getattr(ref_distances, distance[0])(**distance[1])
    return getattr(ours, name)(**a_kwargs), getattr(ref, name)(**b_kwargs)


def inputs(dtype: torch.dtype, with_ref: bool):
    emb, labels = clustered_embeddings(6, 4, 8, seed=3, spread=0.8, dtype=dtype)
    if not with_ref:
        return (emb * 2, labels)
    r, rl = clustered_embeddings(6, 3, 8, seed=4, spread=0.8, dtype=dtype)
    return (emb * 2, labels, r, rl)


def same(a: tuple, b: tuple) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype == torch.int64
        assert x.tolist() == y.tolist()


@pytest.mark.parametrize(("name", "kwargs", "distance"), DETERMINISTIC,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(DETERMINISTIC)])  # fmt: skip
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("with_ref", [False, True])
def test_same_tuples(name: str, kwargs: dict, distance, dtype, with_ref: bool) -> None:
    a, b = build(name, kwargs, distance)
    args = inputs(dtype, with_ref)
    if name == "EmbeddingsAlreadyPackagedAsTriplets":
        args = (args[0][:21], args[1][:21], *args[2:])
    out_a, out_b = a(*args), b(*args)
    if name == "HDCMiner":  # topk order of exactly tied values may differ: compare as sets
        for i in (0, 2):
            assert sorted(zip(out_a[i].tolist(), out_a[i + 1].tolist())) == sorted(
                zip(out_b[i].tolist(), out_b[i + 1].tolist())
            )
    else:
        same(out_a, out_b)
    for attr in ("num_triplets", "num_pos_pairs", "num_neg_pairs"):
        assert getattr(a, attr, None) == getattr(b, attr, None)


STATS = [
    ("TripletMarginMiner", {"margin": 0.3}, None, ["pos_pair_dist", "neg_pair_dist",
                                                  "avg_triplet_margin"]),
    ("PairMarginMiner", {}, None, ["pos_pair_dist", "neg_pair_dist"]),
    ("PairMarginMiner", {}, COS, ["pos_pair_dist", "neg_pair_dist"]),
    ("BatchEasyHardMiner", {}, None, ["easiest_triplet", "hardest_triplet", "easiest_pos_pair",
                                      "hardest_pos_pair", "easiest_neg_pair", "hardest_neg_pair"]),
    ("BatchHardMiner", {}, COS, ["easiest_triplet", "hardest_triplet", "easiest_pos_pair",
                                 "hardest_pos_pair", "easiest_neg_pair", "hardest_neg_pair"]),
    ("BatchEasyHardMiner", {"pos_strategy": "all", "neg_strategy": "hard"}, None,
     ["easiest_pos_pair", "hardest_pos_pair", "easiest_neg_pair", "hardest_neg_pair"]),
    ("AngularMiner", {}, None, ["average_angle", "min_angle", "max_angle", "std_of_angle",
                                "average_angle_above_threshold",
                                "average_angle_below_threshold"]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "kwargs", "distance", "stats"), STATS,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(STATS)])  # fmt: skip
@pytest.mark.parametrize("with_ref", [False, True])
def test_same_stats_and_records(name, kwargs, distance, stats, with_ref) -> None:
    a, b = build(name, kwargs, distance, collect_stats=True)
    args = inputs(torch.float64, with_ref)
    a(*args), b(*args)
    for stat in stats:
        assert getattr(a, stat) == pytest.approx(getattr(b, stat), rel=1e-9, abs=1e-12), stat
    assert set(a._record_these_stats) >= set(b._record_these_stats)
    assert set(getattr(a, "_record_these", [])) == set(getattr(b, "_record_these", []))
    for attr in getattr(b, "_record_these", []):
        assert getattr(a, attr) == getattr(b, attr)


@pytest.mark.parametrize("kwargs", [{}, {"cutoff": 0.3, "nonzero_loss_cutoff": 1.2}])
@pytest.mark.parametrize("with_ref", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_distance_weighted_same_draws(kwargs: dict, with_ref: bool, dtype) -> None:
    emb, labels = clustered_embeddings(5, 4, 3, seed=1, spread=1.0, dtype=dtype)
    args = (emb, labels, *inputs(dtype, True)[2:]) if with_ref else (emb, labels)
    if with_ref:
        args = (emb, labels, args[2][:, :3].contiguous(), args[3])
    for seed in range(3):
        torch.manual_seed(seed)
        out_a = ours.DistanceWeightedMiner(**kwargs)(*args)
        torch.manual_seed(seed)
        out_b = ref.DistanceWeightedMiner(**kwargs)(*args)
        same(out_a, out_b)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"num_bins": 5, "pos_per_bin": 3, "neg_per_bin": 4}, {"num_bins": 7, "pos_per_bin": 1}],
)
@pytest.mark.parametrize("with_ref", [False, True])
@pytest.mark.parametrize("distance", [None, COS])
def test_uniform_histogram_same_draws(kwargs: dict, with_ref: bool, distance) -> None:
    args = inputs(torch.float64, with_ref)
    for seed in range(3):
        a, b = build("UniformHistogramMiner", kwargs, distance)
        torch.manual_seed(seed)
        out_a = a(*args)
        torch.manual_seed(seed)
        out_b = b(*args)
        same(out_a, out_b)


def test_multi_similarity_identity_semantics() -> None:
    emb, labels = inputs(torch.float64, False)
    for args in ((emb, labels, emb, labels), (emb, labels, emb.clone(), labels.clone()),
                 (emb, labels, emb, labels.clone())):  # fmt: skip
        same(
            ours.MultiSimilarityMiner(epsilon=0.5)(*args),
            ref.MultiSimilarityMiner(epsilon=0.5)(*args),
        )


def test_angle_is_stored_in_radians() -> None:
    assert ours.AngularMiner(angle=33).angle == ref.AngularMiner(angle=33).angle


# ------------------------------------------------------------- documented differences (fixes)


def test_packaged_triplets_without_labels() -> None:
    emb = torch.randn(6, 3)
    with pytest.raises(AttributeError):
        ref.EmbeddingsAlreadyPackagedAsTriplets()(emb, None)
    assert len(ours.EmbeddingsAlreadyPackagedAsTriplets()(emb, None)[0]) == 2
    with pytest.raises(AssertionError):
        ref.EmbeddingsAlreadyPackagedAsTriplets()(torch.randn(7, 3), torch.zeros(7))
    with pytest.raises(AssertionError, match="multiple of 3"):
        ours.EmbeddingsAlreadyPackagedAsTriplets()(torch.randn(7, 3), torch.zeros(7))


def test_distance_weighted_without_finite_weights() -> None:
    emb = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 0, 1])
    with pytest.raises(RuntimeError):
        ref.DistanceWeightedMiner(cutoff=2.0)(emb, labels)
    assert [len(t) for t in ours.DistanceWeightedMiner(cutoff=2.0)(emb, labels)] == [0, 0, 0]


def test_hdc_external_indices_filtered_once() -> None:
    emb, labels = inputs(torch.float64, False)
    pairs = get_all_pairs_indices(labels)
    a, b = ours.HDCMiner(filter_percentage=0.3), ref.HDCMiner(filter_percentage=0.3)
    a.set_idx_externally(pairs, labels)
    b.set_idx_externally(pairs, labels)
    first_a, first_b = a(emb, labels), b(emb, labels)
    assert [len(t) for t in first_a] == [len(t) for t in first_b]
    assert [len(t) for t in a(emb, labels)] == [len(t) for t in first_a]
    assert len(b(emb, labels)[0]) < len(first_b[0])  # the reference filters again


def test_ref_emb_without_ref_labels() -> None:
    emb, labels = inputs(torch.float64, False)
    ref.TripletMarginMiner()(emb, labels, emb[:24].clone())  # silently uses labels
    with pytest.raises(ValueError, match="ref_labels"):
        ours.TripletMarginMiner()(emb, labels, emb[:24].clone())


def test_distributed_wrapper_without_process_group() -> None:
    from pytorch_metric_learning.utils.distributed import DistributedMinerWrapper as RefWrapper

    emb, labels = inputs(torch.float64, False)
    with pytest.raises(ValueError):
        RefWrapper(ref.MultiSimilarityMiner())(emb, labels)
    with pytest.warns(RuntimeWarning):
        out = ours.DistributedMinerWrapper(ours.MultiSimilarityMiner())(emb, labels)
    same(out, ref.MultiSimilarityMiner()(emb, labels))


@pytest.mark.parametrize("which", ["embeddings", "ref_emb"])
def test_non_finite_inputs_are_rejected(which: str) -> None:
    emb, labels, r, rl = inputs(torch.float32, True)
    bad = (emb if which == "embeddings" else r).clone()
    bad[1, 0] = float("nan")
    args = (bad, labels, r, rl) if which == "embeddings" else (emb, labels, bad, rl)
    ref.TripletMarginMiner()(*args)  # mines from NaN distances without a word
    with pytest.raises(ValueError, match=f"^{which} must be finite"):
        ours.TripletMarginMiner()(*args)


@pytest.mark.parametrize("ref_dtype", [torch.float16, torch.float64])
def test_ref_emb_in_another_float_dtype(ref_dtype: torch.dtype) -> None:
    emb, labels, r, rl = inputs(torch.float32, True)
    with pytest.raises(RuntimeError):  # dtype mismatch inside torch
        ref.TripletMarginMiner()(emb, labels, r.to(ref_dtype), rl)
    promoted = torch.promote_types(torch.float32, ref_dtype)
    same(
        ours.TripletMarginMiner()(emb, labels, r.to(ref_dtype), rl),
        ref.TripletMarginMiner()(emb.to(promoted), labels, r.to(ref_dtype).to(promoted), rl),
    )
