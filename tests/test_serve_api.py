"""``python -m serve`` end to end over real HTTP on loopback: the local provider behind it, the OpenAI
Python client (base URL only) in front; routing, pass-through, options, fallback, cache, bad input,
health, readiness and metrics."""

from __future__ import annotations

import json
import signal
import time

import numpy as np
import openai
import pytest
from serve_support import MATH, Service, http

from router.router import Router

CHEAP = "small-8b"  # the synthetic pool's cheapest model
PROMPT = [{"role": "user", "content": MATH}]


@pytest.fixture(scope="module")
def service(provider, router_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    from router.data.synthetic import MODELS

    # every pool model at the local provider, with the synthetic pool's prices (so spend is counted)
    providers = {"endpoints": {"local": {"protocol": "openai", "api_base": provider}},
                 # injected faults must not leave a model cooling down for the tests after them
                 "circuit_breaker": {"failure_threshold": 3, "cooldown_s": 0.05},
                 "retry": {"backoff_s": 0.01, "max_backoff_s": 0.02},
                 "models": {m.name: {"endpoint": "local", "input_cost_per_token": m.input_price,
                                     "output_cost_per_token": m.output_price} for m in MODELS}}
    config = {
        "providers": providers,
        "cache": {"encoder": {"kind": "hashing", "dim": 512}, "threshold": 0.75},
        "profiles": {"cheap": {"lam": 1_000_000.0}},
        "max_body_bytes": 64 * 1024,
        "max_messages": 50,
        "logbook": {"path": str(tmp / "decisions.jsonl")},
    }
    svc = Service(str(router_dir), provider_url=provider, config=config, tmp=tmp)
    svc.wait_ready()
    svc.logbook = tmp / "decisions.jsonl"
    yield svc
    assert svc.stop() in (0, -signal.SIGTERM), svc.output()  # uvicorn re-raises the signal it handled
    assert "Application shutdown complete" in svc.output()


@pytest.fixture()
def client(service):
    return openai.OpenAI(base_url=service.url + "/v1", api_key="unused", max_retries=0, timeout=30)


def _expected_choice(router_dir, messages, **kw) -> str:
    return Router.load(router_dir).route([messages], **kw).chosen[0]


def test_routed_request_carries_the_decision_and_the_chosen_model_answers(client, router_dir):
    raw = client.chat.completions.with_raw_response.create(model="router", messages=PROMPT,
                                                           extra_body={"routing": {"cache": False}})
    done = raw.parse()
    h = raw.headers
    assert h["x-route-model"] == _expected_choice(router_dir, PROMPT)  # the offline Router's choice
    assert done.model == h["x-route-model"]
    assert h["x-route-policy-version"].startswith("sha256:") and len(h["x-route-policy-version"]) == 19
    assert float(h["x-route-predicted-cost"]) > 0
    assert h["x-route-reason"].startswith(h["x-route-model"] + ": predicted quality")
    assert h["x-cache"] == "bypass" and h["x-request-id"].startswith("req-")
    assert done.choices[0].finish_reason == "stop" and len(done.choices[0].message.content.split()) > 3
    assert done.usage.completion_tokens > 0


def test_streamed_routed_request(client, router_dir):
    messages = [{"role": "user", "content": "Write a Python function that parses a CSV file"}]
    raw = client.chat.completions.with_raw_response.create(
        model="router", messages=messages, stream=True, stream_options={"include_usage": True},
        extra_body={"routing": {"cache": False}})
    chunks = list(raw.parse())
    assert raw.headers["x-route-model"] == _expected_choice(router_dir, messages)
    assert raw.headers["content-type"].startswith("text/event-stream")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) > 3
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert {c.model for c in chunks} == {raw.headers["x-route-model"]}
    assert chunks[-1].usage is not None  # include_usage: a last chunk with usage and no choices


def test_concrete_model_passes_through(client):
    raw = client.chat.completions.with_raw_response.create(model="code-34b", messages=PROMPT)
    assert raw.parse().model == "code-34b"
    assert raw.headers["x-route-model"] == "code-34b"
    assert raw.headers["x-route-reason"].startswith("pass-through")


