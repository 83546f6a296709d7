"""Checks of tensors at the public boundary: embeddings, labels, index tuples and guards.

Re-exported by :mod:`pml.core.validation`. Shapes and values are ``ValueError``, types
``TypeError``; every message names the argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "check_distance_matrix",
    "check_embeddings",
    "check_finite",
    "check_index_labels",
    "check_indices_tuple",
    "check_shapes",
    "indices_tuple_not_supported",
    "labels_or_indices_tuple_required",
    "labels_required",
    "ref_not_supported",
]


def check_embeddings(x: Any, name: str = "embeddings", *, allow_empty: bool = True) -> None:
    """Check that ``x`` is a 2-D floating-point tensor.

    Raises:
        TypeError: ``x`` is not a tensor, or not floating point.
        ValueError: ``x`` is not 2-D, or is empty when ``allow_empty`` is False.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(
            f"{name} must have shape (batch_size, embedding_size); got {tuple(x.shape)}"
        )
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor; got {x.dtype}")
    if not allow_empty and x.shape[0] == 0:
        raise ValueError(f"{name} must not be empty; got shape {tuple(x.shape)}")


def check_shapes(
    embeddings: Tensor,
    labels: Tensor | None,
    *,
    names: tuple[str, str] = ("embeddings", "labels"),
) -> None:
    """The reference's ``check_shapes``: same length, 1-D labels (``ValueError``).

    Raises:
        TypeError: ``embeddings`` is not a tensor.
        ValueError: ``labels`` is not 1-D or its length differs from ``embeddings``.
    """
    if not isinstance(embeddings, Tensor):
        raise TypeError(f"{names[0]} must be a torch.Tensor; got {type(embeddings).__name__}")
    if labels is None:
        return
    if not isinstance(labels, Tensor):
        raise TypeError(f"{names[1]} must be a torch.Tensor; got {type(labels).__name__}")
    if labels.ndim != 1:
        raise ValueError(f"{names[1]} must be 1-D; got shape {tuple(labels.shape)}")
    if embeddings.ndim == 0 or embeddings.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{names[1]} must have shape ({embeddings.shape[0] if embeddings.ndim else 0},) "
            f"to match {names[0]}; got {tuple(labels.shape)} "
            "(number of embeddings must equal number of labels)"
        )


def check_finite(x: Tensor, name: str = "embeddings") -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or inf. Forces a device sync: opt-in only."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite; got NaN or inf values")


#: dtypes an index tensor may have (torch reads uint8 as a boolean mask, and int8/int16 fail
#: deep inside indexing)
_INDEX_DTYPES = (torch.int64, torch.int32)


def check_indices_tuple(
    indices_tuple: Any,
    n: int | None = None,
    m: int | None = None,
    *,
    name: str = "indices_tuple",
    check_bounds: bool = False,
) -> None:
    """Check the form of a miner output (and, with ``check_bounds``, its index range).

    Pairs are a 4-tuple ``(a1, p, a2, n)`` with ``len(a1) == len(p)``, ``len(a2) == len(n)``;
    triplets a 3-tuple ``(a, p, n)`` of equal lengths. Entries are 1-D int64 or int32 tensors.
    With ``check_bounds``, anchors must lie in ``[0, n)`` and positives/negatives in
    ``[0, m)`` (no upper bound where ``n``/``m`` is None): one ``aminmax`` per tensor and one
    device sync for the whole tuple.

    Raises:
        TypeError: not a tuple/list, wrong length, or entries that are not int64/int32 tensors.
        ValueError: entries not 1-D, mismatched lengths, or indices out of range.

    Example:
        >>> t = torch.tensor([0, 1])
        >>> check_indices_tuple((t, t, t), n=2, m=2, check_bounds=True)
    """
    if not isinstance(indices_tuple, Sequence) or isinstance(indices_tuple, str | Tensor):
        raise TypeError(
            f"{name} must be a tuple (a, p, n) of triplets or (a1, p, a2, n) of pairs; "
            f"got {type(indices_tuple).__name__}"
        )
    if len(indices_tuple) not in (3, 4):
        raise TypeError(
            f"{name} must have 3 entries (a, p, n) or 4 entries (a1, p, a2, n); "
            f"got {len(indices_tuple)}"
        )
    for i, t in enumerate(indices_tuple):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}[{i}] must be a torch.Tensor; got {type(t).__name__}")
        if t.dtype not in _INDEX_DTYPES:
            # fix: uint8 was read as a mask and int8/int16 failed deep inside indexing
            raise TypeError(
                f"{name}[{i}] must be an integer tensor of dtype int64 or int32; got {t.dtype}"
            )
        if t.ndim != 1:
            raise ValueError(f"{name}[{i}] must be 1-D; got shape {tuple(t.shape)}")
    lengths = [len(t) for t in indices_tuple]
    if len(indices_tuple) == 3 and len(set(lengths)) != 1:
        raise ValueError(f"{name} triplets (a, p, n) must have equal lengths; got {lengths}")
    if len(indices_tuple) == 4 and (lengths[0] != lengths[1] or lengths[2] != lengths[3]):
        raise ValueError(
            f"{name} pairs (a1, p, a2, n) need len(a1) == len(p) and len(a2) == len(n); "
            f"got {lengths}"
        )
    if check_bounds:
        _check_index_bounds(indices_tuple, n, m, name)


