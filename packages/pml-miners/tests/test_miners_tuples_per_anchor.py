"""``tuples_per_anchor``: a uniformly random subset of at most k tuples per anchor (issue 15)."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
import torch

import pml.miners as M
from pml.core.testing import clustered_embeddings
from pml.distances import CosineSimilarity
from pml.miners import functional as MF
from pml.miners.functional import _sample
from pml.miners.functional._triplet_blocks import TripletParts

# 4 classes x 6: 5 positives, 18 negatives and up to 90 triplets per anchor; N % 3 == 0
EMB, LABELS = clustered_embeddings(4, 6, 5, seed=3, spread=1.0, dtype=torch.float64)

MINERS = [
    ("MultiSimilarityMiner", {"epsilon": 0.5}),
    ("MultiSimilarityMiner", {"epsilon": 0.5, "distance": CosineSimilarity()}),
    ("PairMarginMiner", {"pos_margin": 0.0, "neg_margin": 1.5}),
    ("HDCMiner", {"filter_percentage": 0.8}),
    ("UniformHistogramMiner", {"num_bins": 4, "pos_per_bin": 6, "neg_per_bin": 9}),
    ("TripletMarginMiner", {"margin": 0.5}),
    ("TripletMarginMiner", {"margin": 100.0}),  # every candidate: the dense route
    ("TripletMarginMiner", {"margin": 0.3, "type_of_triplets": "semihard"}),
    ("AngularMiner", {"angle": 15}),
    ("DistanceWeightedMiner", {"cutoff": 0.1}),
    ("BatchEasyHardMiner", {"pos_strategy": "all", "neg_strategy": "all"}),
    ("BatchEasyHardMiner", {"pos_strategy": "all", "neg_strategy": "hard"}),
    ("BatchEasyHardMiner", {"pos_strategy": "easy", "neg_strategy": "all"}),
    ("BatchEasyHardMiner", {}),
    ("BatchHardMiner", {}),
    ("EmbeddingsAlreadyPackagedAsTriplets", {}),
]
IDS = [f"{name}-{i}" for i, (name, _) in enumerate(MINERS)]
#: miners whose output may list a tuple twice (draws with replacement)
WITH_REPLACEMENT = {"UniformHistogramMiner", "DistanceWeightedMiner"}


def mine(name, kwargs, seed=0, emb=EMB, labels=LABELS, ref=(), **extra):
    torch.manual_seed(seed)
    return getattr(M, name)(**kwargs, **extra)(emb, labels, *ref)


def sides(out):
    """Rows of each side: ``[(a, p, n), ...]`` or positive and negative ``[(a, x), ...]``."""
    rows = [list(zip(*(t.tolist() for t in out)))]
    if len(out) == 4:
        rows = [
            list(zip(out[0].tolist(), out[1].tolist())),
            list(zip(*(t.tolist() for t in out[2:]))),
        ]
    return rows


def is_subsequence(short, long):
    it = iter(long)
    return all(any(x == y for y in it) for x in short)


def assert_capped(full, capped, k):
    assert len(full) == len(capped)
    assert all(t.dtype == torch.long for t in capped)
    for f, c in zip(sides(full), sides(capped)):
        # every kept tuple is one the miner returns, in its order, each entry at most once
        assert is_subsequence(c, f)
        want = {a: min(n, k) for a, n in Counter(r[0] for r in f).items()}
        assert dict(Counter(r[0] for r in c)) == want


@pytest.mark.parametrize(("name", "kwargs"), MINERS, ids=IDS)
@pytest.mark.parametrize("k", [1, 3, 7])
def test_capped_output_is_a_subset_with_min_count_k_per_anchor(name, kwargs, k) -> None:
    full = mine(name, kwargs, seed=5)
    capped = mine(name, kwargs, seed=5, tuples_per_anchor=k)
    assert_capped(full, capped, k)
    if name not in WITH_REPLACEMENT:
        for side in sides(capped):
            assert len(set(side)) == len(side)  # no duplicates


@pytest.mark.parametrize(("name", "kwargs"), MINERS, ids=IDS)
def test_capped_output_against_a_reference_set(name, kwargs) -> None:
    if name == "EmbeddingsAlreadyPackagedAsTriplets":
        pytest.skip("labels and reference set unused")
    ref = (EMB[::2] + 0.1, LABELS[::2])
    full = mine(name, kwargs, seed=2, ref=ref)
    capped = mine(name, kwargs, seed=2, ref=ref, tuples_per_anchor=2)
    assert_capped(full, capped, 2)


@pytest.mark.parametrize(("name", "kwargs"), MINERS, ids=IDS)
def test_tuples_per_anchor_none_is_the_default(name, kwargs) -> None:
    default = mine(name, kwargs, seed=1)
    explicit = mine(name, kwargs, seed=1, tuples_per_anchor=None)
    assert all(torch.equal(a, b) for a, b in zip(default, explicit))
    assert getattr(M, name)(**kwargs).tuples_per_anchor is None


@pytest.mark.parametrize(("name", "kwargs"), MINERS, ids=IDS)
def test_cap_no_anchor_reaches_returns_everything(name, kwargs) -> None:
    full = mine(name, kwargs, seed=4)
    capped = mine(name, kwargs, seed=4, tuples_per_anchor=10_000)
    assert all(torch.equal(a, b) for a, b in zip(full, capped))


@pytest.mark.parametrize(("name", "kwargs"), MINERS, ids=IDS)
def test_same_seed_same_tuples(name, kwargs) -> None:
    a = mine(name, kwargs, seed=7, tuples_per_anchor=2)
    b = mine(name, kwargs, seed=7, tuples_per_anchor=2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize(
    "name",
    ["MultiSimilarityMiner", "PairMarginMiner", "HDCMiner", "TripletMarginMiner", "AngularMiner"],
)
def test_different_seeds_draw_different_subsets(name) -> None:
    kwargs = dict(MINERS)[name]
    draws = {
        tuple(torch.cat(mine(name, kwargs, seed=s, tuples_per_anchor=1)).tolist()) for s in range(5)
    }
    assert len(draws) > 1


@pytest.mark.parametrize(("name", "kwargs"), MINERS, ids=IDS)
@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (0, ValueError),
        (-3, ValueError),
        (1.5, TypeError),
        (2.0, TypeError),
        ("3", TypeError),
        (True, TypeError),
    ],
)
def test_bad_tuples_per_anchor_is_rejected(name, kwargs, bad, error) -> None:
    with pytest.raises(error, match="tuples_per_anchor"):
        getattr(M, name)(**kwargs, tuples_per_anchor=bad)


def test_numpy_and_tensor_ints_are_accepted() -> None:
    np = pytest.importorskip("numpy")
    assert M.TripletMarginMiner(tuples_per_anchor=np.int64(4)).tuples_per_anchor == 4
    assert M.PairMarginMiner(tuples_per_anchor=torch.tensor(2)).tuples_per_anchor == 2


@pytest.mark.parametrize(
    "call",
    [
        lambda k: MF.triplet_margin_miner(
            torch.zeros(2, 2), torch.tensor([0, 1]), tuples_per_anchor=k
        ),
        lambda k: MF.angular_miner(torch.eye(2), torch.tensor([0, 1]), tuples_per_anchor=k),
        lambda k: MF.multi_similarity_miner(
            torch.eye(2), torch.tensor([0, 1]), tuples_per_anchor=k
        ),
        lambda k: MF.pair_margin_miner(torch.eye(2), torch.tensor([0, 1]), tuples_per_anchor=k),
        lambda k: MF.batch_hard_miner(torch.eye(2), torch.tensor([0, 1]), tuples_per_anchor=k),
        lambda k: MF.uniform_histogram_miner(
            torch.eye(2), torch.tensor([0, 1]), tuples_per_anchor=k
        ),
    ],
)
def test_functional_rejects_bad_tuples_per_anchor(call) -> None:
    with pytest.raises(ValueError, match="tuples_per_anchor"):
        call(0)
    with pytest.raises(TypeError, match="tuples_per_anchor"):
        call(2.5)


def test_stats_describe_all_candidates_with_a_cap() -> None:
    plain = M.TripletMarginMiner(margin=0.5, collect_stats=True)
    capped = M.TripletMarginMiner(margin=0.5, collect_stats=True, tuples_per_anchor=1)
    plain(EMB, LABELS)
    capped(EMB, LABELS)
    assert capped.num_triplets < plain.num_triplets
    for stat in ("pos_pair_dist", "neg_pair_dist", "avg_triplet_margin"):
        assert getattr(capped, stat) == getattr(plain, stat)


def test_repr_shows_tuples_per_anchor_only_when_set() -> None:
    assert "tuples_per_anchor=5" in repr(M.TripletMarginMiner(tuples_per_anchor=5))
    assert "tuples_per_anchor" not in repr(M.TripletMarginMiner())


def test_hdc_stores_the_capped_output_and_caps_external_pairs() -> None:
    miner = M.HDCMiner(filter_percentage=1.0, tuples_per_anchor=2)
    a1 = torch.tensor([0, 0, 0, 1, 1])
    p = torch.tensor([1, 2, 3, 0, 2])
    miner.set_idx_externally((a1, p, a1[:0], p[:0]), LABELS)
    out = miner(EMB, LABELS)
    assert [t.tolist() for t in out] == [t.tolist() for t in (miner.a1, miner.p, miner.a2, miner.n)]
    assert Counter(out[0].tolist()) == {0: 2, 1: 2}
    assert set(zip(out[0].tolist(), out[1].tolist())) <= set(zip(a1.tolist(), p.tolist()))


def test_subclass_without_its_own_cap_is_capped_by_forward() -> None:
    class AllTriplets(M.BaseMiner):
        def mine(self, embeddings, labels, ref_emb, ref_labels):
            return MF.triplet_margin_miner(self.distance(embeddings, ref_emb), labels, margin=100.0)

    full = AllTriplets()(EMB, LABELS)
    capped = AllTriplets(tuples_per_anchor=4)(EMB, LABELS)
    assert_capped(full, capped, 4)


def test_capped_triplet_margin_miner_never_lists_all_triplets(monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("all selected triplets were listed")

    monkeypatch.setattr(TripletParts, "add", boom)
    for miner in (
        M.TripletMarginMiner(margin=100.0, tuples_per_anchor=3),
        M.AngularMiner(tuples_per_anchor=3),
    ):
        a, _, _ = miner(EMB, LABELS)
        assert Counter(a.tolist()) == dict.fromkeys(range(len(LABELS)), 3)


@pytest.mark.parametrize("max_elements", [1, 24, 10**6])
@pytest.mark.parametrize("margin", [0.5, 100.0])
@pytest.mark.parametrize("k", [1, 5, 40])
def test_block_size_does_not_change_which_tuples_can_be_kept(max_elements, margin, k) -> None:
    # blocks of one positive pair up to one block for all: an anchor spans several blocks
    mat = torch.cdist(EMB, EMB)
    full = MF.triplet_margin_miner(mat, LABELS, margin=margin)
    capped = MF.triplet_margin_miner(
        mat, LABELS, margin=margin, tuples_per_anchor=k, max_elements=max_elements
    )
    assert_capped(full, capped, k)


def test_dtypes_and_devices(dtype, device) -> None:
    emb, labels = EMB.to(device, dtype), LABELS.to(device)
    for name, kwargs in (
        ("TripletMarginMiner", {"margin": 0.5}),
        ("MultiSimilarityMiner", {"epsilon": 0.5}),
    ):
        full = mine(name, kwargs, emb=emb, labels=labels)
        capped = mine(name, kwargs, emb=emb, labels=labels, tuples_per_anchor=2)
        assert all(t.device == emb.device for t in capped)
        assert_capped(full, capped, 2)


def test_empty_and_degenerate_batches() -> None:
    one_class = torch.zeros(6, dtype=torch.long)
    for name, kwargs in MINERS:
        if name == "EmbeddingsAlreadyPackagedAsTriplets":
            continue
        out = mine(name, kwargs, emb=EMB[:6], labels=one_class, tuples_per_anchor=2)
        full = mine(name, kwargs, emb=EMB[:6], labels=one_class)
        assert_capped(full, out, 2)


# ---------------------------------------------------------------------------------------
# uniformity: over many seeds, every k-subset of an anchor's valid tuples is equally likely


def chi_square(counts: Counter, cells: list, draws: int) -> float:
    expected = draws / len(cells)
    return sum((counts[c] - expected) ** 2 / expected for c in cells)


# chi-square 0.999 quantiles by degrees of freedom (the seeds are fixed: no flakiness)
CHI2_999 = {2: 13.8, 9: 27.9, 14: 36.1}


def subset_frequencies(run, anchor, k, draws):
    """How often each k-subset of ``anchor``'s tuples is drawn, over seeds ``0 .. draws-1``."""
    counts: Counter = Counter()
    for seed in range(draws):
        torch.manual_seed(seed)
        rows = sides(run())[0]
        counts[tuple(sorted(r for r in rows if r[0] == anchor))] += 1
    return counts


