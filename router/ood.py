"""Out-of-distribution guard: shrink quality predictions toward each model's prior far from the training data.

A router's quality predictor is trustworthy near the prompts it was trained on. For a prompt whose
nearest training neighbour (cosine distance in the router's embedding space) is farther than the
``quantile`` of the training prompts' own nearest-neighbour distances, the predictions are shrunk
toward the **prior** -- each model's mean training quality::

    w = min(1, (threshold / distance) ** sharpness)      (w = 1 inside the threshold)
    quality = w * predicted + (1 - w) * prior

so an unfamiliar prompt is routed like the best fixed model at the request's trade-off (a good
fixed mix) rather than on extrapolated predictions. ``flag`` tells which prompts were beyond the
threshold: the service publishes their share as a drift metric.

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
"""

from __future__ import annotations

from typing import Any

import numpy as np

from router.base import Component
from router.errors import ConfigError

__all__ = ["OODGuard"]


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


class OODGuard(Component):
    """Nearest-neighbour distance guard (see the module docs).

    Args:
        quantile: training nearest-neighbour distance quantile beyond which a prompt is unfamiliar.
        sharpness: how fast predictions shrink past the threshold (large: at once).
        max_reference: training prompts kept as neighbours (a seeded subsample beyond this).
        seed: seed of that subsample.
    """

    kind = "ood_guard"

    def __init__(self, quantile: float = 0.95, sharpness: float = 8.0, max_reference: int = 5000,
                 seed: int = 0) -> None:
        if not 0.5 <= quantile < 1.0:
            raise ConfigError(f"OODGuard.quantile = {quantile!r} must be in [0.5, 1).")
        if sharpness <= 0:
            raise ConfigError(f"OODGuard.sharpness = {sharpness!r} must be > 0.")
        if max_reference < 2:
            raise ConfigError(f"OODGuard.max_reference = {max_reference!r} must be >= 2.")
        self.quantile = quantile
        self.sharpness = sharpness
        self.max_reference = max_reference
        self.seed = seed
        self.reference_: np.ndarray | None = None
        self.threshold_: float | None = None
        self.prior_: np.ndarray | None = None

    def fit(self, embeddings: Any, quality: Any) -> OODGuard:
        """Fit on training embeddings (n, d) and their quality (n, m) (the prior is its column mean)."""
        x = np.asarray(embeddings, dtype=np.float32)
        q = np.asarray(quality, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise ConfigError(f"OODGuard.fit needs (n >= 2, d) embeddings, got shape {x.shape}.")
        if q.ndim != 2 or q.shape[0] != x.shape[0]:
            raise ConfigError(f"OODGuard.fit: quality must be (n, m) with n = {x.shape[0]}, got {q.shape}.")
        ref = _unit(x)
        if ref.shape[0] > self.max_reference:
            pick = np.random.default_rng(self.seed).choice(ref.shape[0], self.max_reference, replace=False)
            ref = ref[np.sort(pick)]
        self.reference_ = ref
        self.threshold_ = float(np.quantile(self._nearest(ref, exclude_self=True), self.quantile))
        self.prior_ = q.mean(axis=0)
        return self

    def distance(self, embeddings: Any) -> np.ndarray:
        """(n,) cosine distance of each embedding to its nearest training prompt."""
        self._check_fitted("reference_")
        return self._nearest(_unit(np.atleast_2d(embeddings)), exclude_self=False)

    def flag(self, embeddings: Any) -> np.ndarray:
        """(n,) True where the prompt is beyond the training-distance threshold."""
        return self.distance(embeddings) > float(self.threshold_)  # type: ignore[arg-type]

    def weights(self, distance: np.ndarray) -> np.ndarray:
        """(n,) weight of the router's own prediction (1 inside the threshold)."""
        thr = float(self.threshold_)  # type: ignore[arg-type]
        d = np.maximum(np.asarray(distance, dtype=np.float64), 1e-12)
        return np.where(d > thr, np.minimum(1.0, (thr / d) ** self.sharpness), 1.0)

    def shrink(self, quality: np.ndarray, embeddings: Any, distance: np.ndarray | None = None) -> np.ndarray:
        """Quality (n, m) shrunk toward the prior where the prompts are unfamiliar."""
        self._check_fitted("prior_")
        d = self.distance(embeddings) if distance is None else distance
        w = self.weights(d)[:, None]
        return w * np.asarray(quality, dtype=np.float64) + (1.0 - w) * self.prior_[None, :]  # type: ignore[index]

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
        return {"reference": self.reference_, "threshold": np.array([self.threshold_]),  # type: ignore[dict-item]
                "prior": self.prior_}  # type: ignore[dict-item]

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self.reference_ = np.asarray(state["reference"], dtype=np.float32)
        self.threshold_ = float(np.asarray(state["threshold"]).ravel()[0])
        self.prior_ = np.asarray(state["prior"], dtype=np.float64)
