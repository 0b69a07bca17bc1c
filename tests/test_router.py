"""The Router, the decision rule, lambda calibration, baselines and the batch routing CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from router.baselines import AlwaysRouter, CheapestRouter, OracleRouter, RandomMixRouter
from router.calibration import QualityTarget, SpendTarget, StrongShareTarget, calibrate, realised
from router.data.splits import split_outcomes
from router.data.synthetic import generate
from router.decision import DecisionRule
from router.encoders import HashingEncoder
from router.errors import ConfigError, PersistenceError, UnknownModelError
from router.predictors import KNNPredictor, LogisticPredictor
from router.router import Router, default_lambda_grid

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def data():
    return generate(3000, seed=3)


@pytest.fixture(scope="module")
def fitted(data):
    train, test = split_outcomes(data.outcomes, seed=0)
    router = Router.fit(train, encoder=HashingEncoder(dim=256), predictor=LogisticPredictor())
    return router, train, test


# --------------------------------------------------------------------------- decision rule
Q = np.array([[0.50, 0.70, 0.90]])
C = np.array([[0.001, 0.002, 0.010]])
L = np.array([[0.5, 1.0, 3.0]])


@pytest.mark.parametrize(
    ("rule", "allowed", "expected"),
    [
        (DecisionRule(lam=0.0), None, [0, 0, 1]),  # best quality
        (DecisionRule(lam=100.0), None, [0, 1, 0]),  # 0.5-0.1, 0.7-0.2, 0.9-1.0
        (DecisionRule(lam=1000.0), None, [1, 0, 0]),  # cost dominates
        (DecisionRule(lam=0.0, mu=0.5), None, [0, 1, 0]),  # 0.25, 0.2, -0.6 ... -> model 0? see below
        (DecisionRule(lam=0.0, max_cost=0.005), None, [0, 1, 0]),
        (DecisionRule(lam=0.0, max_latency=0.6), None, [1, 0, 0]),
        (DecisionRule(lam=0.0), [True, True, False], [0, 1, 0]),
        (DecisionRule(lam=0.0, max_cost=0.0001), None, [1, 0, 0]),  # nothing feasible -> cheapest allowed
    ],
)
def test_rule_choices(rule, allowed, expected):
    out = rule.probabilities(Q, C, L, allowed)
    if rule.mu == 0.5:  # utilities 0.25, 0.2, -0.6: model 0 wins
        expected = [1, 0, 0]
    assert out.probabilities.tolist() == [expected]


def test_rule_fallback_is_flagged():
    out = DecisionRule(max_cost=1e-6).probabilities(Q, C)
    assert out.fallback.tolist() == [True]


def test_rule_ties_go_to_cheaper_model():
    out = DecisionRule().probabilities(np.array([[0.8, 0.8]]), np.array([[0.02, 0.01]]))
    assert out.probabilities.tolist() == [[0.0, 1.0]]


def test_rule_epsilon_and_softmax_give_full_support():
    eps = DecisionRule(strategy="epsilon", epsilon=0.3).probabilities(Q, C).probabilities
    assert np.allclose(eps, [[0.1, 0.1, 0.8]])
    soft = DecisionRule(strategy="softmax", temperature=0.1).probabilities(Q, C).probabilities
    assert np.isclose(soft.sum(), 1.0) and (soft > 0).all() and soft.argmax() == 2
    masked = DecisionRule(strategy="softmax").probabilities(Q, C, allowed=[True, False, True]).probabilities
    assert masked[0, 1] == 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lam": -1.0}, "lam must be a finite number >= 0"),
        ({"mu": float("nan")}, "mu must be a finite number >= 0"),
        ({"strategy": "random"}, "strategy must be one of"),
        ({"epsilon": 1.5}, r"epsilon must be in \[0, 1\]"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"max_cost": 0.0}, "max_cost must be > 0 or None"),
    ],
)
def test_rule_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DecisionRule(**kwargs)


def test_rule_rejects_request_with_no_allowed_model():
    with pytest.raises(ConfigError, match="allows no model"):
        DecisionRule().probabilities(Q, C, allowed=[False, False, False])


def test_default_grid_traces_best_to_cheapest(data):
    o = data.outcomes
    grid = default_lambda_grid(o.quality[:200], o.cost[:200])
    first = DecisionRule(lam=grid[0]).probabilities(o.quality[:200], o.cost[:200]).probabilities.argmax(1)
    last = DecisionRule(lam=grid[-1]).probabilities(o.quality[:200], o.cost[:200]).probabilities.argmax(1)
    rows = np.arange(200)
    assert np.allclose(o.quality[rows[:200], first], o.quality[:200].max(axis=1))  # lam=0: best per prompt
    assert (last == o.cost[:200].argmin(axis=1)).all()  # largest lam: cheapest per prompt


# --------------------------------------------------------------------------- router
def test_route_returns_probabilities_and_reasons(fitted):
    router, _, test = fitted
    d = router.route(list(test.prompts[:20]), lam=50.0)
    assert d.probabilities.shape == (20, 5) and np.allclose(d.probabilities.sum(1), 1.0)
    assert d.quality.shape == d.cost.shape == d.latency.shape == (20, 5)
    assert (d.cost > 0).all() and (d.latency > 0).all()
    assert all(r.startswith(name) for r, name in zip(d.reasons, d.chosen))
    assert (d.propensity == 1.0).all()
    frame = d.to_frame(list(test.prompt_ids[:20]))
    assert frame.columns[:9] == ["prompt_id", "chosen_model", "propensity", "quality", "cost", "latency", "reason",
                                 "lam", "mu"]
    assert {"p:frontier-xl", "q:small-8b", "cost:math-13b"} <= set(frame.columns)
    assert frame["lam"].dtype == pl.Float64 and set(frame["lam"]) == {50.0}
    rows = np.arange(20)
    assert np.allclose(frame["cost"].to_numpy(), d.cost[rows, d.chosen_index])
    assert np.allclose(frame["quality"].to_numpy(), d.quality[rows, d.chosen_index])


def test_router_recovers_best_model_per_family(fitted, data):
    """Known answer: at lam=0 the learned router picks the skill table's best model per (family, level)."""
    router, _, test = fitted
    truth = data.best_model_per_context(lam=0.0)
    d = router.route(list(test.prompts), lam=0.0)
    rows = {pid: i for i, pid in enumerate(data.outcomes.prompt_ids)}
    idx = np.array([rows[p] for p in test.prompt_ids])
    tq = data.true_quality[idx]
    top2 = np.sort(tq, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) >= 0.05  # contexts whose best model wins by a clear margin
    hits = np.array([
        d.chosen[k] == truth[(data.families[data.family[i]], bool(data.hard[i]))] for k, i in enumerate(idx)
    ])
    assert clear.sum() > 200 and hits[clear].mean() > 0.9
    # everywhere: the chosen models' true quality is close to the best possible
    assert tq[np.arange(len(idx)), d.chosen_index].mean() > 0.97 * tq.max(axis=1).mean()