def test_routing_options_change_the_choice(client, router_dir):
    best = _expected_choice(router_dir, PROMPT)
    assert best != CHEAP, "the test prompt must route to a strong model at the saved operating point"
    opts = {"cache": False}
    r = client.chat.completions.with_raw_response.create(
        model="router", messages=PROMPT, extra_body={"routing": {**opts, "lam": 1e6}})
    assert r.headers["x-route-model"] == CHEAP == r.parse().model
    r = client.chat.completions.with_raw_response.create(model="router-cheap", messages=PROMPT,
                                                         extra_body={"routing": opts})
    assert r.headers["x-route-model"] == CHEAP
    other = next(m for m in ("code-34b", "medium-70b") if m != best)
    r = client.chat.completions.with_raw_response.create(
        model="router", messages=PROMPT, extra_body={"routing": {**opts, "allowed_models": [other]}})
    assert r.headers["x-route-model"] == other == r.parse().model


def test_fallback_when_the_chosen_models_provider_fails(client, provider, router_dir):
    best = _expected_choice(router_dir, PROMPT)
    provider.add_fault(best, "error")
    try:
        raw = client.chat.completions.with_raw_response.create(model="router", messages=PROMPT,
                                                               extra_body={"routing": {"cache": False}})
        done = raw.parse()
    finally:
        provider.clear_faults()
    assert raw.headers["x-route-model"] == best
    assert done.model != best and done.choices[0].message.content
    text = http("GET", client.base_url.scheme + "://" + client.base_url.host + f":{client.base_url.port}/metrics")[2]
    assert b"router_fallbacks_total " in text and b"router_fallbacks_total 0\n" not in text


def test_every_candidate_failing_is_a_502_with_a_decision_record(client, provider, service):
    provider.add_fault("*", "error")
    try:
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="router", messages=[{"role": "user", "content": "fail me please"}])
    finally:
        provider.clear_faults()
    err = info.value
    assert err.status_code == 502 and err.body["type"] == "upstream_error" and err.body["code"] == "server_error"
    assert err.body["message"].startswith("no answer from ")
    rid = err.response.headers["x-request-id"]
    rec = _record(service, rid)
    assert rec["status"] == 502 and rec["answered_model"] is None and rec["chosen_model"] in err.body["message"]


def test_a_stream_cut_mid_answer_raises_in_the_client_and_is_not_cached(client, provider):
    q = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper"}]
    provider.add_fault("*", "cut")
    try:
        stream = client.chat.completions.create(model="router", messages=q, stream=True)
        with pytest.raises(openai.APIError, match="incomplete"):
            for _ in stream:
                pass
    finally:
        provider.clear_faults()
    again = client.chat.completions.with_raw_response.create(model="router", messages=q)
    assert again.headers["x-cache"] == "miss"  # the cut answer was not stored


def test_cache_hits_on_repeat_and_paraphrase_misses_on_another_question(client):
    q = [{"role": "user", "content": "How do I reverse a list in Python?"}]
    first = client.chat.completions.with_raw_response.create(model="router", messages=q)
    assert first.headers["x-cache"] == "miss"
    answer = first.parse().choices[0].message.content
    again = client.chat.completions.with_raw_response.create(model="router", messages=q)
    assert again.headers["x-cache"] == "hit" and again.parse().choices[0].message.content == answer
    assert "exact" in again.headers["x-route-reason"]
    para = [{"role": "user", "content": "how can I reverse a list in Python?"}]
    hit = client.chat.completions.with_raw_response.create(model="router", messages=para)
    assert hit.headers["x-cache"] == "hit" and "semantic" in hit.headers["x-route-reason"]
    assert hit.parse().choices[0].message.content == answer
    other = [{"role": "user", "content": "What is the boiling point of water at sea level?"}]
    miss = client.chat.completions.with_raw_response.create(model="router", messages=other)
    assert miss.headers["x-cache"] == "miss" and miss.parse().choices[0].message.content != answer
    # a streamed request is answered from the cache as a stream
    raw = client.chat.completions.with_raw_response.create(model="router", messages=q, stream=True)
    chunks = list(raw.parse())
    assert raw.headers["x-cache"] == "hit"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answer
    assert chunks[-1].choices[0].finish_reason == "stop"
    # other parameters are another cache scope
    t = client.chat.completions.with_raw_response.create(model="router", messages=q, temperature=0.3)
    assert t.headers["x-cache"] == "miss"


