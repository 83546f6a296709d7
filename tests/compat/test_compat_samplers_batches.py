"""pml.samplers additions vs the reference: MPerClassBatchSampler (no seed) batches equal the
reference's MPerClassSampler cut by a BatchSampler; state_dict leaves the default stream alone."""

from __future__ import annotations

import numpy as np
import pytest
from torch.utils.data import BatchSampler

ref = pytest.importorskip("pytorch_metric_learning.samplers")
import pml.samplers as ours  # noqa: E402

pytestmark = [pytest.mark.compat, pytest.mark.filterwarnings("ignore:.*fewer than m")]


def _labels() -> np.ndarray:
    labels = np.random.RandomState(11).randint(0, 9, 90)
    labels[:9] = np.arange(9)
    return labels


@pytest.mark.parametrize(("m", "batch_size", "num_batches"), [(4, 16, 10), (2, 6, 7), (3, 9, 1)])
def test_batch_sampler_equals_reference_sampler_in_batches(m, batch_size, num_batches) -> None:
    labels = _labels()
    a = ours.MPerClassBatchSampler(labels, m, batch_size, num_batches)
    b = BatchSampler(
        ref.MPerClassSampler(labels, m, batch_size, num_batches * batch_size), batch_size, True
    )
    np.random.seed(4)
    got = [list(a) for _ in range(3)]
    np.random.seed(4)
    want = [[[int(i) for i in batch] for batch in b] for _ in range(3)]
    assert len(a) == len(b) and got == want


def test_state_dict_calls_do_not_change_the_reference_stream() -> None:
    labels = _labels()
    a = ours.MPerClassSampler(labels, 4, 16, 160)
    b = ref.MPerClassSampler(labels, 4, 16, 160)
    np.random.seed(6)
    got = []
    for _ in range(3):
        it = iter(a)
        got.append([int(next(it)) for _ in range(5)])
        a.load_state_dict(a.state_dict())  # resume the pass under way, in place
        got[-1] += [int(i) for i in a]
    np.random.seed(6)
    want = [[int(i) for i in b] for _ in range(3)]
    assert got == want
