"""ProviderPool over real HTTP against the local provider: the fault table, breakers, keys, config."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from router.errors import ConfigError
from serve.provider import running
from serve.providers import Deployment, ProviderError, ProviderPool, parse_config
from serve.providers.calls import redact

pytestmark = pytest.mark.timeout(60)
MSG = [{"role": "user", "content": "Explain routing in one line."}]
T = dict(timeout_s=1.0, first_token_timeout_s=0.5, idle_timeout_s=0.5)  # short, so nothing waits long
PROTOCOLS = ("openai", "anthropic", "gemini", "ollama")


@pytest.fixture(scope="module")
def url():
    with running(latency_ms=0) as u:
        yield u


@pytest.fixture(autouse=True)
def _clear(url):
    url.clear_faults()
    yield
    url.clear_faults()


def _pool(url, names=("primary", "backup"), protocol="openai", **kw):
    deps = [Deployment(n, protocol, url, **T) for n in names]
    return ProviderPool(deps, backoff_s=0.01, **kw)


def _run(coro):
    return asyncio.run(coro)


async def _complete(pool, candidates=("primary", "backup"), params=None):
    try:
        return await pool.complete(list(candidates), MSG, params or {"max_tokens": 8})
    finally:
        await pool.aclose()


async def _stream(pool, candidates=("primary", "backup"), params=None):
    """(chunks, error): every chunk received before the end or the error."""
    chunks, err = [], None
    try:
        async for c in pool.stream(list(candidates), MSG, params or {"max_tokens": 8}):
            chunks.append(c)
    except ProviderError as exc:
        err = exc
    finally:
        await pool.aclose()
    return chunks, err


def _kinds(attempts):
    return [(a.model, a.kind) for a in attempts]


# ----------------------------------------------------------------------------- the happy path, every protocol
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_complete_and_stream_agree(url, protocol):
    c = _run(_complete(_pool(url, protocol=protocol), ["primary"]))
    chunks, err = _run(_stream(_pool(url, protocol=protocol), ["primary"]))
    assert err is None and c.model == "primary" and c.output_tokens == 8 and c.finish_reason == "length"
    assert "".join(ch.text for ch in chunks) == c.text and len(c.text.split()) == 8
    last = chunks[-1]
    assert last.finish_reason == "length" and last.output_tokens == 8 and last.input_tokens == c.input_tokens
    assert [ch.finish_reason for ch in chunks[:-1]] == [None] * (len(chunks) - 1)


def test_cost_from_prices(url):
    pool = ProviderPool([Deployment("gpt-4-1106-preview", "openai", url), Deployment(
        "priced", "openai", url, input_cost_per_token=1e-6, output_cost_per_token=2e-6)])
    a = _run(_complete(pool, ["gpt-4-1106-preview"]))
    b = _run(_complete(ProviderPool([Deployment("priced", "openai", url, input_cost_per_token=1e-6,
                                                output_cost_per_token=2e-6)]), ["priced"]))
    assert a.cost_usd == pytest.approx(a.input_tokens * 1e-5 + a.output_tokens * 3e-5)  # litellm's price map
    assert b.cost_usd == pytest.approx(b.input_tokens * 1e-6 + b.output_tokens * 2e-6)


# ----------------------------------------------------------------------------- the fault table
def test_429_retry_after_is_honoured_then_retried(url):
    url.add_fault("primary", "429", count=1, retry_after=0.3)
    t = time.perf_counter()
    c = _run(_complete(_pool(url)))
    assert c.model == "primary" and _kinds(c.attempts) == [("primary", "rate_limited"), ("primary", None)]
    assert c.attempts[0].status == 429 and c.attempts[0].retry_after_s == pytest.approx(0.3)
    assert time.perf_counter() - t >= 0.3  # it waited as told


def test_429_with_long_retry_after_falls_back_at_once(url):
    url.add_fault("primary", "429", retry_after=60)
    c = _run(_complete(_pool(url)))
    assert c.model == "backup" and _kinds(c.attempts) == [("primary", "rate_limited"), ("backup", None)]


def test_429_everywhere_is_a_429_with_retry_after(url):
    url.add_fault("*", "429", retry_after=30)
    with pytest.raises(ProviderError) as info:
        _run(_complete(_pool(url)))
    assert info.value.status == 429 and info.value.kind == "rate_limited" and info.value.retry_after_s == 30


def test_reset_is_retried(url):
    url.add_fault("primary", "reset", count=1)
    c = _run(_complete(_pool(url)))
    assert c.model == "primary" and _kinds(c.attempts) == [("primary", "connection"), ("primary", None)]


def test_no_response_times_out_and_falls_back(url):
    url.add_fault("primary", "no_response")
    t = time.perf_counter()
    c = _run(_complete(_pool(url)))
    assert c.model == "backup" and _kinds(c.attempts) == [("primary", "timeout"), ("backup", None)]
    assert time.perf_counter() - t < 5  # bounded by the 1 s timeout, not hanging


@pytest.mark.parametrize("stream", [False, True])
def test_stall_before_first_token_falls_back(url, stream):
    url.add_fault("primary", "stall_first")
    if stream:
        chunks, err = _run(_stream(_pool(url)))
        assert err is None and {c.model for c in chunks} == {"backup"}
        assert _kinds(chunks[-1].attempts) == [("primary", "timeout"), ("backup", None)]
    else:
        c = _run(_complete(_pool(url)))
        assert c.model == "backup" and _kinds(c.attempts)[0] == ("primary", "timeout")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", ["stall_mid", "cut", "malformed"])
def test_stream_broken_after_first_token_is_a_clear_error(url, protocol, kind):
    url.add_fault("primary", kind)
    chunks, err = _run(_stream(_pool(url, protocol=protocol)))
    assert err is not None and err.kind == "stream_broken"
    assert err.status == (504 if kind == "stall_mid" else 502)
    assert chunks and all(c.model == "primary" and c.finish_reason is None for c in chunks)  # never "complete"
    assert "incomplete" in err.message


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind,expected", [("cut", "truncated"), ("malformed", "malformed")])
def test_whole_answer_cut_or_malformed_is_retried(url, protocol, kind, expected):
    url.add_fault("primary", kind, count=1)
    c = _run(_complete(_pool(url, protocol=protocol)))
    assert c.model == "primary" and _kinds(c.attempts) == [("primary", expected), ("primary", None)]
    assert len(c.text.split()) == c.output_tokens == 8


def test_stream_error_before_first_token_falls_back(url):
    url.add_fault("primary", "error")
    chunks, err = _run(_stream(_pool(url)))
    assert err is None and {c.model for c in chunks} == {"backup"} and chunks[-1].finish_reason == "length"


def test_flapping_primary_is_retried_each_time(url):
    url.add_fault("primary", "flap", period=1)
    pool = _pool(url)

    async def five():
        try:
            return [await pool.complete(["primary", "backup"], MSG, {"max_tokens": 3}) for _ in range(5)]
        finally:
            await pool.aclose()

    results = _run(five())
    assert [c.model for c in results] == ["primary"] * 5
    assert [len(c.attempts) for c in results] == [1, 2, 2, 2, 2]  # fail, retry succeeds


# ----------------------------------------------------------------------------- circuit breaker
def test_breaker_cools_down_then_probes_and_recovers(url):
    pool = _pool(url, failure_threshold=2, cooldown_s=0.4)
    base = url.stats()["requests"].get("primary", 0)

    async def scenario():
        try:
            url.add_fault("primary", "error")
            first = await pool.complete(["primary", "backup"], MSG, {})
            second = await pool.complete(["primary", "backup"], MSG, {})
            state = pool.health()["primary"]
            sent = url.stats()["requests"]["primary"] - base
            url.clear_faults()
            await asyncio.sleep(0.45)
            third = await pool.complete(["primary", "backup"], MSG, {})
            return first, second, state, sent, third, pool.health()["primary"]
        finally:
            await pool.aclose()

    first, second, state, sent, third, after = _run(scenario())
    assert _kinds(first.attempts) == [("primary", "server_error"), ("primary", "server_error"), ("backup", None)]
    assert _kinds(second.attempts) == [("primary", "cooling_down"), ("backup", None)]
    assert sent == 2  # the cooled-down deployment got no traffic
    assert state["state"] == "cooling_down" and state["cooling_down_until"] > time.time() - 1
    assert third.model == "primary" and after == {**after, "state": "ok", "consecutive_failures": 0}


def test_failed_probe_cools_down_again(url):
    pool = _pool(url, failure_threshold=1, cooldown_s=0.2)

    async def scenario():
        try:
            url.add_fault("primary", "error")
            await pool.complete(["primary", "backup"], MSG, {})
            await asyncio.sleep(0.25)
            probe = await pool.complete(["primary", "backup"], MSG, {})
            after = await pool.complete(["primary", "backup"], MSG, {})
            return probe, after
        finally:
            await pool.aclose()

    probe, after = _run(scenario())
    assert _kinds(probe.attempts) == [("primary", "server_error"), ("backup", None)]  # one probe, no retries
    assert _kinds(after.attempts)[0] == ("primary", "cooling_down")


def test_all_cooling_down_is_503(url):
    pool = _pool(url, names=("primary",), failure_threshold=1, cooldown_s=30)
    url.add_fault("primary", "error")

    async def twice():
        try:
            with pytest.raises(ProviderError) as first:
                await pool.complete(["primary"], MSG, {})
            with pytest.raises(ProviderError) as second:
                await pool.complete(["primary"], MSG, {})
            return first.value, second.value
        finally:
            await pool.aclose()

    first, second = _run(twice())
    assert first.status == 502 and first.kind == "server_error"
    assert second.status == 503 and second.kind == "cooling_down" and 0 < second.retry_after_s <= 30


# ----------------------------------------------------------------------------- requests and errors
def test_invalid_request_is_400_without_fallback(url):
    bad = [{"role": "user", "content": 42}]  # the provider refuses it with 400
    pool = _pool(url)

    async def call():
        try:
            await pool.complete(["primary", "backup"], bad, {})
        finally:
            await pool.aclose()

    with pytest.raises(ProviderError) as info:
        _run(call())
    assert info.value.status == 400 and info.value.kind == "bad_request" and not info.value.retryable
    assert _kinds(info.value.attempts) == [("primary", "bad_request")]


def test_unknown_model_upstream_falls_back(url):
    with running(data="demo", latency_ms=0) as demo:
        pool = ProviderPool([Deployment("gone", "openai", demo), Deployment("small-8b", "openai", demo)])
        c = _run(_complete(pool, ["gone", "small-8b"]))
    assert c.model == "small-8b" and c.attempts[0].status == 404 and c.attempts[0].kind == "upstream_config"


@pytest.mark.parametrize("candidates,messages,params,match", [
    ([], MSG, {}, "candidates must be a non-empty list"),
    ("primary", MSG, {}, "candidates must be a non-empty list"),
    (["primary"], [], {}, "messages must be a non-empty list"),
    (["primary"], MSG, {"logprobs": True}, r"unsupported parameter\(s\) \['logprobs'\]"),
])
def test_bad_calls_are_400(url, candidates, messages, params, match):
    pool = _pool(url)

    async def call():
        try:
            await pool.complete(candidates, messages, params)
        finally:
            await pool.aclose()

    with pytest.raises(ProviderError, match=match) as info:
        _run(call())
    assert info.value.status == 400


def test_no_config_routes_any_model_to_the_default_url(url):
    pool = ProviderPool.from_config(None, url, ["a"])
    c = _run(_complete(pool, ["not-in-the-list"]))
    assert c.model == "not-in-the-list"


def test_unconfigured_candidate_is_skipped(url):
    pool = ProviderPool.from_config({"models": {"b": {"protocol": "openai", "api_base": url}}}, url, ["b"])
    c = _run(_complete(pool, ["a", "b"]))
    assert c.model == "b" and _kinds(c.attempts) == [("a", "no_deployment"), ("b", None)]


# ----------------------------------------------------------------------------- keys never leak
def test_keys_are_sent_but_never_shown(url, monkeypatch, caplog, tmp_path):
    secret = "sk-test-DO-NOT-LEAK-0123456789abcdef"
    monkeypatch.setenv("LOCAL_PROVIDER_KEY", secret)
    keyfile = tmp_path / "key"
    keyfile.write_text(secret + "\n")
    cfg = {"endpoints": {"env": {"protocol": "openai", "api_base": url, "api_key_env": "LOCAL_PROVIDER_KEY"},
                         "file": {"protocol": "anthropic", "api_base": url, "api_key_file": str(keyfile)}},
           "models": {"primary": "env", "backup": "file"}, "defaults": {"timeout_s": 0.5, "max_retries": 0}}
    caplog.set_level(logging.DEBUG)
    with_key = url.stats()["with_key"]
    pool = ProviderPool.from_config(cfg, url, ["primary", "backup"])
    ok = _run(_complete(pool))
    url.add_fault("*", "no_response")
    pool = ProviderPool.from_config(cfg, url, ["primary", "backup"])
    with pytest.raises(ProviderError) as info:
        _run(_complete(pool))
    assert ok.model == "primary" and url.stats()["with_key"] == with_key + 3  # the key did go out
    shown = " ".join([str(info.value), repr(info.value), repr(pool), str(pool.health()), caplog.text,
                      repr(parse_config(cfg, url, ["primary"])), *(str(a) for a in info.value.attempts)])
    assert secret not in shown and secret[:8] not in shown


def test_redact_masks_full_and_partial_keys():
    key = "sk-proj-abcdefgh12345678"
    assert redact(f"bad key {key} / sk-proj-...345678", key) == "bad key *** / ***...***"


# ----------------------------------------------------------------------------- the config file
@pytest.mark.parametrize("cfg,match", [
    ({"models": {"m": {"protocol": "openai", "api_base": "http://x", "api_key": "sk"}}}, "keys never go"),
    ({"models": {"m": "nowhere"}}, "names endpoint 'nowhere'"),
    ({"models": {"m": {"api_base": "http://x"}}}, "needs a protocol"),
    ({"models": {"m": {"protocol": "carrier-pigeon", "api_base": "http://x"}}}, "unknown protocol"),
    ({"models": {"m": {"protocol": "openai", "api_base": "ftp://x"}}}, "must start with http"),
    ({"models": {"m": {"protocol": "openai", "api_base": "http://x", "timeout": 3}}}, r"unknown field\(s\) \['timeout'\]"),
    ({"models": {"m": {"protocol": "openai", "api_base": "http://x", "timeout_s": 0}}}, "timeout_s must be"),
    ({"models": {"m": {"protocol": "openai", "api_base": "http://x", "api_key_env": "NOPE_NOT_SET_123"}}},
     "NOPE_NOT_SET_123, which is not set"),
    ({"models": {}}, r"model\(s\) \['m'\] have no entry"),
    ({"unlisted": "maybe"}, "unlisted must be"),
    ({"circuit_breaker": {"threshold": 3}}, r"unknown field\(s\) \['threshold'\]"),
])
def test_config_errors_are_clear(cfg, match):
    with pytest.raises(ConfigError, match=match):
        ProviderPool.from_config(cfg, "http://127.0.0.1:9000", ["m"])


def test_config_unlisted_default_and_pool_settings():
    pool = ProviderPool.from_config({"unlisted": "default", "circuit_breaker": {"failure_threshold": 5},
                                     "models": {}}, "http://127.0.0.1:9000", ["m"])
    assert pool.deployments["m"].api_base == "http://127.0.0.1:9000" and pool.failure_threshold == 5


def test_readme_config_example_parses(monkeypatch, tmp_path):
    import re
    from pathlib import Path

    import yaml

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Providers config", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    cfg = yaml.safe_load(block)["providers"]
    for name in ("OPENAI", "ANTHROPIC", "GEMINI", "XAI", "MISTRAL", "TOGETHER"):
        monkeypatch.setenv(f"{name}_API_KEY", f"key-{name}")
    keyfile = tmp_path / "abacus"
    keyfile.write_text("key-abacus")
    cfg["endpoints"]["abacus"]["api_key_file"] = str(keyfile)
    parsed = parse_config(cfg, "http://127.0.0.1:9000", list(cfg["models"]))
    protocols = {d.model: d.protocol for d in parsed.deployments}
    assert protocols["claude-v2"] == "anthropic" and protocols["grok-2"] == "openai"
    assert protocols["llama3"] == "ollama" and protocols["claude-haiku-bedrock"] == "litellm"
    assert {d.model: d.wire_model for d in parsed.deployments}["claude-haiku-bedrock"].endswith("-v1:0")
    assert parsed.keys["route-llm"] == "key-abacus" and parsed.keys["llama3"] is None


@pytest.mark.parametrize("stream", [False, True])
def test_a_guard_skips_candidates_without_calling_them(url, stream):
    """The caller's guard runs before each candidate: a refused one is never called, the next is tried;
    when the guard refuses all that is left the error is 402 ``over_budget`` with every attempt."""
    url.add_fault("primary", "error")
    asked: list[str] = []

    async def guard(model):
        asked.append(model)
        return "too dear" if model == "dear" else None

    async def run(candidates):
        pool = _pool(url, names=("primary", "dear", "cheap"))
        try:
            if stream:
                return [c async for c in pool.stream(candidates, MSG, {"max_tokens": 4}, guard=guard)][-1]
            return await pool.complete(candidates, MSG, {"max_tokens": 4}, guard=guard)
        finally:
            await pool.aclose()

    before = url.stats()["requests"]
    done = _run(run(["primary", "dear", "cheap"]))
    assert done.model == "cheap" and asked == ["primary", "dear", "cheap"]
    kinds = [(a.model, a.kind) for a in done.attempts]
    assert ("dear", "over_budget") in kinds and kinds[-1] == ("cheap", None)
    after = url.stats()["requests"]
    assert after.get("dear", 0) == before.get("dear", 0)  # refused by the guard: never sent
    with pytest.raises(ProviderError) as info:
        _run(run(["primary", "dear"]))
    err = info.value
    assert err.status == 402 and err.kind == "over_budget" and not err.retryable
    assert [a.kind for a in err.attempts][-1] == "over_budget" and "server_error" in err.message
    assert url.stats()["requests"].get("dear", 0) == before.get("dear", 0)
