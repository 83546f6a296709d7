"""Embedding-collapse diagnostic against numpy's SVD, and its report by the testers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from pml.eval import AccuracyCalculator, GlobalEmbeddingSpaceTester, embedding_collapse
from pml.eval import functional as EF


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def naive_collapse(x, fractions=(0.9, 0.99)):
    """From numpy's singular values of the centred embeddings."""
    a = x.double().numpy()
    a = a - a.mean(0)
    s = np.linalg.svd(a, compute_uv=False)
    s = np.concatenate([s, np.zeros(a.shape[1] - len(s))])
    var = s**2 / a.shape[0]
    share = np.cumsum(var) / var.sum()
    out = {}
    for q in fractions:
        k = next(i + 1 for i, v in enumerate(share) if v >= q - 1e-12)
        out[f"pc{q * 100:g}_fraction"] = k / a.shape[1]
    p = s / s.sum()
    p = p[p > 0]
    out["effective_rank"] = float(np.exp(-(p * np.log(p)).sum()))
    return out


@pytest.mark.parametrize(
    "scales", [(1.0,) * 6, (10.0, 3.0, 1.0, 0.3, 0.1, 0.01), (5.0, 0, 0, 0, 0, 1)]
)
def test_embedding_collapse_matches_numpy(scales):
    x = torch.randn(200, 6, generator=_gen()) * torch.tensor(scales)
    got = embedding_collapse(x.double(), fractions=(0.5, 0.9, 0.99))
    want = naive_collapse(x, (0.5, 0.9, 0.99))
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-9), key


def test_collapse_hand_computed():
    # variance 4.5 along x, 0.5 along y, none along z: 90% needs 1 of 3 dims, 99% needs 2;
    # singular values in ratio 3 : 1 -> effective rank exp(H(0.75, 0.25))
    x = torch.tensor([[3.0, 0, 0], [-3.0, 0, 0], [0, 1.0, 0], [0, -1.0, 0]], dtype=torch.float64)
    out = EF.collapse_statistics(x)
    assert out["spectrum"].tolist() == pytest.approx([4.5, 0.5, 0.0], abs=1e-12)
    assert out["num_components"].tolist() == [1, 2]
    assert out["pc_fraction"].tolist() == pytest.approx([1 / 3, 2 / 3])
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert out["effective_rank"].item() == pytest.approx(math.exp(entropy))


def test_collapsed_and_spread_embeddings():
    line = torch.randn(100, 1, generator=_gen()) * torch.randn(1, 8, generator=_gen(1))
    collapsed = embedding_collapse(line)
    assert collapsed["pc90_fraction"] == collapsed["pc99_fraction"] == 1 / 8
    assert collapsed["effective_rank"] == pytest.approx(1.0, abs=1e-3)
    spread = embedding_collapse(torch.randn(5000, 8, generator=_gen()))
    assert spread["pc90_fraction"] >= 7 / 8
    assert spread["effective_rank"] > 7.5


def test_no_variance_gives_nan():
    for x in (torch.ones(5, 3), torch.zeros(1, 3), torch.zeros(0, 3)):
        out = embedding_collapse(x)
        assert all(math.isnan(v) for v in out.values())
    assert EF.collapse_statistics(torch.ones(4, 2))["num_components"].tolist() == [0, 0]


def test_collapse_blocks_and_dtypes(dtype):
    x = torch.randn(300, 5, generator=_gen()) * torch.tensor([4.0, 2.0, 1.0, 0.5, 0.1])
    got = embedding_collapse(x.to(dtype), batch_size=7)
    want = naive_collapse(x.to(dtype).double())
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-9)
    assert embedding_collapse(x.numpy()) == pytest.approx(embedding_collapse(x))


def test_collapse_errors():
    with pytest.raises(ValueError, match="embeddings must be finite"):
        embedding_collapse(torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="embeddings must have shape"):
        embedding_collapse(torch.zeros(3))
    with pytest.raises(TypeError, match="embeddings must be"):
        embedding_collapse([[0.0, 1.0]])
    with pytest.raises(ValueError, match=r"fractions\[0\]"):
        embedding_collapse(torch.zeros(3, 2), fractions=(0.0,))
    with pytest.raises(ValueError, match=r"fractions\[1\]"):
        embedding_collapse(torch.zeros(3, 2), fractions=(0.9, 1.5))


# ------------------------------------------------------------------------------- testers
def _tester(**kwargs):
    calc = AccuracyCalculator(include=("precision_at_1",), device=torch.device("cpu"))
    return GlobalEmbeddingSpaceTester(
        accuracy_calculator=calc, dataloader_num_workers=0, data_device="cpu", **kwargs
    )


def _datasets():
    g = _gen()
    x = torch.randn(40, 6, generator=g)
    labels = torch.randint(0, 3, (40,), generator=g)
    return {"train": TensorDataset(x[:25], labels[:25]), "val": TensorDataset(x[25:], labels[25:])}


def test_testers_report_collapse_when_asked():
    datasets = _datasets()
    plain = _tester().test(datasets, 1, torch.nn.Identity())
    assert set(plain["val"]) == {"epoch", "precision_at_1_level0"}  # default: unchanged
    tester = _tester(embedding_diagnostics=True)
    seen = {}
    tester.end_of_testing_hook = lambda t: seen.update(
        {name: emb for name, (emb, _) in t.embeddings_and_labels.items()}
    )
    out = tester.test(datasets, 1, torch.nn.Identity())
    for split in ("train", "val"):
        assert out[split]["precision_at_1_level0"] == plain[split]["precision_at_1_level0"]
        want = {f"collapse_{k}": v for k, v in embedding_collapse(seen[split]).items()}
        assert {k: out[split][k] for k in want} == want
        assert list(out[split])[:2] == ["epoch", "precision_at_1_level0"]
    with pytest.raises(TypeError, match="embedding_diagnostics"):
        _tester(embedding_diagnostics="yes")
