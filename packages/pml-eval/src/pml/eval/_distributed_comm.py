"""Collectives of distributed evaluation: rows gathered in rank order, agreement checks.

A rank that fails its input checks makes every rank raise (:func:`_agree`): no rank waits
forever in a collective.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from pml.core.distributed import get_world_size

__all__ = [
    "_agree",
    "_compute_dtype",
    "_dtype_code",
    "_exchange",
    "_gather_rows",
    "_same_on_all_ranks",
]

#: dtypes exchanged as small codes between ranks (to check that the ranks agree).
_DTYPES = (
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.bool,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
)


def _dtype_code(dtype: torch.dtype) -> int:
    return _DTYPES.index(dtype) if dtype in _DTYPES else len(_DTYPES)


def _exchange(fields: Sequence[int], device: torch.device) -> Tensor:
    """Every rank's ``fields`` (ints), one row per rank in rank order: ``(world, F)``."""
    row = torch.tensor([list(fields)], dtype=torch.int64, device=device)
    return _gather_rows(row, [1] * get_world_size()).cpu()


def _agree(error: BaseException | None, fields: Sequence[int], device: torch.device) -> Tensor:
    """Exchange ``fields``, or raise on every rank when a rank had an ``error``.

    The rank that failed raises its own error; the others a RuntimeError naming it.
    """
    table = _exchange([int(error is not None), *fields], device)
    failed = table[:, 0].nonzero().flatten().tolist()
    if error is not None:
        raise error
    if failed:
        raise RuntimeError(
            f"distributed evaluation stopped: rank(s) {failed} failed (see the error on those "
            "ranks); every rank stops so that none waits in a collective"
        )
    return table[:, 1:]


def _same_on_all_ranks(table: Tensor, column: int, name: str) -> int:
    values = table[:, column].tolist()
    if len(set(values)) > 1:
        raise ValueError(f"every rank must pass the same {name}; got {values} (rank order)")
    return int(values[0])


def _gather_rows(x: Tensor, sizes: Sequence[int]) -> Tensor:
    """Every rank's ``x`` (``sizes[r]`` rows each) concatenated in rank order.

    One ``all_gather`` of blocks padded to the largest size (the sizes are known on every
    rank); no collective when every block is empty.
    """
    if sum(sizes) == 0:
        return x
    x = x.contiguous()
    longest = max(sizes)
    padded = x
    if x.shape[0] < longest:
        padded = torch.cat([x, x.new_zeros((longest - x.shape[0], *x.shape[1:]))])
    blocks = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(blocks, padded)
    return torch.cat([b[:n] for b, n in zip(blocks, sizes)])


def _compute_dtype(codes: Tensor) -> torch.dtype:
    """float64 when any rank's embeddings are float64 (one process would promote), else float32."""
    return torch.float64 if _DTYPES.index(torch.float64) in codes.tolist() else torch.float32
