"""From full-information outcomes to bandit-feedback traffic logs.

:func:`to_traffic_log` replays an :class:`~router.data.schema.Outcomes` table through a *logging
policy* -- uniform, epsilon-greedy or softmax over a score -- and keeps only the chosen model's
outcome per prompt, with the probability the policy gave that choice (its *propensity*). This is
what production traffic looks like, and what the off-policy estimators and the replay environment
consume; with the full table kept aside, the true value of any other policy is known exactly.

Example:
    >>> from router.data.synthetic import generate
    >>> data = generate(100, seed=0)
    >>> log, probs = to_traffic_log(data.outcomes, policy="uniform", seed=0)
    >>> log.height, bool((log["propensity"] == 0.2).all()), probs.shape
    (100, True, (100, 5))
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import polars as pl

from router.data.logs import conform_log
from router.data.schema import Outcomes
from router.errors import ConfigError

__all__ = ["logging_probabilities", "to_traffic_log"]


def logging_probabilities(
    n: int,
    m: int,
    *,
    policy: str = "uniform",
    scores: np.ndarray | None = None,
    epsilon: float = 0.1,
    temperature: float = 0.1,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """(n, m) action probabilities of a logging policy, zero where ``mask`` is False.

    Args:
        n, m: prompts and models.
        policy: ``"uniform"``, ``"epsilon-greedy"`` (greedy on ``scores`` with ``epsilon`` spread uniformly)
            or ``"softmax"`` (``softmax(scores / temperature)``).
        scores: (n, m) score per prompt and model, required for the last two.
        mask: (n, m) bool, the actions the policy may take; every row needs one.
    """
    allowed = np.ones((n, m), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if allowed.shape != (n, m):
        raise ConfigError(f"mask must have shape ({n}, {m}), got {allowed.shape}.")
    if not allowed.any(axis=1).all():
        raise ConfigError(f"mask row {int(np.flatnonzero(~allowed.any(axis=1))[0])} allows no model.")
    if policy == "uniform":
        probs = allowed.astype(np.float64)
    else:
        if scores is None:
            raise ConfigError(f"policy {policy!r} needs scores (n, m); pass e.g. predicted quality minus cost.")
        s = np.asarray(scores, dtype=np.float64)
        if s.shape != (n, m) or not np.isfinite(s).all():
            raise ConfigError(f"scores must be finite with shape ({n}, {m}), got {s.shape}.")
        s = np.where(allowed, s, -np.inf)
        if policy == "epsilon-greedy":
            if not 0.0 <= epsilon <= 1.0:
                raise ConfigError(f"epsilon must be in [0, 1], got {epsilon}.")
            greedy = np.zeros((n, m))
            greedy[np.arange(n), s.argmax(axis=1)] = 1.0
            k = allowed.sum(axis=1, keepdims=True)
            probs = (1.0 - epsilon) * greedy + epsilon * allowed / k
        elif policy == "softmax":
            if temperature <= 0:
                raise ConfigError(f"temperature must be > 0, got {temperature}.")
            z = (s - s.max(axis=1, keepdims=True)) / temperature
            probs = np.where(allowed, np.exp(z), 0.0)
        else:
            raise ConfigError(f"unknown logging policy {policy!r}; use 'uniform', 'epsilon-greedy' or 'softmax'.")
    return probs / probs.sum(axis=1, keepdims=True)


def to_traffic_log(
    outcomes: Outcomes,
    *,
    policy: str = "uniform",
    scores: np.ndarray | None = None,
    epsilon: float = 0.1,
    temperature: float = 0.1,
    mask: np.ndarray | None = None,
    seed: int = 0,
    tenant: str = "default",
    policy_version: str | None = None,
    start: dt.datetime = dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
) -> tuple[pl.DataFrame, np.ndarray]:
    """Reduce outcomes to a traffic log under a logging policy.

    Returns:
        ``(log, probabilities)``: the log in :data:`~router.data.schema.TRAFFIC_LOG_SCHEMA` (plus the
        ``prompt_id`` and ``task`` of each row) and the (n, m) logging probabilities.
    """
    n, m = outcomes.quality.shape
    probs = logging_probabilities(
        n, m, policy=policy, scores=scores, epsilon=epsilon, temperature=temperature, mask=mask
    )
    rng = np.random.default_rng(seed)
    # inverse-CDF sampling: one uniform per row, reproducible across platforms
    u = rng.random(n)[:, None]
    chosen = np.minimum((probs.cumsum(axis=1) < u).sum(axis=1), m - 1)
    while (probs[np.arange(n), chosen] == 0).any():  # guard float edge cases at the top of the CDF
        bad = probs[np.arange(n), chosen] == 0
        chosen[bad] -= 1
    rows = np.arange(n)
    if outcomes.timestamps is not None:
        ts: Any = outcomes.timestamps.astype("datetime64[us]")
    else:
        ts = np.datetime64(start.replace(tzinfo=None), "us") + np.arange(n).astype("timedelta64[s]")

    def cell(arr: np.ndarray | None) -> Any:
        return None if arr is None else arr[rows, chosen]

    data: dict[str, Any] = {
        "request_id": [f"{outcomes.source}-{pid}" for pid in outcomes.prompt_ids],
        "timestamp": pl.Series(ts).dt.replace_time_zone("UTC"),
        "tenant": [tenant] * n,
        "prompt": [str(p) for p in outcomes.prompts],
        "chosen_model": [outcomes.models[c] for c in chosen],
        "propensity": probs[rows, chosen],
        "quality": cell(outcomes.quality),
        "cost": cell(outcomes.cost),
        "latency_s": cell(outcomes.latency),
        "input_tokens": None if outcomes.input_tokens is None else cell(outcomes.input_tokens).astype(np.int64),
        "output_tokens": None if outcomes.output_tokens is None else cell(outcomes.output_tokens).astype(np.int64),
        "policy_version": [policy_version or f"logging-{policy}"] * n,
        "task": [str(t) for t in outcomes.tasks],
        "prompt_id": [str(p) for p in outcomes.prompt_ids],
    }
    df = pl.DataFrame({k: v for k, v in data.items() if v is not None})
    return conform_log(df).collect(), probs
