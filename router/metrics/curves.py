"""Cost-quality curves: points, the non-decreasing convex hull, AIQ, savings, the oracle.

A router evaluated offline is a *curve*: for each of ``S`` settings (e.g. lambda values) it picks
one model per prompt. ``choices`` is an int array (S, n) of indices into ``outcomes.models``.
Each setting becomes one point (mean cost per call in USD, mean quality). Mixing two settings at
random reaches every point on the segment between them, so what a router can deliver is the
*non-decreasing convex hull* of its points (RouterBench): the upper concave envelope, cut at its
highest-quality point.

Conventions (all in linear cost, as RouterBench does):

* The hull as a function of cost, ``H(c)``, is 0 before its first (cheapest) point, linear
  between hull points, and flat after its last point.
* **AIQ** (ours): the mean of ``H`` over the cost span of the single models on the evaluated
  prompts, ``[cheapest model's mean cost, most expensive model's mean cost]``. It does not change
  with the set of routers compared.
* **RouterBench AIQ**: RouterBench's ``evaluation/AIQ.py`` extends each hull flat to the largest
  cost among the hulls compared and divides the area from the hull's first point by that largest
  cost (area before the first point counts as zero). We report it with the router evaluated alone
  (largest cost = the router's own last hull point) unless ``max_cost`` is given.
* The **zero router** is the hull of the single models' points (random mixing of fixed models).
* The **oracle** takes the best model per prompt, the cheapest among ties.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from router.errors import ConfigError, ValidationError

if TYPE_CHECKING:
    from router.data.schema import Outcomes

__all__ = [
    "Hull",
    "aiq",
    "aiq_routerbench",
    "budget_fidelity",
    "check_choices",
    "cost_at_quality",
    "model_points",
    "non_decreasing_hull",
    "oracle_gap_share",
    "oracle_point",
    "points",
    "routing_shares",
    "savings_at_quality",
    "spend_per_1k",
]


@dataclass(frozen=True)
class Hull:
    """A non-decreasing concave hull in (cost, quality).

    Attributes:
        cost: (h,) strictly increasing mean costs of the hull points.
        quality: (h,) non-decreasing mean qualities of the hull points.
    """

    cost: np.ndarray
    quality: np.ndarray

    def __call__(self, c: Any) -> np.ndarray:
        """Hull quality at cost(s) ``c``: 0 before the first point, flat after the last."""
        c = np.asarray(c, dtype=np.float64)
        val = np.interp(c, self.cost, self.quality)
        return np.where(c < self.cost[0], 0.0, val)

    @property
    def max_quality(self) -> float:
        return float(self.quality[-1])

    def as_array(self) -> np.ndarray:
        """(h, 2) array of (cost, quality)."""
        return np.stack([self.cost, self.quality], axis=1)


# --------------------------------------------------------------------------- validation
def check_choices(choices: Any, n_prompts: int, n_models: int) -> np.ndarray:
    """Validate a (S, n) int array of model indices; a (n,) array is read as one setting.

    Example:
        >>> check_choices([0, 1, 1], 3, 2).shape
        (1, 3)
    """
    arr = np.asarray(choices)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != n_prompts:
        raise ValidationError(
            f"choices must have shape (n_settings, n_prompts) with n_prompts={n_prompts}, got {arr.shape}."
        )
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValidationError("choices must hold integer model indices into outcomes.models.")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= n_models):
        raise ValidationError(
            f"choices hold model indices outside [0, {n_models - 1}] (got {arr.min()}..{arr.max()}); "
            "indices refer to outcomes.models."
        )
    return arr


def _check_probs(probs: Any, n_prompts: int, n_models: int) -> np.ndarray:
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (n_prompts, n_models):
        raise ValidationError(
            f"probs must have shape (n_settings, n_prompts, n_models) = (S, {n_prompts}, {n_models}), got {arr.shape}."
        )
    if (arr < -1e-9).any() or not np.allclose(arr.sum(axis=-1), 1.0, atol=1e-6):
        raise ValidationError("probs must be non-negative and sum to 1 over models for every prompt and setting.")
    return arr


# --------------------------------------------------------------------------- points
def points(outcomes: Outcomes, choices: Any = None, probs: Any = None) -> np.ndarray:
    """Mean cost and mean quality per setting.

    Args:
        outcomes: full-information outcomes with n prompts and m models.
        choices: (S, n) int model indices, or (n,) for one setting.
        probs: (S, n, m) routing probabilities; when given, expected values are used instead of ``choices``.

    Returns:
        (S, 2) array of (mean cost in USD per call, mean quality).

    Example:
        >>> from router.data.schema import Outcomes
        >>> o = Outcomes(prompt_ids=["a", "b"], prompts=["x", "y"], models=["s", "b"],
        ...              quality=[[0, 1], [1, 1]], cost=[[1.0, 3.0], [1.0, 3.0]])
        >>> points(o, [[0, 0], [1, 0], [1, 1]]).tolist()
        [[1.0, 0.5], [2.0, 1.0], [3.0, 1.0]]
    """
    n, m = outcomes.quality.shape
    if probs is not None:
        p = _check_probs(probs, n, m)
        q = np.einsum("snm,nm->s", p, outcomes.quality) / n
        c = np.einsum("snm,nm->s", p, outcomes.cost) / n
        return np.stack([c, q], axis=1)
    if choices is None:
        raise ConfigError("points() needs choices (S, n) or probs (S, n, m).")
    ch = check_choices(choices, n, m)
    rows = np.arange(n)
    return np.stack([outcomes.cost[rows, ch].mean(axis=1), outcomes.quality[rows, ch].mean(axis=1)], axis=1)


def model_points(outcomes: Outcomes) -> np.ndarray:
    """(m, 2) mean cost and mean quality of always using each single model.

    Example:
        >>> from router.data.schema import Outcomes
        >>> o = Outcomes(prompt_ids=["a"], prompts=["x"], models=["s", "b"], quality=[[0, 1]], cost=[[1.0, 3.0]])
        >>> model_points(o).tolist()
        [[1.0, 0.0], [3.0, 1.0]]
    """
    return np.stack([outcomes.cost.mean(axis=0), outcomes.quality.mean(axis=0)], axis=1)


def oracle_point(quality: np.ndarray, cost: np.ndarray) -> tuple[float, float]:
    """(mean cost, mean quality) of the oracle: best model per prompt, cheapest among ties.

    Args:
        quality: (n, m) quality.
        cost: (n, m) cost.

    Example:
        >>> oracle_point(np.array([[0.0, 1.0], [1.0, 1.0]]), np.array([[1.0, 3.0], [1.0, 3.0]]))
        (2.0, 1.0)
    """
    c, q = _oracle_per_prompt(np.asarray(quality, float), np.asarray(cost, float))
    return float(c.mean()), float(q.mean())


def _oracle_per_prompt(quality: np.ndarray, cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    best = quality.max(axis=1, keepdims=True)
    cand = np.where(np.isclose(quality, best), cost, np.inf)
    pick = cand.argmin(axis=1)
    rows = np.arange(quality.shape[0])
    return cost[rows, pick], quality[rows, pick]


def routing_shares(choices: Any, n_models: int) -> np.ndarray:
    """(S, m) share of prompts routed to each model per setting.

    Example:
        >>> routing_shares([[0, 1, 1, 1]], 2).tolist()
        [[0.25, 0.75]]
    """
    ch = np.asarray(choices, dtype=np.int64)
    if ch.ndim == 1:
        ch = ch[None]
    out = np.zeros((ch.shape[0], n_models))
    for s in range(ch.shape[0]):
        out[s] = np.bincount(ch[s], minlength=n_models)[:n_models] / max(ch.shape[1], 1)
    return out


# --------------------------------------------------------------------------- hull
def non_decreasing_hull(pts: Any) -> Hull:
    """The non-decreasing concave hull of (cost, quality) points (RouterBench's "NDCH").

    Upper convex hull by Andrew's monotone chain, kept from the cheapest point up to the first
    point of highest quality. Points under the hull are dropped; collinear points too.

    Args:
        pts: (k, 2) array of (cost, quality).

    Example (three points; hand-computed):
        (1, 0.5), (2, 0.6), (3, 0.9): the line from (1, 0.5) to (3, 0.9) gives 0.7 at cost 2,
        above 0.6, so the middle point is dropped.

        >>> h = non_decreasing_hull([[1, 0.5], [2, 0.6], [3, 0.9]])
        >>> h.cost.tolist(), h.quality.tolist()
        ([1.0, 3.0], [0.5, 0.9])
    """
    arr = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    arr = arr[np.isfinite(arr).all(axis=1)]
    if arr.shape[0] == 0:
        raise ValidationError("non_decreasing_hull needs at least one finite (cost, quality) point.")
    order = np.lexsort((-arr[:, 1], arr[:, 0]))  # cost ascending, quality descending on ties
    arr = arr[order]
    keep = np.ones(arr.shape[0], dtype=bool)
    keep[1:] = arr[1:, 0] != arr[:-1, 0]  # one point per cost: the best
    arr = arr[keep]
    hull: list[np.ndarray] = []
    for p in arr:
        while len(hull) >= 2:
            o, a = hull[-2], hull[-1]
            cross = (a[0] - o[0]) * (p[1] - o[1]) - (a[1] - o[1]) * (p[0] - o[0])
            if cross >= -1e-15:  # a lies on or below the segment o -> p
                hull.pop()
            else:
                break
        hull.append(p)
    h = np.array(hull)
    top = int(np.argmax(h[:, 1]))
    h = h[: top + 1]
    return Hull(cost=h[:, 0].copy(), quality=h[:, 1].copy())


def _area(h: Hull, a: float, b: float) -> float:
    """Exact integral of the hull function over [a, b]."""
    if b <= a:
        return 0.0
    inner = h.cost[(h.cost > a) & (h.cost < b)]
    grid = np.concatenate([[a], inner, [b]])
    left, right = grid[:-1], grid[1:]
    # the hull is linear on every open segment; evaluate limits from inside the segment
    v_left = np.where(left < h.cost[0], 0.0, np.interp(left, h.cost, h.quality))
    v_right = np.where(right <= h.cost[0], 0.0, np.interp(right, h.cost, h.quality))
    return float(np.sum((right - left) * (v_left + v_right) / 2.0))


def aiq(hull: Hull, cost_span: tuple[float, float]) -> float:
    """Our AIQ: mean hull quality over ``cost_span`` = (cheapest single model's cost, dearest one's).

    The hull is 0 before its first point and flat after its last. A zero-width span gives the hull
    quality at that cost.

    Example (zero router of two models, by hand): models at (1, 0.5) and (3, 0.9); the hull is the
    segment between them, so AIQ = (0.5 + 0.9) / 2 = 0.7.

        >>> round(aiq(non_decreasing_hull([[1, 0.5], [3, 0.9]]), (1.0, 3.0)), 6)
        0.7
    """
    a, b = float(cost_span[0]), float(cost_span[1])
    if b < a:
        raise ConfigError(f"cost_span must be (low, high), got {cost_span}.")
    if b == a:
        return float(hull(a))
    return _area(hull, a, b) / (b - a)


def aiq_routerbench(hull: Hull, max_cost: float | None = None) -> float:
    """AIQ as RouterBench's ``calc_AIQ`` normalises it.

    The hull is extended flat to ``max_cost`` (default: its own last point, i.e. the router
    evaluated alone); the area from the hull's first point to ``max_cost`` is divided by ``max_cost``.

    Example:
        >>> round(aiq_routerbench(non_decreasing_hull([[1, 0.5], [3, 0.9]])), 6)  # 1.4 / 3
        0.466667
    """
    mx = float(hull.cost[-1]) if max_cost is None else float(max_cost)
    if mx <= 0:
        return float("nan")
    return _area(hull, float(hull.cost[0]), mx) / mx


def cost_at_quality(hull: Hull, target: float) -> float:
    """The lowest cost at which the hull reaches quality ``target``; NaN when it never does.

    Example:
        >>> round(cost_at_quality(non_decreasing_hull([[1, 0.5], [3, 0.9]]), 0.7), 9)
        2.0
    """
    q, c = hull.quality, hull.cost
    tol = 1e-12
    if q[-1] < target - tol:
        return float("nan")
    if q[0] >= target - tol:
        return float(c[0])
    k = int(np.argmax(q >= target - tol))
    q0, q1, c0, c1 = q[k - 1], q[k], c[k - 1], c[k]
    return float(c0 + (target - q0) * (c1 - c0) / (q1 - q0))


def savings_at_quality(hull: Hull, target_quality: float, reference_cost: float) -> float:
    """Percent saved against ``reference_cost`` when reaching ``target_quality`` on the hull; NaN if never.

    Example:
        >>> round(savings_at_quality(non_decreasing_hull([[1, 0.5], [2, 0.9], [3, 0.9]]), 0.9, 3.0), 4)  # 2 vs 3
        33.3333
    """
    c = cost_at_quality(hull, target_quality)
    if not np.isfinite(c) or reference_cost <= 0:
        return float("nan")
    return 100.0 * (1.0 - c / reference_cost)


def oracle_gap_share(hull: Hull, best_cost: float, best_quality: float, oracle_quality: float) -> float:
    """Share of the gap between the best single model and the oracle that the router closes.

    ``(H(best_cost) - best_quality) / (oracle_quality - best_quality)``: the router's hull quality
    *at the best single model's cost* (a matched-cost comparison), relative to the oracle. 1 means
    oracle quality at that cost, 0 means no better than the best model, negative means worse.
    NaN when the oracle is no better than the best model.

    Example:
        >>> h = non_decreasing_hull([[1, 0.5], [2, 0.8], [3, 0.85]])
        >>> round(oracle_gap_share(h, 3.0, 0.8, 0.9), 6)
        0.5
    """
    gap = oracle_quality - best_quality
    if gap <= 1e-12:
        return float("nan")
    return float((hull(best_cost) - best_quality) / gap)


# --------------------------------------------------------------------------- budgets
def spend_per_1k(outcomes: Outcomes, choices: Any) -> np.ndarray:
    """(S,) realised USD spend per 1,000 requests for each setting.

    Example:
        >>> from router.data.schema import Outcomes
        >>> o = Outcomes(prompt_ids=["a", "b"], prompts=["x", "y"], models=["s", "b"],
        ...              quality=[[0, 1], [1, 1]], cost=[[0.001, 0.01], [0.001, 0.01]])
        >>> spend_per_1k(o, [[0, 1]]).round(6).tolist()
        [5.5]
    """
    return 1000.0 * points(outcomes, choices)[:, 0]


def budget_fidelity(realised: Any, target: Any) -> list[dict[str, float]]:
    """How closely a budget knob hits its targets: one row per setting.

    Args:
        realised: (S,) realised value per setting (spend per 1,000 requests, or strong-model share).
        target: (S,) the target each setting asked for.

    Returns:
        rows with ``target``, ``realised``, ``ratio`` (realised / target) and ``rel_error`` (|ratio - 1|).

    Example:
        >>> round(budget_fidelity([1.1, 2.0], [1.0, 2.0])[0]["rel_error"], 6)
        0.1
    """
    r = np.asarray(realised, dtype=np.float64).reshape(-1)
    t = np.asarray(target, dtype=np.float64).reshape(-1)
    if r.shape != t.shape:
        raise ValidationError(f"realised {r.shape} and target {t.shape} must have the same shape (S,).")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(t != 0, r / t, np.nan)
    return [
        {"target": float(a), "realised": float(b), "ratio": float(c), "rel_error": float(abs(c - 1.0))}
        for a, b, c in zip(t, r, ratio)
    ]
