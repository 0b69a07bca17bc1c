"""Budget knobs and the operating point: lambda path, mixing, calibration, persistence, route -> evaluate.

The real-data tests (RouterBench, RouteLLM's GSM8K) check knob fidelity the way ``training fit`` does it
(same prediction choice, same calibration, measured on the held-out split), with a fast router (hashing
encoder + logistic) so that they take seconds; the default router's figures are in the README.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from router.calibration import (
    BUDGET_TOLERANCE,
    QUALITY_TOLERANCE,
    OperatingPoint,
    QualityTarget,
    SpendTarget,
    StrongShareTarget,
    calibrate,
    lambda_path,
    realised,
)
from router.data.registry import save_outcomes
from router.data.splits import split_outcomes
from router.data.synthetic import generate
from router.decision import DecisionRule
from router.encoders import HashingEncoder
from router.errors import ConfigError, RoutingError, SchemaError
from router.predictors import LogisticPredictor
from router.router import Router

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- the lambda path
def test_lambda_path_is_the_rule_between_critical_lambdas():
    """Every policy on the path is what the greedy rule decides anywhere inside its interval."""
    rng = np.random.default_rng(0)
    q = rng.uniform(0, 1, (60, 4))
    c = rng.uniform(0.001, 0.01, (60, 4))
    path = lambda_path(q, c)
    assert path.lambdas[0] == 0.0 and np.all(np.diff(path.lambdas) > 0)
    for k in range(len(path.lambdas)):
        hi = path.lambdas[k + 1] if k + 1 < len(path.lambdas) else 10 * path.lambdas[k] + 1.0
        for lam in (path.lambdas[k], path.representative[k], path.lambdas[k] + 0.999 * (hi - path.lambdas[k])):
            choice = DecisionRule(lam=float(lam)).probabilities(q, c).probabilities.argmax(axis=1)
            assert (choice == path.choices(k)).all(), (k, lam)
        assert path.values(c)[k] == pytest.approx(c[np.arange(60), path.choices(k)].mean())
    # the last policy sends every prompt to its cheapest model
    assert (path.choices(len(path.lambdas) - 1) == c.argmin(axis=1)).all()


def test_lambda_path_respects_feasibility():
    q = np.array([[0.5, 0.7, 0.9]])
    c = np.array([[0.001, 0.002, 0.010]])
    path = lambda_path(q, c, feasible=np.array([[True, True, False]]))
    assert path.choices(0).tolist() == [1] and path.choices(len(path.lambdas) - 1).tolist() == [0]
    assert path.lambdas.tolist() == pytest.approx([0.0, 200.0])  # (0.7 - 0.5) / (0.002 - 0.001)


# --------------------------------------------------------------------------- mixing in the rule
Q1 = np.array([[0.5, 0.9]] * 2000)
C1 = np.array([[0.001, 0.010]] * 2000)


def test_mixed_rule_probabilities_and_draws():
    rule = DecisionRule(lam=100.0, mix_lam=10.0, mix=0.3)  # at 100 the cheap model, at 10 the strong one
    p = rule.probabilities(Q1[:3], C1[:3]).probabilities
    assert np.allclose(p, [[0.7, 0.3]] * 3)
    keys = [f"request-{i}" for i in range(20000)]
    picks = rule.sample(np.tile([0.7, 0.3], (20000, 1)), keys)
    assert abs(picks.mean() - 0.3) < 0.01  # a fixed hash: the same answer on every run
    # the same key gets the same model, whatever else is in the batch; another seed draws differently
    assert (rule.sample(np.tile([0.7, 0.3], (50, 1)), keys[100:150]) == picks[100:150]).all()
    other = DecisionRule(lam=100.0, mix_lam=10.0, mix=0.3, seed=1).sample(np.tile([0.7, 0.3], (20000, 1)), keys)
    assert (other != picks).any()
    # a degenerate row needs no draw; a zero-probability model is never drawn
    assert rule.sample(np.array([[0.0, 1.0], [1.0, 0.0]]), ["a", "b"]).tolist() == [1, 0]


def test_changing_lambda_drops_the_mixing():
    rule = DecisionRule(lam=100.0, mix_lam=10.0, mix=0.3)
    assert rule.with_(lam=5.0).mix == 0.0 and rule.with_(lam=5.0).mix_lam is None
    assert rule.with_(lam=100.0).mix == 0.3 and rule.with_(max_cost=1.0).mix == 0.3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mix": 1.5, "mix_lam": 1.0}, r"mix must be in \[0, 1\]"),
        ({"mix_lam": -1.0}, "mix_lam must be a finite number >= 0"),
        ({"mix": 0.2}, "needs mix_lam"),
    ],
)
def test_rule_mixing_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DecisionRule(**kwargs)


# --------------------------------------------------------------------------- calibration
def test_a_share_between_two_lambdas_is_reached_by_mixing():
    """All prompts alike: lambda alone gives a share of 0 or 1; mixing gives any share in between."""
    res = calibrate(StrongShareTarget(0.3), Q1, C1, true_quality=Q1, true_cost=C1)
    assert res.met and res.mix == pytest.approx(0.3) and res.value == pytest.approx(0.3)
    assert res.n_lambdas == 2  # one critical lambda: 0.4 / 0.009
    held = realised(res, Q1, C1, Q1, C1)
    assert held["met"] and held["realised"] == pytest.approx(0.3)
    spend = calibrate(SpendTarget(5.0), Q1, C1, true_quality=Q1, true_cost=C1)
    assert realised(spend, Q1, C1, Q1, C1)["realised"] == pytest.approx(5.0)
    quality = calibrate(QualityTarget(0.8, confidence=0.5), Q1, C1, true_quality=Q1, true_cost=C1)
    assert realised(quality, Q1, C1, Q1, C1)["realised"] == pytest.approx(0.8)


def _dominated_half() -> tuple[np.ndarray, np.ndarray]:
    """Half the prompts: the best model is also the cheapest there, so it is chosen at every lambda."""
    q = np.array([[0.5, 0.9]] * 100)
    c = np.array([[0.001, 0.010]] * 50 + [[0.010, 0.001]] * 50)
    return q, c


@pytest.mark.parametrize(
    ("target", "data", "match"),
    [
        (SpendTarget(0.5), (Q1, C1), r"no lambda keeps the spend within 0.5 .* lowest reachable is 1"),
        (StrongShareTarget(0.2), _dominated_half(), r"no lambda keeps the share within 0.2 .* lowest reachable is 0.5"),
        (QualityTarget(0.9), (np.array([[0.9, 0.5], [0.5, 0.9]] * 50), np.array([[0.001, 0.010]] * 100)),
         r"no lambda keeps 0.9 of the best model's quality with 90% confidence .* keeps 0.3750"),
    ],
)
def test_impossible_targets_are_not_met_and_say_why(target, data, match):
    q, c = data
    tq = q.copy()
    if isinstance(target, QualityTarget):  # wrong predictions: every routing keeps 0.3 of model 1's 0.8
        tq = np.array([[0.0, 1.0], [0.6, 0.6]] * 50)
    res = calibrate(target, q, c, true_quality=tq, true_cost=c)
    assert not res.met
    held = realised(res, q, c, tq, c)
    assert held["met"] is False and held["reason"] == res.reason
    assert pytest.approx(held["target"]) == target.goal
    assert re.search(match, res.reason), res.reason


def test_a_budget_that_does_not_bind_is_met_below_it():
    res = calibrate(SpendTarget(50.0), Q1, C1, true_quality=Q1, true_cost=C1)
    assert res.lam == 0.0 and not res.binding and "not binding" in res.reason
    held = realised(res, Q1, C1, Q1, C1)
    assert held["met"] and held["realised"] == pytest.approx(10.0)


def test_held_out_value_outside_the_tolerance_is_not_met():
    res = calibrate(SpendTarget(5.0), Q1, C1, true_quality=Q1, true_cost=C1)
    dearer = C1 * 1.3  # prices rose 30% after calibration
    held = realised(res, Q1, dearer, Q1, dearer)
    assert held["realised"] == pytest.approx(6.5) and not held["met"]
    assert "outside the tolerance" in held["reason"] and f"{BUDGET_TOLERANCE:.0%}" in held["tolerance"]


def test_quality_confidence_keeps_more_quality():
    data = generate(1500, seed=5).outcomes
    rng = np.random.default_rng(0)
    q_hat = np.clip(data.quality * 0.3 + 0.5 + rng.normal(0, 0.2, data.quality.shape), 0, 1)
    point = calibrate(QualityTarget(0.9, confidence=0.5), q_hat, data.cost, true_quality=data.quality,
                      true_cost=data.cost)
    safe = calibrate(QualityTarget(0.9, confidence=0.95), q_hat, data.cost, true_quality=data.quality,
                     true_cost=data.cost)
    assert point.value == pytest.approx(0.9, abs=1e-9)
    assert safe.value > point.value and safe.lam < point.lam
    assert safe.extra["lower_bound"] == pytest.approx(0.9, abs=1e-9)


def test_calibration_errors():
    with pytest.raises(ConfigError, match="needs true_quality"):
        calibrate(QualityTarget(0.9), Q1, C1)
    with pytest.raises(ConfigError, match="confidence must be in"):
        QualityTarget(0.9, confidence=0.3)
    with pytest.raises(ConfigError, match="greedy rule"):
        calibrate(SpendTarget(1.0), Q1, C1, rule=DecisionRule(strategy="softmax"))
    with pytest.raises(ConfigError, match="not among the models"):
        calibrate(StrongShareTarget(0.1, model="gpt-9"), Q1, C1, models=["a", "b"])


# --------------------------------------------------------------------------- the operating point
@pytest.fixture(scope="module")
def small():
    data = generate(900, seed=11)
    train, test = split_outcomes(data.outcomes, seed=0)
    router = Router.fit(train, encoder=HashingEncoder(dim=64), predictor=LogisticPredictor())
    return router, train, test


def test_operating_point_is_saved_and_used(small, tmp_path):
    router, train, test = small
    q, c, _ = router.predict(list(train.prompts))
    res = calibrate(StrongShareTarget(0.3), q, c, true_quality=train.quality, true_cost=train.cost,
                    models=list(router.models))
    op = OperatingPoint(lam=res.lam, mix_lam=0.0, mix=0.25, source="calibrated", target=res.target,
                        calibrated=res.value, heldout=0.31, met=True, reason="test")
    router.operating_point = op
    assert router.rule.lam == res.lam and router.rule.mix == 0.25
    back = Router.load(router.save(tmp_path / "r"))
    assert back.operating_point == op and back.rule == router.rule
    saved = json.loads((tmp_path / "r" / "router.json").read_text())["operating_point"]
    assert saved["target"] == {"kind": "StrongShareTarget", "max_share": 0.3, "model": None}
    prompts = list(test.prompts[:200])
    a, b = router.route(prompts), back.route(prompts)
    assert a.chosen == b.chosen and np.allclose(a.probabilities, b.probabilities)
    # the mixing shows in the probabilities (the propensities) and in the draws
    mixed = a.probabilities.max(axis=1) < 1.0
    assert mixed.any() and np.allclose(a.probabilities[mixed].max(axis=1), 0.75)
    # setting another trade-off leaves no stale target behind
    back.rule = DecisionRule(lam=5.0)
    assert back.operating_point.source == "rule" and back.operating_point.target is None


def test_router_saved_without_an_operating_point_loads(small, tmp_path):
    router, _, _ = small
    router.rule = DecisionRule(lam=42.0)
    d = router.save(tmp_path / "old")
    meta = json.loads((d / "router.json").read_text())
    del meta["operating_point"]
    (d / "router.json").write_text(json.dumps(meta))
    back = Router.load(d)
    assert back.operating_point == OperatingPoint(lam=42.0, source="rule")


def test_decisions_file_with_a_text_setting_is_a_clear_error(small, tmp_path):
    from training.evaluate import load_decisions

    _, _, test = small
    f = tmp_path / "d.parquet"
    ids = list(test.prompt_ids)
    pl.DataFrame({"prompt_id": ids, "setting": ["lam=0.00121836"] * len(ids),
                  "chosen_model": [test.models[0]] * len(ids)}).write_parquet(f)
    with pytest.raises(SchemaError, match=r"row 1: 'setting' must be a number .* got 'lam=0.00121836'"):
        load_decisions(f, test)
    pl.DataFrame({"prompt_id": ids, "chosen_model": [test.models[0]] * len(ids)}).write_csv(tmp_path / "d.csv")
    with pytest.raises(SchemaError, match=r"lacks column\(s\) \['lam'\]"):
        load_decisions(tmp_path / "d.csv", test)


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.mark.slow
def test_route_then_evaluate_that_file(tmp_path):
    """`training fit` -> `router data prompts` -> `router route` -> `training evaluate --decisions` on that
    very file: one row per prompt at the operating point, scored exactly as the model's operating point."""
    data = generate(900, seed=11).outcomes
    src = save_outcomes(data, tmp_path / "o.parquet")
    r = _run("-m", "training", "fit", "--dataset", str(src), "--predictor", "logistic", "--encoder", "hashing",
             "--strong-share", "0.3", "--seed", "2", "--no-track", "--out", str(tmp_path / "model"))
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["target"] == {"kind": "StrongShareTarget", "value": 0.3}
    assert {"calibrated", "heldout", "met", "tolerance", "operating_point"} <= set(shown)
    held = json.loads((tmp_path / "model" / "heldout_metrics.json").read_text())
    assert held["heldout"]["seed"] == 2  # --seed reaches the held-out evaluation
    assert held["heldout"]["routers"]["router"]["operating_point"]["target"]["max_share"] == 0.3
    r = _run("-m", "router", "data", "prompts", str(src), "--split-seed", "2", "--output", str(tmp_path / "p.jsonl"))
    assert r.returncode == 0, r.stderr
    n = json.loads(r.stdout)["prompts"]
    r = _run("-m", "router", "route", "--model", str(tmp_path / "model"), "--input", str(tmp_path / "p.jsonl"),
             "--output", str(tmp_path / "decisions.parquet"))
    assert r.returncode == 0, r.stderr
    df = pl.read_parquet(tmp_path / "decisions.parquet")
    assert df.height == n and df["prompt_id"].n_unique() == n
    assert df.columns[:10] == ["prompt_id", "chosen_model", "propensity", "quality", "cost", "latency", "reason",
                               "lam", "mu", "operating_point"]
    assert df["lam"].dtype == pl.Float64 and df["lam"].n_unique() == 1 and df["operating_point"].all()
    assert df["lam"][0] == pytest.approx(shown["lam"])
    r = _run("-m", "training", "evaluate", "--dataset", str(src), "--split-seed", "2", "--no-track",
             "--decisions", str(tmp_path / "decisions.parquet"), "--model", str(tmp_path / "model"),
             "--n-bootstrap", "20", "--out", str(tmp_path / "report"))
    assert r.returncode == 0, r.stderr
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    from_file = metrics["routers"]["decisions"]["points"]
    op = metrics["routers"]["model"]["operating_point"]
    assert len(from_file) == 1 and from_file[0]["setting"] == pytest.approx(op["setting"])
    assert from_file[0]["cost"] == pytest.approx(op["cost"]) and from_file[0]["quality"] == pytest.approx(op["quality"])
    assert op["source"] == "calibrated" and op["target"]["kind"] == "StrongShareTarget"
    assert "Operating points" in (tmp_path / "report" / "report.html").read_text()


