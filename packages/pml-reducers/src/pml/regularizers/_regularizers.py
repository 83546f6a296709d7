"""Embedding and weight regularizers of the reference."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pml.core.validation import InvalidArgumentError, check_int, check_real
from pml.distances import BaseDistance, CosineSimilarity, LpDistance, assert_distance_type
from pml.reducers import BaseReducer, DivisorReducer, LossDict
from pml.regularizers import functional as RF
from pml.regularizers._base import BaseRegularizer


class LpRegularizer(BaseRegularizer):
    """Mean (by default) of ``||x_i||_p ** power`` over rows.

    Args:
        p: norm order (a real number, ``inf`` included).
        power: exponent applied to each norm.

    Raises:
        TypeError, ValueError: ``p`` or ``power`` not a real number, or NaN.
    """

    def __init__(self, p: float = 2, power: float = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_real("p", p)  # any order torch's vector norm takes, inf included
        check_real("power", power)
        self.p, self.power = p, power
        self.add_to_recordable_attributes(list_of_names=["p", "power"], is_stat=False)

    def compute_loss(self, x: Tensor) -> LossDict:
        return self.element_loss(RF.lp_regularizer(x, self.p, self.power))


class ZeroMeanRegularizer(BaseRegularizer):
    """Mean (by default) of ``|sum_d x_id|`` over rows: pushes each row to zero mean."""

    def compute_loss(self, x: Tensor) -> LossDict:
        return self.element_loss(RF.zero_mean_regularizer(x))


class CenterInvariantRegularizer(BaseRegularizer):
    """Center-invariant regularization (Wu et al., 2018): equal squared norms across rows.

    The distance must be an :class:`LpDistance` with ``power=1`` and
    ``normalize_embeddings=False`` (the default).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        assert_distance_type(self, LpDistance, power=1, normalize_embeddings=False)

    def get_default_distance(self) -> BaseDistance:
        return LpDistance(normalize_embeddings=False, p=2, power=1)

    def compute_loss(self, x: Tensor) -> LossDict:
        squared_norms = self.distance.get_norm(x) ** 2
        return self.element_loss(RF.center_invariant_regularizer(squared_norms))


class RegularFaceRegularizer(BaseRegularizer):
    """RegularFace (Zhao et al., CVPR 2019): penalise each row's most similar other row.

    The distance must be a similarity (``is_inverted``); default :class:`CosineSimilarity`.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not self.distance.is_inverted:
            raise InvalidArgumentError(
                "RegularFaceRegularizer requires a similarity (distance.is_inverted == True); "
                f"got {type(self.distance).__name__}"
            )

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()

    def compute_loss(self, x: Tensor) -> LossDict:
        return self.element_loss(RF.regular_face_regularizer(self.distance(x)))


class SparseCentersRegularizer(BaseRegularizer):
    """Push apart the centers of each class (SoftTriple, Qian et al., ICCV 2019).

    Rows ``[c*C, (c+1)*C)`` are the ``C = centers_per_class`` centers of class ``c``. Only
    within-class similarities are computed (``num_classes`` blocks of ``C x C``), not the
    full ``K x K`` matrix the reference builds.

    Args:
        num_classes: number of classes.
        centers_per_class: centers per class, > 1.
    """

    def __init__(self, num_classes: int, centers_per_class: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_int("num_classes", num_classes, min=1)
        check_int("centers_per_class", centers_per_class)
        if centers_per_class <= 1:
            raise InvalidArgumentError(f"centers_per_class must be > 1; got {centers_per_class}")
        assert_distance_type(self, CosineSimilarity)
        self.num_classes, self.centers_per_class = num_classes, centers_per_class
        self.add_to_recordable_attributes(
            list_of_names=["num_classes", "centers_per_class"], is_stat=False
        )
        self.add_to_recordable_attributes(
            list_of_names=["same_class_center_sim", "diff_class_center_sim"], is_stat=True
        )

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()

    def get_default_reducer(self) -> BaseReducer:
        return DivisorReducer()

    def compute_loss(self, x: Tensor) -> LossDict:
        k, c = self.num_classes * self.centers_per_class, self.centers_per_class
        if x.shape[0] != k:
            raise ValueError(
                f"x must have num_classes * centers_per_class = {k} rows; got {x.shape[0]}"
            )
        normed = self.distance.maybe_normalize(x).view(self.num_classes, c, -1)
        blocks = self.distance.compute_mat(normed, normed)  # (num_classes, C, C)
        if self.distance.power != 1:
            blocks = blocks**self.distance.power
        rows, cols = torch.triu_indices(c, c, offset=1, device=x.device)
        same_class_sim = blocks[:, rows, cols].reshape(-1)  # row-major over the K x K mask
        if self.collect_stats:
            self._set_center_stats(x, same_class_sim)
        divisor = torch.tensor(2 * len(same_class_sim), device=x.device)
        return self.element_loss(RF.sparse_centers_regularizer(same_class_sim), divisor=divisor)

    def _set_center_stats(self, x: Tensor, same_class_sim: Tensor) -> None:
        with torch.no_grad():
            sim = self.distance(x)
            labels = torch.arange(self.num_classes, device=x.device).repeat_interleave(
                self.centers_per_class
            )
            diff = labels.unsqueeze(0) != labels.unsqueeze(1)
            self.set_stats(
                same_class_center_sim=same_class_sim.mean(),
                diff_class_center_sim=sim[diff].mean(),
            )
