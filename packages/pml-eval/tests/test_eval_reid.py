"""The re-identification protocol (CMC@k, mAP) against a per-query loop."""

from __future__ import annotations

import math

import pytest
import torch

from pml.distances import CosineSimilarity
from pml.eval import functional as EF
from pml.eval import reid_metrics


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def naive_reid(q, ql, qc, g, gl, gc, junk=(-1,), ks=(1, 5, 10)):
    """Per query: rank by (float64 squared distance, index), filter, then CMC and AP."""
    rows = []
    for i in range(len(q)):
        ranked = sorted(
            (float(((q[i].double() - g[j].double()) ** 2).sum()), j) for j in range(len(g))
        )
        kept = [
            j
            for _, j in ranked
            if int(gl[j]) not in junk
            and not (qc is not None and int(gl[j]) == int(ql[i]) and int(gc[j]) == int(qc[i]))
        ]
        match = [int(gl[j]) == int(ql[i]) for j in kept]
        if not any(match):
            rows.append(None)
            continue
        hits, ap = 0, 0.0
        for r, m in enumerate(match, start=1):
            if m:
                hits += 1
                ap += hits / r
        first = match.index(True) + 1
        rows.append({"ap": ap / hits, "cmc": [float(first <= k) for k in ks], "first": first})
    return rows


def data(nq=25, ng=60, ids=6, cams=3, seed=0):
    g = _gen(seed)
    centres = torch.randn(ids + 1, 6, generator=g)
    gl = torch.randint(-1, ids, (ng,), generator=g)
    ql = torch.randint(0, ids, (nq,), generator=g)
    gallery = centres[gl + 1] + 0.8 * torch.randn(ng, 6, generator=g)
    query = centres[ql + 1] + 0.8 * torch.randn(nq, 6, generator=g)
    return (
        query,
        ql,
        torch.randint(0, cams, (nq,), generator=g),
        gallery,
        gl,
        torch.randint(0, cams, (ng,), generator=g),
    )


def _mean(values):
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else float("nan")


@pytest.mark.parametrize("use_cameras", [True, False])
@pytest.mark.parametrize("junk", [(-1,), (), (-1, 0)])
def test_reid_matches_naive(use_cameras, junk):
    q, ql, qc, g, gl, gc = data()
    if not use_cameras:
        qc = gc = None
    out = reid_metrics(q.double(), ql, g.double(), gl, qc, gc, junk_labels=junk)
    rows = naive_reid(q, ql, qc, g, gl, gc, junk)
    assert out["num_queries"] == sum(r is not None for r in rows)
    assert out["num_skipped_queries"] == sum(r is None for r in rows)
    assert out["mean_average_precision"] == pytest.approx(
        _mean([r and r["ap"] for r in rows]), abs=1e-12
    )
    for i, k in enumerate((1, 5, 10)):
        assert out[f"cmc_at_{k}"] == pytest.approx(
            _mean([r and r["cmc"][i] for r in rows]), abs=1e-12
        )


def test_reid_values_per_query_and_blocks():
    q, ql, qc, g, gl, gc = data()
    whole = EF.reid_values(
        q.double(), ql, g.double(), gl, qc, gc, junk_labels=torch.tensor([-1]), ks=(1, 3)
    )
    blocked = EF.reid_values(
        q.double(),
        ql,
        g.double(),
        gl,
        qc,
        gc,
        junk_labels=torch.tensor([-1]),
        ks=(1, 3),
        batch_size=2,
    )
    for key in whole:
        torch.testing.assert_close(whole[key], blocked[key], equal_nan=True)
    rows = naive_reid(q, ql, qc, g, gl, gc, ks=(1, 3))
    for i, r in enumerate(rows):
        if r is None:
            assert whole["first_match_rank"][i] == 0 and math.isnan(whole["average_precision"][i])
            assert whole["num_matches"][i] == 0 and whole["cmc"][i].isnan().all()
        else:
            assert whole["first_match_rank"][i] == r["first"]
            assert whole["average_precision"][i].item() == pytest.approx(r["ap"], abs=1e-12)
            assert whole["cmc"][i].tolist() == r["cmc"]


