"""Training on the service's logs: off-policy evaluation (``training evaluate --log``), promotion
judged on the log, a policy learnt from the log (``training bandit --log``), on a log written by
the service's own writer with a uniform logging policy over synthetic traffic (known truth)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from serve_support import ROOT, tiny_router

from router.router import Router


@pytest.fixture(scope="module")
def traffic(tmp_path_factory):
    """(log dir, outcomes, rows served): 1,500 synthetic prompts routed uniformly at random, all rated."""
    import asyncio

    from router.data.synthetic import generate
    from serve.logbook import DecisionRecord
    from serve.trafficlog import TrafficLog

    d = tmp_path_factory.mktemp("live-log")
    data = generate(1500, seed=11).outcomes
    rng = np.random.default_rng(5)
    m = data.n_models
    chosen = rng.integers(0, m, data.n_prompts)
    book = TrafficLog(d, commit_ms=5)

    async def write() -> None:
        acks = []
        for i in range(data.n_prompts):
            j = int(chosen[i])
            rid = f"r{i}"
            book.on_decision(DecisionRecord(rid, time.time(), "default", [{"role": "user", "content": str(data.prompts[i])}],
                                            data.models[j], 1.0 / m, True, "uniform", "miss",
                                            answered_model=data.models[j], cost=float(data.cost[i, j]), latency_s=0.1))
            acks.append(book.submit_feedback({"request_id": rid, "quality": float(data.quality[i, j])}))
        await asyncio.gather(*acks)

    asyncio.run(write())
    book.close()
    return d, data, chosen


@pytest.fixture(scope="module")
def routers(tmp_path_factory):
    import dataclasses

    from router.data.synthetic import generate
    from router.encoders import HashingEncoder
    from router.predictors import KNNPredictor

    good = tmp_path_factory.mktemp("good")
    bad = tmp_path_factory.mktemp("bad")
    tiny_router(good)
    o = generate(600, seed=0).outcomes  # the same prompts with quality reversed: it learns to pick the worst
    Router.fit(dataclasses.replace(o, quality=1.0 - o.quality), encoder=HashingEncoder(dim=128),
               predictor=KNNPredictor(k=10)).save(bad)
    return good, bad


def _true_value(router_dir, data) -> float:
    r = Router.load(router_dir)
    d = r.route(list(data.prompts), explain=False)
    idx = np.array([data.models.index(m) for m in d.chosen])
    return float(data.quality[np.arange(data.n_prompts), idx].mean())


def test_training_evaluate_on_the_log_covers_the_true_value(traffic, routers, tmp_path):
    log_dir, data, _ = traffic
    good, _ = routers
    out = tmp_path / "report"
    res = subprocess.run([sys.executable, "-m", "training", "evaluate", "--log", str(log_dir), "--model", str(good),
                          "--out", str(out), "--no-track", "--n-bootstrap", "200"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert {p.name for p in out.iterdir()} >= {"metrics.json", "summary.md", "report.html"}
    doc = json.loads((out / "metrics.json").read_text())
    est = {(r["policy"].split(" ")[0], r["metric"], r["estimator"], r["method"]): r for r in doc["ope"]["estimates"]}
    truth = _true_value(good, data)
    for name in ("ips", "snips", "dr"):
        r = est[("candidate", "quality", name, "normal")]
        assert r["low"] <= truth <= r["high"], (name, r, truth)
    realised = est[("logging", "quality", "on_policy_mean", "normal")]["value"]
    assert truth > realised + 0.05  # the learnt router beats uniform routing, and the log shows it
    diag = doc["ope"]["diagnostics"]
    # a deterministic target on a uniform log over 5 models: about a fifth of the rows match
    assert diag["n_rows"] == 1500 and 200 < diag["ess"] < 400 and 0.7 < diag["share_zero_target"] < 0.9
    assert "DR reward" in res.stdout


def test_evaluate_on_the_log_refuses_a_pool_mismatch_clearly(traffic, tmp_path):
    from router.data.synthetic import generate
    from router.encoders import HashingEncoder
    from router.predictors import KNNPredictor

    log_dir, _, _ = traffic
    small = generate(200, seed=0).outcomes
    r = Router.fit(small.subset(models=list(small.models)[:2]), encoder=HashingEncoder(dim=64),
                   predictor=KNNPredictor(k=5))
    r.save(tmp_path / "r2")
    from training.evaluate import main

    assert main(["--log", str(log_dir), "--model", str(tmp_path / "r2"), "--out", str(tmp_path / "o"),
                 "--no-track"]) == 2


def test_promotion_on_the_log_needs_a_gain_beyond_the_interval(traffic, routers):
    from training.ope_log import feedback_rows
    from training.promote import compare_on_log

    log_dir, _, _ = traffic
    good, bad = (Router.load(p) for p in routers)
    rows = feedback_rows(log_dir)
    ev = compare_on_log(good, bad, rows, n_boot=200, latency_budget_ms=1e4)
    assert ev.promote and ev.delta_ci[0] > 0
    ev = compare_on_log(bad, good, rows, n_boot=200, latency_budget_ms=1e4)
    assert not ev.promote and ev.delta_ci[1] < 0


def test_training_bandit_learns_a_router_from_the_log(traffic, routers, tmp_path):
    log_dir, data, _ = traffic
    good, _ = routers
    out = tmp_path / "from-log"
    res = subprocess.run([sys.executable, "-m", "training", "bandit", "--log", str(log_dir), "--warm-start", str(good),
                          "--warm-weight", "0", "--policy", "linucb", "--alpha", "0.0", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 1500 and sum(metrics["action_counts"].values()) == 1500
    learnt = _true_value(out, data)
    uniform = float(data.quality.mean())
    assert learnt > uniform + 0.05  # learnt from bandit feedback alone (no warm start)
    r = Router.load(out)
    assert r.metadata["router_kind"] == "bandit:linucb" and list(r.models) == list(data.models)
    res = subprocess.run([sys.executable, "-m", "training", "bandit", "--log", str(log_dir), "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "--warm-start" in res.stderr


@pytest.mark.slow  # the pyfunc packaging of a registered version (as in tests/test_lifecycle.py)
def test_training_bandit_from_the_log_registers_the_candidate(traffic, routers, tmp_path):
    """``--track --register NAME`` with ``--log``: an MLflow run with the log's numbers and a new registry
    version of NAME that loads as the router written to ``--out`` (what ``training promote --log`` judges)."""
    import mlflow

    from router.registry_io import load_router

    log_dir, data, _ = traffic
    good, _ = routers
    out = tmp_path / "from-log"
    res = subprocess.run([sys.executable, "-m", "training", "bandit", "--log", str(log_dir), "--warm-start", str(good),
                          "--warm-weight", "0", "--policy", "linucb", "--alpha", "0.0", "--out", str(out),
                          "--track", "--register", "from-log", "--experiment", "from-log"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "registered as version 1 of from-log" in res.stdout, res.stdout + res.stderr
    client = mlflow.MlflowClient()
    version = client.get_model_version("from-log", "1")
    run = client.get_run(version.run_id)
    metrics = json.loads((out / "metrics.json").read_text())
    assert run.data.metrics["bandit/steps"] == 1500
    assert run.data.metrics["bandit/mean_logged_reward"] == pytest.approx(metrics["mean_logged_reward"])
    assert run.data.params["log"] == str(log_dir) and run.data.tags["command"] == "bandit"
    registered = load_router("models:/from-log/1")
    prompts = [str(p) for p in data.prompts[:200]]
    assert list(registered.route(prompts, explain=False).chosen) == list(Router.load(out).route(prompts, explain=False).chosen)


def test_replay_environment_reads_the_service_log_by_name(traffic):
    import gymnasium
    from gymnasium.utils.env_checker import check_env

    import envs  # noqa: F401  (registers routing/Replay-v0)

    log_dir, data, chosen = traffic
    env = gymnasium.make("routing/Replay-v0", log=str(log_dir), model_names=list(data.models),
                         encoder_options={"dim": 64}, reward_mode="replay", seed=0)
    assert env.unwrapped.metadata["model_names"] == tuple(data.models)
    assert np.array_equal(env.unwrapped.data.logged_action, chosen)  # every rated decision, as served
    obs, info = env.reset(seed=0)
    logged = info.get("logged_action")
    _, reward, _, _, info = env.step(int(logged) if logged is not None else 0)
    assert np.isfinite(reward)
    check_env(env.unwrapped, skip_render_check=True)