def test_router_beats_zero_router_on_held_out(fitted):
    from router.metrics import evaluate_curves

    router, _, test = fitted
    lams, choices, _, _ = router.sweep(list(test.prompts))
    res = evaluate_curves(test, {"router": (lams, choices)}, n_bootstrap=0)
    m = res.to_metrics_json("synthetic", "test")
    assert m["routers"]["router"]["aiq"] > m["zero_router"]["aiq"] + 0.03


def test_save_load_gives_identical_decisions(fitted, tmp_path):
    router, _, test = fitted
    prompts = list(test.prompts[:50])
    router.save(tmp_path / "r")
    loaded = Router.load(tmp_path / "r")
    a, b = router.route(prompts, lam=30.0), loaded.route(prompts, lam=30.0)
    assert a.chosen == b.chosen
    assert np.array_equal(a.probabilities, b.probabilities) and np.allclose(a.quality, b.quality)
    assert np.allclose(a.cost, b.cost) and np.allclose(a.latency, b.latency)
    saved = sorted(p.name for p in (tmp_path / "r").iterdir())
    assert "router.json" in saved and not any(p.endswith((".pkl", ".pickle")) for p in saved)


def test_route_does_not_modify_inputs(fitted):
    router, _, test = fitted
    prompts = [str(p) for p in test.prompts[:5]]
    chat = [[{"role": "system", "content": "be brief"}, {"role": "user", "content": prompts[0]}]]
    before = json.dumps([prompts, chat])
    router.route(prompts)
    router.route(chat)
    assert json.dumps([prompts, chat]) == before


