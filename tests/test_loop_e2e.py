"""The loop end to end over real HTTP on RouterBench rows.

Champion v1 is trained on two of RouterBench's three tasks; the service (v1 as its router, online
epsilon-greedy exploration with logged propensities) serves the third task's prompts sent by the
simulator with true feedback; a candidate is trained from the service's log
(``training bandit --log``), judged off-policy on that log against v1 (``compare_on_log``, what
``training promote --log`` runs) and, on fresh prompts of the task, its realised reward (from the
data's truth) is compared with v1's."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys

import numpy as np
import pytest
from serve_support import ROOT, Service

from router.router import Router

LAM = 50.0  # reward = quality - LAM * cost (USD)
HELD_OUT = "mbpp"


@pytest.mark.data
@pytest.mark.slow
def test_the_loop_on_an_unseen_routerbench_task(tmp_path):
    import dataclasses

    from router.data.registry import load_source
    from router.decision import DecisionRule
    from router.encoders import HashingEncoder
    from router.errors import SourceNotFoundError
    from router.predictors import KNNPredictor
    from serve.provider import running
    from serve.simulate import simulate
    from training.ope_log import feedback_rows
    from training.promote import compare_on_log

    try:
        o = load_source("routerbench")
    except SourceNotFoundError as exc:
        pytest.skip(f"RouterBench data not available (set ROUTING_DATA_DIR): {exc}")
    train = o.subset(o.tasks != HELD_OUT)
    task = np.flatnonzero(o.tasks == HELD_OUT)
    rng = np.random.default_rng(0)
    rng.shuffle(task)
    fresh = task[300:]  # never served: where candidate and v1 are compared against the truth
    served_data = o.subset(task[:300])
    v1_dir = tmp_path / "v1"
    Router.fit(train, encoder=HashingEncoder(dim=256), predictor=KNNPredictor(k=20),
               rule=DecisionRule(lam=LAM)).save(v1_dir)
    data_file = tmp_path / "served.parquet"
    from router.data.registry import save_outcomes

    save_outcomes(dataclasses.replace(served_data, source="served"), data_file)
    log_dir = tmp_path / "log"
    config = {"cache": {"enabled": False}, "logbook": {"dir": str(log_dir), "commit_ms": 10},
              "online": {"enabled": True, "epsilon": 0.3, "warm_prompts": 50, "warm_weight": 0.1}}
    with running(data="routerbench", latency_ms=1) as provider:
        svc = Service(str(v1_dir), provider_url=provider, config=config, tmp=tmp_path)
        svc.wait_ready(120)
        try:
            summary = simulate(argparse.Namespace(
                url=svc.url, data=str(data_file), rate=40.0, requests=300, feedback_share=1.0, seed=0, task=None,
                lam=LAM, model="router", no_cache=True, timeout=60.0, out=str(tmp_path / "rows.jsonl")))
        finally:
            assert svc.stop() in (0, -signal.SIGTERM), svc.output()
    assert summary["ok"] == 300 and summary["feedback_ok"] == 300, summary
    cand_dir = tmp_path / "candidate"
    res = subprocess.run([sys.executable, "-m", "training", "bandit", "--log", str(log_dir), "--warm-start",
                          str(v1_dir), "--warm-weight", "0", "--policy", "linucb", "--alpha", "0", "--lam", str(LAM),
                          "--out", str(cand_dir)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    v1, cand = Router.load(v1_dir), Router.load(cand_dir)
    evidence = compare_on_log(cand, v1, feedback_rows(log_dir), n_boot=300, latency_budget_ms=1e4)

    def realised(router: Router) -> float:
        d = router.route([str(o.prompts[i]) for i in fresh], explain=False)
        idx = np.array([o.models.index(m) for m in d.chosen])
        return float((o.quality[fresh, idx] - LAM * o.cost[fresh, idx]).mean())

    r_v1, r_cand = realised(v1), realised(cand)
    print(json.dumps({"served": summary, "evidence": evidence.to_dict(), "fresh_reward_v1": r_v1,
                      "fresh_reward_candidate": r_cand}, default=str))
    assert r_cand > r_v1  # learnt from the live log, it routes the unseen task better than v1
    if evidence.promote:  # the gate only passes a candidate whose interval clears v1 ...
        assert evidence.delta_ci[0] > 0 and r_cand > r_v1  # ... and such a candidate is really better
