"""k-nearest-neighbour quality predictor over a FAISS index."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from router.errors import ConfigError
from router.predictors._common import BasePredictor

__all__ = ["KNNPredictor"]


class KNNPredictor(BasePredictor):
    """Predicted quality = (weighted) mean quality of the ``k`` nearest training prompts.

    With 0/1 quality the output is the neighbours' success rate, a calibrated probability when
    ``k`` is not tiny. ``metric="cosine"`` searches an exact ``IndexFlatIP`` over L2-normalised
    vectors; ``"euclidean"`` an ``IndexFlatL2``. State is the training embeddings and quality; the
    index is rebuilt on load.

    Args:
        k: neighbours (capped at the training size).
        metric: ``"cosine"`` or ``"euclidean"``.
        weighting: ``"uniform"`` or ``"distance"`` (weight 1 / (distance + 1e-6)).

    Example:
        >>> x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]); q = np.array([[1, 0], [1, 0], [0, 1], [0, 1]])
        >>> KNNPredictor(k=2).fit(x, q).predict(np.array([[1.0, 0.05]])).tolist()
        [[1.0, 0.0]]
    """

    kind: ClassVar[str] = "knn"

    def __init__(self, k: int = 40, metric: str = "cosine", weighting: str = "uniform") -> None:
        self.k = k
        self.metric = metric
        self.weighting = weighting
        if not isinstance(k, int) or k < 1:
            raise ConfigError(f"KNNPredictor(k=...) must be a positive int, got {k!r}.")
        if metric not in ("cosine", "euclidean"):
            raise ConfigError(f"metric must be 'cosine' or 'euclidean', got {metric!r}.")
        if weighting not in ("uniform", "distance"):
            raise ConfigError(f"weighting must be 'uniform' or 'distance', got {weighting!r}.")
        self.embeddings_: np.ndarray | None = None
        self.quality_: np.ndarray | None = None
        self._index: Any = None

    def _prep(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.metric == "cosine":
            norms = np.linalg.norm(x, axis=1, keepdims=True)
            x = x / np.where(norms > 0, norms, 1.0)
        return np.ascontiguousarray(x, dtype=np.float32)

    def _build(self) -> None:
        import faiss

        assert self.embeddings_ is not None
        xb = self._prep(self.embeddings_)
        index = faiss.IndexFlatIP(xb.shape[1]) if self.metric == "cosine" else faiss.IndexFlatL2(xb.shape[1])
        index.add(xb)
        self._index = index

    def _fit(self, x: np.ndarray, q: np.ndarray) -> None:
        self.embeddings_ = x.astype(np.float32)
        self.quality_ = q.astype(np.float64)
        self._build()

    def _predict(self, x: np.ndarray) -> np.ndarray:
        assert self.quality_ is not None
        if self._index is None:
            self._build()
        k = min(self.k, self.quality_.shape[0])
        scores, idx = self._index.search(self._prep(x), k)
        if self.weighting == "uniform":
            w = np.ones_like(scores, dtype=np.float64)
        else:
            dist = 1.0 - scores.astype(np.float64) if self.metric == "cosine" else np.sqrt(np.maximum(scores, 0))
            w = 1.0 / (np.maximum(dist, 0.0) + 1e-6)
        w /= w.sum(axis=1, keepdims=True)
        return np.einsum("nk,nkm->nm", w, self.quality_[idx])

    def get_state(self) -> dict[str, np.ndarray]:
        self._check_fitted("embeddings_")
        assert self.embeddings_ is not None and self.quality_ is not None
        return {"embeddings_": self.embeddings_.copy(), "quality_": self.quality_.copy(), **self._shape_state()}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self._set_shape_state(state)
        self.embeddings_ = np.asarray(state["embeddings_"], dtype=np.float32)
        self.quality_ = np.asarray(state["quality_"], dtype=np.float64)
        self._build()

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"k": 5}