def test_chat_uses_whole_conversation(fitted):
    router, _, _ = fitted
    a = router.embed([[{"role": "user", "content": "Prove rigorously a theorem about primes"}]])[0]
    b = router.embed([[{"role": "system", "content": "You are a legal assistant for contracts"},
                       {"role": "user", "content": "Prove rigorously a theorem about primes"}]])[0]
    assert not np.allclose(a, b)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda r: r.route([""]), ConfigError, "prompt 0 is empty"),
        (lambda r: r.route("just a string"), ConfigError, "not a single string"),
        (lambda r: r.route(["hi"], allowed=["gpt-9"]), UnknownModelError, "unknown model"),
        (lambda r: r.route(["hi"], allowed=[]), ConfigError, "allowed model list is empty"),
        (lambda r: r.route(["hi"], lam=-1.0), ConfigError, "lam must be"),
        (lambda r: r.predict(embeddings=np.full((1, 256), np.nan), lengths=np.ones(1)), ConfigError, "NaN"),
        (lambda r: r.route([42]), ConfigError, "has type int"),
    ],
)
def test_router_errors(fitted, call, error, match):
    router, _, _ = fitted
    with pytest.raises(error, match=match):
        call(router)


def test_allowed_models_are_respected(fitted):
    router, _, test = fitted
    d = router.route(list(test.prompts[:30]), lam=0.0, allowed=["small-8b", "math-13b"])
    assert set(d.chosen) <= {"small-8b", "math-13b"}
    assert (d.probabilities[:, [1, 3, 4]] == 0).all()


