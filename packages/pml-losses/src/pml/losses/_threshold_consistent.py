"""ThresholdConsistentMarginLoss: a pair regularizer for consistent thresholds."""

from __future__ import annotations

from typing import Any

from pml.core.indices import convert_to_pairs
from pml.core.validation import labels_or_indices_tuple_required
from pml.distances import BaseDistance, CosineSimilarity, assert_distance_type
from pml.distances.functional import cosine_similarity_matrix
from pml.losses._arguments import check_real
from pml.losses._base import BaseMetricLossFunction, loss_entry
from pml.losses._pairs import poison_nonfinite
from pml.losses.functional._pair_sets import threshold_consistent_margin_loss
from pml.reducers import LossDict


class ThresholdConsistentMarginLoss(BaseMetricLossFunction):
    """Threshold-consistent margin loss (Zhang et al., ICLR 2024).

    Penalises positive pairs less similar than ``margin_plus`` and negative pairs more similar
    than ``margin_minus`` (each side averaged over the pairs it penalises). Meant to be added
    to another loss (e.g. through :class:`MultipleLosses`). Math:
    :func:`pml.losses.functional.threshold_consistent_margin_loss`.

    Similarities are cosine similarities of the raw embeddings (the distance must be a
    :class:`CosineSimilarity`, as in the reference). Positives and negatives of the pairs are
    taken from ``ref_emb`` when given.

    Args:
        lambda_plus: weight of the positive-pair term.
        lambda_minus: weight of the negative-pair term.
        margin_plus: positive pairs below this similarity are penalised.
        margin_minus: negative pairs above this similarity are penalised.
        **kwargs: ``distance`` (CosineSimilarity only), ``reducer``, ``collect_stats``, ...

    Raises:
        InvalidArgumentError: the distance is not a CosineSimilarity.

    Example:
        >>> loss_fn = ThresholdConsistentMarginLoss()
        >>> emb = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
        >>> round(loss_fn(emb, torch.tensor([0, 0, 1])).item(), 4)
        0.5
    """

    def __init__(
        self,
        lambda_plus: float = 1.0,
        lambda_minus: float = 1.0,
        margin_plus: float = 0.9,
        margin_minus: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        assert_distance_type(self, CosineSimilarity)
        # fix: a negative weight silently rewards the penalised pairs
        check_real("lambda_plus", lambda_plus, min=0)
        check_real("lambda_minus", lambda_minus, min=0)
        check_real("margin_plus", margin_plus)
        check_real("margin_minus", margin_minus)
        self.lambda_plus = lambda_plus
        self.lambda_minus = lambda_minus
        self.margin_plus = margin_plus
        self.margin_minus = margin_minus

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels) -> LossDict:  # type: ignore[no-untyped-def]
        labels_or_indices_tuple_required(labels, indices_tuple)
        a1, p, a2, n = convert_to_pairs(indices_tuple, labels, ref_labels)
        # fix: p and n index ref_emb; the reference read both members from embeddings
        sims = cosine_similarity_matrix(embeddings, ref_emb)
        loss = threshold_consistent_margin_loss(
            sims[a1, p],
            sims[a2, n],
            self.lambda_plus,
            self.lambda_minus,
            self.margin_plus,
            self.margin_minus,
        )
        # fix: a NaN/inf row in no pair still makes the loss NaN
        return poison_nonfinite(
            {"loss": loss_entry(loss, None, "already_reduced")}, embeddings, ref_emb
        )