def test_streamed_answer_is_cached(client):
    q = [{"role": "user", "content": "Explain how a hash map resolves collisions"}]
    s = client.chat.completions.with_raw_response.create(model="router", messages=q, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in s.parse() if c.choices)
    assert s.headers["x-cache"] == "miss"
    again = client.chat.completions.with_raw_response.create(model="router", messages=q)
    assert again.headers["x-cache"] == "hit" and again.parse().choices[0].message.content == text


def _body(**kw) -> bytes:
    return json.dumps({"model": "router", "messages": PROMPT, **kw}).encode()


BAD_INPUT = [
    # (name, body, status, param, message substring)
    ("malformed JSON", b'{"model": "router", "messages": [', 400, None, "not valid JSON"),
    ("not an object", b"[1, 2]", 400, None, "must be a JSON object"),
    ("empty body", b"", 400, None, "body is empty"),
    ("model not a string", json.dumps({"model": 3, "messages": PROMPT}).encode(), 400, "model", "'model' must be"),
    ("messages missing", json.dumps({"model": "router"}).encode(), 400, "messages", "'messages' is missing"),
    ("messages not a list", json.dumps({"model": "router", "messages": "hi"}).encode(), 400, "messages",
     "must be a list"),
    ("empty messages", json.dumps({"model": "router", "messages": []}).encode(), 400, "messages", "is empty"),
    ("bad role", json.dumps({"model": "router", "messages": [{"role": "bot", "content": "x"}]}).encode(), 400,
     "messages[0].role", "role must be one of"),
    ("content wrong type", json.dumps({"model": "router", "messages": [{"role": "user", "content": 5}]}).encode(),
     400, "messages[0].content", "must be a string"),
    ("only blank text", json.dumps({"model": "router", "messages": [{"role": "user", "content": "  "}]}).encode(),
     400, "messages", "every message is empty"),
    ("huge message list", json.dumps({"model": "router", "messages": PROMPT * 51}).encode(), 400, "messages",
     "more than this service's limit of 50"),
    ("oversized body", _body(padding="x" * 70_000), 413, None, "larger than the service's limit"),
    ("unknown model", json.dumps({"model": "gpt-17", "messages": PROMPT}).encode(), 404, "model", "does not exist"),
    ("stream not a bool", _body(stream="yes"), 400, "stream", "'stream' must be true or false"),
    ("temperature out of range", _body(temperature=7), 400, "temperature", "'temperature' must be a number"),
    ("max_tokens not an int", _body(max_tokens="ten"), 400, "max_tokens", "positive integer"),
    ("n > 1", _body(n=3), 400, "n", "'n' must be 1"),
    ("unsupported parameter", _body(frobnicate=1), 400, "frobnicate", "unsupported parameter(s) ['frobnicate']"),
    ("routing not an object", _body(routing=[1]), 400, "routing", "must be an object"),
    ("unknown routing option", _body(routing={"lamda": 3}), 400, "routing", "unknown routing option"),
    ("negative lambda", _body(routing={"lam": -1}), 400, "routing.lam", "finite number >= 0"),
    ("zero max_cost", _body(routing={"max_cost": 0}), 400, "routing.max_cost", "finite number > 0"),
    ("unknown allowed model", _body(routing={"allowed_models": ["gpt-17"]}), 400, "routing.allowed_models",
     "unknown model"),
    ("unknown profile", _body(routing={"profile": "gold"}), 400, "routing.profile", "not a profile"),
    ("options on a concrete model", json.dumps({"model": "code-34b", "messages": PROMPT,
                                                "routing": {"lam": 3}}).encode(), 400, "routing", "apply only"),
]


