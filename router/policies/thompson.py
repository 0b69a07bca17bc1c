"""Linear Thompson sampling (Agrawal & Goyal, 2013) with Monte-Carlo propensities.

Per action, the posterior is ``theta_a ~ N(A_a^{-1} b_a, v^2 A_a^{-1})``. A decision on a context
``x`` only needs the scores ``x . theta_a``, and under that posterior each score is a scalar normal,
``N(x . theta_hat_a, v^2 x^T A_a^{-1} x)``, independent across actions (disjoint models). So
:meth:`select` draws the *scores* directly -- ``n_samples`` standard normals per (row, action) from
the policy's numpy Generator, scaled by the posterior standard deviation -- instead of drawing
``D``-dimensional parameter vectors through a Cholesky factor of every ``A_a^{-1}``: the same
distribution of decisions for each row at ``O(m D^2)`` per row (the variances), with no
factorisation at all. Every row gets its own draws. It counts how often each allowed action wins
and returns those frequencies: the probabilities Thompson sampling would give, estimated. The
action actually taken is then drawn from them (:meth:`sample`), so the logged propensity is
exactly the probability the action was taken with. ``min_prob`` mixes in a little uniform mass so
no allowed action gets probability 0 (keeps the logs usable for IPS).

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

from router._numeric import rows_matmul
from router.errors import ConfigError
from router.policies._common import LinearPolicy, quad_forms
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
        n_samples: Monte-Carlo draws per row and action in :meth:`select` to estimate probabilities.
        min_prob: uniform mass mixed in, in [0, 1).
        intercept: append a constant feature.
        prior_mean: (m, d) or (m, d + 1) prior weights, or None.
        context_rank: reduce contexts to this many directions (see :class:`~router.policies._common.LinearPolicy`;
            :meth:`fit_basis` learns them); None keeps the full context.
    """

    kind = "thompson"
    search_space: ClassVar[dict[str, Any]] = {**LinearPolicy.search_space, "v": FloatParam(0.01, 1.0, log=True)}

    def __init__(self, n_actions: int, dim: int, v: float = 0.3, ridge: float = 1.0, seed: int = 0,
                 n_samples: int = 64, min_prob: float = 0.0, intercept: bool = True,
                 prior_mean: Any = None, context_rank: int | None = None) -> None:
        self.v = v
        self.n_samples = n_samples
        self.min_prob = min_prob
        if not np.isfinite(v) or v <= 0:
            raise ConfigError(f"v must be > 0, got {v!r}.")
        if not isinstance(n_samples, int | np.integer) or n_samples < 1:
            raise ConfigError(f"n_samples must be a positive int, got {n_samples!r}.")
        if not 0.0 <= min_prob < 1.0:
            raise ConfigError(f"min_prob must be in [0, 1), got {min_prob!r}.")
        super().__init__(n_actions, dim, ridge=ridge, seed=seed, intercept=intercept, prior_mean=prior_mean,
                         context_rank=context_rank)

    def _select(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        n, m, s = x.shape[0], int(self.n_actions), int(self.n_samples)
        mean = np.where(mask, rows_matmul(x, self._theta.T), -np.inf)  # (n, m); a masked action never wins
        sd = float(self.v) * np.sqrt(np.maximum(quad_forms(x, self.A_inv_), 0.0))  # (n, m)
        scores = self.rng_.standard_normal((n, s, m))
        scores *= sd[:, None, :]
        scores += mean[:, None, :]
        best = np.argmax(scores, axis=2)  # (n, s)
        cells = (np.arange(n)[:, None] * m + best).ravel()
        p = np.bincount(cells, minlength=n * m).reshape(n, m) / s
        if self.min_prob:
            n_allowed = mask.sum(axis=1, keepdims=True)
            p = (1.0 - float(self.min_prob)) * p + np.where(mask, float(self.min_prob) / n_allowed, 0.0)
        return p
