"""pml.core: dtypes, logsumexp, zero_loss, records, validation, distributed (single process)."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

from pml.core import config, distributed, dtypes, functional, records, validation
from pml.core.testing import assert_close


def test_sentinels_match_spec_table() -> None:
    assert dtypes.neg_inf(torch.float16) == -65504
    assert dtypes.pos_inf(torch.float64) == 1.7976931348623157e308
    assert dtypes.small_val(torch.float32) == 1.1754943508222875e-38
    assert dtypes.neg_inf(torch.bfloat16) == torch.finfo(torch.bfloat16).min
    assert dtypes.accumulation_dtype(torch.float16) == torch.float32
    assert dtypes.accumulation_dtype(torch.float64) == torch.float64


def test_to_device_and_dtype() -> None:
    x = torch.ones(2)
    assert dtypes.to_device(x, device="cpu") is x
    assert dtypes.to_device(x, dtype=torch.float64).dtype == torch.float64
    assert dtypes.to_dtype(x, tensor=torch.zeros(1, dtype=torch.float16)).dtype == torch.float16
    with pytest.raises(TypeError, match="x must be"):
        dtypes.to_device([1, 2])  # type: ignore[arg-type]


def test_logsumexp_spec_example() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.1, 0.2]], dtype=torch.float64)
    mask = torch.tensor([[True, False, True], [False, False, False]])
    assert_close(
        functional.logsumexp(x, mask, add_one=True),
        torch.tensor([[3.1698], [0.0]]),
        rtol=1e-4,
        atol=1e-4,
    )
    assert_close(
        functional.logsumexp(x, mask, add_one=False),
        torch.tensor([[3.1269], [0.0]]),
        rtol=1e-4,
        atol=1e-4,
    )
    assert_close(
        functional.logsumexp(x, add_one=False),
        torch.tensor([[3.4076], [1.3801]]),
        rtol=1e-4,
        atol=1e-4,
    )
    out = functional.logsumexp(x, mask, dim=0)
    assert out.shape == (1, 3)
    want = torch.log(1 + torch.exp(torch.tensor([[1.0, 0.0, 3.0]], dtype=torch.float64)))
    assert_close(out, want.masked_fill(torch.tensor([[False, True, False]]), 0))


def test_logsumexp_dtypes_and_gradcheck(dtype: torch.dtype, device: torch.device) -> None:
    x = torch.randn(4, 5, dtype=torch.float64)
    mask = torch.rand(4, 5, generator=torch.Generator().manual_seed(0)) > 0.4
    want = functional.logsumexp(x, mask)
    got = functional.logsumexp(x.to(device, dtype), mask.to(device))
    assert got.dtype == dtype and got.device.type == device.type
    assert_close(got, want)
    xx = x.clone().requires_grad_()
    assert gradcheck(lambda t: functional.logsumexp(t, mask), (xx,))


def test_zero_loss_is_connected_and_nan_aware() -> None:
    e = torch.randn(3, 2, requires_grad=True)
    z = functional.zero_loss(e)
    z.backward()
    assert z.item() == 0 and torch.equal(e.grad, torch.zeros(3, 2))
    assert torch.isnan(functional.zero_loss(torch.tensor([[float("nan")]])))


class _Stats(records.ModuleWithRecords):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.margin = 0.5
        self.add_to_recordable_attributes(name="margin")
        self.add_to_recordable_attributes(list_of_names=["num_pairs"], is_stat=True)


def test_records_registration_and_reset() -> None:
    m = _Stats(collect_stats=True)
    assert m._record_these == ["margin"] and m.margin == 0.5
    assert m._record_these_stats == ["num_pairs"]
    m.set_stats(num_pairs=torch.tensor(3))
    assert m.num_pairs == 3 and isinstance(m.num_pairs, int)
    m.reset_stats()
    assert m.num_pairs == 0
    with pytest.raises(ValueError, match="num_pair"):
        m.set_stats(num_pair=1)
    quiet = _Stats(collect_stats=False)
    assert not hasattr(quiet, "_record_these_stats") and not hasattr(quiet, "num_pairs")
    quiet.set_stats(num_pairs=5)  # no-op without collect_stats
    assert not hasattr(quiet, "num_pairs")
    assert records.list_of_recordable_attributes_list_names() == [
        "_record_these",
        "_record_these_stats",
    ]


def test_collect_stats_global_default_read_at_construction() -> None:
    old = config.COLLECT_STATS
    try:
        config.set_collect_stats(True)
        assert _Stats().collect_stats is True
        config.set_collect_stats(False)
        assert _Stats().collect_stats is False
        with pytest.raises(TypeError, match="value"):
            config.set_collect_stats("yes")  # type: ignore[arg-type]
    finally:
        config.COLLECT_STATS = old


def test_logger_name_that_is_not_a_string_is_rejected() -> None:
    with pytest.raises(TypeError, match="name must be str"):
        config.set_logger_name(3)  # type: ignore[arg-type]


def test_validation_errors_name_the_argument() -> None:
    emb = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="labels must have shape \\(4,\\)"):
        validation.check_shapes(emb, torch.zeros(3))
    with pytest.raises(ValueError, match="labels must be 1-D"):
        validation.check_shapes(emb, torch.zeros(4, 1))
    with pytest.raises(
        ValueError, match="embeddings must have shape \\(batch_size, embedding_size\\)"
    ):
        validation.check_embeddings(torch.zeros(4))
    with pytest.raises(TypeError, match="floating-point"):
        validation.check_embeddings(torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="must not be empty"):
        validation.check_embeddings(torch.zeros(0, 2), allow_empty=False)
    with pytest.raises(ValueError, match="mode must be one of"):
        validation.check_option("mode", "x", ["a"])
    with pytest.raises(ValueError, match="finite"):
        validation.check_finite(torch.tensor([float("inf")]))
    with pytest.raises(ValueError, match="labels and indices_tuple"):
        validation.labels_or_indices_tuple_required(None, None)
    with pytest.raises(ValueError, match="ref_emb and ref_labels are not supported"):
        validation.ref_not_supported(emb, None, emb.clone(), None)
    validation.ref_not_supported(emb, None, emb, None)
    assert issubclass(validation.InvalidArgumentError, ValueError)
    assert issubclass(validation.InvalidArgumentError, AssertionError)


def test_check_indices_tuple_forms() -> None:
    t = torch.tensor([0, 1])
    validation.check_indices_tuple((t, t, t))
    validation.check_indices_tuple((t, t, t[:1], t[:1]))
    with pytest.raises(TypeError, match="3 entries"):
        validation.check_indices_tuple((t, t))
    with pytest.raises(TypeError, match="indices_tuple must be a tuple"):
        validation.check_indices_tuple(t)
    with pytest.raises(ValueError, match="equal lengths"):
        validation.check_indices_tuple((t, t, t[:1]))
    with pytest.raises(ValueError, match="len\\(a1\\) == len\\(p\\)"):
        validation.check_indices_tuple((t, t[:1], t, t))
    with pytest.raises(TypeError, match="integer tensor"):
        validation.check_indices_tuple((t.float(), t, t))
    with pytest.raises(ValueError, match="outside"):
        validation.check_indices_tuple((t, t + 5, t), n=2, m=3, check_bounds=True)


def test_distributed_helpers_without_process_group() -> None:
    assert not distributed.is_distributed()
    assert distributed.get_world_size() == 1
    x = torch.randn(3, 2)
    assert distributed.all_gather(x) is None
    all_emb, all_labels, labels = distributed.gather(x, torch.arange(3))
    assert all_emb is x and all_labels.tolist() == [0, 1, 2]
    t = distributed.get_indices_tuple(torch.tensor([0, 0, 1]), torch.tensor([0, 0, 1]))
    assert list(zip(t[0].tolist(), t[1].tolist())) == [(0, 1), (1, 0)]
    assert (
        distributed.select_ref_or_regular(1, None) == 1
        and distributed.select_ref_or_regular(1, 2) == 2
    )
    mask = torch.tensor([True, False])
    assert torch.equal(distributed.gather_enqueue_mask(mask, torch.device("cpu")), mask)
    assert distributed.gather_enqueue_mask(None, torch.device("cpu")) is None
