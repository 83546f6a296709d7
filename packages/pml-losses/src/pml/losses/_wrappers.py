"""Loss wrappers without state: SelfSupervisedLoss and MultipleLosses.

Both only arrange calls to the losses they wrap; the math lives in those losses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from pml.core.dtypes import accumulation_dtype
from pml.core.functional import zero_loss
from pml.core.indices import IndicesTuple
from pml.core.validation import (
    InvalidArgumentError,
    check_bool,
    check_embeddings,
    check_indices_tuple,
)
from pml.losses._base import BaseLossWrapper, check_floating_tensor, checked_indices_tuple

#: class names SelfSupervisedLoss accepts (spec losses-other.md, SelfSupervisedLoss)
SELF_SUPERVISED_LOSSES = (
    "AngularLoss",
    "CircleLoss",
    "ContrastiveLoss",
    "GeneralizedLiftedStructureLoss",
    "IntraPairVarianceLoss",
    "LiftedStructureLoss",
    "MultiSimilarityLoss",
    "NTXentLoss",
    "SignalToNoiseRatioContrastiveLoss",
    "SupConLoss",
    "TripletMarginLoss",
    "NCALoss",
    "TupletMarginLoss",
)
#: losses pml added (not in the reference 2.9) that SelfSupervisedLoss also accepts; kept out
#: of ``supported_losses()``, which lists the reference's names
ADDED_SELF_SUPERVISED_LOSSES = ("DecoupledContrastiveLoss",)


class SelfSupervisedLoss(BaseLossWrapper):
    """Turn a metric loss into a self-supervised one: row ``i`` of every view is one class.

    Labels are ``arange(N)``. With ``symmetric=True`` the wrapped loss sees
    ``cat([embeddings, ref_emb])`` with labels ``cat([arange(N), arange(N)])``, so both views
    act as anchors; otherwise ``embeddings`` are the queries and ``ref_emb`` the reference set
    (query ``i`` and reference ``i`` form the only positive pair of row ``i``).

    More than two views (beyond the reference 2.9): ``loss(v1, v2, v3, ...)`` or
    ``loss([v1, v2, v3, ...])``. With ``symmetric=True`` the wrapped loss sees all views
    concatenated, labels ``arange(N)`` repeated once per view: row ``i`` of every view is a
    positive of row ``i`` of every other view, and every view is an anchor. With
    ``symmetric=False`` the first view holds the queries and the other views, concatenated,
    the reference set (query ``i`` has one positive per other view). Two views give exactly
    the two-view calls above.

    Args:
        loss: the wrapped loss; one of :meth:`supported_losses` (checked by class name).
        symmetric: use every view as anchors.

    Raises:
        UnsupportedLossError: (a TypeError) the loss's class name is not supported.

    Example:
        >>> from pml.losses import TripletMarginLoss
        >>> views = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
        >>> augmented = torch.tensor([[0.9, 0.1], [0.2, 1.0], [-1.0, -0.3]])
        >>> SelfSupervisedLoss(TripletMarginLoss(margin=1.0))(views, augmented)
        tensor(0.0166)
        >>> third = torch.tensor([[1.0, 0.2], [0.0, 0.8], [-0.7, 0.1]])
        >>> SelfSupervisedLoss(TripletMarginLoss(margin=1.0))([views, augmented, third])
        tensor(0.0765)
    """

    def __init__(self, loss: nn.Module, symmetric: bool = True, **kwargs: Any) -> None:
        super().__init__(loss=loss, **kwargs)
        check_bool("symmetric", symmetric)
        self.loss = loss
        self.symmetric = symmetric

    @staticmethod
    def supported_losses() -> list[str]:
        return list(SELF_SUPERVISED_LOSSES)

    @classmethod
    def check_loss_support(cls, loss_name: str) -> None:
        if loss_name not in ADDED_SELF_SUPERVISED_LOSSES:  # DCL: a self-supervised loss too
            super().check_loss_support(loss_name)

    def forward(
        self,
        embeddings: Tensor | Sequence[Tensor],
        ref_emb: Tensor | None = None,
        *views: Tensor,
    ) -> Tensor:
        """Compute the wrapped loss on two or more views.

        Args:
            embeddings: the first view, shape ``(N, D)``; or a list/tuple of all the views
                (then nothing else is passed).
            ref_emb: the second view (e.g. augmented inputs), shape ``(N, D)``; row ``i``
                belongs with ``embeddings[i]``.
            *views: further views, each ``(N, D)``.

        Returns:
            The wrapped loss's output (a 0-dim tensor in the embeddings' dtype).

        Raises:
            TypeError: a view is not a floating-point tensor.
            ValueError: fewer than two views, or views of different shapes.
        """
        all_views, names = _views_of(embeddings, ref_emb, views)
        first = all_views[0]
        for view, name in zip(all_views, names, strict=True):
            check_embeddings(view, name)
            if view.shape != first.shape:
                raise ValueError(
                    f"{name} must have the same shape as {names[0]} {tuple(first.shape)} "
                    f"(row i of every view is one class); got {tuple(view.shape)}"
                )
        labels = torch.arange(first.shape[0], device=first.device)
        num_views = len(all_views)
        if self.symmetric:
            return self.loss(torch.cat(all_views, dim=0), labels.repeat(num_views))
        # compat: a *copy* of the labels defeats the identity rule (spec losses.md §1), so
        # (i, i) -- a query with its own other view -- is the positive pair.
        others = all_views[1] if num_views == 2 else torch.cat(all_views[1:], dim=0)
        return self.loss(first, labels, ref_emb=others, ref_labels=labels.repeat(num_views - 1))


def _views_of(
    embeddings: Any, ref_emb: Any, views: tuple[Any, ...]
) -> tuple[list[Tensor], list[str]]:
    """The views of a :class:`SelfSupervisedLoss` call and their names (for messages)."""
    if isinstance(embeddings, (list, tuple)):
        if ref_emb is not None or views:
            raise TypeError(
                "embeddings is a list of views: pass no other view (got "
                f"{1 + len(views)} more argument(s))"
            )
        if len(embeddings) < 2:
            raise ValueError(
                f"embeddings must hold at least two views; got a list of {len(embeddings)}"
            )
        return list(embeddings), [f"embeddings[{i}]" for i in range(len(embeddings))]
    if ref_emb is None:
        raise TypeError("ref_emb (the second view) is required: SelfSupervisedLoss needs two views")
    names = ["embeddings", "ref_emb"] + [f"views[{i}]" for i in range(len(views))]
    return [embeddings, ref_emb, *views], names


def _as_container(
    value: Any, name: str, is_dict: bool, allow_none: bool = False
) -> nn.ModuleList | nn.ModuleDict:
    """``value`` as the container kind of ``losses``.

    A mismatch is an :class:`InvalidArgumentError` (compat: the reference asserted).
    """
    if is_dict:
        if not isinstance(value, Mapping):
            raise InvalidArgumentError(
                f"{name} must be a dict like losses; got {type(value).__name__}"
            )
        return nn.ModuleDict(dict(value))
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise InvalidArgumentError(
            f"{name} must be a list or tuple like losses; got {type(value).__name__}"
        )
    if not allow_none and any(v is None for v in value):
        raise InvalidArgumentError(f"{name} must not contain None")
    return nn.ModuleList(list(value))


class MultipleLosses(nn.Module):
    """A weighted sum of losses, each optionally fed by its own miner.

    ``total = sum_k weights[k] * losses[k](embeddings, labels, indices_k)``, where
    ``indices_k`` is ``miners[k](embeddings, labels)`` when loss ``k`` has a miner and the
    given ``indices_tuple`` otherwise.

    Args:
        losses: a list/tuple of losses, or a dict name -> loss (summed in insertion order).
        miners: same container kind as ``losses``. A list has one entry per loss (None for
            "no miner"); a dict's keys are a subset of the loss names.
        weights: same container kind as ``losses``: a list of the same length, or a dict
            with exactly the loss names. Default 1 for every loss.

    Raises:
        InvalidArgumentError: (ValueError and AssertionError) containers of different kinds,
            lengths or keys.
        TypeError: ``losses`` is neither a list/tuple nor a dict.

    Example:
        >>> from pml.losses import ContrastiveLoss, TripletMarginLoss
        >>> emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
        >>> labels = torch.tensor([0, 0, 1])
        >>> losses = [TripletMarginLoss(margin=0.5), ContrastiveLoss()]
        >>> MultipleLosses(losses, weights=[1, 0.5])(emb, labels)
        tensor(1.2071)
    """

    def __init__(
        self,
        losses: Sequence[nn.Module] | Mapping[str, nn.Module],
        miners: Sequence[nn.Module | None] | Mapping[str, nn.Module] | None = None,
        weights: Sequence[float] | Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(losses, Mapping):
            self.is_dict = True
        elif isinstance(losses, Sequence) and not isinstance(losses, str):
            self.is_dict = False
        else:
            raise TypeError(
                f"losses must be a list, tuple or dict of losses; got {type(losses).__name__}"
            )
        self.losses = _as_container(losses, "losses", self.is_dict)
        self.miners: nn.ModuleList | nn.ModuleDict | None = None
        if miners is not None:
            self.miners = _as_container(miners, "miners", self.is_dict, allow_none=True)
            if self.is_dict:
                extra = sorted(set(self.miners.keys()) - set(self.losses.keys()))  # type: ignore[operator]
                if extra:
                    raise InvalidArgumentError(
                        f"miners keys must be a subset of the losses keys {list(self.losses)}; "
                        f"got unknown keys {extra}"
                    )
            elif len(self.miners) != len(self.losses):
                raise InvalidArgumentError(
                    f"miners must have one entry per loss ({len(self.losses)}, None for no "
                    f"miner); got {len(self.miners)}"
                )
        self.weights = self._check_weights(weights)

    def _check_weights(
        self, weights: Sequence[float] | Mapping[str, float] | None
    ) -> list[float] | dict[str, float]:
        if weights is None:
            if self.is_dict:
                return dict.fromkeys(self.losses.keys(), 1)  # type: ignore[operator]
            return [1] * len(self.losses)
        if self.is_dict:
            if not isinstance(weights, Mapping):
                raise InvalidArgumentError(
                    f"weights must be a dict like losses; got {type(weights).__name__}"
                )
            loss_keys: list[str] = list(self.losses.keys())  # type: ignore[operator]
            if set(weights) != set(loss_keys):
                raise InvalidArgumentError(
                    f"weights must have exactly the losses keys {sorted(loss_keys)}; "
                    f"got {sorted(weights)}"
                )
            return dict(weights)
        if not isinstance(weights, Sequence) or isinstance(weights, str):
            raise InvalidArgumentError(
                f"weights must be a list or tuple like losses; got {type(weights).__name__}"
            )
        if len(weights) != len(self.losses):
            raise InvalidArgumentError(
                f"weights must have one entry per loss ({len(self.losses)}); got {len(weights)}"
            )
        return list(weights)

    def _named_entries(self) -> list[tuple[nn.Module, nn.Module | None, float]]:
        """``(loss, miner or None, weight)`` in list order / dict insertion order."""
        losses: Any = self.losses  # ModuleList (int keys) or ModuleDict (str keys)
        miners: Any = self.miners
        weights: Any = self.weights
        keys = list(losses.keys()) if self.is_dict else list(range(len(losses)))
        entries = []
        for k in keys:
            miner = None
            if miners is not None and (not self.is_dict or k in miners):
                miner = miners[k]
            entries.append((losses[k], miner, weights[k]))
        return entries

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor | None = None,
        indices_tuple: IndicesTuple | None = None,
    ) -> Tensor:
        """Weighted sum of the losses.

        Args:
            embeddings: shape ``(N, D)``.
            labels: shape ``(N,)``.
            indices_tuple: a miner output passed to every loss without a miner of its own;
                must be None when miners were given.

        Returns:
            A 0-dim tensor in the embeddings' dtype.

        Raises:
            InvalidArgumentError: ``indices_tuple`` given although miners were given.
            ValueError: ``indices_tuple`` indices outside ``[0, N)``.
            TypeError: ``embeddings`` is not a floating-point tensor, or ``indices_tuple`` is
                not int64/int32 (shapes are checked by each loss through its distance).
        """
        if self.miners is not None and indices_tuple is not None:
            raise InvalidArgumentError(
                "indices_tuple must be None when MultipleLosses was given miners"
            )
        check_floating_tensor(embeddings, "embeddings")
        if indices_tuple is not None:
            # fix: checked once here (one aminmax per tensor), not again by every loss
            n = embeddings.shape[0] if embeddings.ndim else 0
            check_indices_tuple(indices_tuple, n, n, check_bounds=True)
            indices_tuple = checked_indices_tuple(indices_tuple)
        acc = accumulation_dtype(embeddings.dtype)
        total: Tensor | None = None
        for loss, miner, weight in self._named_entries():
            curr = indices_tuple if miner is None else miner(embeddings, labels)
            term = loss(embeddings, labels, curr).to(acc) * weight
            total = term if total is None else total + term
        if total is None:  # no losses at all
            return zero_loss(embeddings)
        return total.to(embeddings.dtype)


__all__ = ["MultipleLosses", "SelfSupervisedLoss"]
