"""Online learning in the service over real HTTP: a bandit policy warm-started from a (deliberately
wrong) offline router explores with logged propensities, learns from the simulator's true feedback
and ends up routing better than the frozen router; exploration can be capped; its snapshot is a
router directory; the logging policy's own value is recovered off-policy from its log."""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import warnings

import numpy as np
import pytest
from serve_support import Service, http

from router.router import Router


@pytest.fixture(scope="module")
def provider():
    from serve.provider import running

    with running(data="demo", latency_ms=1) as url:
        yield url


@pytest.fixture(scope="module")
def wrong_router(tmp_path_factory):
    """A router that learned reversed quality: offline, it picks the worst model for each prompt."""
    from router.data.synthetic import generate
    from router.encoders import HashingEncoder
    from router.predictors import KNNPredictor

    path = tmp_path_factory.mktemp("wrong")
    o = generate(600, seed=0).outcomes
    Router.fit(dataclasses.replace(o, quality=1.0 - o.quality), encoder=HashingEncoder(dim=128),
               predictor=KNNPredictor(k=10)).save(path)
    return path


def _simulate(url: str, out, requests: int, seed: int = 0) -> tuple[dict, list[dict]]:
    from serve.simulate import simulate

    args = argparse.Namespace(url=url, data="demo", rate=60.0, requests=requests, feedback_share=1.0, seed=seed,
                              task=None, lam=0.0, model="router", no_cache=True, timeout=30.0, out=str(out))
    summary = simulate(args)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return summary, rows


def _service(router_dir, provider, tmp, **online):
    config = {"cache": {"enabled": False}, "logbook": {"dir": str(tmp / "log"), "commit_ms": 10},
              "online": {"enabled": True, "epsilon": 0.2, "warm_prompts": 20, "warm_weight": 0.1, "snapshot_dir": str(tmp / "snaps"),
                         **online}}
    svc = Service(str(router_dir), provider_url=provider, config=config, tmp=tmp)
    svc.wait_ready()
    return svc


def test_online_policy_learns_from_feedback_and_beats_the_frozen_router(provider, wrong_router, tmp_path):
    from router.data.registry import load_source

    svc = _service(wrong_router, provider, tmp_path)
    try:
        summary, rows = _simulate(svc.url, tmp_path / "rows.jsonl", 600)
        metrics = http("GET", svc.url + "/metrics")[2].decode()
    finally:
        assert svc.stop() in (0, -signal.SIGTERM), svc.output()
    assert summary["ok"] == 600 and summary["feedback_ok"] == 600
    demo = load_source("demo")
    frozen = Router.load(wrong_router).route([str(demo.prompts[r["row"]]) for r in rows], explain=False)
    pos = {m: j for j, m in enumerate(demo.models)}
    frozen_q = np.array([demo.quality[r["row"], pos[m]] for r, m in zip(rows, frozen.chosen)])
    online_q = np.array([r["quality"] for r in rows])
    # the frozen router picks badly on these prompts; after 450 rated requests the online policy
    # routes the last 150 clearly better than the frozen router does on the same prompts
    assert online_q[-150:].mean() > frozen_q[-150:].mean() + 0.15, (online_q[-150:].mean(), frozen_q[-150:].mean())
    assert online_q[-150:].mean() > online_q[:150].mean()
    updates = int(next(x for x in metrics.splitlines() if x.startswith("router_online_updates_total")).split()[1])
    assert updates >= 590  # feedback is applied while the service runs (bounded staleness)
    from router.data.logs import read_log

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean shutdown leaves no torn tail
        log = read_log(tmp_path / "log")
    assert log.height == 600 and log["quality"].null_count() == 0
    assert log["policy_version"].str.ends_with("+online").all()
    explored = log["explored"].to_numpy()
    assert 0.05 < explored.mean() < 0.35  # epsilon 0.2 over 5 models: ~16% of draws leave the greedy pick
    assert (log["propensity"].to_numpy() < 1).all()  # every draw was random with a logged probability
    # the snapshot written at shutdown is a router with the learnt policy inside (a candidate version)
    snaps = sorted((tmp_path / "snaps").iterdir())
    assert len(snaps) == 1
    snap = Router.load(snaps[0])
    assert snap.metadata["router_kind"] == "online:egreedy" and snap.metadata["n_updates"] >= 590
    snap_d = snap.route([str(demo.prompts[r["row"]]) for r in rows[-150:]], explain=False)
    snap_q = np.array([demo.quality[r["row"], pos[m]] for r, m in zip(rows[-150:], snap_d.chosen)])
    assert snap_q.mean() > frozen_q[-150:].mean() + 0.1


def test_logged_propensities_are_right(provider, wrong_router, tmp_path):
    """With the propensities the service logged, off-policy estimates of fixed policies ("always
    model j") and of uniform routing on the log cover their true values (from the data)."""
    from router.data.logs import read_log
    from router.data.registry import load_source
    from router.ope import IPS

    svc = _service(wrong_router, provider, tmp_path, epsilon=0.5, warm_prompts=50)
    try:
        _, rows = _simulate(svc.url, tmp_path / "rows.jsonl", 500, seed=2)
    finally:
        svc.stop()
    log = read_log(tmp_path / "log")
    demo = load_source("demo")
    pos = {m: j for j, m in enumerate(demo.models)}
    p = log["propensity"].to_numpy()
    assert p.min() < 0.2 < 0.5 < p.max() < 1  # epsilon-greedy: 0.1 off the greedy pick, 0.6 on it
    by_rid = {r["request_id"]: r["row"] for r in rows}
    served = np.array([by_rid[r] for r in log["request_id"].to_list()])
    a = np.array([pos[m] for m in log["chosen_model"].to_list()])
    q = log["quality"].to_numpy()
    for j, model in enumerate(demo.models):
        target = np.zeros((len(a), 5))
        target[:, j] = 1.0
        est = IPS().estimate_interval(q, a, p, target, method="normal", confidence=0.999)
        truth = float(demo.quality[served, j].mean())
        assert est.low <= truth <= est.high, (model, est, truth)
    # the logging policy itself: the draw of a second, independent uniform policy (value known from
    # the data) is estimated on the same log within its interval
    uniform = np.full((len(a), 5), 0.2)
    est = IPS().estimate_interval(q, a, p, uniform, method="normal", confidence=0.999)
    assert est.low <= float(demo.quality[served].mean()) <= est.high


def test_exploration_can_be_capped(provider, wrong_router, tmp_path):
    svc = _service(wrong_router, provider, tmp_path, max_explore_share=0.0)
    try:
        summary, _ = _simulate(svc.url, tmp_path / "rows.jsonl", 60)
    finally:
        svc.stop()
    from router.data.logs import read_log

    log = read_log(tmp_path / "log")
    assert summary["ok"] == 60 and not log["explored"].any() and (log["propensity"] == 1.0).all()


def test_online_learning_needs_the_traffic_log():
    from serve.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="online.enabled needs logbook.dir"):
        Settings.from_dict({"model": "x", "online": {"enabled": True}})
    with pytest.raises(SettingsError, match="online.policy"):
        Settings.from_dict({"model": "x", "logbook": {"dir": "d"}, "online": {"enabled": True, "policy": "neural"}})
