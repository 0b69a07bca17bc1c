"""The out-of-distribution guard: flags prompts far from the training data, shrinks their quality
predictions to the priors, survives save/load, shows as a live drift metric, and on RouterBench
routes an unseen task at least as well as the same router without it."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
from serve_support import Service, http

from router.errors import ConfigError
from router.ood import OODGuard
from router.router import Router

FAR = "zqxv wrbblk fnord quux plugh xyzzy gronk"


def _router(ood_quantile=0.95):
    from router.data.synthetic import generate
    from router.encoders import HashingEncoder
    from router.predictors import KNNPredictor

    data = generate(600, seed=0).outcomes
    return data, Router.fit(data, encoder=HashingEncoder(dim=128), predictor=KNNPredictor(k=10),
                            ood_quantile=ood_quantile)


def test_guard_flags_far_prompts_and_shrinks_to_the_training_priors(tmp_path):
    data, r = _router()
    near = list(data.prompts[:50])
    d = r.route([*near, FAR], explain=False)
    assert d.ood is not None and d.ood[-1] and d.ood[:-1].mean() <= 0.2  # ~5% of training prompts by design
    prior = np.asarray(data.quality).mean(axis=0)
    assert np.allclose(d.quality[-1], prior, atol=0.02)
    r.ood = None
    raw = r.route([FAR], explain=False).quality[0]
    assert not np.allclose(raw, prior, atol=0.02)  # without the guard the prediction is the raw one
    _, r = _router()
    r.save(tmp_path / "r")
    back = Router.load(tmp_path / "r")
    assert back.ood is not None and back.ood.threshold_ == pytest.approx(r.ood.threshold_)
    assert np.allclose(back.route([FAR], explain=False).quality, r.route([FAR], explain=False).quality)
    _, plain = _router(None)
    assert plain.ood is None and plain.route([FAR], explain=False).ood is None


@pytest.mark.parametrize("kw,match", [({"quantile": 1.0}, "quantile"), ({"sharpness": 0}, "sharpness"),
                                      ({"max_reference": 1}, "max_reference")])
def test_guard_settings_are_checked(kw, match):
    with pytest.raises(ConfigError, match=match):
        OODGuard(**kw)


def test_guard_needs_matching_quality_rows():
    with pytest.raises(ConfigError, match="quality must be"):
        OODGuard().fit(np.ones((5, 3)), np.ones((4, 2)))


def test_service_publishes_the_share_of_unfamiliar_prompts(tmp_path):
    from serve.provider import running

    data, r = _router()
    r.save(tmp_path / "r")
    near = [str(p) for p in data.prompts[:2]]
    with running(data="demo", latency_ms=1) as provider:
        svc = Service(str(tmp_path / "r"), provider_url=provider, tmp=tmp_path,
                      config={"cache": {"enabled": False}, "logbook": {"dir": str(tmp_path / "log")}})
        svc.wait_ready()
        try:
            for text in (near[0], FAR, near[1]):
                body = json.dumps({"model": "router", "messages": [{"role": "user", "content": text}]}).encode()
                assert http("POST", svc.url + "/v1/chat/completions", body)[0] == 200
            metrics = http("GET", svc.url + "/metrics")[2].decode()
        finally:
            assert svc.stop() in (0, -signal.SIGTERM)
    assert "router_ood_checked_total 3" in metrics and "router_ood_prompts_total 1" in metrics
    assert "router_ood_share 0.333333" in metrics
    from router.data.logs import read_log

    log = read_log(tmp_path / "log")
    assert log["ood"].to_list() == [False, True, False]


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("held_out", ["mbpp", "arc-challenge", "winogrande"])
def test_on_an_unseen_routerbench_task_the_guard_routes_no_worse(held_out):
    """Trained on two RouterBench tasks, routing the third: AIQ with the guard >= without it."""
    from router.data.registry import load_source
    from router.encoders import HashingEncoder
    from router.errors import SourceNotFoundError
    from router.metrics.evaluate import Curve, evaluate_curves
    from router.predictors import KNNPredictor

    try:
        o = load_source("routerbench")
    except SourceNotFoundError as exc:
        pytest.skip(f"RouterBench data not available (set ROUTING_DATA_DIR): {exc}")
    train, test = o.subset(o.tasks != held_out), o.subset(o.tasks == held_out)
    r = Router.fit(train, encoder=HashingEncoder(dim=256), predictor=KNNPredictor(k=20), ood_quantile=0.95)
    prompts = list(test.prompts)
    lams, guarded, _, _ = r.sweep(prompts)
    r.ood = None
    _, plain, _, _ = r.sweep(prompts, lambdas=lams)
    res = evaluate_curves(test, {"guard": Curve(settings=lams, choices=guarded),
                                 "plain": Curve(settings=lams, choices=plain)}, n_bootstrap=20)
    aiq = {row["router"]: row.get("aiq") for row in res.rows()}
    assert aiq["guard"] >= aiq["plain"] - 1e-9, (held_out, aiq, res.zero_aiq)
