"""The out-of-distribution guard: flags prompts far from the training data, shrinks their predictions
to the priors, learns priors and trust from rated traffic (full information offline, bandit feedback
in the service), survives save/load, shows as a live drift metric, and on RouterBench routes an unseen
task at least as well as the same router without it and as the zero router."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
from serve_support import Service, http

from router.errors import ConfigError, UnknownModelError, ValidationError
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


def test_full_information_ratings_move_the_priors_by_hand():
    # training means: quality (0.2, 0.8), cost ($1, $3); prior_strength 10 counts them as 10 observations
    x = np.random.default_rng(0).normal(size=(20, 4))
    g = OODGuard(prior_strength=10).fit(x, np.tile([0.2, 0.8], (20, 1)), np.tile([1.0, 3.0], (20, 1)))
    assert g.prior_.tolist() == pytest.approx([0.2, 0.8]) and g.trust_ == 1.0
    far = g.threshold_ * 2 ** (1 / g.sharpness)  # distance weight w = 1/2
    assert g.weights(np.array([far])) == pytest.approx([0.5])
    q = np.tile([1.0, 0.0], (30, 1))  # 30 rated prompts where model 0 is always right and model 1 never
    g.update(np.tile([0.5, 0.5], (30, 1)), np.full(30, far), q, np.tile([2.0, 5.0], (30, 1)))
    # (10 * 0.2 + 30 * 1) / 40 = 0.8 and (10 * 0.8 + 0) / 40 = 0.2; costs (10 + 60) / 40, (30 + 150) / 40
    assert g.prior_.tolist() == pytest.approx([0.8, 0.2]) and g.cost_prior_.tolist() == pytest.approx([1.75, 4.5])
    # the router's flat 0.5 explains nothing of the ratings: trust = (60 * 0 + 10 * 1) / (60 + 10)
    assert g.trust_ == pytest.approx(10 / 70)
    qs, cs = g.apply(np.array([[0.5, 0.5]]), np.array([[1.0, 1.0]]), np.array([far]))
    s = 0.5 * 10 / 70
    assert qs[0].tolist() == pytest.approx([s * 0.5 + (1 - s) * 0.8, s * 0.5 + (1 - s) * 0.2])
    assert cs[0].tolist() == pytest.approx([0.5 * 1 + 0.5 * 1.75, 0.5 * 1 + 0.5 * 4.5])


def test_trust_stays_high_where_the_router_explains_the_ratings():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 4))
    g = OODGuard(prior_strength=5).fit(x, np.tile([0.5, 0.5], (50, 1)))
    truth = rng.random((200, 2))
    g.update(truth, np.zeros(200), truth)  # predictions equal to the ratings, prompts familiar (w = 1)
    assert g.trust_ == pytest.approx(1.0)
    g2 = OODGuard(prior_strength=5).fit(x, np.tile([0.5, 0.5], (50, 1)))
    g2.update(rng.random((200, 2)), np.zeros(200), truth)  # predictions unrelated to the ratings
    assert g2.trust_ < 0.2


def test_bandit_feedback_is_weighted_by_inverse_propensity():
    # model 0 was rated twice: 1.0 drawn with probability 1/2 (weight 2) and 0.0 drawn with 1/4 (weight 4);
    # model 1 once, 0.5 with probability 1; prior_strength 1: (0.2 + 2 * 1 + 4 * 0) / (1 + 6) and (0.8 + 0.5) / 2
    x = np.random.default_rng(0).normal(size=(20, 4))
    g = OODGuard(prior_strength=1).fit(x, np.tile([0.2, 0.8], (20, 1)), np.tile([1.0, 3.0], (20, 1)))
    g.update(np.full((3, 2), 0.5), np.zeros(3), [1.0, 0.0, 0.5], chosen=[0, 0, 1], propensity=[0.5, 0.25, 1.0])
    assert g.prior_.tolist() == pytest.approx([2.2 / 7, 1.3 / 2])
    assert g.cost_prior_.tolist() == pytest.approx([1.0, 3.0])  # no cost given: cost priors unchanged
    assert g.n_rated_ == pytest.approx(7.0)


def test_a_learnt_guard_round_trips_and_an_old_one_still_loads(tmp_path):
    data, r = _router()
    r.update_guard(list(data.prompts[:40]), data.quality[:40], data.cost[:40])
    before = r.route([FAR], explain=False)
    r.save(tmp_path / "r")
    back = Router.load(tmp_path / "r")
    assert back.ood.trust_ == pytest.approx(r.ood.trust_) and np.allclose(back.ood.prior_, r.ood.prior_)
    assert np.allclose(back.route([FAR], explain=False).quality, before.quality)
    # a guard saved before it could learn holds only reference, threshold and prior: it loads untrained
    from router.persist import load_component

    with np.load(tmp_path / "r" / "ood.npz") as npz:
        old = {k: npz[k] for k in ("reference", "threshold")}
    np.savez(tmp_path / "r" / "ood.npz", prior=np.asarray(data.quality).mean(axis=0), **old)
    g = load_component(tmp_path / "r", "ood")
    assert g.trust_ == 1.0 and g.cost_prior_ is None and np.allclose(g.prior_, np.asarray(data.quality).mean(axis=0))


@pytest.mark.parametrize("call,error,match", [
    (lambda r, d: r.update_guard(list(d.prompts[:3]), d.quality[:2]), ValidationError, "must be \\(3, 5\\)"),
    (lambda r, d: r.update_guard(list(d.prompts[:2]), d.quality[:2, 0], chosen=["nope", "nope"]), UnknownModelError,
     "not in this router's pool"),
    (lambda r, d: r.update_guard(list(d.prompts[:2]), d.quality[:2, 0], chosen=list(r.models[:2]),
                                 propensity=[0.0, 1.0]), ValidationError, "propensity"),
    (lambda r, d: r.update_guard(list(d.prompts[:2]), d.quality[:2] + 2), ValidationError, "in \\[0, 1\\]"),
    (lambda r, d: r.update_guard(list(d.prompts[:2]), d.quality[:2], -d.cost[:2]), ValidationError, "cost"),
    (lambda r, d: r.update_guard(None, d.quality[:2]), ConfigError, "rated prompts"),
])
def test_bad_ratings_get_clear_errors(call, error, match):
    data, r = _router()
    with pytest.raises(error, match=match):
        call(r, data)
    _, plain = _router(None)
    with pytest.raises(ConfigError, match="no out-of-distribution guard"):
        plain.update_guard(list(data.prompts[:2]), data.quality[:2])


def test_the_online_learner_teaches_the_routers_guard(tmp_path):
    """The service's feedback path (serve.online) updates the same guard Router.update_guard does:
    each rated request moves the chosen model's prior, weighted by 1 / propensity, and the snapshot
    carries the learnt guard."""
    from serve.online import OnlineLearner

    data, r = _router()
    learner = OnlineLearner(r, epsilon=0.5, warm_prompts=0, seed=0)
    prompts = [str(p) for p in data.prompts[:60]]
    rated = []
    for i, p in enumerate(prompts):
        emb, lengths = r.embed([p])
        d = r.route([p], embedded=(emb, lengths), explain=False)
        pick = learner.choose(emb, d.quality, d.cost, np.isfinite(d.utility), ["t"],
                              guard=(d.raw_quality, d.ood_distance))[0]
        learner.remember(f"r{i}", pick, float(d.cost[0, pick.action]), "t")
        learner.cost_of(f"r{i}", float(data.cost[i, pick.action]))
        assert learner.on_feedback({"request_id": f"r{i}", "quality": 1.0})  # every answer rated perfect
        rated.append((pick.action, pick.propensity))
    assert learner.guard_updates_ == 60
    weight = np.zeros(len(r.models))
    for a, p in rated:
        weight[a] += 1.0 / p
    k = r.ood.prior_strength
    assert r.ood.prior_ == pytest.approx((k * r.ood.base_prior_ + weight) / (k + weight))
    snap = Router.load(learner.snapshot(tmp_path / "snap"))
    assert snap.ood is not None and snap.ood.prior_ == pytest.approx(r.ood.prior_)


WARM_UP = 150  # rated rows of the new task the guard learns from; the rest of the task is evaluated
_FITTED: dict[str, Router] = {}


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("held_out", ["mbpp", "arc-challenge", "winogrande"])
def test_on_an_unseen_routerbench_task_the_guard_routes_no_worse_than_the_zero_router(held_out, seed):
    """Trained on two RouterBench tasks, routing the third: after learning from WARM_UP rated prompts of
    that task (drawn by the seed), AIQ with the guard >= AIQ without it and >= the zero router's on the
    task's other prompts. Each curve is traced between all its switch points (up to 1,000 lambdas)."""
    import copy

    from router.data.registry import load_source
    from router.encoders import HashingEncoder
    from router.errors import SourceNotFoundError
    from router.lambdas import default_lambda_grid
    from router.metrics.evaluate import Curve, evaluate_curves
    from router.predictors import KNNPredictor

    try:
        o = load_source("routerbench")
    except SourceNotFoundError as exc:
        pytest.skip(f"RouterBench data not available (set ROUTING_DATA_DIR): {exc}")
    if held_out not in _FITTED:
        _FITTED[held_out] = Router.fit(o.subset(o.tasks != held_out), encoder=HashingEncoder(dim=256),
                                       predictor=KNNPredictor(k=20), ood_quantile=0.95)
    r = copy.deepcopy(_FITTED[held_out])
    task = np.flatnonzero(o.tasks == held_out)
    np.random.default_rng(seed).shuffle(task)
    warm, test = o.subset(task[:WARM_UP]), o.subset(task[WARM_UP:])
    r.update_guard(list(warm.prompts), warm.quality, warm.cost)
    emb, lengths = r.embed(list(test.prompts))

    def curve(router: Router) -> Curve:
        q, c, _ = router.predict(embeddings=emb, lengths=lengths)
        lams, choices, _, _ = router.sweep(embeddings=emb, lengths=lengths, lambdas=default_lambda_grid(q, c, n=1000))
        return Curve(settings=lams, choices=choices)

    guarded = curve(r)
    flagged, trust = float(r.ood.flag(emb).mean()), r.ood.trust_
    r.ood = None
    res = evaluate_curves(test, {"guard": guarded, "plain": curve(r)}, n_bootstrap=0, per_task=False)
    aiq = {k: v.aiq for k, v in res.routers.items()}
    print(f"{held_out} seed {seed}: AIQ guard {aiq['guard']:.4f} plain {aiq['plain']:.4f} zero {res.zero_aiq:.4f} "
          f"oracle quality {res.oracle[1]:.4f}; flagged {flagged:.3f}, trust {trust:.3f}")
    assert aiq["guard"] >= aiq["plain"] and aiq["guard"] >= res.zero_aiq, (held_out, seed, aiq, res.zero_aiq)
    # what the guard did: the distance flags (nearly) every MBPP and ARC prompt and no Winogrande one; the
    # ratings say the router's predictions explain little on any of the three, so trust falls
    assert (flagged > 0.9) if held_out != "winogrande" else (flagged < 0.05)
    assert trust < 0.2
