"""k-nearest-neighbour quality predictor over a FAISS index."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from router.errors import ConfigError
from router.predictors._common import BasePredictor, pad_rows

__all__ = ["KNNPredictor"]

#: Cosine search over at most this many training values (rows x width) is one numpy matrix product and
#: a partial sort instead of FAISS: the same float32 inner products and the same neighbour sets, at a
#: quarter to a sixth of the CPU for batches of 16-64 (FAISS scans query by query below 20 queries and
#: keeps a k-heap per query); larger training sets keep the FAISS index.
NUMPY_SEARCH_MAX_VALUES = 4_000_000


class KNNPredictor(BasePredictor):
    """Predicted quality = (weighted) mean quality of the ``k`` nearest training prompts.

    With 0/1 quality the output is the neighbours' success rate, a calibrated probability when
    ``k`` is not tiny. ``metric="cosine"`` searches an exact ``IndexFlatIP`` over L2-normalised
    vectors; ``"euclidean"`` an ``IndexFlatL2``. State is the training embeddings and quality; the
    index is rebuilt on load. Small cosine indexes are searched with one numpy matrix product (see
    :data:`NUMPY_SEARCH_MAX_VALUES`); the neighbours are the same.

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
        self._xb: np.ndarray | None = None  # (n, d) normalised training rows, for the numpy search

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
        if self.metric == "cosine" and xb.size <= NUMPY_SEARCH_MAX_VALUES:
            self._xb, self._index = xb, None
            return
        self._xb = None
        index = faiss.IndexFlatIP(xb.shape[1]) if self.metric == "cosine" else faiss.IndexFlatL2(xb.shape[1])
        index.add(xb)
        self._index = index

    def _fit(self, x: np.ndarray, q: np.ndarray) -> None:
        self.embeddings_ = x.astype(np.float32)
        self.quality_ = q.astype(np.float64)
        self._build()

    def _predict(self, x: np.ndarray) -> np.ndarray:
        assert self.quality_ is not None
        if self._index is None and self._xb is None:
            self._build()
        k = min(self.k, self.quality_.shape[0])
        scores, idx = self._search(self._prep(x), k)
        if self.weighting == "uniform":
            w = np.ones_like(scores, dtype=np.float64)
        else:
            dist = 1.0 - scores.astype(np.float64) if self.metric == "cosine" else np.sqrt(np.maximum(scores, 0))
            w = 1.0 / (np.maximum(dist, 0.0) + 1e-6)
        w /= w.sum(axis=1, keepdims=True)
        return np.einsum("nk,nkm->nm", w, self.quality_[idx])

    def _search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores (n, k), indices (n, k)) of the ``k`` nearest training rows, best first."""
        if self._xb is None:
            return self._index.search(xq, k)  # type: ignore[no-any-return]
        # float32 inner products, as IndexFlatIP computes them; (n_train, d) @ (d, n) runs 2-3x faster than
        # xq @ xb.T for a few queries (BLAS packs the small side), and the queries padded to a whole block keep
        # each query's similarities independent of the batch it came in (see pad_rows)
        n = xq.shape[0]
        sims = (self._xb @ pad_rows(xq).T)[:, :n].T
        n_train = sims.shape[1]
        idx = np.argpartition(sims, n_train - k, axis=1)[:, n_train - k:] if k < n_train else \
            np.broadcast_to(np.arange(n_train), sims.shape).copy()
        top = np.take_along_axis(sims, idx, axis=1)
        order = np.argsort(-top, axis=1, kind="stable")
        return np.take_along_axis(top, order, axis=1), np.take_along_axis(idx, order, axis=1)

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
