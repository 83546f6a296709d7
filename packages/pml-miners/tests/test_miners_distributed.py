"""DistributedMinerWrapper: local fallback, and a real two-process gloo group."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

from pml.core.indices import remove_self_comparisons
from pml.core.testing import run_in_processes
from pml.miners import (
    BatchHardMiner,
    DistributedMinerWrapper,
    MultiSimilarityMiner,
    TripletMarginMiner,
)

WORLD = 2


def rank_data(rank: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 * seed + rank)
    return torch.randn(6, 4, generator=g, dtype=torch.float64), torch.tensor([0, 0, 1, 1, 2, 2])


def test_requires_a_miner():
    with pytest.raises(TypeError, match="miner"):
        DistributedMinerWrapper(torch.nn.Identity())  # type: ignore[arg-type]


def test_non_bool_efficient_is_a_type_error():
    with pytest.raises(TypeError, match="efficient"):
        DistributedMinerWrapper(MultiSimilarityMiner(), efficient="yes")  # type: ignore[arg-type]


def test_falls_back_to_local_mining_with_a_warning():
    # fix: the reference raises when no process group is initialised
    emb, labels = rank_data(0)
    miner = MultiSimilarityMiner()
    wrapper = DistributedMinerWrapper(miner, efficient=True)
    with pytest.warns(RuntimeWarning, match="not initialised"):
        out = wrapper(emb, labels)
    expected = miner(emb, labels)
    assert all(torch.equal(x, y) for x, y in zip(out, expected))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wrapper(emb, labels)  # warns once per wrapper
    ref, ref_labels = rank_data(1)
    with pytest.warns(RuntimeWarning):
        out = DistributedMinerWrapper(TripletMarginMiner())(emb, labels, ref, ref_labels)
    expected = TripletMarginMiner()(emb, labels, ref, ref_labels)
    assert all(torch.equal(x, y) for x, y in zip(out, expected))


# ------------------------------------------------------------------------------ gloo workers


def _worker(rank: int, world_size: int) -> dict[str, Any]:
    res: dict[str, Any] = {}
    emb, labels = rank_data(rank)
    ref, ref_labels = rank_data(rank, seed=1)
    for efficient in (False, True):
        res[f"plain{efficient}"] = DistributedMinerWrapper(
            MultiSimilarityMiner(epsilon=0.5), efficient=efficient
        )(emb, labels)
        res[f"ref{efficient}"] = DistributedMinerWrapper(BatchHardMiner(), efficient=efficient)(
            emb, labels, ref, ref_labels
        )
    return res


@pytest.fixture(scope="module")
def gloo_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return run_in_processes(_worker, WORLD, tmp_path_factory.mktemp("gloo_miners"))


def _gathered(rank: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch every rank sees: its own rows first, then the other rank's."""
    mine, other = rank_data(rank, seed), rank_data(1 - rank, seed)
    return torch.cat([mine[0], other[0]]), torch.cat([mine[1], other[1]])


@pytest.mark.distributed
def test_gloo_plain_mode_mines_the_gathered_batch(gloo_results) -> None:  # type: ignore[no-untyped-def]
    for rank in range(WORLD):
        emb, labels = _gathered(rank)
        expected = MultiSimilarityMiner(epsilon=0.5)(emb, labels)
        got = gloo_results[rank]["plainFalse"]
        assert all(torch.equal(x, y) for x, y in zip(got, expected))


@pytest.mark.distributed
def test_gloo_efficient_mode_local_anchors_without_self_pairs(gloo_results) -> None:  # type: ignore[no-untyped-def]
    for rank in range(WORLD):
        emb, labels = rank_data(rank)
        all_emb, all_labels = _gathered(rank)
        out = MultiSimilarityMiner(epsilon=0.5)(emb, labels, all_emb, all_labels)
        expected = remove_self_comparisons(out, torch.arange(6), 12)
        got = gloo_results[rank]["plainTrue"]
        assert all(torch.equal(x, y) for x, y in zip(got, expected))
        a1, p = got[0], got[1]
        assert bool((a1 != p).all())  # the anchor's own copy is never its positive


@pytest.mark.distributed
@pytest.mark.parametrize("efficient", [False, True])
def test_gloo_separate_reference_set(gloo_results, efficient: bool) -> None:  # type: ignore[no-untyped-def]
    for rank in range(WORLD):
        all_ref, all_ref_labels = _gathered(rank, seed=1)
        if efficient:
            emb, labels = rank_data(rank)
            out = BatchHardMiner()(emb, labels, all_ref, all_ref_labels)
            expected = remove_self_comparisons(out, torch.arange(6), 12)
        else:
            emb, labels = _gathered(rank)
            expected = BatchHardMiner()(emb, labels, all_ref, all_ref_labels)
        got = gloo_results[rank][f"ref{efficient}"]
        assert all(torch.equal(x, y) for x, y in zip(got, expected))
