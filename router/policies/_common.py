"""Shared plumbing of the bandit policies: input checks, seeded randomness, ridge statistics.

Every policy here keeps, per action ``a``, the ridge statistics of a linear reward model on the
context ``x`` (with a constant 1 appended when ``intercept=True``)::

    A_a = ridge * I + sum_t w_t x_t x_t^T        b_a = ridge * prior_a + sum_t w_t r_t x_t

so ``theta_a = A_a^{-1} b_a`` starts at the prior mean (zero by default). ``A_a^{-1}`` is never
re-inverted online: the ``k`` rows of a batch that went to action ``a`` (stacked in ``X``, weight
``w``) update it by the Woodbury identity, a rank-``k`` correction (Sherman--Morrison when ``k = 1``)::

    S = I / w + X A^{-1} X^T  (k, k)     L = chol(S)     W = L^{-1} X A^{-1}  (k, D)
    A^{-1} <- A^{-1} - W^T W

which costs ``O(k D^2)`` matrix products per touched action instead of ``O(D^3)``, and ``W^T W`` is
symmetric by construction, so the inverse stays symmetric over millions of updates. ``theta_a`` is
cached and refreshed only for the actions a batch touched. Selection needs, per row ``x`` and action
``a``, the mean ``x . theta_a`` and the variance ``x^T A_a^{-1} x`` (:func:`quad_forms`, one batched
matrix product per chunk of rows). :meth:`LinearPolicy.warm_start` adds weighted
pseudo-observations from full-information offline data (a quality matrix, e.g. a quality
predictor's output), so a policy starts from what the offline predictors know.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from router._numeric import pad_rows, rows_matmul
from router.base import Policy
from router.errors import ConfigError
from router.registry import FloatParam

__all__ = [
    "LinearPolicy", "check_context", "check_mask", "quad_forms", "rng_from_state", "rng_to_state", "sample",
    "woodbury_downdate",
]

_MASK64 = (1 << 64) - 1
#: rows per batched product in :func:`quad_forms` (bounds its (m, rows, D) temporary to ~40 MB at D=385, m=11)
_QUAD_CHUNK = 1024
#: an action's Gram matrix ``A_a`` takes in its pending update rows once this many have gathered (or on access)
_GRAM_FLUSH = 256


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


def quad_forms(x: np.ndarray, a_inv: np.ndarray) -> np.ndarray:
    """``x_i^T M_a x_i`` for every row ``x_i`` of x (n, D) and every symmetric M_a of a_inv (m, D, D) -> (n, m).

    Example:
        >>> quad_forms(np.array([[1.0, 2.0]]), np.stack([np.eye(2), 2 * np.eye(2)])).tolist()
        [[5.0, 10.0]]
    """
    n, m = x.shape[0], a_inv.shape[0]
    out = np.empty((n, m))
    for s in range(0, n, _QUAD_CHUNK):
        xs = x[s : s + _QUAD_CHUNK]
        xa = np.matmul(xs, a_inv)  # (m, rows, D); x M = (M x)^T since M is symmetric
        out[s : s + _QUAD_CHUNK] = np.einsum("mnd,nd->nm", xa, xs)
    return out


def subtract_gram(c: np.ndarray, w: np.ndarray, sign: float = -1.0) -> None:
    """In place: ``c <- c + sign * w^T w`` for c (D, D) float64 and w (k, D), without a (D, D) temporary.

    Example:
        >>> c = np.eye(2)
        >>> subtract_gram(c, np.array([[1.0, 1.0]]), sign=1.0)
        >>> c.tolist()
        [[2.0, 1.0], [1.0, 2.0]]
    """
    if c.dtype == np.float64 and c.flags.c_contiguous:
        from scipy.linalg import blas

        # c.T is Fortran-ordered, so BLAS updates it in place: c^T + sign w^T w, and w^T w is symmetric
        out = blas.dgemm(sign, w, w, beta=1.0, c=c.T, trans_a=1, overwrite_c=1)
        if np.shares_memory(out, c):
            return
        c[...] = out.T
        return
    c += sign * (w.T @ w)


def woodbury_downdate(a_inv: np.ndarray, x: np.ndarray, weight: float = 1.0) -> None:
    """In place: ``a_inv <- (a_inv^{-1} + weight * x^T x)^{-1}`` for a_inv (D, D) symmetric positive
    definite and rows x (k, D), by the Woodbury identity (see the module docs); O(k D^2).

    Example:
        >>> a_inv = np.eye(2)
        >>> woodbury_downdate(a_inv, np.array([[1.0, 0.0]]))
        >>> a_inv.round(12).tolist()
        [[0.5, 0.0], [0.0, 1.0]]
    """
    k = x.shape[0]
    u = x @ a_inv  # (k, D) = (a_inv x^T)^T
    if k == 1:  # Sherman--Morrison
        w = u / np.sqrt(1.0 / weight + float(u[0] @ x[0]))
    else:
        from scipy.linalg.lapack import dpotrf, dtrtrs

        s = u @ x.T  # (k, k)
        s.flat[:: k + 1] += 1.0 / weight
        chol, info = dpotrf(s, lower=1, clean=1)
        w, info2 = dtrtrs(chol, u, lower=1)
        if info or info2:  # cannot happen for a positive definite a_inv; say so instead of corrupting it
            raise ConfigError("the ridge statistics lost positive definiteness; increase ridge.")
    subtract_gram(a_inv, w)


def masked_argmax(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Row-wise argmax over allowed actions, lowest index on ties -> (n,)."""
    return np.argmax(np.where(mask, scores, -np.inf), axis=1)


