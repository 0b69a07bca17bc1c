"""Input checks shared by the off-policy estimators."""

from __future__ import annotations

from typing import Any

import numpy as np

from router.errors import SchemaError, ValidationError


def check_inputs(
    reward: Any, action: Any, propensity: Any, action_dist: Any, q_hat: Any = None, context: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Validate a logged batch; returns float/int arrays. Shapes: reward, action, propensity (n,);
    action_dist (n, m); q_hat (n, m); context (n, d)."""
    r = np.asarray(reward, dtype=np.float64)
    p = np.asarray(propensity, dtype=np.float64)
    a_raw = np.asarray(action)
    pi = np.asarray(action_dist, dtype=np.float64)
    if r.ndim != 1 or r.shape[0] == 0:
        raise SchemaError(f"reward must be a non-empty 1-D array (n,), got shape {r.shape}.")
    n = r.shape[0]
    for name, arr in (("action", a_raw), ("propensity", p)):
        if arr.shape != (n,):
            raise SchemaError(f"{name} must have shape (n,) = ({n},) like reward, got {arr.shape}.")
    if pi.ndim != 2 or pi.shape[0] != n:
        raise SchemaError(f"action_dist must have shape (n, n_actions) with n={n}, got {pi.shape}.")
    m = pi.shape[1]
    if a_raw.size and not np.issubdtype(a_raw.dtype, np.integer):
        if not np.issubdtype(a_raw.dtype, np.number) or not np.all(np.mod(a_raw, 1) == 0):
            raise ValidationError("action must hold integer action (model) indices.")
    a = a_raw.astype(np.int64)
    if a.min() < 0 or a.max() >= m:
        raise ValidationError(f"action must be in [0, {m - 1}] (columns of action_dist), got {a.min()}..{a.max()}.")
    if not np.isfinite(r).all():
        raise ValidationError("reward has NaN or infinite values; drop rows whose feedback has not arrived.")
    if not np.isfinite(p).all() or (p <= 0).any() or (p > 1).any():
        bad = int(np.flatnonzero(~(np.isfinite(p) & (p > 0) & (p <= 1)))[0])
        raise ValidationError(
            f"propensity must be in (0, 1]; row {bad} has {p[bad]!r}. Log the probability the policy gave "
            "its choice (a deterministic policy logs 1.0)."
        )
    if not np.isfinite(pi).all() or (pi < 0).any():
        raise ValidationError("action_dist must be finite and non-negative.")
    sums = pi.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-6):
        bad = int(np.flatnonzero(~np.isclose(sums, 1.0, atol=1e-6))[0])
        raise ValidationError(f"action_dist rows must sum to 1; row {bad} sums to {sums[bad]!r}.")
    qh = None
    if q_hat is not None:
        qh = np.asarray(q_hat, dtype=np.float64)
        if qh.shape != (n, m):
            raise SchemaError(f"q_hat must have shape (n, n_actions) = ({n}, {m}), got {qh.shape}.")
        if not np.isfinite(qh).all():
            raise ValidationError("q_hat has NaN or infinite values.")
    x = None
    if context is not None:
        x = np.asarray(context, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[0] != n:
            raise SchemaError(f"context must have shape (n, d) with n={n}, got {x.shape}.")
        if not np.isfinite(x).all():
            raise ValidationError("context has NaN or infinite values.")
    return r, a, p, pi, qh, x
