"""Every case of tests/vectors/distances.json: matrices, gradients, pairwise distances."""

from __future__ import annotations

import pytest
import torch

from pml.core.testing import build_from_spec, load_vectors

CASES = load_vectors("distances")


def _t(x: list) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_distance_case(case: dict) -> None:
    obj = build_from_spec({k: case[k] for k in ("class", "module", "kwargs")})
    q = _t(case["inputs"]["query_emb"]).requires_grad_()
    r_raw = case["inputs"]["ref_emb"]
    r = None if r_raw is None else _t(r_raw).requires_grad_()
    ex = case["expected"]
    if case["class"] == "BatchedDistance":
        calls: list = []
        obj.iter_fn = lambda mat, s, e: calls.append((mat, s, e))
        assert obj(q, r) is None
        assert [(s, e) for _, s, e in calls] == [(c["s"], c["e"]) for c in ex["iter_fn_calls"]]
        for (mat, _, _), c in zip(calls, ex["iter_fn_calls"]):
            torch.testing.assert_close(mat, _t(c["mat"]), rtol=1e-9, atol=1e-12)
        return
    mat = obj(q, r)
    torch.testing.assert_close(mat, _t(ex["matrix"]), rtol=1e-9, atol=0)
    mat.sum().backward()
    torch.testing.assert_close(q.grad, _t(ex["grad_query_of_sum"]), rtol=1e-9, atol=1e-12)
    if r is not None:
        torch.testing.assert_close(r.grad, _t(ex["grad_ref_of_sum"]), rtol=1e-9, atol=1e-12)
    ref = q if r is None else r
    k = min(len(q), len(ref))
    pw = obj.pairwise_distance(q[:k].detach(), ref[:k].detach())
    torch.testing.assert_close(pw, _t(ex["pairwise_distance"]), rtol=1e-9, atol=0)
    assert obj.is_inverted == ex["is_inverted"]
