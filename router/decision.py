"""The decision rule: one explicit trade-off between quality, cost and latency.

For every candidate model ``j`` of a request::

    utility[j] = quality_hat[j] - lam * cost_hat[j] - mu * latency_hat[j]

subject to constraints (models allowed for the tenant, ``max_cost`` USD per request, ``max_latency``
seconds). ``lam`` is in quality points per USD, ``mu`` in quality points per second. The rule
returns the probability of *every* choice so that serving can log propensities:

* ``greedy`` -- probability 1 on the best utility (ties go to the cheaper model);
* ``epsilon`` -- greedy with ``epsilon`` spread uniformly over the feasible models;
* ``softmax`` -- ``softmax(utility / temperature)`` over the feasible models.

**Mixing two trade-offs.** A budget can fall between two adjacent lambdas where a block of requests
changes model at once; no single lambda then hits it. With ``mix > 0`` the rule decides at ``mix_lam``
with probability ``mix`` and at ``lam`` otherwise, so its probabilities are
``(1 - mix) * P(lam) + mix * P(mix_lam)``: the logged propensity of a mixed choice is exact, and
:meth:`DecisionRule.sample` draws the choice from them. :func:`router.calibration.calibrate` sets
the mixing; changing ``lam`` with :meth:`DecisionRule.with_` drops it.

When no allowed model meets ``max_cost`` / ``max_latency``, the cheapest allowed model is chosen and
the reason says so, rather than failing the request.

Example:
    >>> import numpy as np
    >>> rule = DecisionRule(lam=100.0)
    >>> q = np.array([[0.70, 0.90]]); c = np.array([[0.0001, 0.0030]])
    >>> rule.probabilities(q, c).probabilities.tolist()
    [[1.0, 0.0]]
    >>> DecisionRule(lam=10.0).probabilities(q, c).probabilities.tolist()
    [[0.0, 1.0]]
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from router.errors import ConfigError

__all__ = ["DecisionRule", "RuleOutput"]

_STRATEGIES = ("greedy", "epsilon", "softmax")


@dataclass(frozen=True)
class RuleOutput:
    """Result of applying the rule to n requests and m models (all arrays (n, m) unless noted).

    Attributes:
        probabilities: probability of choosing each model; zero where infeasible.
        utility: the utility of each model (``-inf`` where not allowed).
        feasible: models allowed and within the cost / latency limits.
        fallback: (n,) True where nothing was feasible and the cheapest allowed model was used.
    """

    probabilities: np.ndarray
    utility: np.ndarray
    feasible: np.ndarray
    fallback: np.ndarray


@dataclass(frozen=True)
class DecisionRule:
    """Utility = quality - lam * cost - mu * latency, under constraints; see the module docs.

    Args:
        lam: quality points per USD (>= 0).
        mu: quality points per second of latency (>= 0).
        strategy: ``"greedy"``, ``"epsilon"`` or ``"softmax"``.
        epsilon: exploration share for ``"epsilon"``, in [0, 1].
        temperature: softmax temperature (> 0), in utility units.
        max_cost: USD per request no choice may exceed, or None.
        max_latency: seconds no choice may exceed, or None.
        mix_lam: the second trade-off of a mixed rule (quality points per USD), or None.
        mix: probability of deciding at ``mix_lam`` instead of ``lam``, in [0, 1].
        seed: seed of :meth:`sample` (the draw among models that share the probability).
    """

    lam: float = 0.0
    mu: float = 0.0
    strategy: str = "greedy"
    epsilon: float = 0.0
    temperature: float = 0.01
    max_cost: float | None = None
    max_latency: float | None = None
    mix_lam: float | None = None
    mix: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("lam", "mu"):
            v = getattr(self, name)
            if not np.isfinite(v) or v < 0:
                raise ConfigError(f"DecisionRule.{name} must be a finite number >= 0, got {v!r}.")
        if self.strategy not in _STRATEGIES:
            raise ConfigError(f"DecisionRule.strategy must be one of {_STRATEGIES}, got {self.strategy!r}.")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ConfigError(f"DecisionRule.epsilon must be in [0, 1], got {self.epsilon!r}.")
        if not self.temperature > 0:
            raise ConfigError(f"DecisionRule.temperature must be > 0, got {self.temperature!r}.")
        for name in ("max_cost", "max_latency"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ConfigError(f"DecisionRule.{name} must be > 0 or None, got {v!r}.")
        if not 0.0 <= self.mix <= 1.0:
            raise ConfigError(f"DecisionRule.mix must be in [0, 1], got {self.mix!r}.")
        if self.mix_lam is not None and (not np.isfinite(self.mix_lam) or self.mix_lam < 0):
            raise ConfigError(f"DecisionRule.mix_lam must be a finite number >= 0 or None, got {self.mix_lam!r}.")
        if self.mix > 0 and self.mix_lam is None:
            raise ConfigError("DecisionRule.mix > 0 needs mix_lam, the second trade-off to mix with.")

    def with_(self, **changes: Any) -> DecisionRule:
        """A copy with some settings changed (validated again); None leaves a setting as it is.

        A new ``lam`` without ``mix_lam`` / ``mix`` gives a deterministic rule at that lambda: the
        mixing belongs to the lambda it was calibrated with.
        """
        given = {k: v for k, v in changes.items() if v is not None}
        if "lam" in given and given["lam"] != self.lam and "mix_lam" not in given and "mix" not in given:
            given.update(mix_lam=None, mix=0.0)
        return replace(self, **given)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    # ------------------------------------------------------------------ core
    def probabilities(
        self,
        quality: np.ndarray,
        cost: np.ndarray,
        latency: np.ndarray | None = None,
        allowed: np.ndarray | None = None,
    ) -> RuleOutput:
        """Apply the rule.

        Args:
            quality: (n, m) predicted quality.
            cost: (n, m) predicted USD.
            latency: (n, m) predicted seconds, or None (then ``mu`` and ``max_latency`` are ignored).
            allowed: (m,) or (n, m) bool, models the caller may use; every row needs one.
        """
        q = np.asarray(quality, dtype=np.float64)
        c = np.asarray(cost, dtype=np.float64)
        n, m = q.shape
        if allowed is None:
            ok = np.ones((n, m), dtype=bool)
        else:
            ok = np.broadcast_to(np.asarray(allowed, dtype=bool), (n, m))
            empty = ~ok.any(axis=1)
            if empty.any():
                raise ConfigError(
                    f"request {int(np.flatnonzero(empty)[0])} allows no model; allow at least one model."
                )
        util = q - self.lam * c
        if latency is not None and self.mu:
            util = util - self.mu * np.asarray(latency, dtype=np.float64)
        feasible = ok.copy()
        if self.max_cost is not None:
            feasible &= c <= self.max_cost
        if self.max_latency is not None and latency is not None:
            feasible &= np.asarray(latency) <= self.max_latency
        fallback = ~feasible.any(axis=1)
        if fallback.any():
            cheapest = np.where(ok, c, np.inf).argmin(axis=1)
            feasible[fallback] = False
            feasible[np.flatnonzero(fallback), cheapest[fallback]] = True
        util = np.where(ok, util, -np.inf)
        probs = self._probs(util, c, feasible)
        if self.mix > 0 and self.mix_lam is not None:
            other = np.where(ok, util + (self.lam - self.mix_lam) * c, -np.inf)
            probs = (1.0 - self.mix) * probs + self.mix * self._probs(other, c, feasible)
        return RuleOutput(probs, util, feasible, np.asarray(fallback))

    def sample(self, probabilities: np.ndarray, keys: Sequence[str]) -> np.ndarray:
        """Draw one model per request from ``probabilities`` (n, m); returns (n,) indices.

        The uniform number behind each draw is a hash of ``seed`` and the request's key (its prompt
        text, or a request id), so the same request gets the same choice in every batch, after a
        save / load and on another machine, and the chosen model's probability is its propensity.
        Rows with probability 1 on a model need no draw.

        Example:
            >>> DecisionRule().sample(np.array([[0.0, 1.0], [0.5, 0.5]]), ["a", "b"]).shape
            (2,)
        """
        p = np.asarray(probabilities, dtype=np.float64)
        if p.ndim != 2 or len(keys) != p.shape[0]:
            raise ConfigError(f"sample needs (n, m) probabilities and n keys, got {p.shape} and {len(keys)}.")
        pick = p.argmax(axis=1)
        random_rows = np.flatnonzero(p.max(axis=1) < 1.0)
        if random_rows.size:
            u = np.array([_uniform(self.seed, str(keys[int(i)])) for i in random_rows])
            cdf = np.cumsum(p[random_rows], axis=1)
            cdf /= cdf[:, -1:]
            pick[random_rows] = np.minimum((cdf <= u[:, None]).sum(axis=1), p.shape[1] - 1)
            # a zero-probability model is never drawn (guards against rounding at the edges)
            bad = p[random_rows, pick[random_rows]] <= 0
            pick[random_rows[bad]] = p[random_rows[bad]].argmax(axis=1)
        return pick

    def _probs(self, util: np.ndarray, cost: np.ndarray, feasible: np.ndarray) -> np.ndarray:
        n, m = util.shape
        u = np.where(feasible, util, -np.inf)
        if self.strategy == "softmax":
            z = np.where(feasible, (u - u.max(axis=1, keepdims=True)) / self.temperature, -np.inf)
            p = np.where(feasible, np.exp(z), 0.0)
            return p / p.sum(axis=1, keepdims=True)
        # greedy choice; ties broken towards the cheaper model (lexsort: last key is primary)
        best = u.max(axis=1, keepdims=True)
        tie_cost = np.where(np.isclose(u, best, rtol=0.0, atol=1e-12) & feasible, cost, np.inf)
        pick = tie_cost.argmin(axis=1)
        p = np.zeros((n, m))
        p[np.arange(n), pick] = 1.0
        if self.strategy == "epsilon" and self.epsilon > 0:
            k = feasible.sum(axis=1, keepdims=True)
            p = (1.0 - self.epsilon) * p + self.epsilon * feasible / k
        return p


def _uniform(seed: int, key: str) -> float:
    """A number in [0, 1) fixed by ``seed`` and ``key`` (64 bits of BLAKE2b)."""
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64
