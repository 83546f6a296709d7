"""BatchEasyHardMiner and BatchHardMiner against a per-row naive implementation."""

from __future__ import annotations

import itertools

import pytest
import torch

from pml.core.testing import clustered_embeddings
from pml.distances import CosineSimilarity, LpDistance
from pml.miners import BatchEasyHardMiner, BatchHardMiner

STRATEGIES = ["hard", "semihard", "easy", "all"]
VALID = [
    (p, n)
    for p, n in itertools.product(STRATEGIES, STRATEGIES)
    if not (p == n == "semihard") and {p, n} != {"semihard", "all"}
]


def naive(mat, labels, ref_labels, same, pos_s, neg_s, pos_range, neg_range, inverted):
    """One anchor at a time with Python lists; ties -> lowest column."""
    n_rows, n_cols = mat.shape
    rows = [mat[i].tolist() for i in range(n_rows)]

    def closer(x, y):  # x strictly closer than y
        return x > y if inverted else x < y

    def pick(row, cands, farthest):
        best = None
        for c in cands:
            if best is None or (
                closer(row[best], row[c]) if farthest else closer(row[c], row[best])
            ):
                best = c
        return best

    def in_range(v, r):
        return r is None or r[0] <= v <= r[1]

    all_pos, all_neg, chosen = [], [], []
    for i in range(n_rows):
        row = rows[i]
        P = [j for j in range(n_cols) if labels[i] == ref_labels[j] and not (same and i == j)]
        N = [k for k in range(n_cols) if labels[i] != ref_labels[k]]
        all_pos += [(i, j) for j in P]
        all_neg += [(i, k) for k in N]
        Pc = [j for j in P if in_range(row[j], pos_range)]
        Nc = [k for k in N if in_range(row[k], neg_range)]
        p = n = None
        if neg_s == "semihard":
            p = pick(row, Pc, farthest=pos_s in ("hard", "semihard"))
            if p is not None:
                n = pick(row, [k for k in Nc if closer(row[p], row[k])], farthest=False)
        elif pos_s == "semihard":
            n = pick(row, Nc, farthest=neg_s == "easy")
            if n is not None:
                p = pick(row, [j for j in Pc if closer(row[j], row[n])], farthest=True)
        else:
            if pos_s != "all":
                p = pick(row, Pc, farthest=pos_s == "hard")
            if neg_s != "all":
                n = pick(row, Nc, farthest=neg_s == "easy")
        chosen.append((p, n))
    if pos_s == "all" and neg_s == "all":
        return all_pos, all_neg
    if pos_s == "all":
        return all_pos, [(i, n) for i, (_, n) in enumerate(chosen) if n is not None]
    if neg_s == "all":
        return [(i, p) for i, (p, _) in enumerate(chosen) if p is not None], all_neg
    both = [(i, p, n) for i, (p, n) in enumerate(chosen) if p is not None and n is not None]
    return [(i, p) for i, p, _ in both], [(i, n) for i, _, n in both]


def as_pairs(out):
    a1, p, a2, n = (t.tolist() for t in out)
    return list(zip(a1, p)), list(zip(a2, n))


@pytest.mark.parametrize(("pos_s", "neg_s"), VALID)
@pytest.mark.parametrize("distance", [LpDistance(), CosineSimilarity()], ids=["lp", "cos"])
@pytest.mark.parametrize("ranges", [False, True])
@pytest.mark.parametrize("with_ref", [False, True])
def test_batch_easy_hard_matches_naive(pos_s, neg_s, distance, ranges, with_ref):
    emb, labels = clustered_embeddings(4, 4, 5, seed=1, dtype=torch.float64)
    ref, ref_labels = (
        clustered_embeddings(4, 3, 5, seed=2, dtype=torch.float64) if with_ref else (emb, labels)
    )
    if ranges:
        pr, nr = ((0.2, 0.9), (0.0, 0.6)) if distance.is_inverted else ((0.3, 1.2), (0.6, 1.6))
    else:
        pr = nr = None
    miner = BatchEasyHardMiner(pos_strategy=pos_s, neg_strategy=neg_s, allowed_pos_range=pr,
                               allowed_neg_range=nr, distance=distance)  # fmt: skip
    out = miner(emb, labels, *((ref, ref_labels) if with_ref else ()))
    mat = distance(emb, ref)
    exp = naive(mat, labels.tolist(), ref_labels.tolist(), not with_ref, pos_s, neg_s, pr, nr,
                distance.is_inverted)  # fmt: skip
    assert as_pairs(out) == exp


