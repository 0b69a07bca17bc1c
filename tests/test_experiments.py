"""Policy experiments over real HTTP: an A/B split sticky by tenant and by user, the challenger's
decisions equal to its offline Router's, and a shadow challenger that never acts; per-arm reports."""

from __future__ import annotations

import json
import signal

import pytest
from serve_support import MATH, Service, http, tiny_router

from router.router import Router

PROMPT = [{"role": "user", "content": MATH}]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from serve.provider import running
    from serve.tenants.keys import KeyStore

    tmp = tmp_path_factory.mktemp("exp")
    tiny_router(tmp / "champion")
    tiny_router(tmp / "challenger", lam=1_000_000.0)  # the challenger always picks the cheapest model
    store = KeyStore(tmp / "tenants.db")
    keys = {f"t{i}": store.create(f"t{i}", "member")[1] for i in range(16)}
    keys["admin"] = store.create("ops", "admin")[1]
    with running(data="demo", latency_ms=1) as provider:
        yield {"tmp": tmp, "keys": keys, "store": store, "provider": provider}


def _service(setup, mode: str, sticky: str):
    config = {"auth": {"store": str(setup["store"].path)}, "cache": {"enabled": False},
              "experiment": {"name": f"lam-{mode}", "challenger": str(setup["tmp"] / "challenger"), "mode": mode,
                             "split": 0.5, "sticky": sticky}}
    svc = Service(str(setup["tmp"] / "champion"), provider_url=setup["provider"], config=config, tmp=setup["tmp"])
    svc.wait_ready()
    return svc


def _chat(svc, key: str, user: str | None = None):
    body = {"model": "router", "messages": PROMPT, **({"user": user} if user else {})}
    status, h, raw = http("POST", svc.url + "/v1/chat/completions", json.dumps(body).encode(),
                          {"authorization": f"Bearer {key}", "content-type": "application/json"})
    assert status == 200, raw
    return h


def _report(svc, key):
    status, _, raw = http("GET", svc.url + "/v1/admin/experiments", headers={"authorization": f"Bearer {key}"})
    assert status == 200, raw
    return json.loads(raw)


def test_ab_split_is_sticky_by_tenant_and_arms_route_by_their_policy(setup):
    champion = Router.load(setup["tmp"] / "champion").route([PROMPT]).chosen[0]
    challenger = Router.load(setup["tmp"] / "challenger").route([PROMPT]).chosen[0]
    assert champion != challenger
    svc = _service(setup, "ab", "tenant")
    try:
        arms = {}
        for tenant in [f"t{i}" for i in range(16)]:
            seen = {(_chat(svc, setup["keys"][tenant], user=u)["x-route-experiment-arm"]) for u in ("a", "b", "c")}
            assert len(seen) == 1  # sticky by tenant, whatever the user
            arms[tenant] = seen.pop()
            h = _chat(svc, setup["keys"][tenant])
            want = challenger if arms[tenant] == "challenger" else champion
            assert h["x-route-model"] == want
            status, _, raw = http("GET", svc.url + "/v1/decisions/" + h["x-request-id"],
                                  headers={"authorization": f"Bearer {setup['keys'][tenant]}"})
            assert json.loads(raw)["experiment"]["arm"] == arms[tenant]
        assert set(arms.values()) == {"champion", "challenger"}
        rep = _report(svc, setup["keys"]["admin"])
        n = {a: sum(v == a for v in arms.values()) * 4 for a in ("champion", "challenger")}
        assert {a: rep["arms"][a]["requests"] for a in n} == n
        assert rep["arms"]["challenger"]["models"] == {challenger: n["challenger"]}
        q = rep["arms"]["champion"]["predicted_quality"]
        assert q["ci95"][0] <= q["mean"] <= q["ci95"][1]
        status, _, _ = http("GET", svc.url + "/v1/admin/experiments",
                            headers={"authorization": f"Bearer {setup['keys']['t0']}"})
        assert status == 403
    finally:
        assert svc.stop() in (0, -signal.SIGTERM)


def test_sticky_by_user_splits_one_tenant(setup):
    svc = _service(setup, "ab", "user")
    try:
        key = setup["keys"]["t0"]
        arms = {}
        for u in range(24):
            first = _chat(svc, key, user=f"user-{u}")["x-route-experiment-arm"]
            assert _chat(svc, key, user=f"user-{u}")["x-route-experiment-arm"] == first
            arms[u] = first
        assert set(arms.values()) == {"champion", "challenger"}
    finally:
        assert svc.stop() in (0, -signal.SIGTERM)


def test_shadow_challenger_is_scored_but_never_acts(setup):
    champion = Router.load(setup["tmp"] / "champion").route([PROMPT]).chosen[0]
    challenger = Router.load(setup["tmp"] / "challenger").route([PROMPT]).chosen[0]
    svc = _service(setup, "shadow", "tenant")
    try:
        for i in range(8):
            h = _chat(svc, setup["keys"][f"t{i}"])
            assert h["x-route-model"] == champion and h["x-route-experiment-arm"] == "champion"
        rep = _report(svc, setup["keys"]["admin"])
        assert rep["arms"]["champion"]["requests"] == 8 and rep["arms"]["challenger"]["requests"] == 0
        assert rep["shadow"]["requests"] == 8 and rep["shadow"]["models"] == {challenger: 8}
        assert rep["shadow"]["agreement"] == 0.0
        dm = rep["shadow"]["utility_under_champion_model"]
        # at the champion's own operating point its choice has the best utility by its predictions
        assert dm["champion"]["mean"] > dm["challenger"]["mean"]
        assert dm["challenger"]["ci95"][0] <= dm["challenger"]["mean"] <= dm["challenger"]["ci95"][1]
        status, _, raw = http("GET", svc.url + "/v1/decisions/" + h["x-request-id"],
                              headers={"authorization": f"Bearer {setup['keys']['t7']}"})
        assert json.loads(raw)["experiment"]["shadow_choice"] == challenger
    finally:
        assert svc.stop() in (0, -signal.SIGTERM)
