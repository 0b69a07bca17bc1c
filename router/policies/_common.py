"""Shared plumbing of the bandit policies: input checks, seeded randomness, ridge statistics.

Every policy here keeps, per action ``a``, the ridge statistics of a linear reward model on the
context ``x`` (with a constant 1 appended when ``intercept=True``)::

    A_a = ridge * I + sum_t w_t x_t x_t^T        b_a = ridge * prior_a + sum_t w_t r_t x_t

so ``theta_a = A_a^{-1} b_a`` starts at the prior mean (zero by default) and ``A_a^{-1}`` is kept
up to date with Sherman--Morrison rank-one updates. :meth:`LinearPolicy.warm_start` adds
weighted pseudo-observations from full-information offline data (a quality matrix, e.g. a quality
predictor's output), so a policy starts from what the offline predictors know.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from router.base import Policy
from router.errors import ConfigError
from router.registry import FloatParam

__all__ = ["LinearPolicy", "check_context", "check_mask", "rng_from_state", "rng_to_state", "sample"]

_MASK64 = (1 << 64) - 1


def rng_to_state(rng: np.random.Generator) -> np.ndarray:
    """A PCG64 Generator's full state as a (6,) uint64 array (state, inc as 128-bit halves)."""
    st = rng.bit_generator.state
    if st["bit_generator"] != "PCG64":
        raise ConfigError(f"only PCG64 generators can be saved, got {st['bit_generator']}.")
    s, inc = int(st["state"]["state"]), int(st["state"]["inc"])
    return np.array(
        [s & _MASK64, s >> 64, inc & _MASK64, inc >> 64, int(st["has_uint32"]), int(st["uinteger"])],
        dtype=np.uint64,
    )


def rng_from_state(arr: np.ndarray) -> np.random.Generator:
    """Inverse of :func:`rng_to_state`.

    Example:
        >>> g = np.random.default_rng(3); _ = g.random()
        >>> h = rng_from_state(rng_to_state(g))
        >>> bool(g.random() == h.random())
        True
    """
    a = [int(x) for x in np.asarray(arr, dtype=np.uint64)]
    if len(a) != 6:
        raise ConfigError(f"a saved generator state has 6 words, got {len(a)}.")
    rng = np.random.Generator(np.random.PCG64())
    rng.bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": a[0] | (a[1] << 64), "inc": a[2] | (a[3] << 64)},
        "has_uint32": a[4],
        "uinteger": a[5],
    }
    return rng


def check_context(context: Any, dim: int) -> tuple[np.ndarray, bool]:
    """Context (d,) or (n, d) -> float64 (n, d) copy and whether the input was one row."""
    x = np.array(context, dtype=np.float64)
    single = x.ndim == 1
    if single:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != dim:
        raise ConfigError(f"context must have shape ({dim},) or (n, {dim}), got {np.shape(context)}.")
    if not np.isfinite(x).all():
        r = int(np.argwhere(~np.isfinite(x))[0][0])
        raise ConfigError(f"context contains NaN or infinite values (first at row {r}); clean the input.")
    return x, single


def check_mask(mask: Any, n: int, m: int) -> np.ndarray:
    """Mask None, (m,) or (n, m) bool -> (n, m) bool; every row must allow an action."""
    if mask is None:
        return np.ones((n, m), dtype=bool)
    mk = np.asarray(mask)
    if mk.dtype != np.bool_:
        if not np.isin(mk, (0, 1)).all():
            raise ConfigError("mask must be boolean (True = allowed).")
        mk = mk.astype(bool)
    if mk.shape == (m,):
        mk = np.broadcast_to(mk, (n, m))
    if mk.shape != (n, m):
        raise ConfigError(f"mask must have shape ({m},) or ({n}, {m}), got {mk.shape}.")
    if not mk.any(axis=1).all():
        r = int(np.flatnonzero(~mk.any(axis=1))[0])
        raise ConfigError(f"mask allows no action on row {r}; every request needs at least one allowed model.")
    return np.array(mk, dtype=bool)


