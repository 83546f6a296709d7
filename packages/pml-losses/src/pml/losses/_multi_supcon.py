"""MultiSupConLoss: supervised contrastive loss for multi-label data (label sets).

Math: :func:`pml.losses.functional.multi_supcon_loss` and
:func:`pml.losses.functional.label_set_jaccard`. ``compute_loss`` reads: the label sets (checked
in ``forward``) -> Jaccard indices -> positive and denominator masks (from the threshold, or
from a miner's pairs) -> the distance's matrix in at least float32 -> one functional call ->
the non-finite guard -> one value per query row.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pml.core.dtypes import accumulation_dtype
from pml.core.indices import IndicesTuple, convert_to_pairs
from pml.core.validation import InvalidArgumentError
from pml.distances import BaseDistance, CosineSimilarity
from pml.losses._arguments import check_real
from pml.losses._base import BaseMetricLossFunction
from pml.losses._pairs import listed_pair_masks, nan_if_nonfinite, row_entry
from pml.losses.functional._multi_supcon import label_set_jaccard, multi_supcon_loss
from pml.reducers import AvgNonZeroReducer, BaseReducer, LossDict

__all__ = ["MultiSupConLoss", "check_label_sets"]


def _check_label_set_tensor(labels: Any, name: str, rows: int, device: torch.device) -> Tensor:
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of label sets; got {type(labels).__name__}")
    if labels.ndim == 1 and labels.shape[0] == rows:
        return labels.to(device)  # one class per sample: singleton label sets
    if labels.ndim != 2 or labels.shape[0] != rows:
        raise ValueError(
            f"{name} must be label sets of shape ({rows}, num_classes) (boolean or 0/1 "
            f"multi-hot rows) or class labels ({rows},); got shape {tuple(labels.shape)}"
        )
    if labels.dtype.is_complex:
        raise TypeError(f"{name} must be boolean or 0/1 numbers; got {labels.dtype}")
    labels = labels.to(device)
    # one reduction and one device sync, only for non-boolean label sets
    if labels.dtype != torch.bool and not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError(
            f"{name} must hold only 0 and 1 (multi-hot label sets); got other values "
            "(pass labels.bool() to read every non-zero entry as a label)"
        )
    return labels != 0


def check_label_sets(
    embeddings: Tensor, labels: Any, ref_emb: Tensor | None, ref_labels: Any
) -> tuple[Tensor, Tensor | None]:
    """Boolean label sets ``(labels, ref_labels)`` (or 1-D class labels) on the embeddings' device.

    Raises:
        ValueError: ``labels`` missing, a shape other than ``(N, C)`` or ``(N,)``, values other
            than 0/1, ``ref_labels`` missing with ``ref_emb``, or another number of classes.
        TypeError: not a tensor.
    """
    if labels is None:
        raise ValueError(
            "labels must be given: MultiSupConLoss needs the (N, num_classes) label sets, "
            "also with indices_tuple (they weight the positive pairs)"
        )
    if not isinstance(embeddings, Tensor):
        raise TypeError(f"embeddings must be a torch.Tensor; got {type(embeddings).__name__}")
    rows = embeddings.shape[0] if embeddings.ndim else 0
    labels = _check_label_set_tensor(labels, "labels", rows, embeddings.device)
    if ref_emb is None:
        return labels, None
    if ref_labels is None:
        raise ValueError("ref_labels must be given with ref_emb (the reference label sets)")
    ref_rows = ref_emb.shape[0] if isinstance(ref_emb, Tensor) and ref_emb.ndim else 0
    ref_labels = _check_label_set_tensor(ref_labels, "ref_labels", ref_rows, embeddings.device)
    if ref_labels.shape[1:] != labels.shape[1:]:
        raise ValueError(
            f"ref_labels must have the form of labels, shape ({ref_rows}, "
            f"*{tuple(labels.shape[1:])}); got {tuple(ref_labels.shape)}"
        )
    return labels, ref_labels


def _jaccard(labels: Tensor, ref_labels: Tensor, dtype: torch.dtype) -> Tensor:
    """The Jaccard matrix of label sets; of class labels (singleton sets): equality."""
    if labels.ndim == 1:
        return (labels.unsqueeze(1) == ref_labels.unsqueeze(0)).to(dtype)
    return label_set_jaccard(labels, ref_labels, dtype=dtype)


class MultiSupConLoss(BaseMetricLossFunction):
    """Multi-label supervised contrastive loss (Zhang & Wu, AAAI 2024).

    "Multi-Label Supervised Contrastive Learning".
    Labels are label sets: a boolean (or 0/1) ``(N, C)`` tensor, one multi-hot row per
    sample (1-D class labels ``(N,)`` are singleton sets: then ``J`` is 1 for the same class
    and 0 otherwise, and the loss is :class:`SupConLoss`'s with every other row in the
    denominator). With ``J_ij`` the Jaccard index of the label sets of ``i`` and ``j``
    (:func:`pml.losses.functional.label_set_jaccard`; two empty sets have index 1),
    ``z = s / temperature``, ``A(i)`` every reference row but ``i`` itself and
    ``N(i) = {p ∈ A(i) : J_ip >= threshold}``:

    ``loss_i = -1/|N(i)| · Σ_{p ∈ N(i)} J_ip · log(exp(z_ip) / Σ_{a ∈ A(i)} exp(z_ia))``.

    With ``threshold=0`` every other row is a positive (rows without a shared label add
    weight 0 but count in ``|N(i)|``). Rows without a positive give 0; the default
    ``AvgNonZeroReducer`` averages the others. No positive pair in the batch: the zero loss.

    Routes: labels (no ``indices_tuple``): the threshold on the Jaccard matrix, ``A(i)`` all
    reference rows (the row itself removed when there is no ``ref_emb``). A miner's pairs
    ``(a1, p, a2, n)`` (or triplets): ``N(i)`` the listed positive cells, ``A(i)`` the listed
    positive and negative cells (duplicates collapse; a cell listed as both is an error); the
    positives are still weighted by ``J``, so ``labels`` are required. Inside
    :class:`~pml.losses.CrossBatchMemory` (built with ``label_shape=(C,)``) the memory holds
    label sets and the pairs come from :meth:`label_set_pairs`.

    Args:
        temperature: softmax temperature (> 0).
        threshold: the Jaccard index from which a pair is positive, in ``[0, 1]``
            (inclusive).
        **kwargs: ``distance`` (default ``CosineSimilarity()``; a distance is negated),
            ``reducer`` (default ``AvgNonZeroReducer``), ``collect_stats``,
            ``embedding_regularizer``, ``embedding_reg_weight``.

    Shapes:
        ``embeddings`` ``(N, D)``, ``labels`` ``(N, C)``; ``ref_emb`` ``(M, D)`` and
        ``ref_labels`` ``(M, C)``. Sub-loss ``loss``: ``(N,)``, "element".

    Raises:
        TypeError: label sets that are not tensors.
        ValueError: label sets missing, of another shape, or holding values other than 0/1
            (checked with one reduction for non-boolean label sets: a device sync).

    Example:
        >>> emb = torch.tensor([[1.0, 0.0], [0.9, 0.3], [0.0, 1.0], [0.2, 1.0]])
        >>> sets = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 1], [0, 1, 1]]).bool()
        >>> MultiSupConLoss()(emb, sets)
        tensor(0.0028)
    """

    def __init__(self, temperature: float = 0.1, threshold: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.temperature = check_real("temperature", temperature, min=0, min_open=True)
        self.threshold = check_real("threshold", threshold, min=0, max=1)
        self.add_to_recordable_attributes(list_of_names=["temperature", "threshold"], is_stat=False)
        self._label_sets: tuple[Tensor, Tensor | None] | None = None

    def get_default_reducer(self) -> BaseReducer:
        return AvgNonZeroReducer()

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor | None = None,
        indices_tuple: IndicesTuple | None = None,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
        **kwargs: Any,
    ) -> Tensor:
        """The loss; ``labels``/``ref_labels`` are label sets ``(N, C)``/``(M, C)``.

        See :meth:`BaseMetricLossFunction.forward` for the other arguments (``kwargs`` are
        passed on to it) and checks.
        """
        label_sets = check_label_sets(embeddings, labels, ref_emb, ref_labels)
        self._label_sets = label_sets
        try:  # the base pipeline checks 1-D labels: it gets none, compute_loss reads the sets
            return super().forward(embeddings, None, indices_tuple, ref_emb, None, **kwargs)
        finally:
            self._label_sets = None

    def label_set_pairs(
        self, labels: Tensor, ref_labels: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """All pairs ``(a1, p, a2, n)``: positive where ``J >= threshold``, negative elsewhere.

        Without ``ref_labels`` the diagonal is left out (pairs of the batch with itself).
        """
        if labels.ndim > 1:
            labels = labels != 0
            ref_labels = None if ref_labels is None else ref_labels != 0
        ref = labels if ref_labels is None else ref_labels
        pos = _jaccard(labels, ref, torch.float32) >= self.threshold
        neg = ~pos
        if ref_labels is None:
            pos.fill_diagonal_(False)
        a1, p = torch.where(pos)
        a2, n = torch.where(neg)
        return a1, p, a2, n

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        indices_tuple: IndicesTuple | None,
        ref_emb: Tensor,
        ref_labels: Tensor | None,
    ) -> LossDict:
        if self._label_sets is None:
            raise InvalidArgumentError(
                "MultiSupConLoss.compute_loss needs the label sets checked by forward; "
                "call the loss module"
            )
        sets, ref_sets = self._label_sets
        same = ref_emb is embeddings
        acc = accumulation_dtype(embeddings.dtype)
        ref = sets if ref_sets is None or same else ref_sets
        jaccard = _jaccard(sets, ref, acc)
        shape = (len(embeddings), len(ref_emb))
        if indices_tuple is None:
            den = torch.ones(shape, dtype=torch.bool, device=embeddings.device)
            if same:
                den.fill_diagonal_(False)
            pos = den & (jaccard >= self.threshold)
        else:
            pairs = convert_to_pairs(indices_tuple, None, None)
            pairs = tuple(t.to(device=embeddings.device, dtype=torch.long) for t in pairs)
            pos, neg = listed_pair_masks(pairs, shape, embeddings.device)  # type: ignore[arg-type]
            den = pos | neg
        if not bool(pos.any()):
            return self.zero_losses()
        mat = self.distance.acc_matrix(embeddings, ref_emb)
        is_inverted = self.distance.is_inverted
        losses = multi_supcon_loss(
            mat, jaccard, pos, den, self.temperature, is_inverted=is_inverted
        )
        return row_entry(nan_if_nonfinite(losses.to(embeddings.dtype), embeddings, ref_emb))