# --------------------------------------------------------------------------- knob fidelity on real data
@pytest.fixture(scope="module", params=["routerbench", "routellm-gsm8k"])
def real(request):
    """A fast router on a real source's training split, with the predictions `training fit` calibrates on."""
    from router.data.registry import load_source
    from training.fit import Args, calibration_predictions

    try:
        outcomes = load_source(request.param)
    except RoutingError as exc:
        pytest.skip(f"public routing data not available: {exc}")
    args = Args(dataset=request.param, predictor="logistic", encoder="hashing", track=False)
    train, test = split_outcomes(outcomes, seed=0)
    router = Router.fit(train, encoder=HashingEncoder(dim=512), predictor=LogisticPredictor(), prompt_stats=0.2)
    q_te, c_te, _ = router.predict(list(test.prompts))
    budget_kw = calibration_predictions(router, train, args, SpendTarget(1.0))
    quality_kw = calibration_predictions(router, train, args, QualityTarget(0.9))
    return request.param, router, train, test, q_te, c_te, budget_kw, quality_kw


# three targets per knob on each source (GSM8K has two models, so its shares are larger: a 15% band on a
# share of 0.1 of 374 held-out prompts is under one standard error), and targets no lambda reaches
TARGETS = {
    "routerbench": [QualityTarget(0.85), QualityTarget(0.9), QualityTarget(0.95),
                    StrongShareTarget(0.1), StrongShareTarget(0.2), StrongShareTarget(0.4),
                    SpendTarget(0.25), SpendTarget(0.5), SpendTarget(1.0)],
    "routellm-gsm8k": [QualityTarget(0.85), QualityTarget(0.9), QualityTarget(0.95),
                       StrongShareTarget(0.3), StrongShareTarget(0.5), StrongShareTarget(0.7),
                       SpendTarget(0.5), SpendTarget(1.0), SpendTarget(2.0)],
}
IMPOSSIBLE = {
    "routerbench": [(SpendTarget(0.01), "no lambda keeps the spend within 0.01"),
                    (QualityTarget(1.0), "no lambda keeps 1 of the best model's quality")],
    "routellm-gsm8k": [(SpendTarget(0.01), "no lambda keeps the spend within 0.01")],
}


