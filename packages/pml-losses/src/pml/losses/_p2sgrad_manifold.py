"""P2SGradLoss and ManifoldLoss: learnable class vectors without the weight-regularizer mixin.

Neither takes ``weight_*`` arguments (TypeError, like the reference). Both share the dtype
policy of :mod:`pml.losses._class_vectors`: the parameter keeps its dtype (float32) under
float16/bfloat16 embeddings and autocast, and is used in the compute dtype (at least
float32). Math: :func:`pml.losses.functional.p2sgrad_loss`,
:func:`pml.losses.functional.manifold_loss`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from pml.core.dtypes import accumulation_dtype
from pml.core.indices import IndicesTuple
from pml.core.validation import (
    InvalidArgumentError,
    check_index_labels,
    indices_tuple_not_supported,
    labels_required,
    ref_not_supported,
)
from pml.distances import BaseDistance, CosineSimilarity
from pml.losses._arguments import check_count, check_real
from pml.losses._base import (
    BaseMetricLossFunction,
    cast_output,
    check_floating_tensor,
    loss_entry,
)
from pml.losses._class_vectors import full_precision, parameter_for
from pml.losses.functional._proxy import manifold_loss, p2sgrad_loss
from pml.reducers import LossDict

__all__ = ["ManifoldLoss", "P2SGradLoss"]


class P2SGradLoss(BaseMetricLossFunction):
    """P2SGrad loss (Zhang et al., CVPR 2019): cosines regressed onto one-hot targets.

    Paper: "P2SGrad: Refined Gradients for Optimizing Deep Face Models".

    The mean squared error between the cosines of the embeddings to the class vectors (the
    columns of ``weight``) and the one-hot targets, over all ``N·C`` entries. Math:
    :func:`pml.losses.functional.p2sgrad_loss`.

    Every forward first renormalises the columns of ``weight`` to unit L2 norm, in place and
    without gradient (``renorm`` to 1e-5, then ``* 1e5``, like the reference), then checks
    that they are unit vectors (1e-5; 1e-2 for a half-precision ``weight``).

    Args:
        descriptors_dim: the embedding size ``D``.
        num_classes: ``C``.
        **kwargs: ``reducer``, ``collect_stats``, ``embedding_regularizer``,
            ``embedding_reg_weight`` (``weight_*`` arguments: TypeError). A ``distance`` is
            accepted and unused, like the reference.

    Attributes:
        weight: the class vectors, a float32 Parameter of shape ``(D, C)`` (initialised
            uniform(-1, 1), columns rescaled to unit norm).

    Shapes:
        ``embeddings`` ``(N, D)``, ``labels`` ``(N,)`` int class ids in ``[0, C)``; output
        0-dim in the embeddings' dtype.

    Raises:
        ValueError: (forward) labels missing (fix: the reference raised AttributeError) or
            outside ``[0, C)``, ``indices_tuple`` or ``ref_emb`` given.
        InvalidArgumentError: (forward) a column of ``weight`` cannot be normalised (zero or
            not finite); the reference's bare assertion said nothing.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> loss_fn = P2SGradLoss(descriptors_dim=4, num_classes=3)
        >>> loss_fn(torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2])).shape
        torch.Size([])
    """

    autocast_off = True  # the hand-written backward computes in at least float32

    def __init__(self, descriptors_dim: int, num_classes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.descriptors_dim = check_count("descriptors_dim", descriptors_dim)
        self.num_classes = check_count("num_classes", num_classes)
        self.weight = nn.Parameter(torch.empty(self.descriptors_dim, self.num_classes))
        with torch.no_grad():
            self.weight.uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)

    def normalized_weight(self, embeddings: Tensor) -> Tensor:
        """Renormalise ``weight``'s columns in place; it in the compute dtype of ``embeddings``.

        Raises:
            InvalidArgumentError: a column is not of unit norm afterwards (one reduction and
                one device sync).
        """
        param = self.weight
        if param.device != embeddings.device:
            param.data = param.data.to(embeddings.device)
        with torch.no_grad():
            w = param.data  # compat: in place on .data, as the reference (no version bump)
            w.renorm_(2, 1, 1e-5).mul_(1e5)
            tol = 1e-2 if w.dtype in (torch.float16, torch.bfloat16) else 1e-5
            norms = torch.linalg.vector_norm(w, dim=0, dtype=accumulation_dtype(w.dtype))
            low, high = torch.stack(torch.aminmax(norms)).tolist() if norms.numel() else (1, 1)
            if not (abs(low - 1) <= tol and abs(high - 1) <= tol):  # NaN fails too
                bad = ~((norms - 1).abs() <= tol)
                col = int(bad.nonzero()[0])
                # fix: the reference's bare assertion said nothing
                raise InvalidArgumentError(
                    f"P2SGradLoss.weight must have columns of unit L2 norm after the "
                    f"renormalisation of every forward; {int(bad.sum())} column(s) cannot be "
                    f"normalised (column {col} has norm {float(norms[col])}): zero or "
                    "non-finite columns"
                )
        return parameter_for(param, embeddings)

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        indices_tuple: IndicesTuple | None,
        ref_emb: Tensor,
        ref_labels: Tensor | None,
    ) -> LossDict:
        indices_tuple_not_supported(indices_tuple)
        ref_not_supported(embeddings, labels, ref_emb, ref_labels)
        # fix: labels None raised AttributeError in the reference
        labels = check_index_labels(labels_required(labels), "labels", self.num_classes)
        weight = self.normalized_weight(embeddings)
        if len(embeddings) == 0:  # fix: the reference's mean of nothing was NaN
            return self.zero_losses()
        loss = p2sgrad_loss(embeddings, weight, labels)
        return {"loss": loss_entry(loss.to(embeddings.dtype), None, "already_reduced")}


class ManifoldLoss(BaseMetricLossFunction):
    """Manifold proxy loss (Aziere & Todorovic, CVPR 2019): manifold ranking against proxies.

    Paper: "Ensemble Deep Manifold Similarity Learning using Hard Proxies".

    The embeddings and ``K`` learnable proxies form a similarity graph; manifold ranking
    (``F = (1 - alpha)·(I - alpha·S̄)^{-1}``) scores each embedding against each proxy
    (intrinsic) and compares their ranking vectors (context). Each embedding belongs to one
    proxy ("meta class"): ``indices_tuple`` is NOT a miner's output here but a ``(N,)`` int
    tensor of meta-class ids; without it they are drawn at random (every proxy once, the rest
    uniformly; the reference's draws: ``randint`` then ``randperm`` on the global CPU
    generator) and ``N >= K`` is required. Math: :func:`pml.losses.functional.manifold_loss`.

    ``O((N+K)³)`` time (the inverse, in float32 like the reference), ``O((N+K)²)`` memory
    (the context similarity is one product of row-normalised matrices).

    fix: float16/bfloat16 inputs are computed in float32 (the reference's ``exp(S/0.5)`` and
    row sums overflowed in half precision, giving NaN); ``lambdaC = inf`` gives the context
    term alone, as documented (the reference returned inf).

    Args:
        l: the embedding size.
        K: the number of proxies.
        lambdaC: weight of the context term (>= 0; ``inf``: the context term only).
        alpha: the random-walk parameter, in ``[0, 1)``.
        margin: the margin of the ranking hinge.
        **kwargs: ``distance`` (default :class:`CosineSimilarity`, any; negative values
            are clamped to 0), ``reducer``, ``collect_stats``, ``embedding_regularizer``,
            ``embedding_reg_weight`` (``weight_*`` arguments: TypeError).

    Attributes:
        proxies: a float32 Parameter of shape ``(K, l)``, standard-normal init.

    Shapes:
        ``embeddings`` ``(N, l)``, ``indices_tuple`` ``(N,)`` int in ``[0, K)`` or None;
        output 0-dim in the embeddings' dtype.

    Raises:
        ValueError: ``labels``/``ref_emb`` given, bad ``indices_tuple`` (length, range), or no
            ``indices_tuple`` with ``N < K``.
        InvalidArgumentError: the embedding size is not ``l``.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> loss_fn = ManifoldLoss(l=4, K=3)
        >>> loss_fn(torch.randn(6, 4), indices_tuple=torch.tensor([0, 0, 1, 1, 2, 2])).shape
        torch.Size([])
    """

    def __init__(
        self,
        l: int,  # noqa: E741 (the reference's name)
        K: int = 50,
        lambdaC: float = 1.0,
        alpha: float = 0.8,
        margin: float = 5e-4,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.l = check_count("l", l)
        self.K = check_count("K", K)
        check_real("lambdaC", lambdaC, min=0)  # inf allowed: the context term only
        # fix: alpha >= 1 makes (I - alpha·S̄) singular (the reference inverted it anyway)
        check_real("alpha", alpha, min=0, max=1, max_open=True)
        check_real("margin", margin)
        self.lambdaC = lambdaC
        self.alpha = alpha
        self.margin = margin
        self.proxies = nn.Parameter(torch.randn(self.K, self.l))
        self.add_to_recordable_attributes(
            list_of_names=["K", "l", "lambdaC", "alpha", "margin"], is_stat=False
        )

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor | None = None,
        indices_tuple: Tensor | None = None,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> Tensor:
        """Compute the loss (autocast off).

        Args:
            embeddings: ``(N, l)``, any float dtype.
            labels: must be None.
            indices_tuple: ``(N,)`` int64/int32 meta-class (proxy) ids in ``[0, K)``, or None
                to draw them.
            ref_emb, ref_labels: not supported (ValueError).

        Returns:
            A 0-dim tensor in the embeddings' dtype.
        """
        self.reset_stats()
        check_floating_tensor(embeddings, "embeddings")
        if ref_emb is None:
            ref_emb, ref_labels = embeddings, labels
        ref_not_supported(embeddings, labels, ref_emb, ref_labels)
        if labels is not None:
            raise ValueError(
                "labels must be None: ManifoldLoss takes no labels (pass each embedding's "
                "meta class, a proxy index, as indices_tuple)"
            )
        with full_precision(embeddings.device):
            loss_dict = self.compute_loss(embeddings, None, indices_tuple, embeddings, None)
            self.add_embedding_regularization_to_loss_dict(loss_dict, embeddings)
            out = self.reducer(loss_dict, embeddings, None)
        return cast_output(out, embeddings.dtype)

    def meta_classes(self, indices_tuple: Any, n: int, device: torch.device) -> Tensor:
        """The checked ``(N,)`` int64 meta classes, or a random draw (the reference's order).

        Raises:
            TypeError: not a tensor of dtype int64/int32 (e.g. a miner's tuple).
            ValueError: not of shape ``(N,)``, outside ``[0, K)``, or (no ``indices_tuple``)
                ``N < K``.
        """
        if indices_tuple is None:
            if n < self.K:
                raise ValueError(
                    f"ManifoldLoss draws random meta classes without indices_tuple and then "
                    f"needs at least K = {self.K} embeddings; got {n} (pass indices_tuple, a "
                    "(N,) tensor of proxy indices, or use a smaller K)"
                )
            # compat: the reference's draws, in this order, on the global CPU generator
            drawn = torch.randint(0, self.K, (n - self.K,))
            meta = torch.cat([torch.arange(self.K), drawn])[torch.randperm(n)]
            return meta.to(device)
        if not isinstance(indices_tuple, Tensor) or indices_tuple.dtype not in (
            torch.int64,
            torch.int32,
        ):
            got = indices_tuple.dtype if isinstance(indices_tuple, Tensor) else type(indices_tuple)
            raise TypeError(
                "indices_tuple of ManifoldLoss must be a 1-D int64/int32 tensor of meta-class "
                f"(proxy) indices, one per embedding, not a miner's tuple; got {got}"
            )
        if indices_tuple.shape != (n,):
            raise ValueError(
                f"indices_tuple must have shape ({n},) (one meta class per embedding); "
                f"got {tuple(indices_tuple.shape)}"
            )
        return check_index_labels(indices_tuple.to(device), "indices_tuple", num_classes=self.K)

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        indices_tuple: Any,
        ref_emb: Tensor,
        ref_labels: Tensor | None,
    ) -> LossDict:
        if embeddings.ndim != 2 or embeddings.shape[1] != self.l:
            raise InvalidArgumentError(
                f"embeddings must have shape (N, l={self.l}); got {tuple(embeddings.shape)}"
            )
        n = embeddings.shape[0]
        meta = self.meta_classes(indices_tuple, n, embeddings.device)
        if n == 0:
            return self.zero_losses()
        proxies = parameter_for(self.proxies, embeddings)
        nodes = torch.cat([embeddings.to(proxies.dtype), proxies])
        sim = self.distance.acc_matrix(nodes)
        loss = manifold_loss(sim, meta, self.alpha, self.margin, self.lambdaC)
        return {"loss": loss_entry(loss.to(embeddings.dtype), None, "already_reduced")}
