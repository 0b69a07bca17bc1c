"""Choose lambda to hit a target stated the way users think about budgets.

Three kinds of target:

* :class:`SpendTarget` -- "spend at most $X per 1,000 requests";
* :class:`StrongShareTarget` -- "send at most P% of requests to the strongest (or a named) model";
* :class:`QualityTarget` -- "keep at least Y% of the best single model's quality".

:func:`calibrate` sweeps lambda on a calibration set (predictions plus, where known, true outcomes)
and returns the lambda that meets the target with the most quality (spend / share targets) or the
least cost (quality target). :func:`realised` reports the value the chosen lambda actually gives on
a held-out set, so the knob's fidelity can be checked.

Example:
    >>> import numpy as np
    >>> q = np.array([[0.5, 0.9]] * 10); c = np.array([[0.001, 0.010]] * 10)
    >>> res = calibrate(SpendTarget(usd_per_1000=5.0), q, c, true_quality=q, true_cost=c)
    >>> res.value <= 5.0
    True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from router.decision import DecisionRule
from router.errors import ConfigError

__all__ = ["CalibrationResult", "QualityTarget", "SpendTarget", "StrongShareTarget", "calibrate", "realised"]


@dataclass(frozen=True)
class SpendTarget:
    """At most ``usd_per_1000`` USD per 1,000 requests."""

    usd_per_1000: float

    def __post_init__(self) -> None:
        if not self.usd_per_1000 > 0:
            raise ConfigError(f"usd_per_1000 must be > 0, got {self.usd_per_1000!r}.")


@dataclass(frozen=True)
class StrongShareTarget:
    """At most ``max_share`` (in [0, 1]) of requests to ``model`` (default: the best-quality model)."""

    max_share: float
    model: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_share <= 1.0:
            raise ConfigError(f"max_share must be in [0, 1], got {self.max_share!r}.")


@dataclass(frozen=True)
class QualityTarget:
    """At least ``fraction`` (in (0, 1]) of the best single model's mean quality."""

    fraction: float

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"fraction must be in (0, 1], got {self.fraction!r}.")


Target = SpendTarget | StrongShareTarget | QualityTarget


@dataclass(frozen=True)
class CalibrationResult:
    """The chosen lambda, the target, and the value reached on the calibration set."""

    lam: float
    target: Target
    value: float
    met: bool

    def to_dict(self) -> dict[str, Any]:
        return {"lam": self.lam, "target": {type(self.target).__name__: asdict(self.target)},
                "value": self.value, "met": self.met}


def _choices(q: np.ndarray, c: np.ndarray, lams: np.ndarray, rule: DecisionRule) -> np.ndarray:
    return np.stack([rule.with_(lam=float(lv)).probabilities(q, c).probabilities.argmax(axis=1) for lv in lams])


def _strong_index(target: StrongShareTarget, models: list[str] | None, true_quality: np.ndarray | None,
                  q_hat: np.ndarray) -> int:
    if target.model is not None:
        if models is None or target.model not in models:
            raise ConfigError(f"strong model {target.model!r} is not among the models {models}.")
        return models.index(target.model)
    ref = true_quality if true_quality is not None else q_hat
    return int(np.argmax(ref.mean(axis=0)))


def _value(target: Target, choice: np.ndarray, tq: np.ndarray | None, tc: np.ndarray, strong: int) -> float:
    rows = np.arange(choice.shape[-1])
    if isinstance(target, SpendTarget):
        return float(tc[rows, choice].mean() * 1000.0)
    if isinstance(target, StrongShareTarget):
        return float((choice == strong).mean())
    assert tq is not None
    return float(tq[rows, choice].mean() / tq.mean(axis=0).max())


def _meets(target: Target, value: float) -> bool:
    if isinstance(target, SpendTarget):
        return value <= target.usd_per_1000 + 1e-12
    if isinstance(target, StrongShareTarget):
        return value <= target.max_share + 1e-12
    return value >= target.fraction - 1e-12


def calibrate(
    target: Target,
    quality_hat: np.ndarray,
    cost_hat: np.ndarray,
    *,
    true_quality: np.ndarray | None = None,
    true_cost: np.ndarray | None = None,
    models: list[str] | None = None,
    rule: DecisionRule | None = None,
    n_grid: int = 400,
) -> CalibrationResult:
    """Find the lambda that meets ``target`` on a calibration set.

    Args:
        target: what to hit.
        quality_hat, cost_hat: (n, m) predictions on the calibration prompts (out-of-fold on training data).
        true_quality, true_cost: (n, m) true outcomes there when known; spend and shares are then measured
            on realised cost, and a quality target needs ``true_quality``.
        models: model names (for a named strong model).
        rule: the base decision rule (strategy, constraints); its lambda is replaced.
        n_grid: lambda grid size (log-spaced, plus 0).
    """
    q = np.asarray(quality_hat, dtype=np.float64)
    c = np.asarray(cost_hat, dtype=np.float64)
    if q.shape != c.shape or q.ndim != 2:
        raise ConfigError(f"quality_hat and cost_hat must be (n, m) of equal shape, got {q.shape} and {c.shape}.")
    if isinstance(target, QualityTarget) and true_quality is None:
        raise ConfigError("a QualityTarget needs true_quality on the calibration set.")
    tq = None if true_quality is None else np.asarray(true_quality, dtype=np.float64)
    tc = c if true_cost is None else np.asarray(true_cost, dtype=np.float64)
    rule = rule or DecisionRule()
    from router.router import default_lambda_grid

    hi = float(default_lambda_grid(q, c, n=3).max())
    lams = np.concatenate([[0.0], np.geomspace(max(hi, 1e-9) * 1e-6, hi, n_grid - 1)])
    choices = _choices(q, c, lams, rule)
    strong = _strong_index(target, models, tq, q) if isinstance(target, StrongShareTarget) else -1
    values = np.array([_value(target, ch, tq, tc, strong) for ch in choices])
    ok = np.array([_meets(target, v) for v in values])
    if isinstance(target, QualityTarget):
        # the largest lambda (least cost) that still keeps the quality
        idx = int(np.flatnonzero(ok).max()) if ok.any() else int(np.argmax(values))
    else:
        # the smallest lambda (most quality) within the budget
        idx = int(np.flatnonzero(ok).min()) if ok.any() else len(lams) - 1
    return CalibrationResult(float(lams[idx]), target, float(values[idx]), bool(ok[idx]))


def realised(
    result: CalibrationResult,
    quality_hat: np.ndarray,
    cost_hat: np.ndarray,
    true_quality: np.ndarray,
    true_cost: np.ndarray,
    *,
    models: list[str] | None = None,
    rule: DecisionRule | None = None,
) -> dict[str, Any]:
    """The value ``result.lam`` gives on held-out data, beside the target: ``{target, realised, met}``."""
    rule = (rule or DecisionRule()).with_(lam=result.lam)
    q = np.asarray(quality_hat, dtype=np.float64)
    choice = rule.probabilities(q, np.asarray(cost_hat, dtype=np.float64)).probabilities.argmax(axis=1)
    tq = np.asarray(true_quality, dtype=np.float64)
    target = result.target
    strong = _strong_index(target, models, tq, q) if isinstance(target, StrongShareTarget) else -1
    value = _value(target, choice, tq, np.asarray(true_cost, dtype=np.float64), strong)
    goal = (target.usd_per_1000 if isinstance(target, SpendTarget)
            else target.max_share if isinstance(target, StrongShareTarget) else target.fraction)
    return {"kind": type(target).__name__, "target": goal, "realised": value, "met": _meets(target, value),
            "lam": result.lam}
