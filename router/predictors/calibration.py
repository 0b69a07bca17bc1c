"""Calibration: map raw per-model scores to probabilities of quality, and measure calibration.

* :class:`PlattCalibrator` -- per-model ``sigmoid(a * s + b)`` fitted by soft-target BCE.
* :class:`IsotonicCalibrator` -- per-model monotone step function (scikit-learn isotonic fit).
* :func:`out_of_fold_scores` -- raw scores for every training row from models that did not see it,
  the right input for fitting a calibrator.
* :func:`expected_calibration_error` -- equal-width-bin ECE over all (prompt, model) cells.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
from scipy.optimize import minimize

from router.base import Component
from router.errors import ConfigError

__all__ = [
    "IsotonicCalibrator",
    "PlattCalibrator",
    "expected_calibration_error",
    "make_calibrator",
    "out_of_fold_scores",
]


def _check_pair(scores: Any, truth: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    if s.ndim != 2 or s.shape != t.shape:
        raise ConfigError(f"scores and truth must both be (n, m) arrays of one shape, got {s.shape} and {t.shape}.")
    if s.shape[0] == 0 or not np.isfinite(s).all() or not np.isfinite(t).all():
        raise ConfigError("scores and truth must be non-empty and finite.")
    return s, t


def expected_calibration_error(pred: Any, truth: Any, n_bins: int = 10) -> float:
    """ECE of predicted probabilities ``pred`` against outcomes ``truth`` (same shape, any rank).

    Cells are put in ``n_bins`` equal-width bins of predicted value; ECE is the cell-weighted
    mean of ``|mean(pred) - mean(truth)|`` per bin.

    Example:
        >>> expected_calibration_error([0.2, 0.2, 0.8, 0.8], [0, 0, 1, 1])
        0.2
    """
    p = np.asarray(pred, dtype=np.float64).ravel()
    t = np.asarray(truth, dtype=np.float64).ravel()
    if p.shape != t.shape or p.size == 0:
        raise ConfigError(f"pred and truth must be non-empty and of one shape, got {p.shape} and {t.shape}.")
    bins = np.clip((p * n_bins).astype(np.int64), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            ece += sel.mean() * abs(p[sel].mean() - t[sel].mean())
    return round(float(ece), 12)


class PlattCalibrator(Component):
    """Per-model Platt scaling: ``p = sigmoid(a_j * score + b_j)``; soft targets allowed.

    Example:
        >>> s = np.array([[-2.0], [-1.0], [1.0], [2.0]]); t = np.array([[0.0], [0.0], [1.0], [1.0]])
        >>> cal = PlattCalibrator().fit(s, t)
        >>> bool((np.diff(cal.transform(s)[:, 0]) > 0).all())
        True
    """

    kind: ClassVar[str] = "platt"

    def __init__(self, reg: float = 1e-3) -> None:
        self.reg = reg
        if not reg >= 0:
            raise ConfigError(f"reg must be >= 0, got {reg!r}.")
        self.a_: np.ndarray | None = None
        self.b_: np.ndarray | None = None

    def fit(self, scores: Any, truth: Any) -> PlattCalibrator:
        """Fit on raw scores (n, m) and outcomes (n, m) in [0, 1]."""
        s, t = _check_pair(scores, truth)
        m = s.shape[1]
        a, b = np.ones(m), np.zeros(m)
        for j in range(m):
            sj, tj = s[:, j], t[:, j]

            def loss(w: np.ndarray, sj: np.ndarray = sj, tj: np.ndarray = tj) -> tuple[float, np.ndarray]:
                z = w[0] * sj + w[1]
                p = 1.0 / (1.0 + np.exp(-z))
                val = np.sum(np.logaddexp(0.0, z) - tj * z) / len(sj) + 0.5 * self.reg * w[0] ** 2
                g = p - tj
                return float(val), np.array([g @ sj / len(sj) + self.reg * w[0], g.mean()])

            res = minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
            a[j], b[j] = res.x
        self.a_, self.b_ = a, b
        return self

    def transform(self, scores: Any) -> np.ndarray:
        """Raw scores (n, m) -> probabilities (n, m)."""
        self._check_fitted("a_")
        assert self.a_ is not None and self.b_ is not None
        s = np.asarray(scores, dtype=np.float64)
        z = s * self.a_ + self.b_
        return np.asarray(1.0 / (1.0 + np.exp(-z)))

    def get_state(self) -> dict[str, np.ndarray]:
        self._check_fitted("a_")
        assert self.a_ is not None and self.b_ is not None
        return {"a_": self.a_.copy(), "b_": self.b_.copy()}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self.a_ = np.asarray(state["a_"], dtype=np.float64)
        self.b_ = np.asarray(state["b_"], dtype=np.float64)


class IsotonicCalibrator(Component):
    """Per-model isotonic regression (monotone, clipped to [0, 1]); state = breakpoints per model.

    Example:
        >>> s = np.array([[0.1], [0.4], [0.6], [0.9]]); t = np.array([[0.0], [1.0], [0.0], [1.0]])
        >>> IsotonicCalibrator().fit(s, t).transform(np.array([[0.0], [1.0]])).ravel().tolist()
        [0.0, 1.0]
    """

    kind: ClassVar[str] = "isotonic"

    def __init__(self) -> None:
        self.x_: np.ndarray | None = None
        self.y_: np.ndarray | None = None
        self.offsets_: np.ndarray | None = None

    def fit(self, scores: Any, truth: Any) -> IsotonicCalibrator:
        """Fit on raw scores (n, m) and outcomes (n, m) in [0, 1]."""
        from sklearn.isotonic import IsotonicRegression

        s, t = _check_pair(scores, truth)
        xs, ys, offsets = [], [], [0]
        for j in range(s.shape[1]):
            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(s[:, j], t[:, j])
            xs.append(np.asarray(iso.X_thresholds_, dtype=np.float64))
            ys.append(np.asarray(iso.y_thresholds_, dtype=np.float64))
            offsets.append(offsets[-1] + len(xs[-1]))
        self.x_, self.y_, self.offsets_ = np.concatenate(xs), np.concatenate(ys), np.asarray(offsets)
        return self

    def transform(self, scores: Any) -> np.ndarray:
        """Raw scores (n, m) -> probabilities (n, m)."""
        self._check_fitted("x_")
        assert self.x_ is not None and self.y_ is not None and self.offsets_ is not None
        s = np.asarray(scores, dtype=np.float64)
        out = np.empty_like(s)
        for j in range(s.shape[1]):
            lo, hi = self.offsets_[j], self.offsets_[j + 1]
            out[:, j] = np.interp(s[:, j], self.x_[lo:hi], self.y_[lo:hi])
        return out

    def get_state(self) -> dict[str, np.ndarray]:
        self._check_fitted("x_")
        return {"x_": np.asarray(self.x_), "y_": np.asarray(self.y_), "offsets_": np.asarray(self.offsets_)}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self.x_, self.y_ = np.asarray(state["x_"]), np.asarray(state["y_"])
        self.offsets_ = np.asarray(state["offsets_"])


def make_calibrator(method: str) -> PlattCalibrator | IsotonicCalibrator:
    """``"platt"`` or ``"isotonic"`` -> an unfitted calibrator."""
    if method == "platt":
        return PlattCalibrator()
    if method == "isotonic":
        return IsotonicCalibrator()
    raise ConfigError(f"Unknown calibration method {method!r}; use 'platt' or 'isotonic'.")


def out_of_fold_scores(
    fit_score: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    embeddings: np.ndarray,
    quality: np.ndarray,
    n_folds: int = 5,
    seed: int = 0,
) -> np.ndarray:
    """Raw scores (n, m) for every row from a model fitted without that row's fold.

    ``fit_score(x_train, q_train, x_test) -> scores (n_test, m)`` fits a fresh model and scores.

    Example:
        >>> x = np.arange(10.0)[:, None]; q = (x > 4).astype(float)
        >>> oof = out_of_fold_scores(lambda xt, qt, xs: np.full((len(xs), 1), qt.mean()), x, q, n_folds=2)
        >>> oof.shape
        (10, 1)
    """
    n = embeddings.shape[0]
    if n < n_folds:
        raise ConfigError(f"Need at least n_folds={n_folds} rows for out-of-fold scores, got {n}.")
    folds = np.random.default_rng(seed).permutation(n) % n_folds
    out = np.zeros(quality.shape, dtype=np.float64)
    for f in range(n_folds):
        test = folds == f
        out[test] = fit_score(embeddings[~test], quality[~test], embeddings[test])
    return out
