"""Labels of every dtype: miners only compare labels, so every dtype torch compares works.

Bool labels are two classes (``False``/``True``): every miner must return what it returns
for the int64 labels 0/1 (the same random draws under the same seed).
"""

from __future__ import annotations

import inspect

import pytest
import torch

import pml.miners as M
from pml.miners import BaseMiner

MINER_NAMES = sorted(
    name
    for name in M.__all__
    if inspect.isclass(getattr(M, name))
    and issubclass(getattr(M, name), BaseMiner)
    and name not in ("BaseMiner", "DistributedMinerWrapper")
)
VALUES = torch.tensor([0, 0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0])


def mine(name, labels, ref=False):
    g = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(12, 4, generator=g, dtype=torch.float64))
    kwargs = {}
    if ref:
        ref_emb = torch.nn.functional.normalize(torch.randn(9, 4, generator=g, dtype=torch.float64))
        kwargs = {"ref_emb": ref_emb, "ref_labels": labels[:9].clone()}
    torch.manual_seed(11)
    return getattr(M, name)()(emb, labels, **kwargs)


def test_every_miner_is_listed():
    assert len(MINER_NAMES) == 10 and "DistanceWeightedMiner" in MINER_NAMES


@pytest.mark.parametrize("ref", [False, True], ids=["same_set", "ref_set"])
@pytest.mark.parametrize("name", MINER_NAMES)
def test_bool_labels_work_in_every_miner(name, ref):
    # DistanceWeightedMiner raised NotImplementedError ("searchsorted" for Bool) before the fix
    expected = mine(name, VALUES, ref)
    got = mine(name, VALUES.bool(), ref)
    assert len(got) == len(expected)
    for x, y in zip(got, expected, strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int32, torch.float32])
@pytest.mark.parametrize("name", ["DistanceWeightedMiner", "TripletMarginMiner", "BatchHardMiner"])
def test_miners_accept_every_label_dtype(name, dtype):
    values = torch.tensor([0, 0, 1, 1, 2, 1, 2, 0, 2, 1, 0, 2])
    expected = mine(name, values)
    got = mine(name, values.to(dtype))
    for x, y in zip(got, expected, strict=True):
        assert torch.equal(x, y)
