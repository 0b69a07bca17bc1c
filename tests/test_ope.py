"""Off-policy estimators against ground truth on synthetic logged bandit data with known rewards.

The generator: contexts x ~ N(0, I_d); reward of action a is Bernoulli(sigmoid(x @ theta_a + b_a))
(known mean mu(x, a)); the logging policy is a softmax over a *different* score, mixed with
uniform exploration ``eps``; the target policy is a softmax over mu (favouring good actions). The
estimand is the target's value on the logged contexts, ``mean_i sum_a pi(a|x_i) mu(x_i, a)``.

* easy regime: eps = 0.5 (every action has propensity >= 1/6 with 3 actions);
* hard regime: eps = 0.02 and a logging score that opposes the target (weights up to ~150).
"""

from __future__ import annotations

import numpy as np
import pytest

from router.errors import SchemaError, ValidationError
from router.ope import DM, DR, IPS, SNIPS, ClippedIPS, CrossFitRewardModel, SwitchDR, evaluate_policy
from router.ope.diagnostics import overlap_diagnostics

M, D = 3, 4


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def make_log(n: int, seed: int, eps: float, oppose: float = 1.0) -> dict[str, np.ndarray | float]:
    rng = np.random.default_rng(seed)
    theta = np.random.default_rng(1234).normal(0, 1, (D, M))  # fixed world across replications
    bias = np.array([-0.5, 0.0, 0.5])
    x = rng.normal(size=(n, D))
    mu = 1 / (1 + np.exp(-(x @ theta + bias)))
    target = _softmax(4.0 * mu)
    logging = (1 - eps) * _softmax(-4.0 * oppose * mu) + eps / M
    a = (rng.random(n)[:, None] > np.cumsum(logging, axis=1)).sum(axis=1)
    r = (rng.random(n) < mu[np.arange(n), a]).astype(float)
    return {"x": x, "a": a, "r": r, "p": logging[np.arange(n), a], "pi": target,
            "truth": float((target * mu).sum(axis=1).mean())}


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_estimators_close_to_truth_easy(seed: int) -> None:
    d = make_log(4000, seed, eps=0.5)
    args = (d["r"], d["a"], d["p"], d["pi"])
    truth = d["truth"]
    assert isinstance(truth, float)
    for est, tol in [(IPS(), 0.06), (SNIPS(), 0.05), (ClippedIPS(max_weight=50), 0.06),
                     (DR(), 0.05), (SwitchDR(tau=50), 0.05), (DM(), 0.10)]:
        v = est.estimate_policy_value(*args, context=d["x"])
        assert abs(v - truth) / truth < tol, (type(est).__name__, v, truth)


def test_snips_within_reward_range_even_with_huge_weights() -> None:
    d = make_log(300, 0, eps=0.01)
    v = SNIPS().estimate_policy_value(d["r"], d["a"], d["p"], d["pi"])
    assert 0.0 <= v <= 1.0
    scaled = SNIPS().estimate_policy_value(0.2 + 0.5 * np.asarray(d["r"]), d["a"], d["p"], d["pi"])
    assert 0.2 <= scaled <= 0.7


def test_all_propensity_one_gives_plain_mean() -> None:
    rng = np.random.default_rng(0)
    n = 200
    a = rng.integers(0, M, n)
    r = rng.random(n)
    pi = np.eye(M)[a]  # the target repeats the logged (deterministic) choices
    p = np.ones(n)
    for est in (IPS(), SNIPS(), ClippedIPS(), DR(), SwitchDR()):
        assert est.estimate_policy_value(r, a, p, pi, context=rng.normal(size=(n, 2))) == pytest.approx(r.mean())


def _coverage(eps: float, oppose: float, reps: int, n: int) -> dict[str, float]:
    hits = {"dr": 0, "ips": 0, "snips": 0}
    for s in range(reps):
        d = make_log(n, 1000 + s, eps=eps, oppose=oppose)
        qh = CrossFitRewardModel(n_folds=5, kind="ridge", seed=s).fit_predict(d["x"], d["a"], d["r"], M)
        for name, est in (("dr", DR()), ("ips", IPS()), ("snips", SNIPS())):
            e = est.estimate_interval(d["r"], d["a"], d["p"], d["pi"], q_hat=qh, method="normal")
            hits[name] += int(e.low <= float(d["truth"]) <= e.high)
    return {k: v / reps for k, v in hits.items()}


