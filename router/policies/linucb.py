"""Disjoint LinUCB (Li et al., 2010) with Woodbury / Sherman--Morrison updates of ``A_a^{-1}``.

Score of action ``a`` on context ``x``: ``theta_a . x + alpha * sqrt(x^T A_a^{-1} x)``. By default
the policy is greedy on the score with deterministic tie-breaking (lowest index), so the chosen
action gets probability 1 -- propensities are then 0/1, which rules out IPS evaluation of *other*
policies on its logs. Set ``softmax_temperature > 0`` for stochastic propensities:
``p(a) ∝ exp(score_a / T)`` over allowed actions (smaller T is closer to greedy).

Example:
    >>> import numpy as np
    >>> pol = LinUCB(n_actions=2, dim=2, alpha=0.5)
    >>> _ = pol.update(np.array([[1.0, 0.0], [1.0, 0.0]]), np.array([1, 0]), np.array([1.0, 0.0]))
    >>> pol.select(np.array([1.0, 0.0])).tolist()
    [0.0, 1.0]
    >>> pol.select(np.array([[1.0, 0.0]]), mask=np.array([[True, False]])).tolist()
    [[1.0, 0.0]]
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from router._numeric import rows_matmul
from router.errors import ConfigError
from router.policies._common import LinearPolicy, masked_argmax, quad_forms
from router.registry import FloatParam

__all__ = ["LinUCB", "ucb_scores"]


def ucb_scores(x: np.ndarray, theta: np.ndarray, a_inv: np.ndarray, alpha: float) -> np.ndarray:
    """UCB scores (n, m) for design rows x (n, D), weights (m, D) and inverses (m, D, D)."""
    mean = rows_matmul(x, theta.T)
    if alpha == 0:
        return np.asarray(mean)
    return np.asarray(mean + alpha * np.sqrt(np.maximum(quad_forms(x, a_inv), 0.0)))


def softmax_probs(scores: np.ndarray, mask: np.ndarray, temperature: float) -> np.ndarray:
    """Masked softmax of ``scores / temperature`` -> (n, m)."""
    z = np.where(mask, scores / temperature, -np.inf)
    z = z - z.max(axis=1, keepdims=True)
    e = np.where(mask, np.exp(z), 0.0)
    return e / e.sum(axis=1, keepdims=True)


class LinUCB(LinearPolicy):
    """Disjoint LinUCB.

    Args:
        n_actions: number of models m.
        dim: context width d.
        alpha: width of the confidence bonus (>= 0).
        ridge: ridge penalty (> 0).
        seed: seed of the policy's Generator (used by :meth:`sample`).
        softmax_temperature: None/0 for greedy (probability 1 on the argmax); > 0 for a softmax.
        intercept: append a constant feature.
        prior_mean: (m, d) or (m, d + 1) prior weights, or None.
        context_rank: reduce contexts to this many directions (see :class:`~router.policies._common.LinearPolicy`;
            :meth:`fit_basis` learns them); None keeps the full context.
    """

    kind = "linucb"
    search_space: ClassVar[dict[str, Any]] = {**LinearPolicy.search_space, "alpha": FloatParam(0.01, 2.0, log=True)}

    def __init__(self, n_actions: int, dim: int, alpha: float = 1.0, ridge: float = 1.0, seed: int = 0,
                 softmax_temperature: float | None = None, intercept: bool = True,
                 prior_mean: Any = None, context_rank: int | None = None) -> None:
        self.alpha = alpha
        self.softmax_temperature = softmax_temperature
        if not np.isfinite(alpha) or alpha < 0:
            raise ConfigError(f"alpha must be >= 0, got {alpha!r}.")
        if softmax_temperature is not None and not softmax_temperature >= 0:
            raise ConfigError(f"softmax_temperature must be >= 0 or None, got {softmax_temperature!r}.")
        super().__init__(n_actions, dim, ridge=ridge, seed=seed, intercept=intercept, prior_mean=prior_mean,
                         context_rank=context_rank)

    def _select(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        scores = ucb_scores(x, self._theta, self.A_inv_, float(self.alpha))
        if self.softmax_temperature:
            return softmax_probs(scores, mask, float(self.softmax_temperature))
        p = np.zeros_like(scores)
        p[np.arange(x.shape[0]), masked_argmax(scores, mask)] = 1.0
        return p
