"""Off-policy estimators of a target policy's mean reward from logged bandit feedback.

Inputs for ``n`` logged rounds over ``m`` actions (models):

* ``reward`` (n,): the logged reward r_i (e.g. quality in [0, 1]);
* ``action`` (n,): the logged action a_i (model index);
* ``propensity`` (n,): the logging policy's probability of a_i, in (0, 1];
* ``action_dist`` (n, m): the *target* policy's probabilities pi(a | x_i), rows summing to 1;
* ``q_hat`` (n, m): a reward model's prediction for every action (DM, DR, Switch-DR), or
  ``context`` (n, d) features from which a cross-fitted one is built
  (:class:`~router.ope.reward_model.CrossFitRewardModel`).

With ``w_i = pi(a_i | x_i) / p_i`` the per-round rewards are (OBP's layout: a small public
``estimate_policy_value`` that validates, a private ``_estimate_round_rewards`` core):

=============  ===============================================================
IPS            ``w_i r_i``
ClippedIPS     ``min(w_i, max_weight) r_i``
SNIPS          ``w_i r_i / mean(w)`` (the estimate is ``sum(w r) / sum(w)``, always within the reward range)
DM             ``sum_a pi(a|x_i) q_hat(x_i, a)``
DR             ``DM_i + w_i (r_i - q_hat(x_i, a_i))``
SwitchDR       ``DM_i + w_i (r_i - q_hat(x_i, a_i)) 1{w_i <= tau}``
=============  ===============================================================

Intervals: ``"normal"`` is the CLT interval ``mean ± z sd / sqrt(n)`` of the per-round values (for
SNIPS, of its linearised influence ``w (r - V) / mean(w)``); ``"bootstrap"`` resamples rounds
(vectorised counts) and recomputes the estimate (SNIPS as a ratio). The reward model is *not* refitted
inside the bootstrap, so the bootstrap ignores its fitting noise (cross-fitting keeps DR's
normal interval valid nonetheless).

Example:
    >>> rng = np.random.default_rng(0)
    >>> n = 2000; a = rng.integers(0, 2, n); p = np.full(n, 0.5)
    >>> r = np.where(a == 1, 0.8, 0.3) + 0.0
    >>> pi = np.tile([0.0, 1.0], (n, 1))  # target: always action 1, true value 0.8
    >>> round(SNIPS().estimate_policy_value(r, a, p, pi), 3)
    0.8
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, ClassVar

import numpy as np

from router.errors import ConfigError, ValidationError
from router.metrics.bootstrap import bootstrap_indices, percentile_interval
from router.ope._validate import check_inputs
from router.ope.diagnostics import OverlapDiagnostics, overlap_diagnostics
from router.ope.reward_model import CrossFitRewardModel

__all__ = [
    "DM",
    "DR",
    "IPS",
    "SNIPS",
    "ClippedIPS",
    "Estimate",
    "OffPolicyEstimator",
    "OPEResult",
    "SwitchDR",
    "evaluate_policy",
    "on_policy_mean",
    "DirectMethod",
    "DoublyRobust",
    "InverseProbabilityWeighting",
    "SelfNormalizedInverseProbabilityWeighting",
    "SwitchDoublyRobust",
]


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its interval."""

    estimator: str
    value: float
    low: float
    high: float
    method: str
    confidence: float