@pytest.mark.slow
def test_interval_coverage_easy_and_hard() -> None:
    """Easy: analytic DR (and IPS/SNIPS) 95% intervals cover the truth in >= 85% of 200 replications.

    Hard (low overlap): we measure that the weak-overlap warning fires and that DR's coverage
    does not collapse (>= 0.6) -- its analytic interval is known to under-cover there, which is
    exactly why the report shows the warning. IPS coverage on hard is recorded, not bounded.
    """
    easy = _coverage(eps=0.5, oppose=1.0, reps=200, n=500)
    assert easy["dr"] >= 0.85, easy
    assert easy["ips"] >= 0.85, easy
    assert easy["snips"] >= 0.85, easy
    hard = _coverage(eps=0.02, oppose=1.0, reps=200, n=500)
    assert hard["dr"] >= 0.6, hard
    d = make_log(500, 0, eps=0.02)
    diag = overlap_diagnostics(d["a"], d["p"], d["pi"])
    assert diag.ess_ratio < 0.1
    assert any("weak overlap" in w for w in diag.warnings)


def test_easy_regime_has_no_overlap_warning() -> None:
    d = make_log(2000, 0, eps=0.5)
    diag = overlap_diagnostics(d["a"], d["p"], d["pi"])
    assert diag.ess_ratio > 0.3 and diag.warnings == []


def test_bootstrap_and_normal_intervals_agree_roughly() -> None:
    d = make_log(3000, 4, eps=0.5)
    res = evaluate_policy(d["r"], d["a"], d["p"], d["pi"], context=d["x"], n_bootstrap=300)
    by = {(r["estimator"], r["method"]): r for r in res.rows()}
    for name in ("ips", "snips", "dr"):
        wn = by[(name, "normal")]["high"] - by[(name, "normal")]["low"]
        wb = by[(name, "bootstrap")]["high"] - by[(name, "bootstrap")]["low"]
        assert 0.7 < wb / wn < 1.3, (name, wn, wb)
    assert res.diagnostics.share_zero_target == 0.0


def test_diagnostics_unsupported_share() -> None:
    d = overlap_diagnostics([0, 1, 2, 2], [0.5, 0.5, 0.5, 0.5], [[1, 0, 0]] * 4)
    assert d.share_zero_target == pytest.approx(0.75)
    assert d.max_weight == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("change", "exc", "match"),
    [
        ({"propensity": [0.5, 0.0, 0.5]}, ValidationError, r"propensity must be in \(0, 1\]"),
        ({"propensity": [0.5, 1.5, 0.5]}, ValidationError, r"propensity must be in \(0, 1\]"),
        ({"action_dist": [[0.5, 0.2]] * 3}, ValidationError, "sum to 1"),
        ({"action": [0, 2, 1]}, ValidationError, "action must be in"),
        ({"action": [0, 1]}, SchemaError, "action must have shape"),
        ({"reward": [[1.0], [0.0], [1.0]]}, SchemaError, "reward must be"),
        ({"action_dist": [0.5, 0.5, 0.5]}, SchemaError, "action_dist must have shape"),
        ({"reward": [1.0, float("nan"), 0.0]}, ValidationError, "NaN"),
    ],
)
def test_input_errors(change: dict, exc: type, match: str) -> None:
    base = {"reward": [1.0, 0.0, 1.0], "action": [0, 1, 1], "propensity": [0.5, 0.5, 0.5],
            "action_dist": [[0.5, 0.5]] * 3}
    base.update(change)
    with pytest.raises(exc, match=match):
        IPS().estimate_policy_value(**base)


def test_q_hat_shape_checked() -> None:
    with pytest.raises(SchemaError, match="q_hat must have shape"):
        DR().estimate_policy_value([1.0], [0], [1.0], [[1.0, 0.0]], q_hat=[[0.5]])
