"""Linear Thompson sampling (Agrawal & Goyal, 2013) with Monte-Carlo propensities.

Per action, ``theta_a ~ N(A_a^{-1} b_a, v^2 A_a^{-1})``, drawn as ``mean + v * L_a @ z`` with
``L_a`` the Cholesky factor of ``A_a^{-1}`` and ``z = rng.standard_normal`` from the policy's numpy
Generator -- so draws reproduce across BLAS builds. :meth:`select` draws ``n_samples`` parameter
vectors per action (shared by the rows of a batch), counts how often each allowed action wins,
and returns those frequencies: the probabilities Thompson sampling would give, estimated. The
action actually taken is then drawn from them (:meth:`sample`), so the logged propensity is
exactly the probability the action was taken with. ``min_prob`` mixes in a little uniform mass
so no allowed action gets probability 0 (keeps the logs usable for IPS).

Example:
    >>> import numpy as np
    >>> pol = LinearThompson(n_actions=2, dim=1, v=0.1, n_samples=200, seed=0)
    >>> _ = pol.update(np.ones((30, 1)), np.array([0, 1] * 15), np.array([0.1, 0.9] * 15))
    >>> p = pol.select(np.ones(1))
    >>> bool(p[1] > 0.9), float(p.sum())
    (True, 1.0)
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from router.errors import ConfigError
from router.policies._common import LinearPolicy
from router.registry import FloatParam

__all__ = ["LinearThompson"]


class LinearThompson(LinearPolicy):
    """Linear Thompson sampling.

    Args:
        n_actions: number of models m.
        dim: context width d.
        v: posterior scale (> 0); larger explores more.
        ridge: ridge penalty (> 0).
        seed: seed of the policy's Generator (draws of ``theta`` and of actions).
        n_samples: Monte-Carlo draws per :meth:`select` call to estimate probabilities.
        min_prob: uniform mass mixed in, in [0, 1).
        intercept: append a constant feature.
        prior_mean: (m, d) or (m, d + 1) prior weights, or None.
    """

    kind = "thompson"
    search_space: ClassVar[dict[str, Any]] = {**LinearPolicy.search_space, "v": FloatParam(0.01, 1.0, log=True)}

    def __init__(self, n_actions: int, dim: int, v: float = 0.3, ridge: float = 1.0, seed: int = 0,
                 n_samples: int = 64, min_prob: float = 0.0, intercept: bool = True,
                 prior_mean: Any = None) -> None:
        self.v = v
        self.n_samples = n_samples
        self.min_prob = min_prob
        if not np.isfinite(v) or v <= 0:
            raise ConfigError(f"v must be > 0, got {v!r}.")
        if not isinstance(n_samples, int | np.integer) or n_samples < 1:
            raise ConfigError(f"n_samples must be a positive int, got {n_samples!r}.")
        if not 0.0 <= min_prob < 1.0:
            raise ConfigError(f"min_prob must be in [0, 1), got {min_prob!r}.")
        self._chol: np.ndarray | None = None
        super().__init__(n_actions, dim, ridge=ridge, seed=seed, intercept=intercept, prior_mean=prior_mean)

    def _after_state_change(self) -> None:
        self._chol = None

    def _cholesky(self) -> np.ndarray:
        if self._chol is None:
            sym = 0.5 * (self.A_inv_ + np.swapaxes(self.A_inv_, 1, 2))
            self._chol = np.linalg.cholesky(sym)
        return self._chol

    def _select(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        m, d, s = int(self.n_actions), self._d, int(self.n_samples)
        z = self.rng_.standard_normal((m, s, d))
        thetas = self.theta_[:, None, :] + float(self.v) * np.einsum("mij,msj->msi", self._cholesky(), z)
        scores = np.einsum("nd,msd->nsm", x, thetas)
        best = np.argmax(np.where(mask[:, None, :], scores, -np.inf), axis=2)  # (n, s)
        counts = np.zeros((x.shape[0], m))
        for a in range(m):
            counts[:, a] = (best == a).sum(axis=1)
        p = counts / s
        if self.min_prob:
            n_allowed = mask.sum(axis=1, keepdims=True)
            p = (1.0 - float(self.min_prob)) * p + np.where(mask, float(self.min_prob) / n_allowed, 0.0)
        return p
