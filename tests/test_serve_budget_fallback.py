"""Budgets hold when the provider fails over to dearer models.

The local provider fails every call to the router's choice, so requests fall back to the next
candidates, the first of them much dearer. Every model called must be covered by a reservation (a
top-up before a dearer fallback, or the fallback is skipped), so over 200 concurrent requests -- two
service processes sharing a real ``redis-server``, or one process without Redis -- the settled spend
stays within the budget plus the largest single actual-minus-predicted difference, and the provider
is never asked for a model the budget could not cover. Also the rule for a request that costs more
than it reserved, on a table of steps, in memory and in Redis."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
from collections import Counter
from typing import Any

import aiohttp
import pytest
from serve_support import MATH, RedisServer, Service, http

PROMPT = [{"role": "user", "content": MATH}]
HAS_REDIS = shutil.which("redis-server") is not None
needs_redis = pytest.mark.skipif(not HAS_REDIS, reason="redis-server is not installed; run scripts/ensure_redis.sh")


@pytest.fixture(scope="module")
def provider():
    """This module's own local provider: the faults injected here reach no other module's services."""
    from serve.provider import running

    with running(data="demo", latency_ms=20) as url:
        yield url


@pytest.fixture(autouse=True)
def _no_faults(provider):
    provider.clear_faults()
    yield
    provider.clear_faults()


@pytest.fixture(scope="module")
def redis_server():
    if not HAS_REDIS:
        pytest.skip("redis-server is not installed; run scripts/ensure_redis.sh")
    server = RedisServer().start()
    yield server
    server.stop()


def _prices() -> dict[str, tuple[float, float]]:
    from router.data.synthetic import MODELS

    return {m.name: (m.input_price, m.output_price) for m in MODELS}


def _world(tmp, provider, router_dir, redis_url: str | None, n: int) -> dict:
    """``n`` service processes (one tenant store, Redis when given); keys for admin, probe and spender."""
    from serve.tenants.keys import KeyStore

    store = KeyStore(tmp / "tenants.db")
    keys = {"admin": store.create("ops", "admin")[1], "probe": store.create("probe", "member")[1],
            "spender": store.create("spender", "member")[1]}
    providers = {"endpoints": {"local": {"protocol": "openai", "api_base": provider}},
                 "models": {m: {"endpoint": "local", "input_cost_per_token": p[0], "output_cost_per_token": p[1]}
                            for m, p in _prices().items()}}
    config = {"providers": providers, "auth": {"store": str(store.path), "reload_s": 0.2},
              "cache": {"enabled": False}, "redis_url": redis_url}
    services = [Service(str(router_dir), provider_url=provider, config=config, tmp=tmp) for _ in range(n)]
    for svc in services:
        svc.wait_ready()
    return {"services": services, "keys": keys, "store": store}


def _stop(world) -> None:
    for svc in world["services"]:
        assert svc.stop() in (0, -signal.SIGTERM), svc.output()


def _plan(world) -> tuple[list[str], dict[str, float]]:
    """The fallback order and every model's predicted cost for the prompt, from the service's explanation."""
    url, key = world["services"][0].url, world["keys"]["probe"]
    body = json.dumps({"model": "router", "messages": PROMPT}).encode()
    status, h, raw = http("POST", url + "/v1/chat/completions", body, {"authorization": f"Bearer {key}"})
    assert status == 200, raw
    exp = json.loads(http("GET", url + "/v1/decisions/" + h["x-request-id"],
                          headers={"authorization": f"Bearer {key}"})[2])
    cost = {c["model"]: c["predicted_cost_usd"] for c in exp["candidates"]}
    return exp["fallback_order"], cost


def _storm(world, n: int = 200) -> list[tuple[int, dict, dict, str]]:
    """``n`` concurrent requests of the budgeted tenant, spread over the services: (status, headers, body, url)."""
    urls = [svc.url for svc in world["services"]]
    headers = {"authorization": f"Bearer {world['keys']['spender']}"}
    body = {"model": "router", "messages": PROMPT}

    async def run():
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            async def one(i: int):
                url = urls[i % len(urls)]
                async with session.post(url + "/v1/chat/completions", json=body, headers=headers,
                                        timeout=aiohttp.ClientTimeout(120)) as r:
                    return r.status, {k.lower(): v for k, v in r.headers.items()}, await r.json(), url
            return await asyncio.gather(*(one(i) for i in range(n)))

    return asyncio.run(run())


def _fallback_storm(world, provider, spent_of) -> None:
    """The check both set-ups share; ``spent_of()`` reads (spent, reserved) of the tenant after the storm."""
    order, cost = _plan(world)
    primary, dear, nxt = order[0], order[1], order[2]
    assert cost[dear] > 10 * cost[primary] and cost[dear] > cost[nxt] > cost[primary], (order, cost)
    provider.add_fault(primary, "error")  # every call to the router's choice fails: fallbacks answer
    # a budget that covers the first model but no fallback: 402 naming the fallback, no call for either
    tight = 1.5 * cost[primary]
    world["store"].set_limits("spender", {"budget_usd": tight, "budget_period": "day"})
    _wait_limits(world, tight)
    before = provider.stats()["requests"]
    status, h, raw = http("POST", world["services"][0].url + "/v1/chat/completions",
                          json.dumps({"model": "router", "messages": PROMPT}).encode(),
                          {"authorization": f"Bearer {world['keys']['spender']}"})
    err = json.loads(raw)["error"]
    assert status == 402 and err["code"] == "budget_exceeded" and int(h["retry-after"]) >= 1, (status, err)
    assert f"the fallback {nxt} is predicted to cost" in err["message"] and f"{primary}: server_error" in err["message"]
    assert "resets at" in err["message"], err
    after = provider.stats()["requests"]
    assert after.get(dear, 0) == before.get(dear, 0) and after.get(nxt, 0) == before.get(nxt, 0)
    assert spent_of() == (0.0, 0.0)  # a request that got no answer spends nothing and holds nothing

    budget = 10.5 * cost[dear]  # room for ten reservations of the dear fallback, not for 200
    world["store"].set_limits("spender", {"budget_usd": budget, "budget_period": "day"})
    _wait_limits(world, budget)
    before = provider.stats()["requests"]
    results = _storm(world)
    calls = {m: provider.stats()["requests"].get(m, 0) - before.get(m, 0) for m in cost}

    statuses = Counter(s for s, _, _, _ in results)
    assert set(statuses) <= {200, 402}, statuses
    prices = _prices()
    answered: Counter[str] = Counter()
    actual, diffs = 0.0, []
    for status, _, body, _ in results:
        if status == 200:
            model = body["model"]
            answered[model] += 1
            pin, pout = prices[model]
            a = body["usage"]["prompt_tokens"] * pin + body["usage"]["completion_tokens"] * pout
            actual += a
            diffs.append(a - cost[model])
    # the dear fallback answered while the budget covered it, then the next candidate, then 402s
    assert answered[primary] == 0 and answered[dear] >= 1 and answered[nxt] >= 1 and statuses[402] >= 1, \
        (answered, statuses)
    spent, reserved = spent_of()
    bound = budget + max(0.0, max(diffs))
    assert reserved == pytest.approx(0.0, abs=1e-12)  # every reservation, top-ups included, released
    assert spent == pytest.approx(actual, rel=1e-9)  # the service charged what the provider's answers cost
    assert spent <= bound + 1e-12, (spent, budget, max(diffs))
    # the provider was asked for a fallback only when the budget covered it: every such call answered and billed
    for m in (dear, nxt):
        assert calls[m] == answered[m], (m, calls, answered)
    assert all(calls[m] == 0 for m in cost if m not in order), calls  # and never for a model not in its order
    # refusals say which limit and when it resets; a request answered by the next fallback explains the skip
    refused = [(h, body) for s, h, body, _ in results if s == 402]
    for h, body in refused:
        err = body["error"]
        assert err["type"] == "budget_error" and err["code"] == "budget_exceeded", err
        assert "tenant 'spender' has" in err["message"] and "resets at" in err["message"]
        assert int(h["retry-after"]) >= 1, h
    key = world["keys"]["spender"]
    skipped = [(h["x-request-id"], url) for s, h, body, url in results if s == 200 and body["model"] == nxt]
    rules = [json.loads(http("GET", url + "/v1/decisions/" + rid, headers={"authorization": f"Bearer {key}"})[2])
             ["budget_rule"] for rid, url in skipped]
    assert any(f"fallback {dear} skipped" in r and f"fallback {nxt}:" in r for r in rules), rules[:3]
    print(f"budget {budget:.4g} USD: {dict(answered)} answered, {statuses[402]} refused, spent {spent:.4g} "
          f"(bound {bound:.4g}); provider calls {calls}")


def _wait_limits(world, budget: float) -> None:
    import time

    deadline = time.monotonic() + 10
    for svc in world["services"]:  # each process re-reads the store within auth.reload_s
        while True:
            raw = http("GET", svc.url + "/v1/admin/tenants", headers={"authorization": f"Bearer {world['keys']['admin']}"})[2]
            got = {t["tenant"]: t["limits"] for t in json.loads(raw)["data"]}
            if got.get("spender", {}).get("budget_usd") == budget:
                break
            assert time.monotonic() < deadline, got
            time.sleep(0.05)


def _usage(world) -> tuple[float, float]:
    raw = http("GET", world["services"][0].url + "/v1/admin/tenants",
               headers={"authorization": f"Bearer {world['keys']['admin']}"})[2]
    usage = {t["tenant"]: t["usage"] for t in json.loads(raw)["data"]}["spender"]
    return float(usage["spent_usd"]), float(usage["reserved_usd"])


@needs_redis
def test_fallbacks_over_two_replicas_sharing_redis_stay_within_the_budget(provider, router_dir, redis_server,
                                                                          tmp_path):
    world = _world(tmp_path, provider, router_dir, redis_server.url, 2)
    try:
        _fallback_storm(world, provider, lambda: _usage(world))
    finally:
        _stop(world)


def test_fallbacks_in_one_process_without_redis_stay_within_the_budget(provider, router_dir, tmp_path):
    world = _world(tmp_path, provider, router_dir, None, 1)
    try:
        _fallback_storm(world, provider, lambda: _usage(world))
    finally:
        _stop(world)


# ---------------------------------------------------------------------- a request that costs more than it reserved
# (step, amount(s), expected): reserve -> (granted, USD left before it); settle (reserved, actual) -> (spent, reserved)
EXCESS_STEPS: list[tuple[str, Any, tuple]] = [  # amounts exact in binary, so the known answers are exact
    ("reserve", 0.5, (True, 1.0)),
    ("reserve", 0.25, (True, 0.5)),  # another request
    ("reserve", 0.25, (True, 0.25)),  # the first tops up for a dearer fallback: it now holds 0.75
    ("reserve", 0.125, (False, 0.0)),  # nothing left
    ("settle", (0.75, 1.0), (1.0, 0.25)),  # it cost 0.25 more than it held: charged in full
    ("reserve", 0.125, (False, 0.0)),  # over the budget: nothing is granted, left reads 0
    ("settle", (0.25, 0.25), (1.25, 0.0)),  # the other one settles as predicted
]


async def _excess_steps(limiter) -> list:
    from serve.tenants.limits import Limits

    limits = Limits(budget_usd=1.0, budget_period="total")
    out = []
    for step, amount, _ in EXCESS_STEPS:
        if step == "reserve":
            ok, left = await limiter.reserve("t", limits, amount, 0.0)
            out.append((ok, round(left, 9)))
        else:
            await limiter.settle("t", limits, amount[0], amount[1], 0, 0.0)
            u = await limiter.usage("t", limits, 0.0)
            out.append((round(u["spent_usd"], 9), round(u["reserved_usd"], 9)))
    await limiter.close()
    return out


@pytest.mark.parametrize("where", ["memory", pytest.param("redis", marks=needs_redis)])
def test_a_request_over_its_reservation_pushes_the_tenant_over_by_its_own_difference_only(where, request):
    from serve.tenants.limits import MemoryLimiter

    limiter: Any
    if where == "memory":
        limiter = MemoryLimiter()
    else:
        from serve.tenants.shared import RedisLimiter

        limiter = RedisLimiter(request.getfixturevalue("redis_server").url)
    got = asyncio.run(_excess_steps(limiter))
    assert got == [want for _, _, want in EXCESS_STEPS]
    # the tenant ends exactly the one request's excess (1.0 - 0.75) over its 1.0 USD
    assert got[-1][0] - 1.0 == 0.25