def test_spec_tie_example():
    emb = torch.tensor([[1.0, 0], [1, 0], [0, 1], [1, 0], [0, 1], [0, 1]])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    a, p, n = BatchHardMiner()(emb, labels)
    assert (a.tolist(), p.tolist(), n.tolist()) == (
        [0, 1, 2, 3, 4, 5], [2, 2, 0, 4, 3, 3], [3, 3, 4, 0, 2, 2]
    )  # fmt: skip
    a1, p, a2, n = BatchEasyHardMiner()(emb, labels)
    assert (a1.tolist(), p.tolist(), a2.tolist(), n.tolist()) == (
        [0, 1, 4, 5], [1, 0, 5, 4], [0, 1, 4, 5], [4, 4, 0, 0]
    )  # fmt: skip


def test_spec_singleton_example():
    emb, _ = clustered_embeddings(8, 1, 4, seed=0, shuffle=False)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3])
    a1, _, a2, _ = BatchEasyHardMiner()(emb, labels)
    assert 7 not in a1.tolist() and torch.equal(a1, a2)


@pytest.mark.parametrize(
    ("pos_s", "neg_s"),
    [("bad", "hard"), ("hard", "worst"), ("semihard", "semihard"), ("semihard", "all"),
     ("all", "semihard")],
)  # fmt: skip
def test_bad_strategies(pos_s, neg_s):
    with pytest.raises(ValueError, match="strategy|semihard"):
        BatchEasyHardMiner(pos_strategy=pos_s, neg_strategy=neg_s)


def test_class_constants_and_batch_hard_kwargs():
    assert BatchEasyHardMiner.all_batch_mining_strategies == ["hard", "semihard", "easy", "all"]
    assert (BatchEasyHardMiner.HARD, BatchEasyHardMiner.ALL) == ("hard", "all")
    with pytest.raises(TypeError):
        BatchHardMiner(pos_strategy="easy")
    miner = BatchHardMiner(allowed_pos_range=(0.0, 0.5), distance=CosineSimilarity())
    assert isinstance(miner, BatchEasyHardMiner)
    with pytest.raises(ValueError, match="allowed_pos_range"):
        BatchEasyHardMiner(allowed_pos_range=(0.1, 0.2, 0.3))


def test_stats():
    emb, labels = clustered_embeddings(3, 4, 5, seed=0, dtype=torch.float64)
    miner = BatchEasyHardMiner(pos_strategy="hard", neg_strategy="hard", collect_stats=True)
    a1, p, a2, n = miner(emb, labels)
    mat = miner.distance(emb)
    pv, nv = mat[a1, p], mat[a2, n]
    assert miner.hardest_pos_pair == pv.max().item() and miner.easiest_pos_pair == pv.min().item()
    assert miner.hardest_neg_pair == nv.min().item() and miner.easiest_neg_pair == nv.max().item()
    assert miner.hardest_triplet == (pv - nv).max().item()
    assert miner.easiest_triplet == (pv - nv).min().item()
    cos = BatchEasyHardMiner(pos_strategy="all", neg_strategy="easy", collect_stats=True,
                             distance=CosineSimilarity())  # fmt: skip
    a1, p, a2, n = cos(emb, labels)
    pv = cos.distance(emb)[a1, p]
    assert cos.easiest_pos_pair == pv.max().item() and cos.hardest_pos_pair == pv.min().item()
    assert cos.easiest_triplet == 0  # not set with "all"


def test_batch_hard_dtype_device(dtype, device):
    emb, labels = clustered_embeddings(4, 4, 5, seed=3)
    a, p, n = BatchHardMiner()(emb.to(device, dtype), labels.to(device))
    assert a.device.type == device.type and len(a) == 16
    if dtype in (torch.float32, torch.float64):
        exp = BatchHardMiner()(emb.to(dtype), labels)
        assert all(torch.equal(x.cpu(), y) for x, y in zip((a, p, n), exp))


@pytest.mark.parametrize("labels", [[0, 1, 2], [0, 0, 0], [0], []])
def test_edge_cases(labels):
    labels = torch.tensor(labels, dtype=torch.long)
    emb = torch.randn(len(labels), 3)
    assert [len(t) for t in BatchHardMiner()(emb, labels)] == [0, 0, 0]
    out = BatchEasyHardMiner(pos_strategy="all", neg_strategy="all")(emb, labels)
    assert len(out) == 4
