"""The base of the losses that learn one or more vectors per class (weights, proxies, centers).

``ClassVectorLoss`` owns what these losses share and nothing of their math:

* allocating the parameter in the reference's exact shape and initialising it with
  ``weight_init_func`` (same numbers at a given seed as the reference);
* the parameter *as used in a forward*: :meth:`ClassVectorLoss.vectors_for` gives it in the
  compute dtype (the embeddings' dtype promoted to at least float32, differentiably: the
  Parameter itself keeps its dtype). fix: the reference replaced ``param.data`` by a copy in
  the embeddings' dtype, so float16 embeddings turned the weights into float16 for good and
  Adam then produced NaN; a float32 Parameter now stays float32 under f16/bf16 and autocast.
  The device follows the embeddings permanently, like the reference (the Parameter object is
  kept, so an optimizer holding it still trains it);
* the class labels (integers in ``[0, num_classes)``, a clear ``ValueError`` otherwise) and the
  per-sample miner weights;
* autocast is switched off inside ``forward``: logits and softmax reduce in at least float32;
  the result is returned in the embeddings' dtype;
* :meth:`ClassVectorLoss.nonfinite_guard`: a NaN/inf loss (a broken embedding or parameter)
  makes the reduced loss NaN, also under reducers that drop non-finite losses.

The math of each loss lives in ``pml.losses.functional``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from pml.core.indices import IndicesTuple, convert_to_weights
from pml.core.validation import check_index_labels, labels_required, ref_not_supported
from pml.losses._arguments import check_count
from pml.losses._base import BaseMetricLossFunction, cast_output
from pml.losses._precision import full_precision
from pml.losses._regularizer_mixins import WeightRegularizerMixin

__all__ = ["ClassVectorLoss", "compute_dtype", "full_precision", "parameter_for"]

# re-exported: the margin-softmax and P2SGrad modules import it from here


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """The promoted floating dtype of ``tensors``, at least float32.

    Example:
        >>> compute_dtype(torch.zeros(1, dtype=torch.float16), torch.zeros(1))
        torch.float32
    """
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def parameter_for(param: Tensor, embeddings: Tensor) -> Tensor:
    """``param`` on the embeddings' device, in :func:`compute_dtype` (differentiably).

    A Parameter on another device is moved there for good (like the reference; the Parameter
    object is kept, so an optimizer holding it still trains it). Its dtype is never changed.
    """
    if param.device != embeddings.device:
        with torch.no_grad():
            param.data = param.data.to(embeddings.device)
    return param.to(compute_dtype(embeddings, param))


class ClassVectorLoss(WeightRegularizerMixin, BaseMetricLossFunction):
    """Base of the classification and proxy losses (a learnable parameter per class).

    Subclasses call :meth:`init_vectors` once in ``__init__`` and, in ``compute_loss``,
    :meth:`class_labels`, :meth:`miner_weights` and :meth:`vectors_for`.

    Args:
        num_classes: the number of classes ``C`` (labels lie in ``[0, C)``).
        embedding_size: the embedding width ``D``.
        **kwargs: ``weight_init_func``, ``weight_regularizer``, ``weight_reg_weight`` and the
            ``BaseMetricLossFunction`` arguments.

    Raises:
        TypeError: ``num_classes``/``embedding_size`` are not integers.
        ValueError: they are below 1.
    """

    #: a class-vector loss compares embeddings with its weights, not the batch (no mat=)
    accepts_mat = False
    autocast_off = True  # logits and softmax in at least float32 (see the module docstring)
    #: a sample's loss reads it and the class vectors (pml.losses.anchor_batched_backward)
    anchor_batching = "samples"

    def __init__(self, num_classes: int, embedding_size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes = check_count("num_classes", num_classes)
        self.embedding_size = check_count("embedding_size", embedding_size)

    # -- the parameter ------------------------------------------------------------------------

    def init_vectors(self, name: str, shape: tuple[int, ...]) -> nn.Parameter:
        """Register ``name`` as a float32 Parameter of ``shape``, filled by ``weight_init_func``.

        The reference allocates the same shape and calls the same initialiser, so a seeded
        run draws the same numbers.
        """
        param = nn.Parameter(torch.empty(*shape))
        self.weight_init_func(param)
        setattr(self, name, param)
        return param

    def vectors_for(self, param: Tensor, embeddings: Tensor) -> Tensor:
        """See :func:`parameter_for`."""
        return parameter_for(param, embeddings)

    # -- the inputs ---------------------------------------------------------------------------

    def class_labels(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        ref_emb: Tensor,
        ref_labels: Tensor | None,
    ) -> Tensor:
        """``labels`` as int64 class ids in ``[0, num_classes)``; no separate reference set.

        Raises:
            ValueError: labels missing, ``ref_emb`` given, a floating-point label, or a label
                outside ``[0, num_classes)`` (one ``aminmax``: a device sync).
        """
        ref_not_supported(embeddings, labels, ref_emb, ref_labels)
        labels = labels_required(labels)
        return check_index_labels(labels, "labels", num_classes=self.num_classes)

    def nonfinite_guard(self, losses: Tensor) -> Tensor:
        """``losses`` unchanged; the reduced loss becomes NaN when one of them is NaN/inf.

        A NaN/inf parameter column reaches every row's loss, a NaN/inf embedding its own; a
        filtering reducer (AvgNonZero, Threshold) drops NaN losses and would report the rest
        (or the zero loss) as a finite number. The forward adds NaN to the reduced loss in
        that case. No device sync.
        """
        # 0 when every loss is finite, NaN otherwise (an overflowing sum, inf, is NaN too)
        self._nonfinite = losses.detach().sum() * 0
        return losses

    @staticmethod
    def miner_weights(
        indices_tuple: IndicesTuple | None, labels: Tensor, dtype: torch.dtype
    ) -> Tensor:
        """Per-sample weights from a miner's tuple (all ones without one), shape ``(N,)``."""
        return convert_to_weights(indices_tuple, labels, dtype=dtype)

    # -- the pipeline -------------------------------------------------------------------------

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor | None = None,
        indices_tuple: IndicesTuple | None = None,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
        *,
        mat: Tensor | None = None,
    ) -> Tensor:
        """``BaseMetricLossFunction.forward`` with autocast off (see the module docstring).

        Args:
            embeddings: ``(N, embedding_size)``, any float dtype.
            labels: ``(N,)`` integer class ids in ``[0, num_classes)``.
            indices_tuple: a miner's output; only turned into per-sample weights.
            ref_emb, ref_labels: not supported (ValueError).
            mat: not supported (TypeError naming the class).
        """
        self._nonfinite: Tensor | None = None
        out = super().forward(embeddings, labels, indices_tuple, ref_emb, ref_labels, mat=mat)
        nonfinite, self._nonfinite = self._nonfinite, None
        if nonfinite is not None and isinstance(out, Tensor):
            out = out + nonfinite.to(out.dtype)  # fix: NaN in, NaN out (see nonfinite_guard)
        # the losses are computed in at least float32: the result in the embeddings' dtype
        return cast_output(out, embeddings.dtype)