def labels_and_mat():
    # anchor 0: positives {1, 2}, negatives {3, 4, 5}: 6 triplets, 2 positive, 3 negative pairs
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    emb = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [3.0, 0.0], [0.0, 3.0], [3.0, 3.0]])
    return emb, labels, torch.cdist(emb, emb)


@pytest.mark.parametrize(
    ("k", "max_elements"),
    # one block of 8 positive pairs (26 selected cells): k = 2 keys every cell (dense),
    # k = 4 only the selected ones (sparse); one positive pair per block: merges across blocks
    [(2, 10**6), (4, 10**6), (2, 6), (4, 6)],
)
def test_triplet_cap_is_uniform_over_the_valid_triplets(k, max_elements) -> None:
    _, labels, mat = labels_and_mat()
    valid = [(0, p, n) for p in (1, 2) for n in (3, 4, 5)]
    draws = 240

    def run():
        return MF.triplet_margin_miner(
            mat, labels, margin=100.0, tuples_per_anchor=k, max_elements=max_elements
        )

    counts = subset_frequencies(run, 0, k, draws)
    cells = [tuple(c) for c in itertools.combinations(valid, k)]
    assert set(counts) <= set(cells)
    assert chi_square(counts, cells, draws) < CHI2_999[len(cells) - 1]