class OffPolicyEstimator:
    """Base class: validation, intervals; subclasses implement ``_estimate_round_rewards``."""

    name: ClassVar[str] = ""
    needs_q_hat: ClassVar[bool] = False

    def __init__(self, reward_model: CrossFitRewardModel | None = None):
        self.reward_model = reward_model

    # ----------------------------------------------------------------- public
    def estimate_policy_value(
        self, reward: Any, action: Any, propensity: Any, action_dist: Any, q_hat: Any = None, context: Any = None
    ) -> float:
        """The estimated mean reward of the target policy ``action_dist`` (n, m); see the module docs for shapes."""
        r, a, p, pi, qh = self._prepare(reward, action, propensity, action_dist, q_hat, context)
        return self._value(r, a, p, pi, qh)

    def round_rewards(
        self, reward: Any, action: Any, propensity: Any, action_dist: Any, q_hat: Any = None, context: Any = None
    ) -> np.ndarray:
        """The (n,) per-round values whose mean is the estimate (see the module docs' table).

        Two target policies scored on the same log with the same ``q_hat`` give paired values: the
        difference of their means, and a bootstrap over rounds of it, compares the policies.

        Example:
            >>> n = 4; a = np.array([0, 1, 0, 1]); r = np.array([0.0, 1.0, 0.0, 1.0]); p = np.full(n, 0.5)
            >>> IPS().round_rewards(r, a, p, np.tile([0.0, 1.0], (n, 1))).tolist()
            [0.0, 2.0, 0.0, 2.0]
        """
        r, a, p, pi, qh = self._prepare(reward, action, propensity, action_dist, q_hat, context)
        return self._estimate_round_rewards(r, a, p, pi, qh)

    def estimate_interval(
        self, reward: Any, action: Any, propensity: Any, action_dist: Any, q_hat: Any = None, context: Any = None,
        *, method: str = "normal", confidence: float = 0.95, n_bootstrap: int = 1000, seed: int = 0,
    ) -> Estimate:
        """Point estimate plus a ``"normal"`` (CLT) or ``"bootstrap"`` (percentile) interval.

        Example:
            >>> n = 400; a = np.arange(n) % 2; r = a.astype(float); p = np.full(n, 0.5)
            >>> e = IPS().estimate_interval(r, a, p, np.tile([0.5, 0.5], (n, 1)))
            >>> round(e.value, 3), e.low < 0.5 < e.high
            (0.5, True)
        """
        if not 0 < confidence < 1:
            raise ConfigError(f"confidence must be in (0, 1), got {confidence}.")
        r, a, p, pi, qh = self._prepare(reward, action, propensity, action_dist, q_hat, context)
        value = self._value(r, a, p, pi, qh)
        if method == "normal":
            infl = self._influence(r, a, p, pi, qh, value)
            z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
            half = z * float(np.std(infl, ddof=1)) / np.sqrt(len(infl)) if len(infl) > 1 else float("nan")
            return Estimate(self.name, value, float(value - half), float(value + half), method, confidence)
        if method == "bootstrap":
            reps = self._bootstrap(r, a, p, pi, qh, n_bootstrap, seed)
            lo, hi = percentile_interval(reps, confidence)
            return Estimate(self.name, value, lo, hi, method, confidence)
        raise ConfigError(f"method must be 'normal' or 'bootstrap', got {method!r}.")

    # ----------------------------------------------------------------- private
    def _prepare(
        self, reward: Any, action: Any, propensity: Any, action_dist: Any, q_hat: Any, context: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        r, a, p, pi, qh, x = check_inputs(reward, action, propensity, action_dist, q_hat, context)
        if self.needs_q_hat and qh is None:
            model = self.reward_model or CrossFitRewardModel()
            feats = x if x is not None else np.zeros((r.shape[0], 1))
            qh = model.fit_predict(feats, a, r, n_actions=pi.shape[1])
        return r, a, p, pi, qh

    @staticmethod
    def _weights(a: np.ndarray, p: np.ndarray, pi: np.ndarray) -> np.ndarray:
        return pi[np.arange(a.shape[0]), a] / p

    def _estimate_round_rewards(
        self, r: np.ndarray, a: np.ndarray, p: np.ndarray, pi: np.ndarray, qh: np.ndarray | None
    ) -> np.ndarray:
        raise NotImplementedError

    def _value(self, r: np.ndarray, a: np.ndarray, p: np.ndarray, pi: np.ndarray, qh: np.ndarray | None) -> float:
        return float(self._estimate_round_rewards(r, a, p, pi, qh).mean())

    def _influence(
        self, r: np.ndarray, a: np.ndarray, p: np.ndarray, pi: np.ndarray, qh: np.ndarray | None, value: float
    ) -> np.ndarray:
        return self._estimate_round_rewards(r, a, p, pi, qh)

    def _bootstrap(
        self, r: np.ndarray, a: np.ndarray, p: np.ndarray, pi: np.ndarray, qh: np.ndarray | None, b: int, seed: int
    ) -> np.ndarray:
        rr = self._estimate_round_rewards(r, a, p, pi, qh)
        out = [np.take(rr, ix).mean(axis=1) for ix in bootstrap_indices(rr.shape[0], b, seed)]
        return np.concatenate(out)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class IPS(OffPolicyEstimator):
    """Inverse propensity scoring: unbiased when the logger covers the target's actions; high variance."""

    name = "ips"

    def _estimate_round_rewards(self, r, a, p, pi, qh):
        return self._weights(a, p, pi) * r


class ClippedIPS(OffPolicyEstimator):
    """IPS with weights clipped at ``max_weight``: less variance, biased towards lower values for r >= 0.

    Example:
        >>> ClippedIPS(max_weight=2.0).estimate_policy_value([1.0], [0], [0.1], [[1.0, 0.0]])
        2.0
    """

    name = "clipped_ips"

    def __init__(self, max_weight: float = 20.0):
        super().__init__()
        if max_weight <= 0:
            raise ConfigError(f"max_weight must be > 0, got {max_weight}.")
        self.max_weight = max_weight

    def _estimate_round_rewards(self, r, a, p, pi, qh):
        return np.minimum(self._weights(a, p, pi), self.max_weight) * r


class SNIPS(OffPolicyEstimator):
    """Self-normalised IPS: ``sum(w r) / sum(w)``; a weighted mean, so it stays within the reward range."""

    name = "snips"

    def _estimate_round_rewards(self, r, a, p, pi, qh):
        w = self._weights(a, p, pi)
        mw = w.mean()
        return w * r / mw if mw > 0 else np.zeros_like(r)

    def _influence(self, r, a, p, pi, qh, value):
        w = self._weights(a, p, pi)
        mw = w.mean()
        return value + (w * (r - value) / mw if mw > 0 else np.zeros_like(r))

    def _bootstrap(self, r, a, p, pi, qh, b, seed):
        w = self._weights(a, p, pi)
        out = []
        for ix in bootstrap_indices(r.shape[0], b, seed):
            sw = np.take(w, ix).sum(axis=1)
            swr = np.take(w * r, ix).sum(axis=1)
            out.append(np.divide(swr, sw, out=np.zeros_like(swr), where=sw > 0))
        return np.concatenate(out)


class DM(OffPolicyEstimator):
    """Direct method: the reward model's value of the target policy; low variance, biased if the model is."""

    name = "dm"
    needs_q_hat = True

    def _estimate_round_rewards(self, r, a, p, pi, qh):
        return (pi * qh).sum(axis=1)


class DR(OffPolicyEstimator):
    """Doubly robust: DM plus an importance-weighted correction of the reward model's error."""

    name = "dr"
    needs_q_hat = True

    def _estimate_round_rewards(self, r, a, p, pi, qh):
        rows = np.arange(r.shape[0])
        return (pi * qh).sum(axis=1) + self._weights(a, p, pi) * (r - qh[rows, a])


class SwitchDR(OffPolicyEstimator):
    """Switch-DR: the DR correction only where ``w <= tau``; elsewhere the reward model alone.

    Example:
        >>> SwitchDR(tau=1.0).estimate_policy_value([1.0], [0], [0.1], [[1.0, 0.0]], q_hat=[[0.4, 0.2]])
        0.4
    """

    name = "switch_dr"
    needs_q_hat = True

    def __init__(self, tau: float = 20.0, reward_model: CrossFitRewardModel | None = None):
        super().__init__(reward_model)
        if tau <= 0:
            raise ConfigError(f"tau must be > 0, got {tau}.")
        self.tau = tau

    def _estimate_round_rewards(self, r, a, p, pi, qh):
        rows = np.arange(r.shape[0])
        w = self._weights(a, p, pi)
        return (pi * qh).sum(axis=1) + np.where(w <= self.tau, w * (r - qh[rows, a]), 0.0)


@dataclass
class OPEResult:
    """Estimates of every estimator with both interval kinds, plus overlap diagnostics."""

    estimates: list[Estimate]
    diagnostics: OverlapDiagnostics
    warnings: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per (estimator, interval method)."""
        return [
            {"estimator": e.estimator, "method": e.method, "value": e.value, "low": e.low, "high": e.high,
             "confidence": e.confidence}
            for e in self.estimates
        ]


def evaluate_policy(
    reward: Any, action: Any, propensity: Any, action_dist: Any, q_hat: Any = None, context: Any = None, *,
    estimators: list[OffPolicyEstimator] | None = None, confidence: float = 0.95, n_bootstrap: int = 500,
    seed: int = 0, reward_model: CrossFitRewardModel | None = None,
) -> OPEResult:
    """Run several estimators (default: IPS, clipped IPS, SNIPS, DM, DR, Switch-DR) with both interval kinds.

    The reward model is fitted once (cross-fitted) and shared by DM, DR and Switch-DR.

    Example:
        >>> n = 400; a = np.arange(n) % 2; r = a.astype(float); p = np.full(n, 0.5)
        >>> res = evaluate_policy(r, a, p, np.tile([0.0, 1.0], (n, 1)), n_bootstrap=50)
        >>> sorted({row["estimator"] for row in res.rows()})
        ['clipped_ips', 'dm', 'dr', 'ips', 'snips', 'switch_dr']
    """
    r, a, p, pi, qh, x = check_inputs(reward, action, propensity, action_dist, q_hat, context)
    ests = estimators if estimators is not None else [IPS(), ClippedIPS(), SNIPS(), DM(), DR(), SwitchDR()]
    if qh is None and any(e.needs_q_hat for e in ests):
        feats = x if x is not None else np.zeros((r.shape[0], 1))
        qh = (reward_model or CrossFitRewardModel(seed=seed)).fit_predict(feats, a, r, n_actions=pi.shape[1])
    out: list[Estimate] = []
    for e in ests:
        for method in ("normal", "bootstrap"):
            out.append(e.estimate_interval(r, a, p, pi, qh, method=method, confidence=confidence,
                                           n_bootstrap=n_bootstrap, seed=seed))
    diag = overlap_diagnostics(a, p, pi)
    return OPEResult(out, diag, list(diag.warnings))


def on_policy_mean(values: Any, confidence: float = 0.95) -> Estimate:
    """The mean of rewards a policy realised on its own traffic (n,), with a normal (CLT) interval.

    This is the on-policy value the off-policy estimates of other policies are compared with; with
    one round the interval is undefined (NaN bounds).

    Example:
        >>> e = on_policy_mean([1.0, 0.0, 1.0, 1.0])
        >>> e.value, round(e.high - e.value, 3)
        (0.75, 0.49)
    """
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}.")
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.shape[0] == 0:
        raise ValidationError(f"on_policy_mean needs a non-empty 1-D array of rewards (n,), got shape {x.shape}.")
    if not np.isfinite(x).all():
        raise ValidationError("on_policy_mean: rewards have NaN or infinite values; drop rows without feedback.")
    mean = float(x.mean())
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    half = z * float(x.std(ddof=1)) / float(np.sqrt(x.shape[0])) if x.shape[0] > 1 else float("nan")
    return Estimate("on_policy_mean", mean, mean - half, mean + half, "normal", confidence)


# OBP's class names, for readers coming from Open Bandit Pipeline.
InverseProbabilityWeighting = IPS
SelfNormalizedInverseProbabilityWeighting = SNIPS
DirectMethod = DM
DoublyRobust = DR
SwitchDoublyRobust = SwitchDR
