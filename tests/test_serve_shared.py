"""Two service processes sharing one real ``redis-server`` on loopback: one budget for both (atomic
reservations, no overspend under 200 concurrent requests), one cache without cross-tenant hits, and
the documented rule when Redis dies (budgets fail closed, cache open) and recovery when it returns.

Needs ``redis-server`` (``scripts/ensure_redis.sh``, part of ``make system-deps``)."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import time

import aiohttp
import pytest
from serve_support import MATH, RedisServer, Service, http, tiny_router

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed; run scripts/ensure_redis.sh (make system-deps)")

PROMPT = [{"role": "user", "content": MATH}]


@pytest.fixture(scope="module")
def redis_server():
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def provider():
    from serve.provider import running

    with running(data="demo", latency_ms=20) as url:
        yield url


@pytest.fixture(scope="module")
def pair(provider, redis_server, tmp_path_factory):
    """Two service processes with one tenant store and one Redis; keys for tenants rich, budgeted and spy."""
    from router.data.synthetic import MODELS
    from serve.tenants.keys import KeyStore

    tmp = tmp_path_factory.mktemp("shared")
    tiny_router(tmp / "router")
    store = KeyStore(tmp / "tenants.db")
    keys = {t: store.create(t, "member")[1] for t in ("rich", "budgeted", "spy", "victim")}
    keys["admin"] = store.create("ops", "admin")[1]
    providers = {"endpoints": {"local": {"protocol": "openai", "api_base": provider}},
                 "models": {m.name: {"endpoint": "local", "input_cost_per_token": m.input_price,
                                     "output_cost_per_token": m.output_price} for m in MODELS}}
    config = {"providers": providers, "auth": {"store": str(store.path)}, "redis_url": redis_server.url,
              "cache": {"encoder": {"kind": "hashing", "dim": 256}, "threshold": 0.93}, "batch_window_ms": 2.0}
    services = [Service(str(tmp / "router"), provider_url=provider, config=config, tmp=tmp) for _ in range(2)]
    for svc in services:
        svc.wait_ready()
    yield {"services": services, "keys": keys, "store": store, "redis": redis_server, "provider": provider}
    for svc in services:
        assert svc.stop() in (0, -signal.SIGTERM), svc.output()


def _chat(url: str, key: str, content: str = MATH, cache: bool = False):
    body = json.dumps({"model": "router", "messages": [{"role": "user", "content": content}],
                       "routing": {"cache": cache}}).encode()
    status, h, raw = http("POST", url + "/v1/chat/completions", body,
                          {"authorization": f"Bearer {key}", "content-type": "application/json"})
    return status, h, json.loads(raw)


def _set_limits(pair, tenant: str, **limits) -> None:
    status, _, raw = http("PUT", pair["services"][0].url + f"/v1/admin/tenants/{tenant}/limits",
                          json.dumps(limits).encode(), {"authorization": f"Bearer {pair['keys']['admin']}"})
    assert status == 200, raw
    # the other replica reads the store within auth.reload_s
    deadline = time.monotonic() + 10
    while True:
        status, _, raw = http("GET", pair["services"][1].url + "/v1/admin/tenants",
                              headers={"authorization": f"Bearer {pair['keys']['admin']}"})
        got = {t["tenant"]: t["limits"] for t in json.loads(raw)["data"]}
        if all(got.get(tenant, {}).get(k) == v for k, v in limits.items()):
            return
        assert time.monotonic() < deadline
        time.sleep(0.1)


def _spent(pair, tenant: str) -> dict:
    import redis

    client = redis.Redis.from_url(pair["redis"].url)
    keys = client.keys(f"rt:b:{tenant}:*")
    assert len(keys) == 1
    out = {k.decode(): float(v) for k, v in client.hgetall(keys[0]).items()}
    client.close()
    return out


def test_200_concurrent_requests_over_two_replicas_keep_one_budget(pair):
    from router.data.synthetic import MODELS

    prices = {m.name: (m.input_price, m.output_price) for m in MODELS}
    a, b = pair["services"]
    status, h, _ = _chat(a.url, pair["keys"]["rich"])
    assert status == 200
    predicted = float(h["x-route-predicted-cost"])
    budget = 60.5 * predicted  # room for about 60 of the 200 requests
    _set_limits(pair, "budgeted", budget_usd=budget, budget_period="total")
    calls_before = json.loads(http("GET", pair["provider"] + "/_stats")[2])["total"]

    async def run() -> list[tuple[int, dict, dict]]:
        body = {"model": "router", "messages": PROMPT, "routing": {"cache": False}}
        headers = {"authorization": f"Bearer {pair['keys']['budgeted']}"}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            async def one(i: int):
                url = (a if i % 2 else b).url + "/v1/chat/completions"
                async with session.post(url, json=body, headers=headers, timeout=aiohttp.ClientTimeout(60)) as r:
                    return r.status, dict(r.headers), await r.json()
            return await asyncio.gather(*(one(i) for i in range(200)))

    results = asyncio.run(run())
    statuses = [s for s, _, _ in results]
    assert set(statuses) <= {200, 402}, statuses
    ok = [(h, body) for s, h, body in results if s == 200]
    diffs = []
    for h, body in ok:
        pin, pout = prices[body["model"]]
        actual = body["usage"]["prompt_tokens"] * pin + body["usage"]["completion_tokens"] * pout
        diffs.append(actual - float(h["x-route-predicted-cost"]))
    state = _spent(pair, "budgeted")
    assert state.get("reserved", 0.0) == pytest.approx(0.0, abs=1e-12)  # every reservation settled
    overspend = state["spent"] - budget
    assert overspend <= max(0.0, max(diffs)) + 1e-12, (overspend, max(diffs), len(ok))
    assert 0 < len(ok) < 200 and statuses.count(402) == 200 - len(ok)
    calls = json.loads(http("GET", pair["provider"] + "/_stats")[2])["total"] - calls_before
    assert calls == len(ok)  # refused requests never reached the provider
    print(f"budget {budget:.6g} USD: {len(ok)} answered over two replicas, spent {state['spent']:.6g}, "
          f"overspend {overspend:.3g} (largest actual - predicted {max(diffs):.3g})")


async def _adversarial_pairs(url: str, n: int) -> tuple[int, int]:
    """``n`` questions cached for one tenant, then asked by another with the same request: (cross hits, own hits)."""
    from serve.cache.keys import request_scope
    from serve.tenants.shared import RedisCache

    cache = RedisCache(url, ttl_s=600)
    cross = own = 0
    for start in range(0, n, 500):
        batch = range(start, min(n, start + 500))
        reqs = {i: {"model": "router", "messages": [{"role": "user", "content": f"question {i}: what is {i} * 7?"}]}
                for i in batch}
        await asyncio.gather(*(cache.put(request_scope(f"victim{i % 7}", reqs[i]), reqs[i]["messages"][0]["content"],
                                         {"text": f"secret answer {i}"}) for i in batch))
        got = await asyncio.gather(*(cache.get(request_scope(f"spy{i % 5}", reqs[i]), reqs[i]["messages"][0]["content"])
                                     for i in batch))
        cross += sum(g is not None for g in got)
        mine = await asyncio.gather(*(cache.get(request_scope(f"victim{i % 7}", reqs[i]),
                                                reqs[i]["messages"][0]["content"]) for i in batch))
        own += sum(g is not None and g["text"] == f"secret answer {i}" for i, g in zip(batch, mine))
    await cache.close()
    return cross, own


def test_no_cross_tenant_hit_in_10000_adversarial_pairs(pair):
    cross, own = asyncio.run(_adversarial_pairs(pair["redis"].url, 10_000))
    assert cross == 0 and own == 10_000  # same question, other tenant: never; same tenant: always


def test_the_cache_is_shared_across_replicas_but_not_across_tenants(pair):
    a, b = pair["services"]
    for i in range(10):
        question = f"Explain the history of the number {i} in ancient mathematics"
        assert _chat(a.url, pair["keys"]["victim"], question, cache=True)[1]["x-cache"] == "miss"
        deadline = time.monotonic() + 5
        while _chat(b.url, pair["keys"]["victim"], question, cache=True)[1]["x-cache"] != "hit":  # written async
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for svc, other in ((b, "spy"), (a, "rich")):  # each other tenant's first ask, on either replica
            status, h, _ = _chat(svc.url, pair["keys"][other], question, cache=True)
            assert status == 200 and h["x-cache"] == "miss"


def _replicated(svc, pair) -> int:
    raw = http("GET", svc.url + "/v1/dashboard", headers={"authorization": f"Bearer {pair['keys']['admin']}"})[2]
    return int(json.loads(raw)["cache"]["replicated"])


def test_a_paraphrase_cached_on_one_replica_is_a_semantic_hit_on_the_other(pair):
    a, b = pair["services"]
    start = _replicated(b, pair)
    for i in range(5):
        question = f"Describe the role of the prime {i} in number theory"
        paraphrase = question + ", please"  # similarity 0.95 under the hashing encoder; threshold 0.93
        assert _chat(a.url, pair["keys"]["victim"], question, cache=True)[1]["x-cache"] == "miss"
        deadline = time.monotonic() + 5
        while _replicated(b, pair) < start + i + 1:  # through the Redis stream into b's FAISS index
            assert time.monotonic() < deadline, "the answer never reached the other replica's semantic cache"
            time.sleep(0.05)
        status, h, _ = _chat(b.url, pair["keys"]["victim"], paraphrase, cache=True)
        assert h["x-cache"] == "hit" and "semantic" in h["x-route-reason"], h["x-route-reason"]
        status, h, _ = _chat(b.url, pair["keys"]["spy"], paraphrase, cache=True)
        assert status == 200 and h["x-cache"] == "miss"  # another tenant's scope holds nothing


def test_when_redis_dies_budgets_fail_closed_and_the_cache_open_then_recover(pair):
    a, b = pair["services"]
    _set_limits(pair, "budgeted", budget_usd=1000.0, budget_period="day")
    assert _chat(a.url, pair["keys"]["budgeted"])[0] == 200
    pair["redis"].stop()
    try:
        for svc in (a, b):
            status, h, body = _chat(svc.url, pair["keys"]["budgeted"])
            assert status == 503 and body["error"]["code"] == "budget_unavailable", body
            assert "fail closed" in body["error"]["message"] and int(h["retry-after"]) >= 1
            status, h, _ = _chat(svc.url, pair["keys"]["rich"], "What is the capital of France?", cache=True)
            assert status == 200 and h["x-cache"] == "miss"  # no budget: served, uncached
    finally:
        pair["redis"].start()
    deadline = time.monotonic() + 15
    for svc in (a, b):
        while _chat(svc.url, pair["keys"]["budgeted"])[0] != 200:  # back once Redis answers
            assert time.monotonic() < deadline
            time.sleep(0.2)
