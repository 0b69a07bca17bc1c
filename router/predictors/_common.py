"""Validation shared by the quality predictors: public ``fit``/``predict`` check, ``_fit``/``_predict`` compute."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np

from router._numeric import ROW_BLOCK, pad_rows
from router.base import QualityPredictor, check_embeddings
from router.errors import ConfigError

__all__ = ["ROW_BLOCK", "BasePredictor", "check_quality", "pad_rows"]


def check_quality(quality: Any, n: int) -> np.ndarray:
    """Validate a (n, m) quality matrix: finite, in [0, 1], at least one model."""
    q = np.asarray(quality, dtype=np.float64)
    if q.ndim != 2:
        raise ConfigError(f"quality must be a 2-D array (n_prompts, n_models), got shape {q.shape}.")
    if q.shape[0] != n:
        raise ConfigError(f"quality has {q.shape[0]} rows but embeddings have {n}; they must match row for row.")
    if q.shape[1] == 0:
        raise ConfigError("quality has no columns: give at least one model.")
    if not np.isfinite(q).all():
        r = int(np.argwhere(~np.isfinite(q))[0][0])
        raise ConfigError(f"quality contains NaN or infinite values (first at row {r}); drop or impute them.")
    if q.min() < 0.0 or q.max() > 1.0:
        raise ConfigError(f"quality must lie in [0, 1], got range [{q.min():.3g}, {q.max():.3g}]; rescale it.")
    return q


class BasePredictor(QualityPredictor):
    """Validates inputs, records ``dim_`` / ``n_models_``, and calls ``_fit`` / ``_predict``."""

    dim_: int | None = None
    n_models_: int | None = None

    def fit(self, embeddings: np.ndarray, quality: np.ndarray) -> BasePredictor:
        """Learn from embeddings (n, d) and quality (n, m) in [0, 1]; inputs are not modified."""
        x = check_embeddings(embeddings)
        if x.shape[0] == 0:
            raise ConfigError("Cannot fit on an empty set: embeddings has 0 rows.")
        q = check_quality(quality, x.shape[0])
        self.dim_ = int(x.shape[1])
        self.n_models_ = int(q.shape[1])
        self._fit(x.copy(), q.copy())
        return self

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        """Embeddings (n, d) -> predicted quality (n, m) float64 in [0, 1]; (0, m) for no rows."""
        self._check_fitted("dim_")
        x = check_embeddings(embeddings, dim=self.dim_)
        assert self.n_models_ is not None
        if x.shape[0] == 0:
            return np.zeros((0, self.n_models_), dtype=np.float64)
        out = np.asarray(self._predict(x.copy()), dtype=np.float64)
        return np.clip(out, 0.0, 1.0)

    @abstractmethod
    def _fit(self, x: np.ndarray, q: np.ndarray) -> None: ...

    @abstractmethod
    def _predict(self, x: np.ndarray) -> np.ndarray: ...

    # helpers for get_state / set_state
    def _shape_state(self) -> dict[str, np.ndarray]:
        self._check_fitted("dim_")
        return {"dim_": np.asarray(self.dim_), "n_models_": np.asarray(self.n_models_)}

    def _set_shape_state(self, state: dict[str, np.ndarray]) -> None:
        try:
            self.dim_ = int(state["dim_"])
            self.n_models_ = int(state["n_models_"])
        except KeyError as exc:
            raise ConfigError(f"{type(self).__name__} state lacks {exc}; was it saved by this class?") from exc

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        """Small, fast hyperparameters used by the conformance suite (River's convention)."""
        return {}
