"""Out-of-distribution guard: shrink predictions toward each model's prior where the router cannot be trusted.

A router's predictions are trustworthy near the prompts it was trained on. For a prompt whose
nearest training neighbour (cosine distance in the router's embedding space) is farther than the
``quantile`` of the training prompts' own nearest-neighbour distances, the predictions are shrunk
toward each model's **prior**::

    w = min(1, (threshold / distance) ** sharpness)      (w = 1 inside the threshold)
    s = trust * w
    quality = s * predicted_quality + (1 - s) * prior_quality
    cost    = w * predicted_cost    + (1 - w) * prior_cost

so an unfamiliar prompt is routed like the best fixed mix at the request's trade-off rather than on
extrapolated predictions. ``flag`` tells which prompts were beyond the threshold: the service
publishes their share as a drift metric.

**Learning from rated traffic** (:meth:`OODGuard.update`). The priors start as the training means,
which can rank the models wrongly on a new task (a coding task is not an average of the training
tasks). Rated traffic re-estimates them: each model's prior quality and cost is the mean of its rated
observations, with the training mean counting as ``prior_strength`` observations. Bandit feedback
(one rated model per request) is weighted by ``1 / propensity``, so the means are those of the whole
traffic, not of the requests where that model happened to be chosen. Rated traffic also measures
``trust``: the least-squares weight of the router's own (distance-weighted) deviations from the
priors in explaining the observed quality, clipped to [0, 1] and counted against ``prior_strength``
pseudo-observations of 1. A task that *looks* familiar to the encoder but is predicted badly (the
distance cannot see it) thus gets trust near 0 and is routed on the re-estimated priors; before any
rated traffic trust is 1 and the priors are the training means.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 8)); x[:, 0] += 4          # training prompts cluster along axis 0
    >>> g = OODGuard(quantile=0.95).fit(x, quality=np.tile([0.2, 0.8], (200, 1)))
    >>> far = -x[:2]                                         # the opposite direction: unfamiliar
    >>> g.flag(x[:2]).tolist(), g.flag(far).tolist()
    ([False, False], [True, True])
    >>> np.round(g.shrink(np.array([[1.0, 0.0]]), far[:1]), 2)  # pulled to the prior [0.2, 0.8]
    array([[0.2, 0.8]])
    >>> truth = np.tile([0.9, 0.1], (300, 1))                # rated traffic: model 0 is the good one here
    >>> _ = g.update(np.tile([1.0, 0.0], (300, 1)), g.distance(-x[:1].repeat(300, 0)), truth)
    >>> np.round(g.prior_, 3).tolist()                       # (100 * 0.2 + 300 * 0.9) / 400 = 0.725
    [0.725, 0.275]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from router.base import Component
from router.errors import ConfigError, ValidationError

__all__ = ["OODGuard"]

# rows of OODGuard.stats_ (per model, sums over rated observations weighted by v = 1 / propensity;
# w is the distance weight, p the router's raw predicted quality, q the observed quality, c the cost)
_V, _VQ, _VC, _VN, _W, _WP, _WQ, _WPQ, _WW, _WWP, _WWPP = range(11)
_N_STATS = 11


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


class OODGuard(Component):
    """Nearest-neighbour distance guard with priors learnt from rated traffic (see the module docs).

    Args:
        quantile: training nearest-neighbour distance quantile beyond which a prompt is unfamiliar.
        sharpness: how fast predictions shrink past the threshold (large: at once).
        max_reference: training prompts kept as neighbours (a seeded subsample beyond this).
        prior_strength: how many rated observations the training means (and trust 1) count as.
        seed: seed of that subsample.
    """

    kind = "ood_guard"

    def __init__(self, quantile: float = 0.95, sharpness: float = 8.0, max_reference: int = 5000,
                 prior_strength: float = 100.0, seed: int = 0) -> None:
        if not 0.5 <= quantile < 1.0:
            raise ConfigError(f"OODGuard.quantile = {quantile!r} must be in [0.5, 1).")
        if sharpness <= 0:
            raise ConfigError(f"OODGuard.sharpness = {sharpness!r} must be > 0.")
        if max_reference < 2:
            raise ConfigError(f"OODGuard.max_reference = {max_reference!r} must be >= 2.")
        if not prior_strength > 0:
            raise ConfigError(f"OODGuard.prior_strength = {prior_strength!r} must be > 0 (observations).")
        self.quantile = quantile
        self.sharpness = sharpness
        self.max_reference = max_reference
        self.prior_strength = prior_strength
        self.seed = seed
        self.reference_: np.ndarray | None = None
        self.threshold_: float | None = None
        self.base_prior_: np.ndarray | None = None
        self.base_cost_: np.ndarray | None = None
        self.stats_: np.ndarray | None = None
        self.prior_: np.ndarray | None = None
        self.cost_prior_: np.ndarray | None = None
        self.trust_: float = 1.0

    # ------------------------------------------------------------------ fitting
    def fit(self, embeddings: Any, quality: Any, cost: Any = None) -> OODGuard:
        """Fit on training embeddings (n, d), their quality (n, m) and optionally cost (n, m) in USD
        (the priors are the column means; without cost, predicted costs are left alone)."""
        x = np.asarray(embeddings, dtype=np.float32)
        q = np.asarray(quality, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise ConfigError(f"OODGuard.fit needs (n >= 2, d) embeddings, got shape {x.shape}.")
        if q.ndim != 2 or q.shape[0] != x.shape[0]:
            raise ConfigError(f"OODGuard.fit: quality must be (n, m) with n = {x.shape[0]}, got {q.shape}.")
        if cost is not None and np.shape(cost) != q.shape:
            raise ConfigError(f"OODGuard.fit: cost must have the quality's shape {q.shape}, got {np.shape(cost)}.")
        ref = _unit(x)
        if ref.shape[0] > self.max_reference:
            pick = np.random.default_rng(self.seed).choice(ref.shape[0], self.max_reference, replace=False)
            ref = ref[np.sort(pick)]
        self.reference_ = ref
        self.threshold_ = float(np.quantile(self._nearest(ref, exclude_self=True), self.quantile))
        self.base_prior_ = q.mean(axis=0)
        self.base_cost_ = None if cost is None else np.asarray(cost, dtype=np.float64).mean(axis=0)
        self.stats_ = np.zeros((_N_STATS, q.shape[1]))
        self._refresh()
        return self

    # ------------------------------------------------------------------ applying
    def distance(self, embeddings: Any) -> np.ndarray:
        """(n,) cosine distance of each embedding to its nearest training prompt."""
        self._check_fitted("reference_")
        return self._nearest(_unit(np.atleast_2d(embeddings)), exclude_self=False)

    def flag(self, embeddings: Any) -> np.ndarray:
        """(n,) True where the prompt is beyond the training-distance threshold."""
        return self.distance(embeddings) > float(self.threshold_)  # type: ignore[arg-type]

    def weights(self, distance: np.ndarray) -> np.ndarray:
        """(n,) distance weight of the router's own prediction (1 inside the threshold)."""
        thr = float(self.threshold_)  # type: ignore[arg-type]
        d = np.maximum(np.asarray(distance, dtype=np.float64), 1e-12)
        return np.where(d > thr, np.minimum(1.0, (thr / d) ** self.sharpness), 1.0)

    def shrink(self, quality: np.ndarray, embeddings: Any, distance: np.ndarray | None = None) -> np.ndarray:
        """Quality (n, m) shrunk toward the prior where the prompts are unfamiliar or trust is low."""
        self._check_fitted("prior_")
        d = self.distance(embeddings) if distance is None else distance
        s = self.trust_ * self.weights(d)[:, None]
        return s * np.asarray(quality, dtype=np.float64) + (1.0 - s) * self.prior_[None, :]  # type: ignore[index]

    def apply(self, quality: np.ndarray, cost: np.ndarray, distance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted (quality, cost), each (n, m), shrunk toward the priors for prompts at ``distance`` (n,)."""
        self._check_fitted("prior_")
        w = self.weights(distance)[:, None]
        prior, cost_prior, trust = self.prior_, self.cost_prior_, self.trust_
        s = trust * w
        q = s * np.asarray(quality, dtype=np.float64) + (1.0 - s) * prior[None, :]  # type: ignore[index]
        c = np.asarray(cost, dtype=np.float64)
        if cost_prior is not None:
            c = w * c + (1.0 - w) * cost_prior[None, :]
        return q, c

    # ------------------------------------------------------------------ learning from rated traffic
    def update(self, predicted: Any, distance: Any, quality: Any, cost: Any = None, *, chosen: Any = None,
               propensity: Any = None) -> OODGuard:
        """Learn the priors and trust from rated traffic; returns self.

        Args:
            predicted: (n, m) the router's own quality predictions for the rated prompts (before this guard).
            distance: (n,) their :meth:`distance`.
            quality: full information: (n, m) observed quality of every model; bandit feedback
                (``chosen`` given): (n,) observed quality of the chosen model. In [0, 1].
            cost: observed USD, (n, m) or (n,) like ``quality``; None leaves the cost priors alone.
            chosen: (n,) index of the model each rated request used (bandit feedback), or None.
            propensity: (n,) probability the policy gave that choice (default 1): observations are
                weighted by its inverse.
        """
        self._check_fitted("stats_")
        m = self.stats_.shape[1]  # type: ignore[union-attr]
        p = np.asarray(predicted, dtype=np.float64)
        d = np.asarray(distance, dtype=np.float64).reshape(-1)
        n = d.shape[0]
        if p.shape != (n, m):
            raise ValidationError(f"OODGuard.update: predicted must be (n, m) = ({n}, {m}), got {p.shape}.")
        q = np.asarray(quality, dtype=np.float64)
        c = None if cost is None else np.asarray(cost, dtype=np.float64)
        if chosen is None:
            if q.shape != (n, m) or (c is not None and c.shape != (n, m)):
                raise ValidationError(f"OODGuard.update: full-information quality (and cost) must be ({n}, {m}), "
                                      f"got {q.shape}{'' if c is None else f' and {c.shape}'}; for bandit "
                                      "feedback pass chosen= with one value per request.")
            rows, cols = np.repeat(np.arange(n), m), np.tile(np.arange(m), n)
            q, c = q.ravel(), None if c is None else c.ravel()
        else:
            cols = np.asarray(chosen).reshape(-1)
            rows = np.arange(n)
            if cols.shape != (n,) or q.shape != (n,) or (c is not None and c.shape != (n,)):
                raise ValidationError(f"OODGuard.update: with chosen=, chosen, quality and cost must be ({n},).")
            if not np.issubdtype(cols.dtype, np.integer) or (n and (cols.min() < 0 or cols.max() >= m)):
                raise ValidationError(f"OODGuard.update: chosen must hold model indices in [0, {m - 1}].")
        prop = np.ones(n) if propensity is None else np.asarray(propensity, dtype=np.float64).reshape(-1)
        if prop.shape != (n,) or not ((prop > 0) & (prop <= 1)).all():
            raise ValidationError(f"OODGuard.update: propensity must be ({n},) values in (0, 1].")
        if not (np.isfinite(q).all() and ((q >= 0) & (q <= 1)).all()):
            raise ValidationError("OODGuard.update: observed quality must be finite and in [0, 1].")
        if c is not None and not (np.isfinite(c).all() and (c >= 0).all()):
            raise ValidationError("OODGuard.update: observed cost must be finite and >= 0 USD.")
        if not np.isfinite(p).all() or not np.isfinite(d).all():
            raise ValidationError("OODGuard.update: predicted and distance must be finite.")
        self._accumulate(cols, p[rows, cols], self.weights(d)[rows], q, c, 1.0 / prop[rows])
        return self

    def _accumulate(self, j: np.ndarray, p: np.ndarray, w: np.ndarray, q: np.ndarray, c: np.ndarray | None,
                    v: np.ndarray) -> None:
        st = self.stats_.copy()  # type: ignore[union-attr]
        vw, vww = v * w, v * w * w
        for row, val in ((_V, v), (_VQ, v * q), (_W, vw), (_WP, vw * p), (_WQ, vw * q), (_WPQ, vw * p * q),
                         (_WW, vww), (_WWP, vww * p), (_WWPP, vww * p * p)):
            np.add.at(st[row], j, val)
        if c is not None:
            np.add.at(st[_VC], j, v * c)
            np.add.at(st[_VN], j, v)
        self.stats_ = st
        self._refresh()

    def _refresh(self) -> None:
        """Priors and trust from the training means and the rated observations so far."""
        st, k = self.stats_, float(self.prior_strength)
        assert st is not None and self.base_prior_ is not None
        prior = (k * self.base_prior_ + st[_VQ]) / (k + st[_V])
        cost_prior = None
        if self.base_cost_ is not None:
            cost_prior = (k * self.base_cost_ + st[_VC]) / (k + st[_VN])
        # least squares of (q - prior) on w * (p - prior) over all rated (request, model) pairs
        sxy = np.sum(st[_WPQ] - prior * st[_WP] - prior * st[_WQ] + prior ** 2 * st[_W])
        sxx = np.sum(st[_WWPP] - 2 * prior * st[_WWP] + prior ** 2 * st[_WW])
        n_obs = float(st[_V].sum())
        fitted = float(np.clip(sxy / sxx, 0.0, 1.0)) if sxx > 1e-12 else 1.0
        self.prior_, self.cost_prior_ = prior, cost_prior
        self.trust_ = (n_obs * fitted + k) / (n_obs + k)

    @property
    def n_rated_(self) -> float:
        """Rated observations learnt from so far (weighted by 1 / propensity)."""
        return 0.0 if self.stats_ is None else float(self.stats_[_V].sum())

    # ------------------------------------------------------------------ internals and persistence
    def _nearest(self, x: np.ndarray, *, exclude_self: bool) -> np.ndarray:
        ref = self.reference_
        assert ref is not None
        out = np.empty(x.shape[0], dtype=np.float64)
        for s in range(0, x.shape[0], 1024):
            sim = x[s:s + 1024] @ ref.T
            if exclude_self:
                idx = np.arange(s, min(s + 1024, x.shape[0]))
                sim[idx - s, idx] = -np.inf
            out[s:s + 1024] = 1.0 - sim.max(axis=1)
        return np.maximum(out, 0.0)

    def get_state(self) -> dict[str, np.ndarray]:
        self._check_fitted("reference_")
        state = {"reference": self.reference_, "threshold": np.array([self.threshold_]),
                 "base_prior": self.base_prior_, "stats": self.stats_, "prior": self.prior_}
        if self.base_cost_ is not None:
            state["base_cost"] = self.base_cost_
        return state  # type: ignore[return-value]

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self.reference_ = np.asarray(state["reference"], dtype=np.float32)
        self.threshold_ = float(np.asarray(state["threshold"]).ravel()[0])
        # guards saved before rated traffic was learnt hold only "prior" (the training means)
        self.base_prior_ = np.asarray(state.get("base_prior", state["prior"]), dtype=np.float64)
        self.base_cost_ = np.asarray(state["base_cost"], dtype=np.float64) if "base_cost" in state else None
        stats = state.get("stats")
        self.stats_ = (np.zeros((_N_STATS, self.base_prior_.shape[0])) if stats is None
                       else np.asarray(stats, dtype=np.float64))
        self._refresh()
