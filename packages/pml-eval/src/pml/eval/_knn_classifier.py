"""KNNClassifier: predict labels by a vote of the nearest labelled embeddings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, cast

import torch
from torch import Tensor

from pml.core.validation import check_finite, check_int, check_type
from pml.distances import BaseDistance
from pml.eval import functional as EF
from pml.eval._faiss import get_faiss
from pml.eval._faiss_knn import FaissKNN
from pml.eval._inference import InferenceModel
from pml.eval._io import as_embeddings, as_labels, as_tensor, check_dim
from pml.eval._knn import TorchKNN

__all__ = ["KNNClassifier"]

WeightsFn = Callable[[Tensor], Tensor]


class KNNClassifier:
    """k-nearest-neighbour classifier on labelled embeddings or an InferenceModel's index.

    ``source`` is either reference embeddings ``(M, D)`` (then :meth:`predict` takes
    embeddings) or a trained :class:`InferenceModel` whose index rows are labelled by
    ``labels`` in index order (then :meth:`predict` takes the model's inputs, embeds them and
    searches the index).

    Each of the ``k`` nearest references votes for its label: with weight 1
    (``weights="uniform"``), ``1 / d`` (``"distance"``: ``d`` the Euclidean distance for
    squared-L2 searches, the default ones, or the distance's own value; references at
    distance 0 take the whole vote, as in scikit-learn), or ``weights(distances)`` for a
    callable. ``predict_proba`` gives each class's share of the vote (columns:
    ``classes_``, the sorted distinct labels); ``predict`` the class with the largest share,
    **ties going to the smallest label**.

    Args:
        source: reference embeddings (tensor or numpy), or an :class:`InferenceModel`.
        labels: ``(M,)`` labels of the references (of the index rows, for a model).
        k: neighbours that vote (clamped to the number of references).
        weights: ``"uniform"``, ``"distance"`` or ``fn(distances (N, k)) -> (N, k)``.
        distance: for embeddings: a pml distance ranking the references (None: Euclidean).
            A model searches with its own ``knn_func``.
        batch_size: query rows per block of the search (embeddings).

    Raises:
        TypeError: wrong argument types.
        ValueError: labels not 1-D or of the wrong length, NaN/inf embeddings, ``k < 1``,
            ``weights="distance"`` with a similarity (inverted) search.

    Example:
        >>> ref = torch.tensor([[0.0], [1.0], [10.0], [11.0], [12.0]])
        >>> clf = KNNClassifier(ref, torch.tensor([3, 3, 7, 7, 7]), k=3)
        >>> clf.predict(torch.tensor([[0.5], [9.0]])).tolist()
        [3, 7]
        >>> clf.classes_, clf.predict_proba(torch.tensor([[0.5]]))
        (tensor([3, 7]), tensor([[0.6667, 0.3333]]))
    """

    def __init__(
        self,
        source: Any,
        labels: Any,
        k: int = 5,
        weights: Literal["uniform", "distance"] | WeightsFn = "uniform",
        distance: BaseDistance | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.k: int = check_int("k", k, min=1)  # type: ignore[assignment]
        if not callable(weights) and weights not in ("uniform", "distance"):
            raise ValueError(
                f"weights must be 'uniform', 'distance' or a callable; got {weights!r}"
            )
        self.weights = weights
        check_type("distance", distance, BaseDistance, allow_none=True)
        self.batch_size = check_int("batch_size", batch_size, min=1, allow_none=True)
        self.model: InferenceModel | None = None
        self.reference: Tensor | None = None
        if isinstance(source, InferenceModel):
            if distance is not None:
                raise ValueError(
                    "distance applies to reference embeddings; an InferenceModel searches "
                    "with its knn_func (got both)"
                )
            self.model = source
            device = torch.device("cpu")
        else:
            self.reference = as_embeddings(source, "source")
            check_finite(self.reference, "source")
            device = self.reference.device
        self.distance = distance
        labels_t = as_tensor(labels, "labels")
        if labels_t.ndim != 1:
            raise ValueError(f"labels must be 1-D; got shape {tuple(labels_t.shape)}")
        if self.reference is not None:
            labels_t = as_labels(labels_t, "labels", self.reference.shape[0], device)
        elif labels_t.dtype == torch.bool:
            labels_t = labels_t.long()
        self.labels = labels_t
        self.classes_, self._ids = torch.unique(labels_t, sorted=True, return_inverse=True)
        if weights == "distance" and self._search_is_inverted():
            raise ValueError(
                "weights='distance' needs a search by distance (smaller is closer); this one "
                "ranks by similarity: pass weights='uniform' or a callable"
            )

    def _search_is_inverted(self) -> bool:
        if self.model is None:
            return bool(getattr(self.distance, "is_inverted", False))
        knn = self.model.knn_func
        if isinstance(knn, TorchKNN):
            return knn.is_inverted
        if isinstance(knn, FaissKNN):
            faiss = get_faiss()
            index = knn.index if knn.index is not None else knn.index_init_fn(1)
            return faiss is not None and index.metric_type != faiss.METRIC_L2
        return False

    def _search_is_squared_l2(self) -> bool:
        if self.model is None:
            return self.distance is None
        knn = self.model.knn_func
        if isinstance(knn, TorchKNN):
            return knn.distance is None
        return isinstance(knn, FaissKNN) and not self._search_is_inverted()

    def kneighbors(self, x: Any) -> tuple[Tensor, Tensor]:
        """``(distances (N, k'), indices (N, k'))`` of the nearest references.

        ``k' = min(k, number of references)``. Distances as the search gives them (squared
        L2 for the default searches).

        Raises:
            ValueError: NaN/inf or wrong-dimension queries; an index holding another number
                of rows than ``labels``.
        """
        if self.model is not None:
            distances, indices = self.model.get_nearest_neighbors(x, self.k)
            num = self.labels.shape[0]
            if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= num):
                raise ValueError(
                    f"labels must label every row of the model's index; got {num} labels and "
                    f"neighbour indices in [{int(indices.min())}, {int(indices.max())}]"
                )
            return distances, indices
        reference = cast(Tensor, self.reference)  # embeddings mode
        query = as_embeddings(x, "x", reference.device)
        check_dim(query, "x", reference.shape[1], "the references")
        with torch.no_grad():
            return EF.knn(
                query,
                reference,
                min(self.k, reference.shape[0]),
                distance_fn=self.distance,
                is_inverted=bool(getattr(self.distance, "is_inverted", False)),
                batch_size=self.batch_size,
            )

    def predict_proba(self, x: Any) -> Tensor:
        """Vote shares ``(N, C)``, columns in ``classes_`` order (at least float32)."""
        distances, indices = self.kneighbors(x)
        if self.weights == "uniform":
            w = torch.ones_like(
                distances, dtype=torch.promote_types(distances.dtype, torch.float32)
            )
        elif self.weights == "distance":
            d = distances.clamp(min=0).sqrt() if self._search_is_squared_l2() else distances
            w = EF.inverse_distance_weights(d)
        else:
            w = self.weights(distances)  # type: ignore[operator]
            if not isinstance(w, Tensor) or w.shape != distances.shape:
                got = tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__
                raise ValueError(
                    f"weights must return a tensor of shape {tuple(distances.shape)}; got {got}"
                )
        ids = self._ids.to(indices.device)[indices]
        return EF.class_probabilities(ids, w, self.classes_.shape[0])

    def predict(self, x: Any) -> Tensor:
        """Predicted labels ``(N,)`` (ties: the smallest label)."""
        proba = self.predict_proba(x)
        return self.classes_.to(proba.device)[proba.argmax(1)]
