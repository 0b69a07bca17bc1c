"""Epsilon-greedy over per-action ridge-regression reward estimates.

With probability ``1 - epsilon`` the action with the highest estimated reward (lowest index on
ties), otherwise a uniformly random allowed action::

    p(a | x) = epsilon / |allowed| + (1 - epsilon) * 1[a = argmax_a theta_a . x]

Example:
    >>> import numpy as np
    >>> pol = EpsilonGreedy(n_actions=3, dim=2, epsilon=0.3, seed=0)
    >>> _ = pol.update(np.array([[1.0, 0.0]] * 5), np.array([2] * 5), np.ones(5))
    >>> pol.select(np.array([1.0, 0.0])).round(2).tolist()
    [0.1, 0.1, 0.8]
    >>> pol.select(np.array([1.0, 0.0]), mask=np.array([True, True, False])).round(2).tolist()
    [0.85, 0.15, 0.0]
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from router._numeric import rows_matmul
from router.errors import ConfigError
from router.policies._common import LinearPolicy, masked_argmax
from router.registry import FloatParam

__all__ = ["EpsilonGreedy"]


class EpsilonGreedy(LinearPolicy):
    """Epsilon-greedy on ridge estimates.

    Args:
        n_actions: number of models m.
        dim: context width d.
        epsilon: exploration probability in [0, 1].
        ridge: ridge penalty (> 0) of the per-action linear models.
        seed: seed of the policy's Generator (used by :meth:`sample`).
        intercept: append a constant feature.
        prior_mean: (m, d) or (m, d + 1) prior weights (e.g. from an offline predictor), or None.
        context_rank: reduce contexts to this many directions (see :class:`~router.policies._common.LinearPolicy`;
            :meth:`fit_basis` learns them); None keeps the full context.
    """

    kind = "egreedy"
    search_space: ClassVar[dict[str, Any]] = {**LinearPolicy.search_space, "epsilon": FloatParam(0.01, 0.3, log=True)}

    def __init__(self, n_actions: int, dim: int, epsilon: float = 0.1, ridge: float = 1.0, seed: int = 0,
                 intercept: bool = True, prior_mean: Any = None, context_rank: int | None = None) -> None:
        self.epsilon = epsilon
        if not 0.0 <= epsilon <= 1.0:
            raise ConfigError(f"epsilon must be in [0, 1], got {epsilon!r}.")
        super().__init__(n_actions, dim, ridge=ridge, seed=seed, intercept=intercept, prior_mean=prior_mean,
                         context_rank=context_rank)

    def _select(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        scores = rows_matmul(x, self._theta.T)
        best = masked_argmax(scores, mask)
        n_allowed = mask.sum(axis=1, keepdims=True)
        p = np.where(mask, float(self.epsilon) / n_allowed, 0.0)
        p[np.arange(x.shape[0]), best] += 1.0 - float(self.epsilon)
        return p
