"""Choose the trade-off lambda to hit a target stated the way users think about budgets.

Three kinds of target:

* :class:`SpendTarget` -- "spend at most $X per 1,000 requests";
* :class:`StrongShareTarget` -- "send at most P% of requests to the strongest (or a named) model";
* :class:`QualityTarget` -- "keep at least Y% of the best single model's quality".

:func:`calibrate` searches every lambda at which some calibration prompt changes model (the *critical*
lambdas: for each prompt, the corners of the upper envelope of its lines ``q_j - lam * c_j``), so no
operating point between two grid values is missed. A budget (spend, share) gets the best-quality
point within it -- the smallest lambda whose value is within the budget; a quality target gets the
cheapest point that keeps it -- the largest lambda whose quality is at least the target. Where the
target falls between two adjacent lambdas (a block of prompts changes model at once), the rule mixes
the two deterministic policies with the probability that lands on the target exactly
(:class:`router.decision.DecisionRule` ``mix_lam`` / ``mix``), so any share between the extremes is
reachable. Values are measured on the calibration prompts with their true outcomes when given, else
with the predictions.

Which predictions (what ``training fit`` passes): a budget depends only on where the router sends
prompts, so it is calibrated on the deployed router's own predictions for the training prompts (lambda
is tied to the scale of the predictions, and that scale differs between the deployed model and models
fitted on part of the data). A quality target also depends on how good the choices are, which in-sample
predictions overstate; it is found on cross-fitted predictions, at a one-sided ``confidence`` lower
bound (default 90%), as a spend level that is then set on the deployed predictions (``deployed=``).

:func:`realised` measures the chosen operating point on held-out prompts, as expectations under the
rule's probabilities, and says whether the target was met within the stated tolerances:

* spend and strong-model share: within :data:`BUDGET_TOLERANCE` (15%) of the target, relative (a
  share also within :data:`SHARE_ABS_TOLERANCE`, one percentage point, absolute); a budget that does
  not bind (the best-quality routing already stays below it) is met when it is not exceeded;
* quality: at least the target minus :data:`QUALITY_TOLERANCE` (0.01, absolute).

A target no lambda can satisfy on the calibration prompts gives ``met=False`` and a reason.

Example:
    >>> import numpy as np
    >>> q = np.array([[0.5, 0.9]] * 10); c = np.array([[0.001, 0.010]] * 10)
    >>> res = calibrate(StrongShareTarget(max_share=0.3), q, c, true_quality=q, true_cost=c)
    >>> round(res.value, 6), res.met, round(res.mix, 6)
    (0.3, True, 0.3)
    >>> calibrate(SpendTarget(usd_per_1000=0.5), q, c, true_quality=q, true_cost=c).met
    False
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from router.decision import DecisionRule
from router.errors import ConfigError

__all__ = [
    "BUDGET_TOLERANCE",
    "QUALITY_TOLERANCE",
    "SHARE_ABS_TOLERANCE",
    "CalibrationResult",
    "LambdaPath",
    "OperatingPoint",
    "QualityTarget",
    "SpendTarget",
    "StrongShareTarget",
    "calibrate",
    "lambda_path",
    "realised",
    "target_from_dict",
]

#: Relative tolerance of a spend or share target on held-out prompts.
BUDGET_TOLERANCE = 0.15
#: Absolute tolerance of a share target (a share of 0.02 may land on 0.03).
SHARE_ABS_TOLERANCE = 0.01
#: Absolute tolerance below a quality target.
QUALITY_TOLERANCE = 0.01


@dataclass(frozen=True)
class SpendTarget:
    """At most ``usd_per_1000`` USD per 1,000 requests."""

    usd_per_1000: float

    def __post_init__(self) -> None:
        if not self.usd_per_1000 > 0:
            raise ConfigError(f"usd_per_1000 must be > 0, got {self.usd_per_1000!r}.")

    @property
    def goal(self) -> float:
        return self.usd_per_1000


@dataclass(frozen=True)
class StrongShareTarget:
    """At most ``max_share`` (in [0, 1]) of requests to ``model`` (default: the best-quality model)."""

    max_share: float
    model: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_share <= 1.0:
            raise ConfigError(f"max_share must be in [0, 1], got {self.max_share!r}.")

    @property
    def goal(self) -> float:
        return self.max_share


@dataclass(frozen=True)
class QualityTarget:
    """At least ``fraction`` (in (0, 1]) of the best single model's mean quality.

    ``confidence``: the chosen point keeps the fraction with this one-sided confidence on the calibration
    prompts (its normal-approximation lower bound, not its estimate, meets the fraction); 0.5 calibrates
    on the estimate alone. A quality estimate from a thousand or two binary outcomes moves by 1-3 points,
    so a point estimate lands below the target on new prompts about half of the time.
    """

    fraction: float
    confidence: float = 0.9

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"fraction must be in (0, 1], got {self.fraction!r}.")
        if not 0.5 <= self.confidence < 1.0:
            raise ConfigError(f"confidence must be in [0.5, 1), got {self.confidence!r}.")

    @property
    def goal(self) -> float:
        return self.fraction


Target = SpendTarget | StrongShareTarget | QualityTarget
_TARGETS: dict[str, type] = {t.__name__: t for t in (SpendTarget, StrongShareTarget, QualityTarget)}


def _target_dict(target: Target) -> dict[str, Any]:
    from dataclasses import asdict

    return {"kind": type(target).__name__, **asdict(target)}


def target_from_dict(d: dict[str, Any]) -> Target:
    """Inverse of the ``target`` entry of :meth:`OperatingPoint.to_dict` (``{"kind": ..., fields}``)."""
    d = dict(d)
    kind = d.pop("kind", None)
    if kind not in _TARGETS:
        raise ConfigError(f"unknown target kind {kind!r}; expected one of {sorted(_TARGETS)}.")
    return _TARGETS[kind](**d)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class OperatingPoint:
    """Where a router decides by default: its trade-off and, when calibrated, the target behind it.

    ``lam``, ``mu``, ``mix_lam`` and ``mix`` are the decision rule's (see
    :class:`router.decision.DecisionRule`); the rest says where they came from.

    Attributes:
        source: ``"calibrated"`` (from a target), ``"given"`` (a lambda set by hand), ``"default"``
            (the median critical lambda of the held-out predictions) or ``"rule"`` (whatever the rule
            holds, e.g. a router saved before operating points existed).
        target: the target calibrated for, or None.
        calibrated: the target's value on the calibration prompts (training split, out-of-fold).
        heldout: its value on the held-out split, when measured.
        met: whether the held-out value meets the target within tolerance (None: not measured).
        reason: why the target is or is not met.
    """

    lam: float = 0.0
    mu: float = 0.0
    mix_lam: float | None = None
    mix: float = 0.0
    source: str = "rule"
    target: Target | None = None
    calibrated: float | None = None
    heldout: float | None = None
    met: bool | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"lam": self.lam, "mu": self.mu, "mix_lam": self.mix_lam, "mix": self.mix, "source": self.source,
                "target": None if self.target is None else _target_dict(self.target),
                "calibrated": self.calibrated, "heldout": self.heldout, "met": self.met, "reason": self.reason}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OperatingPoint:
        d = dict(d)
        target = d.pop("target", None)
        return cls(**d, target=None if target is None else target_from_dict(target))

    @classmethod
    def of_rule(cls, rule: DecisionRule, **info: Any) -> OperatingPoint:
        """The operating point a decision rule stands at."""
        return cls(lam=rule.lam, mu=rule.mu, mix_lam=rule.mix_lam, mix=rule.mix, **info)

    def same_trade_off(self, rule: DecisionRule) -> bool:
        return (self.lam, self.mu, self.mix_lam, self.mix) == (rule.lam, rule.mu, rule.mix_lam, rule.mix)

    def describe(self) -> str:
        """One line: ``lambda 27.4 (calibrated: SpendTarget 0.5, calibrated 0.5, held-out 0.48, met)``."""
        text = f"lambda {self.lam:g}"
        if self.mix > 0:
            text += f" (mixed with lambda {self.mix_lam:g} at probability {self.mix:.3f})"
        text += f"; {self.source}"
        if self.target is not None:
            text += f" for {type(self.target).__name__} {self.target.goal:g}"
            if self.calibrated is not None:
                text += f", calibrated {self.calibrated:.4g}"
            if self.heldout is not None:
                text += f", held-out {self.heldout:.4g}"
            if self.met is not None:
                text += ", met" if self.met else ", NOT met"
        return text + (f" ({self.reason})" if self.reason else "")


@dataclass(frozen=True)
class CalibrationResult:
    """The chosen operating point, the target, and the value it reaches on the calibration set.

    Attributes:
        lam, mix_lam, mix: the rule's trade-off (``mix``: probability of deciding at ``mix_lam``).
        value: the target's measure at this point on the calibration prompts.
        met: whether some point satisfies the target on the calibration prompts.
        binding: False when the budget is not binding (the best-quality routing is already within it).
        reason: why the target is (not) met.
        strong_model: the model whose share a :class:`StrongShareTarget` limits.
        n_lambdas: number of distinct operating points searched.
        extra: details of a quality target: ``confidence``, ``lower_bound`` (of the quality fraction at the
            point) and ``via_spend_per_1000`` (the spend level carried to the deployed predictions).
    """

    lam: float
    target: Target
    value: float
    met: bool
    mix_lam: float | None = None
    mix: float = 0.0
    binding: bool = True
    reason: str = ""
    strong_model: str | None = None
    n_lambdas: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def rule(self, base: DecisionRule | None = None) -> DecisionRule:
        """``base`` (default: a greedy rule) at this operating point."""
        return replace(base or DecisionRule(), lam=self.lam, mix_lam=self.mix_lam, mix=self.mix)

    def to_dict(self) -> dict[str, Any]:
        return {"lam": self.lam, "mix_lam": self.mix_lam, "mix": self.mix, "target": _target_dict(self.target),
                "value": self.value, "met": self.met, "binding": self.binding, "reason": self.reason,
                "strong_model": self.strong_model, "n_lambdas": self.n_lambdas, **self.extra}


# --------------------------------------------------------------------------- the lambda path
@dataclass(frozen=True)
class LambdaPath:
    """Every deterministic greedy policy ``lam -> argmax_j q_j - lam c_j`` on n prompts, in lambda order.

    Policy k holds for ``lam`` in ``[lambdas[k], lambdas[k + 1])``; ``representative[k]`` is a lambda
    inside that interval (0 for the first, a geometric midpoint in between, twice the last corner for
    the last), the value saved in a rule so that it does not sit on a corner.

    Attributes:
        lambdas: (K,) increasing critical lambdas, the first 0.
        representative: (K,) a lambda inside each interval.
        start: (n,) choice at lambda 0.
        ev_row, ev_from, ev_to: (E,) the prompt, old and new model of every choice change, in lambda order.
        ends: (K,) index one past the last change of each policy (policy k = start + changes[:ends[k]]).
    """

    lambdas: np.ndarray
    representative: np.ndarray
    start: np.ndarray
    ev_row: np.ndarray
    ev_from: np.ndarray
    ev_to: np.ndarray
    ends: np.ndarray

    def values(self, per_prompt: np.ndarray) -> np.ndarray:
        """(K,) mean of ``per_prompt[i, choice_k(i)]`` over prompts for every policy k; per_prompt (n, m)."""
        v = np.asarray(per_prompt, dtype=np.float64)
        n = v.shape[0]
        total0 = v[np.arange(n), self.start].sum()
        delta = v[self.ev_row, self.ev_to] - v[self.ev_row, self.ev_from]
        running = np.concatenate([[total0], total0 + np.cumsum(delta)])
        return running[self.ends] / n

    def choices(self, k: int) -> np.ndarray:
        """(n,) the choices of policy k."""
        e = int(self.ends[k])
        return _replay(self.start, self.ev_row[:e], self.ev_to[:e])


def _replay(start: np.ndarray, rows: np.ndarray, to: np.ndarray) -> np.ndarray:
    ch = start.copy()
    # the last event of each row wins: assign in reverse order of appearance, first write per row kept
    rev_rows, first = np.unique(rows[::-1], return_index=True)
    ch[rev_rows] = to[::-1][first]
    return ch


def lambda_path(quality: np.ndarray, cost: np.ndarray, feasible: np.ndarray | None = None) -> LambdaPath:
    """The critical lambdas of greedy routing on these predictions and the policy between each pair.

    Args:
        quality: (n, m) predicted quality. cost: (n, m) predicted USD (the rule's cost).
        feasible: (n, m) bool models each prompt may use (the rule's limits); default all.

    Example:
        >>> q = np.array([[0.5, 0.9], [0.6, 0.7]]); c = np.array([[1.0, 2.0], [1.0, 2.0]])
        >>> path = lambda_path(q, c)
        >>> path.lambdas.round(6).tolist(), path.values(q).round(3).tolist()
        ([0.0, 0.1, 0.4], [0.8, 0.75, 0.55])
    """
    q = np.asarray(quality, dtype=np.float64)
    c = np.asarray(cost, dtype=np.float64)
    n, m = q.shape
    ok = np.ones((n, m), dtype=bool) if feasible is None else np.asarray(feasible, dtype=bool)
    rows = np.arange(n)
    qm = np.where(ok, q, -np.inf)
    top = qm.max(axis=1, keepdims=True)
    cur = np.where((qm >= top - 1e-12) & ok, c, np.inf).argmin(axis=1)
    start = cur.copy()
    lam_cur = np.zeros(n)
    ev: list[tuple[np.ndarray, ...]] = []
    for _ in range(m - 1):
        cc, qc = c[rows, cur][:, None], q[rows, cur][:, None]
        cheaper = ok & (c < cc)
        ratio = np.where(cheaper, np.maximum((qc - q) / np.where(cheaper, cc - c, 1.0), lam_cur[:, None]), np.inf)
        nxt_lam = ratio.min(axis=1)
        live = np.flatnonzero(np.isfinite(nxt_lam))
        if live.size == 0:
            break
        at = cheaper & (ratio <= nxt_lam[:, None] * (1.0 + 1e-12))
        nxt = np.where(at, c, np.inf).argmin(axis=1)
        ev.append((nxt_lam[live], live, cur[live].copy(), nxt[live]))
        cur[live], lam_cur[live] = nxt[live], nxt_lam[live]
    if ev:
        lam_e, row_e, from_e, to_e = (np.concatenate(x) for x in zip(*ev, strict=True))
        order = np.argsort(lam_e, kind="stable")
        lam_e, row_e, from_e, to_e = lam_e[order], row_e[order], from_e[order], to_e[order]
    else:
        lam_e = np.zeros(0)
        row_e = from_e = to_e = np.zeros(0, dtype=np.int64)
    uniq, first = np.unique(lam_e, return_index=True)
    ends_after = np.append(first[1:], lam_e.size)  # one past each group's last event
    if uniq.size and uniq[0] <= 0.0:  # changes at lambda 0 itself belong to the first policy
        lambdas, ends = uniq, ends_after
    else:
        lambdas, ends = np.concatenate([[0.0], uniq]), np.concatenate([[0], ends_after])
    rep = lambdas.copy()
    if lambdas.size > 1:
        rep[1:-1] = np.sqrt(lambdas[1:-1] * lambdas[2:])
        rep[-1] = 2.0 * lambdas[-1]
    return LambdaPath(lambdas, rep, start, row_e, from_e, to_e, ends.astype(np.int64))


# --------------------------------------------------------------------------- calibration
def _strong_index(target: StrongShareTarget, models: list[str] | None, ref_quality: np.ndarray) -> int:
    if target.model is not None:
        if models is None or target.model not in models:
            raise ConfigError(f"strong model {target.model!r} is not among the models {models}.")
        return models.index(target.model)
    return int(np.argmax(ref_quality.mean(axis=0)))


def _per_prompt(target: Target, tq: np.ndarray, tc: np.ndarray, strong: int) -> tuple[np.ndarray, float]:
    """(n, m) per-prompt measure of the target and the scale turning its mean into the target's units."""
    if isinstance(target, SpendTarget):
        return tc, 1000.0
    if isinstance(target, StrongShareTarget):
        ind = np.zeros_like(tc)
        ind[:, strong] = 1.0
        return ind, 1.0
    return tq, 1.0 / float(tq.mean(axis=0).max())


def calibrate(
    target: Target,
    quality_hat: np.ndarray,
    cost_hat: np.ndarray,
    *,
    true_quality: np.ndarray | None = None,
    true_cost: np.ndarray | None = None,
    models: list[str] | None = None,
    rule: DecisionRule | None = None,
    deployed: tuple[np.ndarray, np.ndarray] | None = None,
) -> CalibrationResult:
    """Find the operating point that meets ``target`` on a calibration set (see the module docs).

    Args:
        target: what to hit.
        quality_hat, cost_hat: (n, m) predictions on the calibration prompts (out-of-fold on training data).
        true_quality, true_cost: (n, m) true outcomes there when known; the target is then measured on
            them (a quality target needs ``true_quality``); otherwise on the predictions.
        models: model names (for a named strong model and the result's ``strong_model``).
        rule: the base decision rule (greedy; its limits decide which models are feasible).
        deployed: ``(quality, cost)`` (n, m) predictions of the router that will decide, on the same prompts,
            when ``quality_hat`` are cross-fitted ones. A quality target is then found on the cross-fitted
            predictions as a spend level (the cheapest point that keeps it), and that spend is set on the
            deployed predictions: lambda depends on the scale of the predictions, which differs between
            models fitted on part of the data and the deployed one; spend does not. Ignored for budgets,
            which are calibrated on whatever predictions are given (pass the deployed ones).
    """
    q = np.asarray(quality_hat, dtype=np.float64)
    c = np.asarray(cost_hat, dtype=np.float64)
    if q.shape != c.shape or q.ndim != 2 or q.shape[0] == 0:
        raise ConfigError(f"quality_hat and cost_hat must be (n, m) of equal shape, got {q.shape} and {c.shape}.")
    if isinstance(target, QualityTarget) and true_quality is None:
        raise ConfigError("a QualityTarget needs true_quality on the calibration set.")
    tq = q if true_quality is None else np.asarray(true_quality, dtype=np.float64)
    tc = c if true_cost is None else np.asarray(true_cost, dtype=np.float64)
    if tq.shape != q.shape or tc.shape != q.shape:
        raise ConfigError(f"true_quality and true_cost must have the predictions' shape {q.shape}.")
    rule = rule or DecisionRule()
    if rule.strategy != "greedy":
        raise ConfigError(f"calibration needs a greedy rule, got strategy {rule.strategy!r}.")
    feasible = rule.with_(lam=0.0).probabilities(q, c).feasible
    path = lambda_path(q, c, feasible)
    strong = _strong_index(target, models, tq) if isinstance(target, StrongShareTarget) else -1
    per_prompt, scale = _per_prompt(target, tq, tc, strong)
    values = path.values(per_prompt) * scale
    strong_name = None if strong < 0 else (models[strong] if models else str(strong))
    if isinstance(target, QualityTarget):
        lower = values - _z(target.confidence) * _ratio_se(path, tq, values)
        res = _choose_quality(target, values, lower, path.representative)
        if deployed is not None:
            point = replace(rule, lam=res["lam"], mix_lam=res.get("mix_lam"), mix=res.get("mix", 0.0))
            spend = float((point.probabilities(q, c).probabilities * tc).sum(axis=1).mean() * 1000.0)
            if spend > 0:
                via = calibrate(SpendTarget(spend), *deployed, true_quality=tq, true_cost=tc, models=models,
                                rule=rule)
                res.update(lam=via.lam, mix_lam=via.mix_lam, mix=via.mix)
                res["extra"]["via_spend_per_1000"] = spend
    else:
        res = _choose(target, values, path.representative)
    return CalibrationResult(**res, target=target, strong_model=strong_name, n_lambdas=int(values.size))


def _z(confidence: float) -> float:
    from statistics import NormalDist

    return float(NormalDist().inv_cdf(confidence))


def _ratio_se(path: LambdaPath, tq: np.ndarray, ratio: np.ndarray) -> np.ndarray:
    """(K,) standard error of each policy's quality fraction ``mean(a) / mean(b)`` (delta method), where
    ``a`` is the chosen model's quality and ``b`` the best single model's, prompt by prompt."""
    n = tq.shape[0]
    b = tq[:, int(np.argmax(tq.mean(axis=0)))]
    ea2 = path.values(tq**2)
    eab = path.values(tq * b[:, None])
    var = (ea2 - 2.0 * ratio * eab + ratio**2 * float((b**2).mean())) / (n * float(b.mean()) ** 2)
    return np.sqrt(np.maximum(var, 0.0))


def _choose_quality(target: QualityTarget, values: np.ndarray, lower: np.ndarray, rep: np.ndarray) -> dict[str, Any]:
    """The cheapest point whose lower bound keeps the target (mixed with the next one to land on it)."""
    goal = target.goal
    ok = np.flatnonzero(lower >= goal - 1e-12)
    conf = f" with {target.confidence:.0%} confidence" if target.confidence > 0.5 else ""
    extra = {"confidence": target.confidence}
    if ok.size == 0:
        k = int(np.argmax(lower))
        return {"lam": float(rep[k]), "value": float(values[k]), "met": False,
                "extra": {**extra, "lower_bound": float(lower[k])},
                "reason": f"no lambda keeps {goal:g} of the best model's quality{conf} on the calibration prompts; "
                          f"the best operating point keeps {values[k]:.4f} (lower bound {lower[k]:.4f})"}
    k = int(ok.max())
    if k == values.size - 1:
        return {"lam": float(rep[k]), "value": float(values[k]), "met": True, "binding": False,
                "extra": {**extra, "lower_bound": float(lower[k])},
                "reason": "even the cheapest routing keeps the target quality"}
    w = float(np.clip((lower[k] - goal) / (lower[k] - lower[k + 1]), 0.0, 1.0))
    return {"lam": float(rep[k]), "mix_lam": float(rep[k + 1]), "mix": w, "met": True,
            "value": float((1 - w) * values[k] + w * values[k + 1]),
            "extra": {**extra, "lower_bound": float((1 - w) * lower[k] + w * lower[k + 1])},
            "reason": f"cheapest point keeping the target{conf}"}


def _choose(target: Target, values: np.ndarray, rep: np.ndarray) -> dict[str, Any]:
    """The best-quality point within a spend or share budget (mixed with the dearer neighbour to land on it)."""
    goal = target.goal
    eps = 1e-12
    ok = np.flatnonzero(values <= goal + eps)
    what = "spend" if isinstance(target, SpendTarget) else "share"
    if ok.size == 0:
        k = int(np.argmin(values))
        return {"lam": float(rep[k]), "value": float(values[k]), "met": False,
                "reason": f"no lambda keeps the {what} within {goal:g} on the calibration prompts; "
                          f"the lowest reachable is {values[k]:.4g}"}
    k = int(ok.min())  # the best-quality point within the budget
    if k == 0:
        return {"lam": float(rep[0]), "value": float(values[0]), "met": True, "binding": False,
                "reason": f"budget not binding: the best-quality routing's {what} is {values[0]:.4g}"}
    w = float(np.clip((goal - values[k]) / (values[k - 1] - values[k]), 0.0, 1.0))  # the dearer neighbour's
    return {"lam": float(rep[k]), "mix_lam": float(rep[k - 1]), "mix": float(w), "met": True,
            "value": float((1 - w) * values[k] + w * values[k - 1]), "reason": "calibrated"}


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
    """The value ``result``'s operating point gives on held-out data, and whether it meets the target.

    Values are expectations under the rule's probabilities (the mixing included). Returns
    ``{kind, target, calibrated, realised, met, reason, tolerance, lam, mix_lam, mix}``.
    """
    q = np.asarray(quality_hat, dtype=np.float64)
    probs = result.rule(rule).probabilities(q, np.asarray(cost_hat, dtype=np.float64)).probabilities
    tq = np.asarray(true_quality, dtype=np.float64)
    tc = np.asarray(true_cost, dtype=np.float64)
    target = result.target
    strong = -1
    if isinstance(target, StrongShareTarget):
        names = models or []
        name = target.model or result.strong_model
        strong = names.index(name) if name in names else _strong_index(target, models, tq)
    per_prompt, scale = _per_prompt(target, tq, tc, strong)
    value = float((probs * per_prompt).sum(axis=1).mean() * scale)
    goal = target.goal
    if isinstance(target, QualityTarget):
        tol = f"realised >= target - {QUALITY_TOLERANCE}"
        ok = value >= goal - QUALITY_TOLERANCE
    else:
        band = max(BUDGET_TOLERANCE * goal, SHARE_ABS_TOLERANCE if isinstance(target, StrongShareTarget) else 0.0)
        tol = f"|realised - target| <= {band:.4g} ({BUDGET_TOLERANCE:.0%} of the target" + (
            f", at least {SHARE_ABS_TOLERANCE}" if isinstance(target, StrongShareTarget) else "") + ")"
        ok = value <= goal + band and (value >= goal - band or not result.binding)
    if not result.met:
        ok, reason = False, result.reason
    elif ok:
        reason = "held-out value within tolerance" if result.binding else result.reason
    else:
        reason = f"held-out value {value:.4g} is outside the tolerance ({tol})"
    return {"kind": type(target).__name__, "target": goal, "calibrated": result.value, "realised": value,
            "met": bool(ok), "reason": reason, "tolerance": tol, "lam": result.lam, "mix_lam": result.mix_lam,
            "mix": result.mix}