@pytest.mark.parametrize("name,body,status,param,message", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_gets_a_clear_openai_error(service, name, body, status, param, message):
    got, headers, raw = http("POST", service.url + "/v1/chat/completions", body,
                             {"content-type": "application/json"})
    assert got == status, raw
    err = json.loads(raw)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error" and err["param"] == param
    assert message in err["message"], err["message"]
    assert headers["x-request-id"]


def test_service_keeps_serving_after_bad_input(service, client):
    for body in (b"{", b"[]", json.dumps({"model": "router", "messages": []}).encode()):
        http("POST", service.url + "/v1/chat/completions", body)
    status, _, _ = http("POST", service.url + "/v1/chat/completions", b"x" * 200_000)  # refused while reading
    assert status == 413
    done = client.chat.completions.create(model="router", messages=PROMPT)
    assert done.choices[0].message.content


def test_openai_client_raises_the_documented_errors(client):
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-17", messages=PROMPT)
    with pytest.raises(openai.BadRequestError, match="is empty"):
        client.chat.completions.create(model="router", messages=[])


def test_other_paths_and_methods(service):
    assert http("GET", service.url + "/v2/nothing")[0] == 404
    status, _, raw = http("GET", service.url + "/v1/chat/completions")
    assert status == 405 and json.loads(raw)["error"]["code"] == "method_not_allowed"


def test_models_health_readiness_and_metrics(service, client, router_dir):
    ids = [m.id for m in client.models.list().data]
    assert ids[:2] == ["router", "router-cheap"]
    assert set(ids[2:]) == set(Router.load(router_dir).models)
    assert http("GET", service.url + "/healthz")[:1] == (200,)
    status, _, raw = http("GET", service.url + "/readyz")
    ready = json.loads(raw)
    assert status == 200 and ready["status"] == "ready" and ready["policy_version"].startswith("sha256:")
    client.chat.completions.create(model="router", messages=PROMPT)
    status, headers, raw = http("GET", service.url + "/metrics")
    text = raw.decode()
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    for series in ('router_requests_total{path="/v1/chat/completions",status="200"}', "router_decisions_total{model=",
                   'router_cache_requests_total{outcome="miss"}', "router_provider_latency_seconds_bucket{model=",
                   'router_added_latency_seconds_bucket{le="0.01"}', "router_spend_usd_total{model=",
                   "router_decision_batch_size_count", "router_policy_info{version="):
        assert series in text, series
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert float(samples["router_added_latency_seconds_count"]) >= 1


def _record(service, rid: str) -> dict:
    """The decision record of request ``rid`` (the logbook writes from a thread: wait for it)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if service.logbook.exists():
            for line in service.logbook.read_text().splitlines():
                row = json.loads(line)
                if row["request_id"] == rid:
                    return row
        time.sleep(0.05)
    raise AssertionError(f"no decision record for request {rid}")


def test_every_request_leaves_a_decision_record(service, client):
    content = f"Summarise the plot of a short story, record test {time.time()}"
    raw = client.chat.completions.with_raw_response.create(model="router",
                                                           messages=[{"role": "user", "content": content}])
    rec = _record(service, raw.headers["x-request-id"])
    assert rec["chosen_model"] == raw.headers["x-route-model"] == rec["answered_model"]
    assert rec["policy_version"] == raw.headers["x-route-policy-version"]
    assert rec["propensity"] == 1.0 and rec["routed"] and rec["cache"] == "miss" and rec["tenant"] == "default"
    assert rec["messages"][0]["content"] == content
    assert np.isclose(rec["predicted_cost"], float(raw.headers["x-route-predicted-cost"]), rtol=1e-5)
    assert set(rec["predicted"]) == set(json.loads(http("GET", service.url + "/readyz")[2])["models"])
    assert rec["output_tokens"] > 0 and rec["latency_s"] > 0 and rec["total_s"] >= rec["latency_s"]
