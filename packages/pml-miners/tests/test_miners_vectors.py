"""Every case of tests/vectors/miners.json (outputs of pytorch-metric-learning 2.9)."""

from __future__ import annotations

import pytest
import torch

from pml.core.testing import build_from_spec, load_vectors

CASES = load_vectors("miners")


def _inputs(case: dict) -> dict:
    out = {}
    for key, value in case["inputs"].items():
        if value is None:
            out[key] = None
        elif "labels" in key:
            out[key] = torch.tensor(value, dtype=torch.int64)
        else:
            out[key] = torch.tensor(value, dtype=torch.float64)
    return out


def _build(case: dict):  # type: ignore[no-untyped-def]
    spec = {"class": case["class"], "module": case["module"], "kwargs": case["kwargs"]}
    return build_from_spec(spec).double()


def _rows(*tensors: torch.Tensor) -> list[list[int]]:
    return sorted(list(x) for x in zip(*(t.tolist() for t in tensors)))


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_vector(case: dict) -> None:
    miner = _build(case)
    inputs = _inputs(case)
    out = miner(**inputs)
    exp = case["expected"]
    assert all(t.dtype == torch.int64 for t in out)
    if exp["tuple_type"] == "triplet":
        assert len(out) == 3
        assert miner.num_triplets == exp["num_triplets"] == len(out[0])
    else:
        assert len(out) == 4
        assert miner.num_pos_pairs == exp["num_pos_pairs"] == len(out[0])
        assert miner.num_neg_pairs == exp["num_neg_pairs"] == len(out[2])
    if exp["deterministic"]:
        if exp["tuple_type"] == "triplet":
            assert _rows(*out) == exp["triplets"]
        else:
            assert _rows(out[0], out[1]) == exp["pos_pairs"]
            assert _rows(out[2], out[3]) == exp["neg_pairs"]
        _check_order(case, miner, inputs, out)
        return
    _check_validity(case, miner, inputs, out)


def _check_order(case: dict, miner, inputs: dict, out: tuple) -> None:  # type: ignore[no-untyped-def]
    """The order is informative in the file; we promise the reference's order too.

    HDCMiner's order is ``torch.topk``'s (hardest first): pairs (i, j) and (j, i) whose values
    differ in the last bit swap places between BLAS builds, so only the sorting is checked.
    """
    if case["class"] != "HDCMiner":
        assert [t.tolist() for t in out] == case["expected"]["reference_order"]
        return
    ref_emb = inputs["ref_emb"] if inputs["ref_emb"] is not None else inputs["embeddings"]
    mat = miner.distance(inputs["embeddings"], ref_emb)
    sign = 1 if miner.distance.is_inverted else -1
    pos, neg = sign * mat[out[0], out[1]], sign * mat[out[2], out[3]]
    assert bool((pos[1:] >= pos[:-1]).all()) and bool((neg[1:] <= neg[:-1]).all())


def _check_validity(case: dict, miner, inputs: dict, out: tuple) -> None:  # type: ignore[no-untyped-def]
    exp = case["expected"]
    labels = inputs["labels"]
    ref_labels = labels if inputs["ref_labels"] is None else inputs["ref_labels"]
    facts = exp["validity"]
    if exp["tuple_type"] == "triplet":
        a, p, n = out
        if facts.get("anchor_positive_same_label"):
            assert torch.equal(labels[a], ref_labels[p])
        if facts.get("anchor_negative_different_label"):
            assert bool((labels[a] != ref_labels[n]).all())
        if facts.get("anchor_never_equals_positive"):
            assert bool((a != p).all())
        if exp.get("negatives_closer_than_nonzero_loss_cutoff"):
            ref_emb = inputs["ref_emb"] if inputs["ref_emb"] is not None else inputs["embeddings"]
            d = miner.distance(inputs["embeddings"], ref_emb)[a, n]
            assert bool((d < miner.nonzero_loss_cutoff).all())
    else:
        a1, p, a2, n = out
        if facts.get("pos_pairs_same_label"):
            assert torch.equal(labels[a1], ref_labels[p])
        if facts.get("neg_pairs_different_label"):
            assert bool((labels[a2] != ref_labels[n]).all())
        if facts.get("pos_pairs_exclude_self"):
            assert bool((a1 != p).all())


@pytest.mark.parametrize(
    "case", [c for c in CASES if not c["expected"]["deterministic"]], ids=lambda c: c["name"]
)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_vector_counts_stable_over_seeds(case: dict, seed: int) -> None:
    torch.manual_seed(seed)
    miner = _build(case)
    out = miner(**_inputs(case))
    exp = case["expected"]
    if exp["tuple_type"] == "triplet":
        assert len(out[0]) == exp["num_triplets"]
    else:
        assert (len(out[0]), len(out[2])) == (exp["num_pos_pairs"], exp["num_neg_pairs"])
