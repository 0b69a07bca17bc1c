"""Cross-fitted reward model ``q_hat(x, a)`` for the direct and doubly robust estimators.

Each of ``K`` folds is predicted by models fitted on the other folds (one regression per action on
the context features), so no prompt's own reward leaks into its prediction -- the condition under
which DR's analytic interval is valid. Binary rewards use logistic regression, others ridge; an
action with too few (or single-class) training rows falls back to its mean training reward (or the
overall mean when it has none). Predictions are clipped to the observed reward range.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from router.errors import ConfigError
from router.ope._validate import check_inputs

__all__ = ["CrossFitRewardModel"]


class CrossFitRewardModel:
    """K-fold cross-fitted per-action regression of reward on context.

    Args:
        n_folds: number of folds K (>= 2).
        kind: ``"auto"`` (logistic for 0/1 rewards, else ridge), ``"ridge"`` or ``"logistic"``.
        alpha: ridge penalty / inverse of logistic ``C``.
        min_rows: fewer training rows than this for an action -> use its mean reward.
        seed: fold assignment seed.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(200, 3)); a = rng.integers(0, 2, 200)
        >>> r = (x[:, 0] + a > 0.5).astype(float)
        >>> CrossFitRewardModel(n_folds=3).fit_predict(x, a, r, n_actions=2).shape
        (200, 2)
    """

    def __init__(self, n_folds: int = 5, kind: str = "auto", alpha: float = 1.0, min_rows: int = 10, seed: int = 0):
        if n_folds < 2:
            raise ConfigError(f"n_folds must be >= 2, got {n_folds}.")
        if kind not in ("auto", "ridge", "logistic"):
            raise ConfigError(f"kind must be 'auto', 'ridge' or 'logistic', got {kind!r}.")
        self.n_folds = n_folds
        self.kind = kind
        self.alpha = alpha
        self.min_rows = min_rows
        self.seed = seed

    def fit_predict(self, context: Any, action: Any, reward: Any, n_actions: int) -> np.ndarray:
        """Out-of-fold predictions (n, n_actions) for context (n, d), action (n,), reward (n,)."""
        x = np.asarray(context, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        r, a, _, _, _, checked = check_inputs(
            reward, action, np.ones(len(reward)), np.full((len(reward), n_actions), 1.0 / n_actions), context=x
        )
        assert checked is not None
        x = checked
        n = r.shape[0]
        binary = bool(np.isin(r, (0.0, 1.0)).all())
        kind = ("logistic" if binary else "ridge") if self.kind == "auto" else self.kind
        if kind == "logistic" and not binary:
            raise ConfigError("kind='logistic' needs 0/1 rewards; use kind='ridge' for graded rewards.")
        rng = np.random.default_rng(self.seed)
        folds = rng.permutation(n) % min(self.n_folds, n)
        out = np.empty((n, n_actions))
        lo, hi = float(r.min()), float(r.max())
        for k in np.unique(folds):
            test, train = folds == k, folds != k
            for j in range(n_actions):
                sel = train & (a == j)
                out[test, j] = self._fit_one(x[sel], r[sel], x[test], kind, fallback=float(r[train].mean()))
        return np.clip(out, lo, hi)

    def _fit_one(self, xt: np.ndarray, rt: np.ndarray, xp: np.ndarray, kind: str, fallback: float) -> np.ndarray:
        if rt.shape[0] == 0:
            return np.full(xp.shape[0], fallback)
        if rt.shape[0] < self.min_rows or np.ptp(rt) == 0:
            return np.full(xp.shape[0], float(rt.mean()))
        if kind == "logistic":
            from sklearn.linear_model import LogisticRegression

            clf = LogisticRegression(C=1.0 / self.alpha, max_iter=500)
            clf.fit(xt, rt.astype(int))
            return np.asarray(clf.predict_proba(xp)[:, 1])
        from sklearn.linear_model import Ridge

        reg = Ridge(alpha=self.alpha)
        reg.fit(xt, rt)
        return np.asarray(reg.predict(xp))