def _check_index_bounds(
    indices_tuple: Sequence[Tensor], n: int | None, m: int | None, name: str
) -> None:
    """Anchors in ``[0, n)``, positives/negatives in ``[0, m)``; one sync for all tensors."""
    anchor_positions = (0, 2) if len(indices_tuple) == 4 else (0,)
    positions = [i for i, t in enumerate(indices_tuple) if t.numel()]
    if not positions:
        return
    device = indices_tuple[positions[0]].device
    ends = [e.to(device) for i in positions for e in torch.aminmax(indices_tuple[i])]
    values = torch.stack(ends).tolist()  # one device sync for the whole tuple
    for k, i in enumerate(positions):
        low, high = values[2 * k], values[2 * k + 1]
        limit = n if i in anchor_positions else m
        if low < 0 or (limit is not None and high >= limit):
            rows = (
                "embeddings" if i in anchor_positions else "ref_emb, or of embeddings without one"
            )
            where = "[0, inf)" if limit is None else f"[0, {limit}) (rows of {rows})"
            raise ValueError(f"{name}[{i}] has indices outside {where}; got range [{low}, {high}]")


def labels_required(labels: Tensor | None) -> Tensor:
    """Return ``labels``, narrowed to a Tensor; ``ValueError`` if it is None.

    Example:
        >>> labels = labels_required(torch.tensor([0, 1]))
    """
    if labels is None:
        raise ValueError("labels must not be None: this loss needs labels")
    return labels


def labels_or_indices_tuple_required(labels: Tensor | None, indices_tuple: Any) -> None:
    """Raise ``ValueError`` if both ``labels`` and ``indices_tuple`` are None."""
    if labels is None and indices_tuple is None:
        raise ValueError("labels and indices_tuple cannot both be None")


def indices_tuple_not_supported(indices_tuple: Any) -> None:
    """Raise ``ValueError`` if ``indices_tuple`` is given."""
    if indices_tuple is not None:
        raise ValueError("indices_tuple is not supported by this loss; pass None")


def ref_not_supported(
    embeddings: Tensor,
    labels: Tensor | None,
    ref_emb: Tensor | None,
    ref_labels: Tensor | None,
) -> None:
    """Raise ``ValueError`` unless the reference set *is* the query set (object identity)."""
    if ref_emb is not embeddings or ref_labels is not labels:
        raise ValueError("ref_emb and ref_labels are not supported by this loss; pass None")


def check_index_labels(labels: Any, name: str = "labels", num_classes: int | None = None) -> Tensor:
    """Labels that index something (per-class parameters, counts, class weights), as int64.

    Comparing labels works for every dtype, but indexing does not: torch reads a uint8 index
    tensor as a mask and refuses int8/int16. Integer and bool labels (``False``/``True`` are
    classes 0 and 1) are returned as int64 (int64 labels unchanged, same object); labels of a
    floating-point or complex dtype are refused, since a label ``1.5`` has no row. With
    ``num_classes`` every label must lie in ``[0, num_classes)``: one ``aminmax``, which forces
    a device sync.

    Raises:
        TypeError: ``labels`` is not a tensor.
        ValueError: a non-integral dtype, or a label outside ``[0, num_classes)``.

    Example:
        >>> check_index_labels(torch.tensor([2, 0], dtype=torch.uint8), num_classes=3)
        tensor([2, 0])
    """
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(labels).__name__}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex:
        raise ValueError(
            f"{name} must be integer (or bool) class indices here, since they index per-class "
            f"values; got dtype {labels.dtype}"
        )
    out = labels.long()
    if num_classes is not None and out.numel():
        low, high = (int(v) for v in torch.aminmax(out))
        if low < 0 or high >= num_classes:
            raise ValueError(f"{name} must lie in [0, {num_classes}); got [{low}, {high}]")
    return out


def check_distance_matrix(
    mat: Any,
    embeddings: Tensor,
    ref_emb: Tensor,
    *,
    owner: str,
    accepted: bool,
    require_graph: bool = False,
) -> None:
    """Check a distance matrix handed to a module's ``forward(..., mat=)`` (``mat`` named).

    Args:
        mat: the matrix given, expected ``(N, M)``: ``embeddings`` x ``ref_emb``.
        embeddings, ref_emb: the inputs of the call, ``(N, D)`` and ``(M, D)``.
        owner: the class name, for the messages.
        accepted: whether the module can take a matrix at all.
        require_graph: a loss: when the embeddings need gradients (and grad mode is on),
            ``mat`` must carry an autograd graph back to them.

    Raises:
        TypeError: the module cannot take ``mat``, or ``mat`` is not a floating tensor.
        ValueError: ``mat`` is not ``(N, M)`` on the embeddings' device, or it has no
            autograd graph where one is required.
    """
    if not accepted:
        raise TypeError(
            f"{owner} cannot take mat: it does not compute one distance matrix of "
            "embeddings x ref_emb (call it without mat)"
        )
    if not isinstance(mat, Tensor):
        raise TypeError(f"mat must be a torch.Tensor; got {type(mat).__name__}")
    if not mat.dtype.is_floating_point:
        raise TypeError(f"mat must be a floating-point tensor; got {mat.dtype}")
    shape = (embeddings.shape[0], ref_emb.shape[0])
    if tuple(mat.shape) != shape:
        raise ValueError(
            f"mat must have shape (N, M) = {shape} (embeddings x ref_emb) for {owner}; "
            f"got {tuple(mat.shape)}"
        )
    if mat.device != embeddings.device:
        raise ValueError(f"mat must be on {embeddings.device} like embeddings; got {mat.device}")
    needs_grad = embeddings.requires_grad or ref_emb.requires_grad
    if require_graph and needs_grad and torch.is_grad_enabled() and mat.grad_fn is None:
        raise ValueError(
            f"mat has no autograd graph (grad_fn is None) but the embeddings require grad: "
            f"{owner}'s gradients would not reach them. Compute mat from these embeddings "
            "outside torch.no_grad() and without .detach(), e.g. "
            "mat = loss.distance(embeddings, ref_emb)"
        )