def _knob(real, target):
    name, router, train, test, q_te, c_te, budget_kw, quality_kw = real
    kw = quality_kw if isinstance(target, QualityTarget) else budget_kw
    models = list(router.models)
    res = calibrate(target, **kw, true_quality=train.quality, true_cost=train.cost, models=models)
    return res, realised(res, q_te, c_te, test.quality, test.cost, models=models)


@pytest.mark.slow
@pytest.mark.data
def test_knobs_hit_their_targets_on_held_out_data(real):
    name = real[0]
    for target in TARGETS[name]:
        res, held = _knob(real, target)
        assert res.met and held["met"], (name, target, held)
        if isinstance(target, QualityTarget):
            assert held["realised"] >= target.fraction - QUALITY_TOLERANCE, (name, target, held)
        else:
            assert abs(held["realised"] - target.goal) <= BUDGET_TOLERANCE * target.goal, (name, target, held)
            assert held["calibrated"] == pytest.approx(target.goal)


@pytest.mark.slow
@pytest.mark.data
def test_impossible_targets_on_real_data(real):
    name = real[0]
    for target, reason in IMPOSSIBLE[name]:
        res, held = _knob(real, target)
        assert not res.met and not held["met"] and held["reason"].startswith(reason), (name, target, held)


def test_off_policy_estimates_include_the_operating_point(small, tmp_path):
    from training.evaluate import ope_from_log

    router, _, _ = small
    router.operating_point = OperatingPoint(lam=30.0, source="given")
    rows, diag = ope_from_log(str(ROOT / "datasets" / "demo" / "traffic"), str(router.save(tmp_path / "r")),
                              n_bootstrap=20)
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    assert policies == ["candidate at its operating point (lambda=30)", "logging policy (realised)"]
    assert diag["lam"] == 30.0 and diag["n"] > 1000 and 0 < diag["ess_ratio"] <= 1


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--keep-quality", "0.9", "--strong-share", "0.2"], "give at most one of --spend-per-1000, --strong-share and "
         "--keep-quality"),
        (["--lam", "5", "--spend-per-1000", "0.5"], "--lam and --spend-per-1000 both set lambda"),
        (["--keep-quality", "0.9", "--quality-confidence", "0.2"], r"--quality-confidence must be a number >= 0.5 and < 1"),
    ],
)
def test_fit_rejects_bad_knobs_before_any_work(argv, match, tmp_path):
    r = _run("-m", "training", "fit", "--dataset", "no-such-data", "--out", str(tmp_path / "x"), *argv)
    assert r.returncode == 2 and re.search(match, r.stderr), r.stderr
    assert not (tmp_path / "x").exists()
