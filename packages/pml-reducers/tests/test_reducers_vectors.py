"""Every case of tests/vectors/reducers.json: value, gradient w.r.t. losses and embeddings."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from pml.core.testing import build_from_spec, load_vectors

CASES = load_vectors("reducers")


def _entry(raw: dict) -> dict[str, Any]:
    losses = raw["losses"]
    if isinstance(losses, int) and losses == 0 and raw["reduction_type"] != "already_reduced":
        value: Any = 0  # the "no loss" sentinel stays a Python int
    elif isinstance(losses, int) and losses == 0 and raw["indices"] is None:
        value = 0
    else:
        value = torch.tensor(losses, dtype=torch.float64, requires_grad=True)
    indices = raw["indices"]
    if indices is not None:
        if indices and isinstance(indices[0], list):
            indices = tuple(torch.tensor(t, dtype=torch.long) for t in indices)
        else:
            indices = torch.tensor(indices, dtype=torch.long)
    out = {"losses": value, "indices": indices, "reduction_type": raw["reduction_type"]}
    if "divisor" in raw:
        out["divisor"] = raw["divisor"]
    return out


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_reducer_case(case: dict) -> None:
    reducer = build_from_spec({k: case[k] for k in ("class", "module", "kwargs")})
    loss_dict = {name: _entry(raw) for name, raw in case["inputs"]["loss_dict"].items()}
    emb = torch.tensor(case["inputs"]["embeddings"], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor(case["inputs"]["labels"], dtype=torch.long)
    out = reducer(loss_dict, emb, labels)
    ex = case["expected"]
    if "output" in ex:  # DoNothingReducer
        assert out is loss_dict
        return
    torch.testing.assert_close(
        out.detach(), torch.tensor(ex["loss"], dtype=torch.float64), rtol=1e-9, atol=1e-12
    )
    leaves = {n: e["losses"] for n, e in loss_dict.items() if isinstance(e["losses"], torch.Tensor)}
    grads = torch.autograd.grad(out, [emb, *leaves.values()], allow_unused=True)
    emb_grad, loss_grads = grads[0], dict(zip(leaves, grads[1:]))
    if ex["grad"] is None:  # embeddings not needed: no gradient, or exact zeros
        assert emb_grad is None or torch.count_nonzero(emb_grad) == 0
    else:
        torch.testing.assert_close(emb_grad, torch.tensor(ex["grad"], dtype=torch.float64))
    for name, want in ex["grad_losses"].items():
        got = loss_grads.get(name)
        want_t = torch.tensor(want, dtype=torch.float64)
        got = torch.zeros_like(want_t) if got is None else got
        torch.testing.assert_close(got.reshape(want_t.shape), want_t, rtol=1e-9, atol=1e-12)