def test_load_errors(tmp_path):
    with pytest.raises(PersistenceError, match="no router.json"):
        Router.load(tmp_path)
    (tmp_path / "router.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(PersistenceError, match="format version 99 is not supported"):
        Router.load(tmp_path)


def test_same_seed_same_router(data):
    train, test = split_outcomes(data.outcomes.subset(np.arange(600)), seed=0)
    a = Router.fit(train, encoder=HashingEncoder(dim=64), predictor=KNNPredictor(k=10))
    b = Router.fit(train, encoder=HashingEncoder(dim=64), predictor=KNNPredictor(k=10))
    p = list(test.prompts)
    assert a.route(p).chosen == b.route(p).chosen


# --------------------------------------------------------------------------- calibration
@pytest.mark.parametrize(
    "target",
    [SpendTarget(usd_per_1000=0.3), StrongShareTarget(max_share=0.2), QualityTarget(fraction=0.9)],
)
def test_calibration_hits_target_on_held_out(fitted, target):
    """Calibrated on the training split, the realised value on held-out data is within tolerance."""
    router, train, test = fitted
    q_tr, c_tr, _ = router.predict(list(train.prompts))
    res = calibrate(target, q_tr, c_tr, true_quality=train.quality, true_cost=train.cost, models=list(router.models))
    assert res.met
    q_te, c_te, _ = router.predict(list(test.prompts))
    rep = realised(res, q_te, c_te, test.quality, test.cost, models=list(router.models))
    if isinstance(target, SpendTarget):
        assert rep["realised"] <= target.usd_per_1000 * 1.15
    elif isinstance(target, StrongShareTarget):
        assert rep["realised"] <= target.max_share + 0.05
    else:
        assert rep["realised"] >= target.fraction - 0.04  # ~3 standard errors on ~900 held-out prompts


def test_calibration_errors():
    with pytest.raises(ConfigError, match="needs true_quality"):
        calibrate(QualityTarget(0.9), Q, C)
    with pytest.raises(ConfigError, match=r"max_share must be in \[0, 1\]"):
        StrongShareTarget(1.5)
    with pytest.raises(ConfigError, match="usd_per_1000 must be > 0"):
        SpendTarget(0.0)


# --------------------------------------------------------------------------- baselines
def test_baselines(data):
    o = data.outcomes.subset(np.arange(400))
    prompts = list(o.prompts)
    assert set(AlwaysRouter("medium-70b").fit(o).route(prompts).chosen) == {"medium-70b"}
    assert set(CheapestRouter().fit(o).route(prompts).chosen) == {"small-8b"}
    s, ch, _, _ = RandomMixRouter(seed=0).fit(o).sweep(prompts)
    share_best = (ch == o.model_index("frontier-xl")[0]).mean(axis=1)
    assert share_best[0] == 0.0 and share_best[-1] == 1.0 and abs(share_best[5] - 0.5) < 0.1
    _, och, _, _ = OracleRouter(o).sweep(prompts, [0.0])
    assert np.allclose(o.quality[np.arange(400), och[0]], o.quality.max(axis=1))
    with pytest.raises(UnknownModelError):
        AlwaysRouter("gpt-9").fit(o)


# --------------------------------------------------------------------------- batch routing CLI
def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "router", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


@pytest.mark.slow
def test_route_cli(fitted, tmp_path):
    router, _, test = fitted
    router.save(tmp_path / "model")
    lines = [json.dumps({"prompt_id": "a", "prompt": str(test.prompts[0])}),
             json.dumps({"prompt_id": "b", "messages": [{"role": "user", "content": str(test.prompts[1])}]})]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "d.parquet"
    r = _cli("route", "--model", str(tmp_path / "model"), "--input", str(tmp_path / "in.jsonl"),
             "--output", str(out), "--lambdas", "0,100", "--models", "small-8b,frontier-xl")
    assert r.returncode == 0, r.stderr
    df = pl.read_parquet(out)
    assert df.height == 4 and df.columns[:3] == ["prompt_id", "chosen_model", "propensity"]
    assert sorted(set(df["lam"])) == [0.0, 100.0]
    assert {"p:small-8b", "p:frontier-xl", "q:small-8b", "cost:frontier-xl"} <= set(df.columns)
    assert "p:medium-70b" not in df.columns and set(df["chosen_model"]) <= {"small-8b", "frontier-xl"}
    # --sweep: a grid from the best model to the cheapest, the operating point among it
    r = _cli("route", "--model", str(tmp_path / "model"), "--input", str(tmp_path / "in.jsonl"),
             "--output", str(out), "--sweep")
    assert r.returncode == 0, r.stderr
    df = pl.read_parquet(out).sort("lam")
    # every operating point of the two prompts: lambda 0 (best), one lambda between switches, the cheapest
    assert df["lam"].min() == 0.0 and df["lam"].n_unique() >= 3 and df.filter(pl.col("operating_point")).height == 2
    assert set(df.filter(pl.col("lam") == df["lam"].max())["chosen_model"]) == {"small-8b"}
    # a clear error, no traceback
    (tmp_path / "bad.jsonl").write_text('{"prompt_id": "x"}\n')
    r = _cli("route", "--model", str(tmp_path / "model"), "--input", str(tmp_path / "bad.jsonl"),
             "--output", str(out))
    assert r.returncode == 2 and "bad.jsonl:1" in r.stderr and "Traceback" not in r.stderr


# --------------------------------------------------------------------------- training CLI + budget knob
@pytest.mark.slow
def test_fit_then_evaluate_with_budget_knob(tmp_path):
    """`training fit` on the shipped demo data, then `training evaluate --budgets`: realised spend on the
    held-out split stays within 15% of each calibrated target, and the report shows the table."""
    from training.evaluate import Args as EvalArgs
    from training.evaluate import run as evaluate
    from training.fit import Args, train

    res = train(Args(dataset="demo", predictor="logistic", encoder="hashing", out=str(tmp_path / "r"), track=False))
    assert (tmp_path / "r" / "router.json").exists() and res["summary"]["test_rows"] > 1000
    held = json.loads((tmp_path / "r" / "heldout_metrics.json").read_text())
    assert held["heldout"]["routers"]["router"]["aiq"] > held["heldout"]["zero_router"]["aiq"]
    evaluate(EvalArgs(dataset="demo", out=str(tmp_path / "rep"), model=str(tmp_path / "r"), n_bootstrap=20,
                      budgets="0.2,1.0", track=False))
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert set(metrics["routers"]) == {"r"}  # the budget knob is not a router: it has its own table
    budget = metrics["budget_knob"]["rows"]
    assert [b["target"] for b in budget] == [0.2, 1.0]
    assert all(b["realised"] <= 1.15 * b["target"] and b["realised"] >= 0.5 * b["target"] for b in budget)
    assert "Budget knob fidelity" in (tmp_path / "rep" / "report.html").read_text()


@pytest.mark.slow
def test_fit_calibrates_lambda_to_a_quality_target_on_held_out(tmp_path):
    """Lambda is calibrated on cross-fitted predictions of the training split; on the held-out split the
    realised share of the best model's quality is within 3 points of the target."""
    from training.fit import Args, train

    res = train(Args(dataset="demo", predictor="logistic", encoder="hashing", out=str(tmp_path / "r"), track=False,
                     keep_quality=0.9))
    cal = res["summary"]["calibration"]
    assert cal["kind"] == "QualityTarget" and cal["realised"] >= 0.87
    assert res["router"].rule.lam == cal["lam"] > 0
