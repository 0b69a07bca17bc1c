"""The loop end to end over real HTTP with a real registry, on RouterBench rows and on the synthetic drift.

Champion v1 (trained on the traffic before the shift) is registered in the session's SQLite MLflow
store and ``@champion`` points at it; ``python -m serve`` is started on ``models:/NAME@champion``
with online epsilon-greedy exploration (logged propensities) and a traffic log. Then:

1. the simulator replays the shifted traffic with true feedback;
2. a candidate is trained from the service's log (``python -m training bandit --log``) and registered;
3. while the simulator keeps sending requests, ``python -m training promote --log`` judges it against
   v1 off-policy on that log and moves ``@champion`` only when the interval of the gain clears zero;
4. the running service picks the new version up (the responses' ``x-route-policy-version``) with no
   failed request;
5. fresh prompts of the shifted part, never served before, are routed by the service: their realised
   reward ``quality - LAM * cost`` (from the data's truth) beats what v1 routes on the same prompts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serve_support import ROOT, Service, http, register_router

from router.router import Router

LAM = 50.0  # reward = quality - LAM * cost (USD)


def _simulate(url: str, data: Path, requests: int, *, rate: float, feedback: float, seed: int, out: Path,
              stop: threading.Event | None = None, on_result: Any = None) -> dict[str, Any]:
    from serve.simulate import simulate

    args = argparse.Namespace(url=url, data=str(data), rate=rate, requests=requests, feedback_share=feedback,
                              seed=seed, task=None, lam=LAM, model="router", no_cache=True, timeout=60.0, out=str(out))
    return simulate(args, stop=stop, on_result=on_result)


def _realised(outcomes: Any, models: list[str], rows: list[int]) -> float:
    idx = np.array([outcomes.models.index(m) for m in models])
    r = np.asarray(rows)
    return float((outcomes.quality[r, idx] - LAM * outcomes.cost[r, idx]).mean())


def run_loop(tmp: Path, *, name: str, v1_dir: Path, served: Any, fresh: Any, served_requests: int,
             register_with_cli: bool, providers: dict[str, Any] | None = None) -> dict[str, Any]:
    """Steps 1-5 of the module docs; returns the numbers (asserting every step on the way)."""
    import mlflow

    from router.data.registry import save_outcomes
    from serve.provider import running

    served_file, fresh_file = tmp / "served.parquet", tmp / "fresh.parquet"
    save_outcomes(dataclasses.replace(served, source="served"), served_file)
    save_outcomes(dataclasses.replace(fresh, source="fresh"), fresh_file)
    client = mlflow.MlflowClient()
    v1 = register_router(name, v1_dir, tmp / "registry")
    client.set_registered_model_alias(name, "champion", v1)
    log_dir = tmp / "log"
    config: dict[str, Any] = {"cache": {"enabled": False}, "registry_poll_s": 0.2,
              "logbook": {"dir": str(log_dir), "commit_ms": 10},
              "online": {"enabled": True, "epsilon": 0.5, "warm_prompts": 50, "warm_weight": 0.1}}
    out: dict[str, Any] = {"seconds": {}}
    t0 = time.monotonic()

    def lap(step: str) -> None:
        out["seconds"][step] = round(time.monotonic() - t0, 1)
    with running(data=str(served_file), latency_ms=1) as provider:
        if providers is not None:  # prices of models the price map does not know
            config["providers"] = {"endpoints": {"local": {"protocol": "openai", "api_base": provider}},
                                   "models": {m: {"endpoint": "local", "input_cost_per_token": i,
                                                  "output_cost_per_token": o} for m, (i, o) in providers.items()}}
        svc = Service(f"models:/{name}@champion", provider_url=provider, config=config, tmp=tmp)
        try:
            svc.wait_ready(120)
            lap("ready")
            # 1. the shifted traffic, with true feedback, served by v1 (+ online exploration)
            s1 = _simulate(svc.url, served_file, served_requests, rate=40.0, feedback=1.0, seed=0,
                           out=tmp / "served.jsonl")
            assert s1["ok"] == s1["feedback_ok"] == served_requests, s1
            assert {v.split("+")[0] for v in s1["versions"]} == {f"{name}/{v1}"}, s1["versions"]
            out["served"] = {k: s1[k] for k in ("ok", "feedback_ok", "reward", "models", "versions")}
            lap("served")
            # 2. a candidate learnt from the service's log
            cand_dir = tmp / "candidate"
            cmd = [sys.executable, "-m", "training", "bandit", "--log", str(log_dir), "--warm-start",
                   f"models:/{name}@champion", "--warm-weight", "0", "--policy", "linucb", "--alpha", "0",
                   "--lam", str(LAM), "--out", str(cand_dir)]
            if register_with_cli:
                cmd += ["--track", "--register", name]
            res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
            assert res.returncode == 0, res.stderr
            if register_with_cli:
                assert "registered as version" in res.stdout, res.stdout + res.stderr
                cand = res.stdout.strip().rsplit("registered as version ", 1)[1].split()[0]
            else:
                cand = register_router(name, cand_dir, tmp / "registry")
            assert cand != v1
            lap("candidate")
            # 3. while the simulator keeps sending requests, promotion is judged on the log
            rows: list[dict[str, Any]] = []
            stop = threading.Event()
            summary: dict[str, Any] = {}

            def keep_sending() -> None:
                summary.update(_simulate(svc.url, served_file, 100_000, rate=10.0, feedback=0.0, seed=1,
                                         out=tmp / "during.jsonl", stop=stop,
                                         on_result=lambda row: rows.append({**row, "t": time.time()})))

            sender = threading.Thread(target=keep_sending)
            sender.start()
            try:
                deadline = time.monotonic() + 60
                while len(rows) < 10 and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert len(rows) >= 10, "the simulator did not get going"
                res = subprocess.run([sys.executable, "-m", "training", "promote", "--name", name, "--candidate", cand,
                                      "--log", str(log_dir), "--n-boot", "500", "--latency-budget-ms", "1000"],
                                     cwd=ROOT, capture_output=True, text=True, timeout=600)
                lap("promoted")
                assert res.returncode == 0, f"promotion refused:\n{res.stdout}\n{res.stderr}"
                evidence = json.loads(res.stdout)
                assert evidence["promote"] and evidence["delta_ci"][0] > 0, evidence
                assert client.get_model_version_by_alias(name, "champion").version == int(cand)
                # promote writes the evidence into the version's description, then moves the alias
                moved = client.get_model_version(name, cand).last_updated_timestamp / 1000.0
                # 4. the running service picks it up
                new = f"{name}/{cand}"
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and sum(r["policy_version"] == new for r in rows) < 20:
                    time.sleep(0.05)
            finally:
                stop.set()
                sender.join(120)
            lap("picked_up")
            assert summary["requests"] == summary["ok"] and summary["errors"] == {}, summary  # no failed request
            sent = [json.loads(line) for line in (tmp / "during.jsonl").read_text().splitlines()]
            picked = [r for r in sent if r["policy_version"] == new]
            assert picked, f"the promoted version was never served\n{svc.output()}"
            # a request sent after an answer of the new version arrived reached the service after the swap, so
            # the new version decided it (by order of events, not by a timing allowance)
            seen_new = min(r["answered_s"] for r in picked)
            later = [r["policy_version"] for r in sent if r["sent_s"] > seen_new]
            assert later and set(later) == {new}, later
            metrics = http("GET", svc.url + "/metrics")[2].decode()
            assert "router_policy_swaps_total 1" in metrics
            out["promotion"] = {"delta_ci": evidence["delta_ci"], "candidate_value": evidence["candidate_value"],
                                "champion_value": evidence["champion_value"], "reasons": evidence["reasons"]}
            after = [r for r in rows if r["t"] >= moved]
            out["pickup"] = {"requests_during": len(sent), "answered_before_the_alias_moved": len(rows) - len(after),
                             "old_version_answers_after_the_move": sum(r["policy_version"] != new for r in after),
                             "seconds_from_move_to_first_new_answer": round(
                                 min(r["t"] for r in after if r["policy_version"] == new) - moved, 3),
                             "new_version_answers": len(picked)}
            # 5. fresh prompts of the shifted part, routed by the service now
            s3 = _simulate(svc.url, fresh_file, fresh.n_prompts, rate=40.0, feedback=0.0, seed=2,
                           out=tmp / "fresh.jsonl")
            assert s3["ok"] == fresh.n_prompts and s3["versions"] == {new: fresh.n_prompts}, s3
            lap("fresh")
        finally:
            code = svc.stop()
            print(json.dumps(out["seconds"]))
        assert code in (0, -signal.SIGTERM), svc.output()
    answered = [json.loads(line) for line in (tmp / "fresh.jsonl").read_text().splitlines()]
    rows_fresh = [r["row"] for r in answered]
    served_reward = _realised(fresh, [r["model"] for r in answered], rows_fresh)
    assert served_reward == pytest.approx(s3["reward"])
    prompts = [str(fresh.prompts[i]) for i in rows_fresh]
    v1_models = list(Router.load(v1_dir).route(prompts, explain=False).chosen)
    cand_models = list(Router.load(cand_dir).route(prompts, explain=False).chosen)
    out["fresh"] = {"prompts": fresh.n_prompts, "reward_service_candidate": served_reward,
                    "reward_v1": _realised(fresh, v1_models, rows_fresh),
                    "reward_candidate_offline": _realised(fresh, cand_models, rows_fresh),
                    "service_agrees_with_offline_candidate": float(np.mean(
                        [a == r["model"] for a, r in zip(cand_models, answered, strict=True)]))}
    print(json.dumps(out, default=str))
    assert out["fresh"]["reward_service_candidate"] > out["fresh"]["reward_v1"]
    return out


def test_the_loop_on_the_synthetic_drift(tmp_path):
    """The generator's drift scenario: from mid-span on, half the prompts are low-resource translation, where
    the small model is best -- a family v1 never saw and routes to the mid-size model and the specialists."""
    from router.data.synthetic import MODELS, generate
    from router.decision import DecisionRule
    from router.encoders import HashingEncoder
    from router.predictors import KNNPredictor

    data = generate(2400, seed=0, emerging="translation", emerging_at=0.5, emerging_share=0.5)
    o = data.outcomes
    before, after = np.flatnonzero(~data.after_shift), np.flatnonzero(data.after_shift)
    rng = np.random.default_rng(0)
    served = rng.choice(after, 300, replace=False)
    new_family = np.flatnonzero(o.tasks == "translation")
    fresh = rng.choice(np.setdiff1d(new_family, served), 150, replace=False)
    assert not set(o.tasks[before]) & {"translation"}  # v1's traffic has no translation at all
    v1_dir = tmp_path / "v1"
    Router.fit(o.subset(before), encoder=HashingEncoder(dim=256), predictor=KNNPredictor(k=20),
               rule=DecisionRule(lam=LAM)).save(v1_dir)
    run_loop(tmp_path, name="loop-synthetic", v1_dir=v1_dir, served=o.subset(served), fresh=o.subset(fresh),
             served_requests=300, register_with_cli=False,
             providers={m.name: (m.input_price, m.output_price) for m in MODELS})


@pytest.mark.data
@pytest.mark.slow
def test_the_loop_on_an_unseen_routerbench_task(tmp_path):
    """RouterBench: v1 trained on two of the three tasks; the shifted traffic is the third (MBPP). The candidate
    is trained and registered by ``training bandit --log --track --register`` itself."""
    from router.data.registry import load_source
    from router.decision import DecisionRule
    from router.encoders import HashingEncoder
    from router.errors import SourceNotFoundError
    from router.predictors import KNNPredictor

    try:
        o = load_source("routerbench")
    except SourceNotFoundError as exc:
        pytest.skip(f"RouterBench data not available (set ROUTING_DATA_DIR): {exc}")
    task = np.flatnonzero(o.tasks == "mbpp")
    rng = np.random.default_rng(0)
    rng.shuffle(task)
    v1_dir = tmp_path / "v1"
    Router.fit(o.subset(o.tasks != "mbpp"), encoder=HashingEncoder(dim=256), predictor=KNNPredictor(k=20),
               rule=DecisionRule(lam=LAM)).save(v1_dir)
    run_loop(tmp_path, name="loop-routerbench", v1_dir=v1_dir, served=o.subset(task[:300]),
             fresh=o.subset(task[300:]), served_requests=300, register_with_cli=True)