@pytest.mark.parametrize("name", ["PairMarginMiner", "MultiSimilarityMiner", "BatchEasyHardMiner"])
def test_pair_cap_is_uniform_over_the_valid_pairs(name) -> None:
    # anchor 0 has 3 negative pairs in all three miners; 2 of them: 3 subsets
    emb, labels, _ = labels_and_mat()
    kwargs = {
        "PairMarginMiner": {"pos_margin": 0.0, "neg_margin": 100.0},
        "MultiSimilarityMiner": {"epsilon": 100.0},
        "BatchEasyHardMiner": {"pos_strategy": "all", "neg_strategy": "all"},
    }[name]
    miner = getattr(M, name)(tuples_per_anchor=2, **kwargs)
    draws = 240
    counts: Counter = Counter()
    for seed in range(draws):
        torch.manual_seed(seed)
        _, _, a2, n = miner(emb, labels)
        counts[tuple(sorted(n[a2 == 0].tolist()))] += 1
    cells = [(3, 4), (3, 5), (4, 5)]
    assert set(counts) == set(cells)
    assert chi_square(counts, cells, draws) < CHI2_999[2]


def test_listed_cap_is_uniform() -> None:
    # the route of HDCMiner, UniformHistogramMiner, DistanceWeightedMiner and subclasses:
    # anchor 7 listed 5 times among other anchors, k = 2: 10 subsets of positions
    anchors = torch.tensor([7, 1, 7, 7, 2, 7, 1, 7])
    draws = 400
    counts: Counter = Counter()
    for seed in range(draws):
        torch.manual_seed(seed)
        keep = _sample.cap_per_anchor(anchors, 2)
        assert torch.all(keep[1:] > keep[:-1])
        counts[tuple(p for p in keep.tolist() if anchors[p] == 7)] += 1
    cells = list(itertools.combinations([0, 2, 3, 5, 7], 2))
    assert set(counts) == set(cells)
    assert chi_square(counts, cells, draws) < CHI2_999[9]
