"""Pair miners: MultiSimilarityMiner, PairMarginMiner, HDCMiner, UniformHistogramMiner."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from pml.core.indices import IndicesTuple, PairsTuple, convert_to_pairs, get_all_pairs_indices
from pml.core.validation import check_indices_tuple, check_int, check_real
from pml.distances import BaseDistance, CosineSimilarity
from pml.miners import functional as MF
from pml.miners._base import BaseMiner, _records


class MultiSimilarityMiner(BaseMiner):
    """Pair mining of the multi-similarity loss (Wang et al., CVPR 2019).

    Math: `functional.multi_similarity_miner` (per-row thresholds, then a sort of the kept
    pairs only). Default distance: ``CosineSimilarity()``.

    Args:
        epsilon: margin added when comparing with the hardest pair of the other side.
        **kwargs: ``distance``, ``collect_stats``, ``tuples_per_anchor`` (at most that many
            of each anchor's selected positive pairs and, separately, negative pairs, a
            uniformly random subset; see :class:`BaseMiner`).

    Example:
        >>> emb = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6], [0.0, 1.0]])
        >>> a1, p, a2, n = MultiSimilarityMiner()(emb, torch.tensor([0, 0, 1, 1]))
        >>> a2.tolist(), n.tolist()
        ([0, 1, 1, 2, 2, 3], [2, 3, 2, 0, 1, 1])
    """

    handles_tuples_per_anchor = True
    accepts_mat = True  # mines from batch_matrix (forward(..., mat=))

    def __init__(self, epsilon: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_real("epsilon", epsilon)
        _records(self, epsilon=epsilon)

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()

    def mine(
        self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor, ref_labels: Tensor
    ) -> PairsTuple:
        mat = self.batch_matrix(embeddings, ref_emb)
        return MF.multi_similarity_miner(
            mat,
            labels,
            ref_labels,
            epsilon=self.epsilon,
            is_inverted=self.distance.is_inverted,
            exclude_diagonal=embeddings is ref_emb,  # compat: identity of the embeddings
            tuples_per_anchor=self.tuples_per_anchor,
        )


class PairMarginMiner(BaseMiner):
    """Pairs that violate a margin. Math: `functional.pair_margin_miner`.

    Args:
        pos_margin: positives farther than this (less similar, for similarities) are kept.
        neg_margin: negatives closer than this (more similar) are kept.
        **kwargs: ``distance``, ``collect_stats``, ``tuples_per_anchor`` (at most that many
            of each anchor's violating positive pairs and, separately, negative pairs, a
            uniformly random subset; the statistics still describe all pairs).

    Example:
        >>> emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]])
        >>> a1, p, a2, n = PairMarginMiner()(emb, torch.tensor([0, 0, 1, 1]))
        >>> a1.tolist(), p.tolist(), a2.tolist(), n.tolist()
        ([0, 1, 2, 3], [1, 0, 3, 2], [0, 1, 2, 3], [2, 3, 0, 1])
    """

    handles_tuples_per_anchor = True
    accepts_mat = True  # mines from batch_matrix (forward(..., mat=))

    def __init__(self, pos_margin: float = 0.2, neg_margin: float = 0.8, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_real("pos_margin", pos_margin)
        check_real("neg_margin", neg_margin)
        _records(self, pos_margin=pos_margin, neg_margin=neg_margin)
        self.add_to_recordable_attributes(
            list_of_names=["pos_pair_dist", "neg_pair_dist"], is_stat=True
        )

    def mine(
        self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor, ref_labels: Tensor
    ) -> PairsTuple:
        mat = self.batch_matrix(embeddings, ref_emb)
        if self.collect_stats:
            pos_mean, neg_mean = MF.pair_margin_miner_stats(mat, labels, ref_labels)
            self.set_stats(pos_pair_dist=pos_mean, neg_pair_dist=neg_mean)
        return MF.pair_margin_miner(
            mat,
            labels,
            ref_labels,
            pos_margin=self.pos_margin,
            neg_margin=self.neg_margin,
            is_inverted=self.distance.is_inverted,
            tuples_per_anchor=self.tuples_per_anchor,
        )


class HDCMiner(BaseMiner):
    """Hard-aware deeply cascaded mining (Yuan et al., ICCV 2017). Math: `functional.hdc_miner`.

    Keeps the hardest ``ceil(filter_percentage * count)`` positive and negative pairs. The
    candidates are all pairs of the batch, or a tuple given by :meth:`set_idx_externally`
    (kept until :meth:`reset_idx`). The latest output is also stored as ``a1, p, a2, n``.

    Args:
        filter_percentage: fraction of pairs kept on each side, in ``[0, 1]``.
        **kwargs: ``distance``, ``collect_stats``, ``tuples_per_anchor``: applied after the
            filter. ``filter_percentage`` first keeps the hardest
            ``ceil(filter_percentage * count)`` pairs of each side over the whole batch,
            exactly as without the keyword; then each anchor keeps a uniformly random subset
            of at most ``tuples_per_anchor`` of its remaining positive pairs and, separately,
            negative pairs (hardest-first order kept). So the output is a random subset of
            the hard pairs, never a pair the filter dropped.

    Raises:
        ValueError: ``filter_percentage`` outside ``[0, 1]``.

    Example:
        >>> emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]])
        >>> a1, p, a2, n = HDCMiner(filter_percentage=0.5)(emb, torch.tensor([0, 0, 1, 1]))
        >>> len(a1), len(a2)
        (2, 4)
    """

    handles_tuples_per_anchor = True
    accepts_mat = True  # mines from batch_matrix (forward(..., mat=))

    def __init__(self, filter_percentage: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # fix: the reference fails later, inside torch.topk
        check_real("filter_percentage", filter_percentage, min=0, max=1)
        _records(self, filter_percentage=filter_percentage)
        self.reset_idx()

    def mine(
        self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor, ref_labels: Tensor
    ) -> PairsTuple:
        mat = self.batch_matrix(embeddings, ref_emb)
        if self.was_set_externally:
            # fix: filter the tuple given by the user, not the output of the previous call
            candidates = self._external
            check_indices_tuple(
                candidates, n=mat.shape[0], m=mat.shape[1], name="indices_tuple",
                check_bounds=True,
            )  # fmt: skip
            candidates = tuple(t.to(mat.device) for t in candidates)
        else:
            candidates = get_all_pairs_indices(labels, ref_labels)
        out = MF.hdc_miner(
            mat,
            candidates,  # type: ignore[arg-type]
            filter_percentage=self.filter_percentage,
            is_inverted=self.distance.is_inverted,
            tuples_per_anchor=self.tuples_per_anchor,
        )
        self.a1, self.p, self.a2, self.n = out
        return out

    def set_idx_externally(self, indices_tuple: IndicesTuple, labels: Tensor | None) -> None:
        """Mine from these pairs (a triplet tuple is converted to pairs) until :meth:`reset_idx`.

        Raises:
            TypeError: ``indices_tuple`` is not a 3- or 4-tuple of integer tensors.
            ValueError: mismatched lengths.
        """
        check_indices_tuple(indices_tuple)
        pairs = convert_to_pairs(indices_tuple, labels)
        self._external = tuple(t.long() for t in pairs)
        self.a1, self.p, self.a2, self.n = self._external
        self.was_set_externally = True

    def reset_idx(self) -> None:
        """Forget externally set pairs: mine from all pairs of each batch again."""
        self.a1, self.p, self.a2, self.n = None, None, None, None
        self._external: tuple[Tensor, ...] | None = None
        self.was_set_externally = False


class UniformHistogramMiner(BaseMiner):
    """Pairs sampled uniformly over a histogram of their distances.

    Math: `functional.uniform_histogram_miner` (bucketised once, all bins drawn together;
    on CPU the draws equal the reference's under the same ``torch.manual_seed``).

    Args:
        num_bins: equal-width bins between the smallest and largest value of each side.
        pos_per_bin: positive pairs drawn (with replacement) per non-empty bin.
        neg_per_bin: negative pairs drawn per non-empty bin.
        **kwargs: ``distance``, ``collect_stats``, ``tuples_per_anchor``: after all bins
            are drawn (the same random stream as without it), each anchor keeps a uniformly
            random subset of at most that many of its drawn positive entries and, separately,
            negative entries (the bins draw with replacement, so a pair drawn twice may stay
            twice).

    Raises:
        TypeError: ``num_bins``, ``pos_per_bin`` or ``neg_per_bin`` is not an int.
        ValueError: one of them is smaller than 1.

    Example:
        >>> emb = torch.nn.functional.normalize(torch.randn(8, 3), dim=1)
        >>> miner = UniformHistogramMiner(num_bins=1, pos_per_bin=3, neg_per_bin=5)
        >>> a1, p, a2, n = miner(emb, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
        >>> len(a1), len(a2)
        (3, 5)
    """

    handles_tuples_per_anchor = True
    accepts_mat = True  # mines from batch_matrix (forward(..., mat=))

    def __init__(
        self, num_bins: int = 100, pos_per_bin: int = 10, neg_per_bin: int = 10, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        # fix: the reference fails at the first forward (torch.linspace / multinomial)
        self.num_bins = check_int("num_bins", num_bins, min=1)
        _records(
            self,
            pos_per_bin=check_int("pos_per_bin", pos_per_bin, min=1),
            neg_per_bin=check_int("neg_per_bin", neg_per_bin, min=1),
        )

    def mine(
        self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor, ref_labels: Tensor
    ) -> PairsTuple:
        mat = self.batch_matrix(embeddings, ref_emb)
        return MF.uniform_histogram_miner(
            mat,
            labels,
            ref_labels,
            num_bins=self.num_bins,
            pos_per_bin=self.pos_per_bin,
            neg_per_bin=self.neg_per_bin,
            tuples_per_anchor=self.tuples_per_anchor,
        )