class LinearPolicy(Policy):
    """Base of the linear policies: validation, ridge statistics, warm start, state, sampling.

    Subclasses set ``kind`` and implement ``_select(x (n, D) float64, mask (n, m) bool) -> (n, m)``,
    where ``D = r + intercept`` and ``r`` is ``dim``, or ``context_rank`` when the context is reduced.

    **Reduced context.** With ``context_rank=r < dim`` every context is first projected onto ``r``
    directions, ``z = x @ basis_`` (``basis_`` (dim, r) orthonormal), and the policy learns on ``z``:
    the work per request falls from ``O(m dim^2)`` to ``O(m r^2)``. ``basis_`` starts as a random
    orthonormal basis drawn from ``seed``; :meth:`fit_basis` replaces it, before any learning, with
    the principal directions of unlabelled contexts (e.g. the prompts to be replayed or served), which
    keep far more of what tells prompts apart. ``prior_mean`` is then given in the reduced
    coordinates, (m, r) or (m, r + 1). A rank >= ``dim`` keeps the full context.
    """

    search_space: ClassVar[dict[str, Any]] = {"ridge": FloatParam(0.1, 10.0, log=True)}
    #: (dim, context_rank) orthonormal projection of the contexts, or None for the full context
    basis_: np.ndarray | None

    def __init__(self, n_actions: int, dim: int, ridge: float = 1.0, seed: int = 0,
                 intercept: bool = True, prior_mean: Any = None, context_rank: int | None = None) -> None:
        self.n_actions = n_actions
        self.dim = dim
        self.ridge = ridge
        self.seed = seed
        self.intercept = intercept
        self.prior_mean = prior_mean
        self.context_rank = context_rank
        if context_rank is not None and (not isinstance(context_rank, int | np.integer) or context_rank < 1):
            raise ConfigError(f"context_rank must be a positive int or None, got {context_rank!r}.")
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
    def _rank(self) -> int | None:
        """Width of the reduced context, or None when the policy works on the full context."""
        r = self.context_rank
        return None if r is None or int(r) >= int(self.dim) else int(r)

    @property
    def _d(self) -> int:
        return (self._rank or int(self.dim)) + int(bool(self.intercept))

    def _prior(self) -> np.ndarray:
        m, d = int(self.n_actions), self._d
        if self.prior_mean is None:
            return np.zeros((m, d))
        w = np.asarray(self.prior_mean, dtype=np.float64)
        width = d - int(bool(self.intercept))
        if w.shape == (m, width) and self.intercept:
            w = np.hstack([w, np.zeros((m, 1))])
        if w.shape != (m, d) or not np.isfinite(w).all():
            raise ConfigError(
                f"prior_mean must be a finite ({m}, {width}) or ({m}, {d}) weight matrix, got {w.shape}"
                + (" (in the reduced coordinates of context_rank)." if self._rank else ".")
            )
        return w

    def _random_basis(self) -> np.ndarray:
        """A (dim, rank) orthonormal basis from its own stream of ``seed`` (``rng_`` is not touched)."""
        g = np.random.default_rng([int(self.seed), 1])
        q, r = np.linalg.qr(g.standard_normal((int(self.dim), int(self._rank or 0))))
        return np.asarray(q * np.sign(np.diag(r)))

    def fit_basis(self, contexts: Any) -> LinearPolicy:
        """Reduce the context to its ``context_rank`` principal directions, learnt from unlabelled
        contexts (n, dim) -- only before the policy has learnt anything (updates or a warm start).

        Example:
            >>> from router.policies.linucb import LinUCB
            >>> x = np.random.default_rng(0).normal(size=(50, 3)) * [3.0, 1.0, 0.1]
            >>> LinUCB(2, 3, context_rank=1).fit_basis(x).basis_.round(1).ravel().tolist()
            [1.0, 0.0, 0.0]
        """
        if self._rank is None:
            raise ConfigError(f"fit_basis needs context_rank < dim ({self.dim}); got context_rank="
                              f"{self.context_rank!r}.")
        if int(np.asarray(self.counts_).sum()) > 0:
            raise ConfigError("fit_basis must come before any update or warm start: the learnt statistics "
                              "live in the old basis. Build a new policy, fit its basis, then train it.")
        x, _ = check_context(np.atleast_2d(contexts), int(self.dim))
        if x.shape[0] < 2:
            raise ConfigError(f"fit_basis needs at least 2 contexts, got {x.shape[0]}.")
        xc = x - x.mean(axis=0)
        _, evecs = np.linalg.eigh(xc.T @ xc)  # ascending eigenvalues
        top = evecs[:, ::-1][:, : self._rank]
        signs = np.sign(top[np.argmax(np.abs(top), axis=0), np.arange(top.shape[1])])
        self.basis_ = np.ascontiguousarray(top * signs)  # the largest entry of each direction is positive
        return self

    @property
    def A_(self) -> np.ndarray:
        """(m, D, D) Gram matrices ``A_a``. Updates only need ``A_a^{-1}``; their rows are folded into
        ``A_a`` in blocks of :data:`_GRAM_FLUSH` and whenever ``A_`` is read."""
        for k in np.flatnonzero(self._n_pending):
            self._flush_gram(int(k))
        return self._gram

    @A_.setter
    def A_(self, value: np.ndarray) -> None:
        self._gram = np.ascontiguousarray(value, dtype=np.float64)
        self._pending: list[list[np.ndarray]] = [[] for _ in range(int(self.n_actions))]
        self._n_pending = np.zeros(int(self.n_actions), dtype=np.int64)

    def _flush_gram(self, k: int) -> None:
        rows = np.concatenate(self._pending[k])
        subtract_gram(self._gram[k], rows, sign=1.0)
        self._pending[k] = []
        self._n_pending[k] = 0

    def _reset_state(self) -> None:
        m, d = int(self.n_actions), self._d
        self.A_ = np.tile(np.eye(d) * float(self.ridge), (m, 1, 1))
        self.A_inv_ = np.tile(np.eye(d) / float(self.ridge), (m, 1, 1))
        self.b_ = float(self.ridge) * self._prior()
        self.counts_ = np.zeros(m, dtype=np.int64)
        self.rng_ = np.random.default_rng(int(self.seed))
        self.basis_ = self._random_basis() if self._rank else None
        self._refresh_theta()

    @property
    def theta_(self) -> np.ndarray:
        """(m, D) posterior-mean weights ``A_a^{-1} b_a`` (cached; a copy)."""
        return self._theta.copy()

    def _refresh_theta(self, actions: Any = None) -> None:
        """Recompute the cached ``theta_a`` for ``actions`` (default: all)."""
        if actions is None:
            self._theta = np.empty_like(self.b_)
            actions = range(int(self.n_actions))
        for k in actions:  # the same product per action on every path, so reloaded policies match bit for bit
            self._theta[k] = self.A_inv_[k] @ self.b_[k]

    def get_config(self) -> dict[str, Any]:
        cfg = super().get_config()
        if isinstance(cfg.get("prior_mean"), np.ndarray):
            cfg["prior_mean"] = cfg["prior_mean"].tolist()
        return cfg

    def _state_names(self) -> tuple[str, ...]:
        return ("A_", "A_inv_", "b_", "counts_") + (("basis_",) if self._rank else ())

    def get_state(self) -> dict[str, np.ndarray]:
        state = {name: np.array(getattr(self, name)) for name in self._state_names()}
        state["rng_"] = rng_to_state(self.rng_)
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        restore_arrays(self, state, self._state_names())
        self._refresh_theta()

    # ------------------------------------------------------------------ helpers
    def _design(self, x: np.ndarray) -> np.ndarray:
        """Contexts (n, dim) -> the rows the linear models see (n, D): reduced, then a constant 1."""
        if self.basis_ is not None:
            x = (pad_rows(x) @ self.basis_)[: x.shape[0]]  # batch-invariant (router._numeric.pad_rows)
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
        return np.asarray(rows_matmul(self._design(x), self._theta.T))

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
        """One Woodbury correction per action the batch touched (module docs); rows (n, D)."""
        touched = np.unique(a)
        for k in touched:
            rows = a == k
            xk = x[rows]
            woodbury_downdate(self.A_inv_[k], xk, weight)
            self._pending[k].append(xk * np.sqrt(weight))
            self._n_pending[k] += xk.shape[0]
            if self._n_pending[k] >= _GRAM_FLUSH:
                self._flush_gram(int(k))
            self.b_[k] += weight * (r[rows] @ xk)
            self.counts_[k] += xk.shape[0]
        self._refresh_theta(touched)

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
        self._refresh_theta()
        return self
