"""Shared helpers of the differential suite (pml vs pytorch-metric-learning 2.9).

Every module here starts with ``pytest.importorskip("pytorch_metric_learning")``: the
reference is installed only in the ``compat`` and ``bench`` hatch environments.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def clustered() -> tuple[torch.Tensor, torch.Tensor]:
    from pml.core.testing import clustered_embeddings

    emb, labels = clustered_embeddings(6, 4, 8, seed=3, dtype=torch.float64)
    return emb, labels
