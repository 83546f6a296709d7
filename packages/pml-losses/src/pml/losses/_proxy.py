"""Proxy losses: ProxyAnchorLoss, ProxyNCALoss, SoftTripleLoss.

Each learns class vectors (``proxies`` ``(C, D)``, or ``fc`` ``(D, C·K)`` for SoftTriple) on
:class:`~pml.losses._class_vectors.ClassVectorLoss`: the parameter keeps its dtype (float32)
under float16/bfloat16 embeddings and autocast and is used in the compute dtype (at least
float32). Math: :mod:`pml.losses.functional` (``proxy_anchor_loss``, ``nca_loss``,
``soft_triple_loss``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from pml.core.indices import IndicesTuple, convert_to_weights
from pml.core.validation import InvalidArgumentError
from pml.distances import BaseDistance, CosineSimilarity
from pml.losses._arguments import check_count, check_real
from pml.losses._base import loss_entry
from pml.losses._class_vectors import ClassVectorLoss
from pml.losses._nca_instance import NCALoss
from pml.losses._regularizer_mixins import TorchInitWrapper
from pml.losses.functional._nca_instance import nca_loss
from pml.losses.functional._proxy import (
    proxy_anchor_loss,
    soft_triple_class_similarity,
    soft_triple_loss,
)
from pml.reducers import BaseReducer, DivisorReducer, LossDict

__all__ = ["ProxyAnchorLoss", "ProxyNCALoss", "SoftTripleLoss"]


class ProxyAnchorLoss(ClassVectorLoss):
    """Proxy-anchor loss (Kim et al., "Proxy Anchor Loss for Deep Metric Learning", CVPR 2020).

    Each proxy is an anchor: it pulls its class's embeddings with a soft maximum over them
    (``pos_loss``) and pushes every other embedding away (``neg_loss``); see
    :func:`pml.losses.functional.proxy_anchor_loss`. A miner's tuple gives per-sample weights
    ``w`` that enter the exponents as ``w - 1`` (absent samples: ``-1``). The default
    ``DivisorReducer`` divides the positive sum by the number of classes present in the batch
    and the negative sum by ``num_classes``.

    ``O(N·C)`` time and memory (``N x C`` matrices only, no per-class loop): 100,000 classes
    at a batch of 256 fit.

    Args:
        num_classes: ``C``.
        embedding_size: ``D``.
        margin: ``δ``.
        alpha: the scale ``alpha`` (> 0).
        **kwargs: ``weight_init_func`` (default kaiming-normal, mode ``fan_out``:
            ``normal(0, sqrt(2 / C))``), ``weight_regularizer`` (applied to ``proxies``),
            ``weight_reg_weight``, ``distance`` (default :class:`CosineSimilarity`, any),
            ``reducer``, ``collect_stats``, ``embedding_regularizer``,
            ``embedding_reg_weight``.

    Attributes:
        proxies: the learnable proxies, a float32 Parameter of shape ``(C, D)``.

    Shapes:
        ``embeddings`` ``(N, D)``, ``labels`` ``(N,)`` int class ids in ``[0, C)``; output
        0-dim in the embeddings' dtype.

    Raises:
        TypeError/ValueError: bad constructor arguments (named).
        ValueError: (forward) labels missing or outside ``[0, C)``, ``ref_emb`` given.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> loss_fn = ProxyAnchorLoss(num_classes=3, embedding_size=4)
        >>> loss = loss_fn(torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2]))
        >>> loss.shape, loss_fn.proxies.shape
        (torch.Size([]), torch.Size([3, 4]))
    """

    anchor_batching = None
    anchor_batching_obstacle = "each proxy's term is a log-sum-exp over every sample of the batch"

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: float = 0.1,
        alpha: float = 32,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, embedding_size, **kwargs)
        check_real("margin", margin)
        check_real("alpha", alpha, min=0, min_open=True)  # fix: alpha <= 0 flips or kills the loss
        self.margin = margin
        self.alpha = alpha
        self.init_vectors("proxies", (self.num_classes, self.embedding_size))
        self.add_to_recordable_attributes(
            list_of_names=["num_classes", "alpha", "margin"], is_stat=False
        )

    def get_default_weight_init_func(self) -> Callable[[Tensor], Any]:
        return TorchInitWrapper(torch.nn.init.kaiming_normal_, mode="fan_out")

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()

    def get_default_reducer(self) -> BaseReducer:
        return DivisorReducer()

    def _sub_loss_names(self) -> list[str]:
        return ["pos_loss", "neg_loss"]

    def get_logits(self, embeddings: Tensor) -> Tensor:
        """``distance(embeddings, proxies)``, shape ``(N, C)``, in at least float32."""
        proxies = self.vectors_for(self.proxies, embeddings)
        return self.distance(embeddings.to(proxies.dtype), proxies)

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        indices_tuple: IndicesTuple | None,
        ref_emb: Tensor,
        ref_labels: Tensor | None,
    ) -> LossDict:
        labels = self.class_labels(embeddings, labels, ref_emb, ref_labels)
        # compat: an int like the reference's (labels were just synced by their range check)
        present = int(torch.bincount(labels, minlength=self.num_classes).count_nonzero())
        proxies = self.vectors_for(self.proxies, embeddings)
        mat = self.distance.acc_matrix(embeddings.to(proxies.dtype), proxies)
        # no miner: all weights are 1 (skip the ones and the products)
        weights = (
            None if indices_tuple is None else self.miner_weights(indices_tuple, labels, mat.dtype)
        )
        pos, neg = proxy_anchor_loss(
            mat,
            labels,
            self.alpha,
            self.margin,
            is_inverted=self.distance.is_inverted,
            weights=weights,
        )
        classes = torch.arange(self.num_classes, device=mat.device)
        loss_dict: LossDict = {
            "pos_loss": loss_entry(pos.to(embeddings.dtype), classes, "element", divisor=present),
            "neg_loss": loss_entry(
                neg.to(embeddings.dtype), classes, "element", divisor=self.num_classes
            ),
        }
        self.add_weight_regularization_to_loss_dict(loss_dict, proxies)
        return loss_dict


class ProxyNCALoss(ClassVectorLoss, NCALoss):
    """Proxy NCA loss (Movshovitz-Attias et al., ICCV 2017): NCA against learnable proxies.

    Paper: "No Fuss Distance Metric Learning using Proxies".

    :class:`NCALoss` with the learnable proxies as the reference set: row ``i`` is
    ``-log softmax_j(-softmax_scale·d(x_i, proxy_j))[y_i]`` (default: squared Euclidean
    distance of normalised vectors), times the miner weight of ``i`` as an anchor. Math:
    :func:`pml.losses.functional.nca_loss` with ``ref_labels=None`` (reference ``j`` is class
    ``j``, i.e. reference labels ``arange(C)``; no diagonal masking): one target per row, a
    cross entropy.

    fix: ``-log p_i`` is computed exactly (a log-sum-exp), so no row is dropped; the reference
    dropped rows whose ``p_i`` underflowed to 0 and returned NaN when that dropped every row
    (e.g. a large ``softmax_scale``). An empty batch gives the zero loss. Unlike NCALoss, a
    batch of one sample has a loss.

    Args:
        num_classes: ``C``.
        embedding_size: ``D``.
        softmax_scale: multiplier of the logits (>= 0).
        **kwargs: ``weight_init_func`` (default ``normal(0, 1)``), ``weight_regularizer``
            (applied to ``proxies``), ``weight_reg_weight``, ``distance`` (default
            ``LpDistance(power=2)``, any), ``reducer`` (default ``MeanReducer``),
            ``collect_stats``, ``embedding_regularizer``, ``embedding_reg_weight``.

    Attributes:
        proxies: the learnable proxies, a float32 Parameter of shape ``(C, D)``.
        proxy_labels: ``arange(C)`` (a plain attribute, like the reference).

    Shapes:
        ``embeddings`` ``(N, D)``, ``labels`` ``(N,)`` int class ids in ``[0, C)``; output
        0-dim in the embeddings' dtype.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> loss_fn = ProxyNCALoss(num_classes=3, embedding_size=4)
        >>> loss_fn(torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2])).shape
        torch.Size([])
    """

    def __init__(
        self, num_classes: int, embedding_size: int, softmax_scale: float = 1, **kwargs: Any
    ) -> None:
        super().__init__(num_classes, embedding_size, softmax_scale=softmax_scale, **kwargs)
        self.proxy_labels = torch.arange(self.num_classes)
        self.init_vectors("proxies", (self.num_classes, self.embedding_size))
        self.add_to_recordable_attributes(list_of_names=["num_classes"], is_stat=False)

    def get_logits(self, embeddings: Tensor) -> Tensor:
        """``distance(embeddings, proxies)``, shape ``(N, C)``, in at least float32.

        With the default distance these are squared distances (larger = less likely).
        """
        proxies = self.vectors_for(self.proxies, embeddings)
        return self.distance(embeddings.to(proxies.dtype), proxies)

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        indices_tuple: IndicesTuple | None,
        ref_emb: Tensor,
        ref_labels: Tensor | None,
    ) -> LossDict:
        labels = self.class_labels(embeddings, labels, ref_emb, ref_labels)
        if len(embeddings) == 0:  # fix: the reference's mean of nothing was NaN
            return self.zero_losses()
        proxies = self.vectors_for(self.proxies, embeddings)
        mat = self.distance.acc_matrix(embeddings.to(proxies.dtype), proxies)
        weights = None
        if indices_tuple is not None:  # miner weights of the anchors (1 without a miner)
            weights = convert_to_weights(indices_tuple, labels, dtype=mat.dtype, using_ref=True)
        # reference labels arange(C): each row's one target is its label's proxy (none dropped)
        losses, _ = nca_loss(
            mat,
            labels,
            None,
            self.softmax_scale,
            is_inverted=self.distance.is_inverted,
            weights=weights,
        )
        rows = torch.arange(len(embeddings), device=mat.device)
        loss_dict: LossDict = {"loss": loss_entry(losses.to(embeddings.dtype), rows, "element")}
        self.add_weight_regularization_to_loss_dict(loss_dict, proxies)
        return loss_dict


class SoftTripleLoss(ClassVectorLoss):
    """SoftTriple loss (Qian et al., ICCV 2019), without the paper's center regularizer.

    Paper: "SoftTriple Loss: Deep Metric Learning Without Triplet Sampling".

    Each class has ``K`` centers (columns of ``fc``); the similarity to a class is the
    softmax(``1/gamma``)-weighted mean of the similarities to its centers, and the loss is a
    cross entropy of ``la·(S_i - margin·onehot(y_i))``, times the miner weight. Math:
    :func:`pml.losses.functional.soft_triple_loss`.

    ``gamma`` is stored as its reciprocal (``self.gamma == 1 / gamma``), like the reference.

    Args:
        num_classes: ``C``.
        embedding_size: ``D``.
        centers_per_class: ``K``.
        la: the scale ``λ`` (> 0).
        gamma: the softmax temperature over a class's centers (> 0).
        margin: ``δ``.
        **kwargs: ``weight_init_func`` (default kaiming-uniform with ``a = sqrt(5)``:
            ``uniform(±1/sqrt(C·K))``), ``weight_regularizer`` (applied to ``fc.t()``),
            ``weight_reg_weight``, ``distance`` (a similarity, default
            :class:`CosineSimilarity`), ``reducer`` (default ``MeanReducer``),
            ``collect_stats``, ``embedding_regularizer``, ``embedding_reg_weight``.

    Attributes:
        fc: the centers, a float32 Parameter of shape ``(D, C·K)``; column ``c·K + k`` is
            center ``k`` of class ``c``.

    Shapes:
        ``embeddings`` ``(N, D)``, ``labels`` ``(N,)`` int class ids in ``[0, C)``; output
        0-dim in the embeddings' dtype.

    Raises:
        InvalidArgumentError: the distance is not a similarity (``is_inverted`` False).

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> loss_fn = SoftTripleLoss(num_classes=3, embedding_size=4, centers_per_class=2)
        >>> loss_fn(torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2])).shape
        torch.Size([])
        >>> loss_fn.fc.shape, loss_fn.gamma
        (torch.Size([4, 6]), 10.0)
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        centers_per_class: int = 10,
        la: float = 20,
        gamma: float = 0.1,
        margin: float = 0.01,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, embedding_size, **kwargs)
        if not self.distance.is_inverted:
            # fix: the reference's bare assertion said nothing
            raise InvalidArgumentError(
                "SoftTripleLoss requires a similarity as distance (is_inverted True, e.g. "
                f"CosineSimilarity()); got {type(self.distance).__name__}"
            )
        self.centers_per_class = check_count("centers_per_class", centers_per_class)
        check_real("la", la, min=0, min_open=True)
        check_real("gamma", gamma, min=0, min_open=True)
        check_real("margin", margin)
        self.la = la
        self.gamma = 1.0 / gamma  # compat: stored (and recorded) as the reciprocal
        self.margin = margin
        self.init_vectors("fc", (self.embedding_size, self.num_classes * self.centers_per_class))
        self.add_to_recordable_attributes(
            list_of_names=[
                "la",
                "gamma",
                "margin",
                "centers_per_class",
                "num_classes",
                "embedding_size",
            ],
            is_stat=False,
        )

    def get_default_weight_init_func(self) -> Callable[[Tensor], Any]:
        return TorchInitWrapper(torch.nn.init.kaiming_uniform_, a=math.sqrt(5))

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()

    def get_logits(self, embeddings: Tensor) -> Tensor:
        """The relaxed class similarities ``S`` (no ``la``, no margin), shape ``(N, C)``."""
        fc = self.vectors_for(self.fc, embeddings)
        sim = self.distance(embeddings.to(fc.dtype), fc.t())
        return soft_triple_class_similarity(
            sim, self.num_classes, self.centers_per_class, self.gamma
        )

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        indices_tuple: IndicesTuple | None,
        ref_emb: Tensor,
        ref_labels: Tensor | None,
    ) -> LossDict:
        labels = self.class_labels(embeddings, labels, ref_emb, ref_labels)
        if len(embeddings) == 0:  # fix: the reference's mean of nothing was NaN
            return self.zero_losses()
        fc = self.vectors_for(self.fc, embeddings)
        sim = self.distance.acc_matrix(embeddings.to(fc.dtype), fc.t())
        weights = (
            None if indices_tuple is None else self.miner_weights(indices_tuple, labels, sim.dtype)
        )
        losses = soft_triple_loss(
            sim,
            labels,
            self.num_classes,
            self.centers_per_class,
            self.la,
            self.gamma,
            self.margin,
            weights=weights,
        )
        rows = torch.arange(len(embeddings), device=sim.device)
        loss_dict: LossDict = {"loss": loss_entry(losses.to(embeddings.dtype), rows, "element")}
        self.add_weight_regularization_to_loss_dict(loss_dict, fc.t())
        return loss_dict