def sample(probs: Any, rng: np.random.Generator) -> np.ndarray | int:
    """Draw actions from probabilities (m,) -> int or (n, m) -> (n,) ints, by inverse CDF.

    Example:
        >>> sample(np.array([0.0, 1.0, 0.0]), np.random.default_rng(0))
        1
    """
    p = np.asarray(probs, dtype=np.float64)
    single = p.ndim == 1
    p2 = p[None, :] if single else p
    cdf = np.cumsum(p2, axis=1)
    u = rng.random(p2.shape[0]) * cdf[:, -1]
    a = (u[:, None] >= cdf).sum(axis=1)
    # never land on a zero-probability action through rounding
    a = np.minimum(a, p2.shape[1] - 1)
    bad = p2[np.arange(p2.shape[0]), a] <= 0
    if bad.any():
        a[bad] = np.argmax(p2[bad] > 0, axis=1)
    return int(a[0]) if single else a.astype(np.int64)


def check_update(context: Any, action: Any, reward: Any, propensity: Any, dim: int,
                 n_actions: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate one online update: contexts (n, dim), actions (n,) in [0, n_actions), finite rewards (n,),
    propensities (n,) in (0, 1] or None. Returns (x float64, actions int64, rewards float64)."""
    x, _ = check_context(context, dim)
    n = x.shape[0]
    a = np.atleast_1d(np.asarray(action))
    r = np.atleast_1d(np.asarray(reward, dtype=np.float64))
    if a.shape != (n,) or r.shape != (n,):
        raise ConfigError(f"action and reward must have shape ({n},) matching context, got {a.shape} and {r.shape}.")
    if not np.issubdtype(a.dtype, np.integer) or a.min() < 0 or a.max() >= n_actions:
        raise ConfigError(f"action must hold integer indices in [0, {n_actions}).")
    if not np.isfinite(r).all():
        raise ConfigError("reward contains NaN or infinite values; drop rows without feedback.")
    if propensity is not None:
        p = np.atleast_1d(np.asarray(propensity, dtype=np.float64))
        if p.shape != (n,) or not np.all((p > 0) & (p <= 1)):
            raise ConfigError(f"propensity must be ({n},) values in (0, 1].")
    return x, a.astype(np.int64), r


def warm_start_rewards(embeddings: Any, quality: Any, lam: float, cost: Any, dim: int,
                       n_actions: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated warm-start inputs: contexts (n, dim) and offline rewards ``quality - lam * cost`` (n, m)."""
    x, _ = check_context(embeddings, dim)
    n, m = x.shape[0], n_actions
    q = np.asarray(quality, dtype=np.float64)
    if q.shape != (n, m) or not np.isfinite(q).all():
        raise ConfigError(f"quality must be a finite ({n}, {m}) matrix, got {q.shape}.")
    c = np.zeros((n, m)) if cost is None else np.broadcast_to(np.asarray(cost, dtype=np.float64), (n, m))
    return x, q - float(lam) * c


def restore_arrays(policy: Any, state: dict[str, np.ndarray], names: Sequence[str],
                   required: Sequence[str] = ()) -> None:
    """Set ``policy.<name>`` from ``state`` for each name (dtype and shape of the current value kept) and
    ``policy.rng_`` from ``state["rng_"]``; ``required`` are further keys that must be present."""
    where = f"{type(policy).__name__}.set_state"
    missing = [k for k in (*names, "rng_", *required) if k not in state]
    if missing:
        raise ConfigError(f"{where}: missing arrays {missing}.")
    for name in names:
        cur = getattr(policy, name)
        new = np.array(state[name], dtype=cur.dtype)
        if new.shape != cur.shape:
            raise ConfigError(f"{where}: {name} has shape {new.shape}, expected {cur.shape}.")
        setattr(policy, name, new)
    policy.rng_ = rng_from_state(state["rng_"])


def masked_argmax(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Row-wise argmax over allowed actions, lowest index on ties -> (n,)."""
    return np.argmax(np.where(mask, scores, -np.inf), axis=1)


class LinearPolicy(Policy):
    """Base of the linear policies: validation, ridge statistics, warm start, state, sampling.

    Subclasses set ``kind`` and implement ``_select(x (n, D) float64, mask (n, m) bool) -> (n, m)``,
    where ``D = dim + intercept``.
    """

    search_space: ClassVar[dict[str, Any]] = {"ridge": FloatParam(0.1, 10.0, log=True)}

    def __init__(self, n_actions: int, dim: int, ridge: float = 1.0, seed: int = 0,
                 intercept: bool = True, prior_mean: Any = None) -> None:
        self.n_actions = n_actions
        self.dim = dim
        self.ridge = ridge
        self.seed = seed
        self.intercept = intercept
        self.prior_mean = prior_mean
        if not isinstance(n_actions, int | np.integer) or n_actions < 1:
            raise ConfigError(f"n_actions must be a positive int, got {n_actions!r}.")
        if not isinstance(dim, int | np.integer) or dim < 1:
            raise ConfigError(f"dim must be a positive int, got {dim!r}.")
        if not np.isfinite(ridge) or ridge <= 0:
            raise ConfigError(f"ridge must be > 0, got {ridge!r}.")
        if not isinstance(seed, int | np.integer):
            raise ConfigError(f"seed must be an int, got {seed!r}.")
        self._reset_state()

    # ------------------------------------------------------------------ state
    @property
    def _d(self) -> int:
        return int(self.dim) + int(bool(self.intercept))

    def _prior(self) -> np.ndarray:
        m, d = int(self.n_actions), self._d
        if self.prior_mean is None:
            return np.zeros((m, d))
        w = np.asarray(self.prior_mean, dtype=np.float64)
        if w.shape == (m, int(self.dim)) and self.intercept:
            w = np.hstack([w, np.zeros((m, 1))])
        if w.shape != (m, d) or not np.isfinite(w).all():
            raise ConfigError(
                f"prior_mean must be a finite ({m}, {self.dim}) or ({m}, {d}) weight matrix, got {w.shape}."
            )
        return w

    def _reset_state(self) -> None:
        m, d = int(self.n_actions), self._d
        self.A_ = np.tile(np.eye(d) * float(self.ridge), (m, 1, 1))
        self.A_inv_ = np.tile(np.eye(d) / float(self.ridge), (m, 1, 1))
        self.b_ = float(self.ridge) * self._prior()
        self.counts_ = np.zeros(m, dtype=np.int64)
        self.rng_ = np.random.default_rng(int(self.seed))

    @property
    def theta_(self) -> np.ndarray:
        """(m, D) posterior-mean weights ``A_a^{-1} b_a``."""
        return np.einsum("mij,mj->mi", self.A_inv_, self.b_)

    def get_config(self) -> dict[str, Any]:
        cfg = super().get_config()
        if isinstance(cfg.get("prior_mean"), np.ndarray):
            cfg["prior_mean"] = cfg["prior_mean"].tolist()
        return cfg

    def _state_names(self) -> tuple[str, ...]:
        return ("A_", "A_inv_", "b_", "counts_")

    def get_state(self) -> dict[str, np.ndarray]:
        state = {name: np.array(getattr(self, name)) for name in self._state_names()}
        state["rng_"] = rng_to_state(self.rng_)
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        restore_arrays(self, state, self._state_names())
        self._after_state_change()

    def _after_state_change(self) -> None:
        """Hook for subclasses with caches."""

    # ------------------------------------------------------------------ helpers
    def _design(self, x: np.ndarray) -> np.ndarray:
        return np.hstack([x, np.ones((x.shape[0], 1))]) if self.intercept else x

    def sample(self, probs: Any, rng: np.random.Generator | None = None) -> np.ndarray | int:
        """Draw action(s) from ``probs`` (m,) or (n, m) with ``rng`` (default: the policy's own)."""
        return sample(probs, self.rng_ if rng is None else rng)

    # ------------------------------------------------------------------ public API
    def select(self, context: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Probabilities (m,) for a context (d,), or (n, m) for contexts (n, d); masked entries are 0."""
        x, single = check_context(context, int(self.dim))
        mk = check_mask(mask, x.shape[0], int(self.n_actions))
        p = self._select(self._design(x), mk)
        p = np.where(mk, p, 0.0)
        p = p / p.sum(axis=1, keepdims=True)
        return p[0] if single else p

    def _select(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def expected_reward(self, context: np.ndarray) -> np.ndarray:
        """Posterior-mean reward (n, m) of every action for contexts (n, d) (no exploration bonus)."""
        x, _ = check_context(np.atleast_2d(context), int(self.dim))
        return np.asarray(self._design(x) @ self.theta_.T)

    def _check_update(self, context: Any, action: Any, reward: Any,
                      propensity: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return check_update(context, action, reward, propensity, int(self.dim), int(self.n_actions))

    def update(self, context: np.ndarray, action: np.ndarray | int, reward: np.ndarray | float,
               propensity: np.ndarray | float | None = None) -> LinearPolicy:
        """Learn from contexts (d,) or (n, d), actions, rewards (n,); ``propensity`` is checked only
        (updates are on-policy: the policy learnt from its own choices)."""
        x, a, r = self._check_update(context, action, reward, propensity)
        self._update(self._design(x), a, r)
        return self

    def _update(self, x: np.ndarray, a: np.ndarray, r: np.ndarray, weight: float = 1.0) -> None:
        for i in range(x.shape[0]):
            k = int(a[i])
            xi = x[i]
            ainv = self.A_inv_[k]
            ax = ainv @ xi
            self.A_inv_[k] = ainv - weight * np.outer(ax, ax) / (1.0 + weight * xi @ ax)
            self.A_[k] += weight * np.outer(xi, xi)
            self.b_[k] += weight * r[i] * xi
            self.counts_[k] += 1
        self._after_state_change()

    def warm_start(self, embeddings: Any, quality: Any, lam: float = 0.0, cost: Any = None,
                   weight: float = 1.0) -> LinearPolicy:
        """Add offline full-information pseudo-observations: every (row, action) with reward
        ``quality - lam * cost`` and weight ``weight`` (e.g. 0.1 so online data soon dominates).

        Args:
            embeddings: (n, d) contexts (same features the policy will see online).
            quality: (n, m) quality, observed or predicted (a quality predictor's ``predict`` output).
            lam: cost weight per USD.
            cost: (n, m) or (m,) USD per call, or None.
            weight: weight of each pseudo-observation (> 0).

        Example:
            >>> from router.policies.linucb import LinUCB
            >>> pol = LinUCB(2, 1, alpha=0.0).warm_start(np.ones((20, 1)), np.tile([0.2, 0.9], (20, 1)))
            >>> pol.select(np.ones(1)).tolist()
            [0.0, 1.0]
        """
        x, r = warm_start_rewards(embeddings, quality, lam, cost, int(self.dim), int(self.n_actions))
        n, m = r.shape
        if not weight > 0:
            raise ConfigError(f"weight must be > 0, got {weight!r}.")
        xd = self._design(x)
        gram = weight * xd.T @ xd
        for k in range(m):
            self.A_[k] += gram
            self.b_[k] += weight * xd.T @ r[:, k]
            self.counts_[k] += n
        self.A_inv_ = np.asarray(np.linalg.inv(self.A_), dtype=np.float64)
        self._after_state_change()
        return self
