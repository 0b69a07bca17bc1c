"""The lambda grid of a sweep: one lambda between every two places where a router changes its mind.

A router routes each prompt to ``argmax_j quality[j] - lam * cost[j]``. As ``lam`` grows from 0,
each prompt walks from its best model down to its cheapest, switching model at a few *switch
points*: the slopes ``dq / dc`` of the upper concave hull of its own (cost, quality) points. Between
two consecutive switch points (over all prompts) every decision is constant, so one lambda strictly
between each pair traces **every** operating point the router can take -- its whole cost-quality
curve. :func:`default_lambda_grid` returns exactly that when there are at most ``n - 1`` distinct
switch points, and otherwise ``n - 1`` lambdas spread evenly over the switch events (each between two
switch points, never on a tie), plus 0 (the best model per prompt).

A coarse grid that skips operating points under-reports a router's AIQ against the zero router,
whose hull is drawn through the exact single-model points; this grid is what makes the two
comparable (see ``tests/test_metrics.py``).

Example (one prompt, three models: it leaves the best for the middle one at lam = 0.1 / 0.1 = 1
and the middle one for the cheapest at lam = 0.3 / 0.2 = 1.5):
    >>> import numpy as np
    >>> q = np.array([[0.5, 0.8, 0.9]]); c = np.array([[0.0, 0.2, 0.3]])
    >>> np.round(switch_points(q, c), 6).tolist()
    [1.0, 1.5]
    >>> np.round(default_lambda_grid(q, c), 6).tolist()
    [0.0, 1.25, 2.25]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from router.errors import ConfigError

__all__ = ["default_lambda_grid", "switch_points"]


def switch_points(quality: Any, cost: Any, feasible: Any = None) -> np.ndarray:
    """All lambdas at which some prompt's greedy choice changes (one entry per switch, unsorted).

    Args:
        quality: (n, m) predicted quality (or quality minus any fixed latency term).
        cost: (n, m) predicted cost.
        feasible: (n, m) bool models each prompt may use, or None for all.
    """
    q = np.asarray(quality, dtype=np.float64)
    c = np.asarray(cost, dtype=np.float64)
    if q.ndim != 2 or q.shape != c.shape:
        raise ConfigError(f"quality and cost must both be (n, m); got {q.shape} and {c.shape}.")
    ok = np.ones(q.shape, dtype=bool) if feasible is None else np.asarray(feasible, dtype=bool)
    n, m = q.shape
    if n == 0 or not ok.any():
        return np.zeros(0)
    rows = np.arange(n)
    live = ok.any(axis=1)
    qm = np.where(ok, q, -np.inf)
    best = qm.max(axis=1, keepdims=True)
    cur = np.where(ok & (qm >= best - 1e-12), c, np.inf).argmin(axis=1)  # best model, cheapest among ties
    out = []
    for _ in range(m - 1):
        qc, cc = q[rows, cur][:, None], c[rows, cur][:, None]
        cheaper = ok & (c < cc)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(cheaper, (qc - q) / np.where(cheaper, cc - c, 1.0), np.inf)
        r = ratio.min(axis=1)
        live = live & np.isfinite(r)
        if not live.any():
            break
        nxt = np.where(cheaper & (ratio <= r[:, None] * (1 + 1e-12)), c, np.inf).argmin(axis=1)
        out.append(np.maximum(r[live], 0.0))
        cur = np.where(live, nxt, cur)
    return np.concatenate(out) if out else np.zeros(0)


def default_lambda_grid(quality: Any, cost: Any, n: int = 101, feasible: Any = None) -> np.ndarray:
    """Lambdas that trace the router's cost-quality curve from its best models to its cheapest.

    0, then one lambda strictly between consecutive distinct switch points (all of them when there
    are at most ``n - 1``; otherwise ``n - 1`` spread evenly over the switch events), the last one
    above the largest switch point (where every prompt goes to its cheapest model).

    Args:
        quality: (n_prompts, m) predicted quality. cost: (n_prompts, m) predicted cost.
        n: the most lambdas returned (>= 2).
        feasible: (n_prompts, m) bool models each prompt may use, or None for all.
    """
    if not isinstance(n, int | np.integer) or n < 2:
        raise ConfigError(f"default_lambda_grid(n=...) must be an int >= 2, got {n!r}.")
    events = np.sort(switch_points(quality, cost, feasible))
    if events.size == 0:
        return np.array([0.0])
    distinct = np.unique(events)
    upper = np.append(distinct[1:], 2.0 * distinct[-1] if distinct[-1] > 0 else 1.0)
    between = (distinct + upper) / 2.0
    if distinct.size > n - 1:
        picks = np.round(np.linspace(0, events.size - 1, n - 1)).astype(np.int64)
        keep = np.unique(np.append(np.searchsorted(distinct, events[picks]), distinct.size - 1))
        between = between[keep]
    return np.unique(np.concatenate([[0.0], between]))
