"""Per-model logistic regression (fractional logit for graded quality)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from scipy.optimize import minimize

from router.errors import ConfigError
from router.predictors._common import BasePredictor, pad_rows

__all__ = ["LogisticPredictor"]


class LogisticPredictor(BasePredictor):
    """One L2-regularised logistic regression per model, fitted jointly with L-BFGS.

    The loss is binary cross-entropy with *soft* targets, so 0/1 quality gives ordinary logistic
    regression and graded quality in [0, 1] gives fractional-logit regression (Papke-Wooldridge):
    the prediction estimates the expected quality. Objective per model, as scikit-learn:
    ``C * sum_i BCE(q_ij, sigmoid(x_i w_j + b_j)) + ||w_j||^2 / 2`` (intercept not penalised).

    Args:
        C: inverse regularisation strength.
        max_iter: L-BFGS iterations.

    Example:
        >>> x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]); q = np.array([[1, 0], [1, 0], [0, 1], [0, 1]])
        >>> p = LogisticPredictor(C=10.0).fit(x, q).predict(np.array([[1.0, 0.0]]))
        >>> bool(p[0, 0] > 0.8 and p[0, 1] < 0.2)
        True
    """

    kind: ClassVar[str] = "logistic"

    def __init__(self, C: float = 1.0, max_iter: int = 500) -> None:
        self.C = C
        self.max_iter = max_iter
        if not isinstance(C, int | float) or not C > 0:
            raise ConfigError(f"LogisticPredictor(C=...) must be a positive number, got {C!r}.")
        if not isinstance(max_iter, int) or max_iter < 1:
            raise ConfigError(f"max_iter must be a positive int, got {max_iter!r}.")
        self.coef_: np.ndarray | None = None
        self.intercept_: np.ndarray | None = None

    def _fit(self, x: np.ndarray, q: np.ndarray) -> None:
        x64 = x.astype(np.float64)
        n, d = x64.shape
        m = q.shape[1]

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w = theta[: d * m].reshape(d, m)
            b = theta[d * m :]
            z = x64 @ w + b
            val = self.C * np.sum(np.logaddexp(0.0, z) - q * z) + 0.5 * np.sum(w * w)
            g = self.C * (1.0 / (1.0 + np.exp(-z)) - q)
            grad_w = x64.T @ g + w
            return float(val), np.concatenate([grad_w.ravel(), g.sum(axis=0)])

        theta0 = np.zeros(d * m + m)
        p0 = np.clip(q.mean(axis=0), 1e-3, 1 - 1e-3)
        theta0[d * m :] = np.log(p0 / (1 - p0))
        res = minimize(loss, theta0, jac=True, method="L-BFGS-B", options={"maxiter": self.max_iter})
        self.coef_ = res.x[: d * m].reshape(d, m).copy()
        self.intercept_ = res.x[d * m :].copy()

    def _predict(self, x: np.ndarray) -> np.ndarray:
        assert self.coef_ is not None and self.intercept_ is not None
        z = (pad_rows(x.astype(np.float64)) @ self.coef_)[: x.shape[0]] + self.intercept_  # batch-invariant (pad_rows)
        return np.asarray(1.0 / (1.0 + np.exp(-z)))

    def get_state(self) -> dict[str, np.ndarray]:
        self._check_fitted("coef_")
        assert self.coef_ is not None and self.intercept_ is not None
        return {"coef_": self.coef_.copy(), "intercept_": self.intercept_.copy(), **self._shape_state()}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self._set_shape_state(state)
        self.coef_ = np.asarray(state["coef_"], dtype=np.float64)
        self.intercept_ = np.asarray(state["intercept_"], dtype=np.float64)
