"""Triplet miners: TripletMarginMiner, AngularMiner, DistanceWeightedMiner, packaged triplets."""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

from torch import Tensor

from pml.core.indices import TripletsTuple
from pml.core.validation import InvalidArgumentError, check_real
from pml.miners import functional as MF
from pml.miners._base import BaseMiner, _records

_TRIPLET_TYPES = ("all", "hard", "semihard", "easy")


class TripletMarginMiner(BaseMiner):
    """Triplets by margin (Schroff et al., CVPR 2015). Math: `functional.triplet_margin_miner`.

    Never builds the ``N x M x M`` candidate tensor: candidates are evaluated per block of
    positive pairs, so memory is one block plus the output.

    Args:
        margin: the margin ``m``.
        type_of_triplets: ``"all"`` (``tm <= m``), ``"hard"`` (``tm <= 0``), ``"semihard"``
            (``0 < tm <= m``) or ``"easy"`` (``tm > m``), with ``tm`` the gap between the
            negative and the positive.
        **kwargs: ``distance``, ``collect_stats``, ``tuples_per_anchor`` (at most that many
            of each anchor's selected triplets, a uniformly random subset drawn block by
            block: memory is one block plus ``N x tuples_per_anchor``, the selected
            triplets are never all listed; the statistics still describe every candidate).

    Example:
        >>> emb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.95, 0.05], [0.0, 1.0]])
        >>> a, p, n = TripletMarginMiner(margin=0.2)(emb, torch.tensor([0, 0, 1, 1]))
        >>> a.tolist(), p.tolist(), n.tolist()
        ([0, 1, 2, 2, 3, 3], [1, 0, 3, 3, 2, 2], [2, 2, 0, 1, 0, 1])
    """

    handles_tuples_per_anchor = True
    accepts_mat = True  # mines from batch_matrix (forward(..., mat=))

    def __init__(
        self,
        margin: float = 0.2,
        type_of_triplets: Literal["all", "hard", "semihard", "easy"] | str = "all",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if type_of_triplets not in _TRIPLET_TYPES:
            # compat: the reference treats any other string as "all"
            warnings.warn(
                f"type_of_triplets={type_of_triplets!r} is not one of {list(_TRIPLET_TYPES)}; "
                "it behaves like 'all'",
                UserWarning,
                stacklevel=2,
            )
        self.type_of_triplets = type_of_triplets
        check_real("margin", margin)
        _records(self, margin=margin)
        self.add_to_recordable_attributes(
            list_of_names=["avg_triplet_margin", "pos_pair_dist", "neg_pair_dist"], is_stat=True
        )

    def mine(
        self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor, ref_labels: Tensor
    ) -> TripletsTuple:
        mat = self.batch_matrix(embeddings, ref_emb)
        inverted = self.distance.is_inverted
        if self.collect_stats:
            ap, an, tm = MF.triplet_margin_miner_stats(
                mat, labels, ref_labels, is_inverted=inverted
            )
            self.set_stats(pos_pair_dist=ap, neg_pair_dist=an, avg_triplet_margin=tm)
        return MF.triplet_margin_miner(
            mat,
            labels,
            ref_labels,
            margin=self.margin,
            type_of_triplets=self.type_of_triplets,
            is_inverted=inverted,
            tuples_per_anchor=self.tuples_per_anchor,
        )


class AngularMiner(BaseMiner):
    """Triplets whose angle at the negative exceeds ``angle`` (Wang et al., ICCV 2017).

    Math: `functional.angular_miner` (raw embeddings; memory bounded, no per-triplet
    gathers). The distance must be the default ``LpDistance(p=2, power=1,
    normalize_embeddings=True)``.

    Args:
        angle: threshold in degrees; stored as ``self.angle`` in radians.
        **kwargs: ``distance``, ``collect_stats``, ``tuples_per_anchor`` (at most that many
            of each anchor's selected triplets, a uniformly random subset drawn block by
            block, like :class:`TripletMarginMiner`; the statistics describe every
            candidate).

    Raises:
        InvalidArgumentError: another distance.

    Example:
        >>> emb = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 0.5], [10.0, 10.0]])
        >>> a, p, n = AngularMiner(angle=20)(emb, torch.tensor([0, 0, 1, 1]))
        >>> a.tolist(), p.tolist(), n.tolist()
        ([0, 1, 2, 2, 3, 3], [1, 0, 3, 3, 2, 2], [2, 2, 0, 1, 0, 1])
    """

    handles_tuples_per_anchor = True

    def __init__(self, angle: float = 20, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._require_lp_distance()
        check_real("angle", angle)
        _records(self, angle=math.radians(angle))
        self.add_to_recordable_attributes(
            list_of_names=[
                "average_angle",
                "average_angle_above_threshold",
                "average_angle_below_threshold",
                "min_angle",
                "max_angle",
                "std_of_angle",
            ],
            is_stat=True,
        )

    def mine(
        self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor, ref_labels: Tensor
    ) -> TripletsTuple:
        if self.collect_stats:
            self._set_angle_stats(embeddings, labels, ref_emb, ref_labels)
        return MF.angular_miner(
            embeddings,
            labels,
            ref_emb,
            ref_labels,
            angle=self.angle,
            tuples_per_anchor=self.tuples_per_anchor,
        )

    def _set_angle_stats(
        self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor, ref_labels: Tensor
    ) -> None:
        s = {
            k: v.item()
            for k, v in MF.angular_miner_stats(
                embeddings, labels, ref_emb, ref_labels, angle=self.angle
            ).items()
        }
        if s["count"] == 0:
            return
        stats = {
            "average_angle": math.degrees(s["mean"]),
            "min_angle": math.degrees(s["min"]),
            "max_angle": math.degrees(s["max"]),
        }
        if s["count"] > 1:
            stats["std_of_angle"] = math.degrees(math.sqrt(s["m2"] / (s["count"] - 1)))
        if s["count_above"] > 0:
            stats["average_angle_above_threshold"] = math.degrees(s["sum_above"] / s["count_above"])
        if s["count_below"] > 0:
            stats["average_angle_below_threshold"] = math.degrees(s["sum_below"] / s["count_below"])
        self.set_stats(**stats)


class DistanceWeightedMiner(BaseMiner):
    """Distance-weighted sampling (Wu et al., 2017). Math: `functional.distance_weighted_miner`.

    Random: uses torch's global RNG like the reference (same triplets under the same seed).
    The distance must be the default ``LpDistance(p=2, power=1, normalize_embeddings=True)``.

    Args:
        cutoff: distances below are raised to this value.
        nonzero_loss_cutoff: negatives at or beyond this distance are never drawn.
        **kwargs: ``distance``, ``collect_stats``, ``tuples_per_anchor``: each anchor draws
            as many triplets as its label has members, exactly as without the keyword (same
            random stream); then it keeps a uniformly random subset of at most
            ``tuples_per_anchor`` of its draws (the draws are with replacement, as in the
            reference, so a triplet drawn twice may stay twice). A cap at or above the
            largest class changes nothing.

    Raises:
        InvalidArgumentError: another distance.

    Example:
        >>> emb = torch.nn.functional.normalize(torch.randn(8, 3), dim=1)
        >>> a, p, n = DistanceWeightedMiner()(emb, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
        >>> len(a) == len(p) == len(n)
        True
    """

    handles_tuples_per_anchor = True
    accepts_mat = True  # mines from batch_matrix (forward(..., mat=))

    def __init__(
        self, cutoff: float = 0.5, nonzero_loss_cutoff: float = 1.4, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self._require_lp_distance()
        check_real("cutoff", cutoff)
        check_real("nonzero_loss_cutoff", nonzero_loss_cutoff)
        _records(self, cutoff=float(cutoff), nonzero_loss_cutoff=float(nonzero_loss_cutoff))

    def mine(
        self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor, ref_labels: Tensor
    ) -> TripletsTuple:
        mat = self.batch_matrix(embeddings, ref_emb)
        return MF.distance_weighted_miner(
            mat,
            labels,
            ref_labels,
            embedding_size=embeddings.shape[1],
            cutoff=self.cutoff,
            nonzero_loss_cutoff=self.nonzero_loss_cutoff,
            tuples_per_anchor=self.tuples_per_anchor,
        )


class EmbeddingsAlreadyPackagedAsTriplets(BaseMiner):
    """Rows ``(0, 1, 2), (3, 4, 5), ...`` are ``(anchor, positive, negative)`` triplets.

    Pair it with ``pml.samplers.FixedSetOfTriplets``. Labels and distance are not used
    (``labels`` may be None). Indices are created on the embeddings' device.

    ``tuples_per_anchor`` (None or an int ``>= 1``, see :class:`BaseMiner`) is accepted and
    changes nothing: each anchor row has exactly one triplet.

    Raises:
        InvalidArgumentError: the batch size is not a multiple of 3.

    Example:
        >>> a, p, n = EmbeddingsAlreadyPackagedAsTriplets()(torch.randn(6, 2), None)
        >>> a.tolist(), p.tolist(), n.tolist()
        ([0, 3], [1, 4], [2, 5])
    """

    needs_labels = False
    handles_tuples_per_anchor = True  # one triplet per anchor: any cap >= 1 keeps it

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # compat: no arguments of its own (kwargs of BaseMiner)

    def mine(
        self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor, ref_labels: Tensor
    ) -> TripletsTuple:
        try:
            # fix: on the embeddings' device (the reference returns CPU indices)
            return MF.embeddings_already_packaged_as_triplets(
                embeddings.shape[0], device=embeddings.device
            )
        except ValueError as exc:
            # fix: a clear error instead of a failed length assertion
            raise InvalidArgumentError(str(exc)) from None