def test_reid_hand_computed():
    # gallery by distance: g0 (id 7, same camera: removed), g1 (id 3), g2 (id 7), g3 (junk),
    # g4 (id 7): filtered ranking g1, g2, g4 -> first match rank 2, AP = (1/2 + 2/3) / 2
    gallery = torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0]])
    out = reid_metrics(
        torch.tensor([[0.1]]),
        torch.tensor([7]),
        gallery,
        torch.tensor([7, 3, 7, -1, 7]),
        torch.tensor([0]),
        torch.tensor([0, 1, 2, 1, 1]),
        ks=(1, 2, 3),
    )
    assert (out["cmc_at_1"], out["cmc_at_2"], out["cmc_at_3"]) == (0.0, 1.0, 1.0)
    assert out["mean_average_precision"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    # same identity, other camera is kept; same camera, other identity too
    other = reid_metrics(
        torch.tensor([[0.1]]),
        torch.tensor([7]),
        gallery[:2],
        torch.tensor([7, 7]),
        torch.tensor([0]),
        torch.tensor([1, 0]),
        ks=(1,),
    )
    assert (other["cmc_at_1"], other["mean_average_precision"]) == (1.0, 1.0)


def test_queries_without_a_valid_match_are_skipped_and_counted():
    gallery = torch.tensor([[0.0], [1.0]])
    out = reid_metrics(
        torch.tensor([[0.0], [1.0], [2.0]]),
        torch.tensor([1, 2, 3]),  # id 1 only in its own camera, id 3 absent
        gallery,
        torch.tensor([1, 2]),
        torch.tensor([0, 0, 0]),
        torch.tensor([0, 1]),
        ks=(1,),
    )
    assert (out["num_queries"], out["num_skipped_queries"]) == (1, 2)
    assert out["cmc_at_1"] == 1.0
    none = reid_metrics(gallery, torch.tensor([5, 6]), gallery, torch.tensor([1, 2]))
    assert math.isnan(none["mean_average_precision"]) and none["num_skipped_queries"] == 2


def test_per_identity_results():
    q, ql, qc, g, gl, gc = data(40)
    out = reid_metrics(q, ql, g, gl, qc, gc, ks=(1,), return_per_class=True)
    rows = naive_reid(q, ql, qc, g, gl, gc, ks=(1,))
    ids = sorted({int(ql[i]) for i, r in enumerate(rows) if r is not None})
    assert out["class_labels"] == ids
    want_ap = [_mean([r["ap"] for i, r in enumerate(rows) if r and int(ql[i]) == c]) for c in ids]
    want_cmc = [
        _mean([r["cmc"][0] for i, r in enumerate(rows) if r and int(ql[i]) == c]) for c in ids
    ]
    assert out["mean_average_precision"] == pytest.approx(want_ap)
    assert out["cmc_at_1"] == pytest.approx(want_cmc)


def test_reid_distance_and_dtypes(dtype):
    q, ql, qc, g, gl, gc = data()
    got = reid_metrics(q.to(dtype), ql, g.to(dtype), gl, qc, gc)
    want = reid_metrics(q.to(dtype).float(), ql, g.to(dtype).float(), gl, qc, gc)
    assert got == want
    cos = reid_metrics(q, ql, g, gl, qc, gc, distance=CosineSimilarity())
    unit_q = torch.nn.functional.normalize(q.double(), dim=1)
    unit_g = torch.nn.functional.normalize(g.double(), dim=1)
    rows = naive_reid(unit_q, ql, qc, unit_g, gl, gc)
    assert cos["mean_average_precision"] == pytest.approx(
        _mean([r and r["ap"] for r in rows]), abs=1e-6
    )
    numpy_in = reid_metrics(q.numpy(), ql.numpy(), g.numpy(), gl.numpy(), qc.numpy(), gc.numpy())
    assert numpy_in == reid_metrics(q, ql, g, gl, qc, gc)


def test_reid_errors():
    q, ql, qc, g, gl, gc = data()
    with pytest.raises(ValueError, match="query_cameras and gallery_cameras"):
        reid_metrics(q, ql, g, gl, qc)
    with pytest.raises(ValueError, match="gallery_cameras"):
        reid_metrics(q, ql, g, gl, qc, gc[:3])
    with pytest.raises(ValueError, match="query_labels"):
        reid_metrics(q, ql[:3], g, gl)
    with pytest.raises(ValueError, match="query_labels must be 1-D"):
        reid_metrics(q, torch.stack([ql, ql], 1), g, gl)
    with pytest.raises(ValueError, match="gallery must have dim"):
        reid_metrics(q, ql, g[:, :2], gl)
    with pytest.raises(ValueError, match="gallery must be finite"):
        reid_metrics(q, ql, torch.full_like(g, float("inf")), gl)
    with pytest.raises(ValueError, match=r"ks\[1\]"):
        reid_metrics(q, ql, g, gl, ks=(1, 0))
    with pytest.raises(TypeError, match="ks"):
        reid_metrics(q, ql, g, gl, ks=5)
    with pytest.raises(ValueError, match="ks must not be empty"):
        reid_metrics(q, ql, g, gl, ks=())
    with pytest.raises(TypeError, match="junk_labels"):
        reid_metrics(q, ql, g, gl, junk_labels=-1)
    with pytest.raises(TypeError, match="distance"):
        reid_metrics(q, ql, g, gl, distance="l2")
