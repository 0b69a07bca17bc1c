"""The local provider (`python -m serve.provider`) over real HTTP on loopback: wire shapes, answers, faults."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from router.errors import ConfigError
from serve.provider import AnswerBook, Fault, FaultTable, parse_fault, running

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parent.parent
MSG = [{"role": "user", "content": "What is two plus two?"}]


@pytest.fixture(scope="module")
def demo():
    """A provider serving the demo data's pool, no latency."""
    with running(data="demo", latency_ms=0) as url:
        yield url


@pytest.fixture(scope="module")
def open_pool():
    """A provider answering any model name, no latency."""
    with running(latency_ms=0) as url:
        yield url


@pytest.fixture(autouse=True)
def _no_faults_left(request):
    yield
    for name in ("demo", "open_pool"):
        if name in request.fixturenames:
            request.getfixturevalue(name).clear_faults()


def _post(url, path, body, headers=None, timeout=10):
    """(status, headers, raw body) of a POST, with http.client (no retries, no magic)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("POST", path, body=json.dumps(body) if not isinstance(body, bytes) else body,
                     headers={"content-type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _sse(raw: bytes) -> list[dict]:
    out = []
    for line in raw.decode().splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            out.append(json.loads(line[6:]))
    return out


@pytest.fixture(scope="module")
def demo_data():
    from router.data.registry import load_source

    return load_source("demo")


# ----------------------------------------------------------------------------- OpenAI client, unchanged
def test_openai_client_plain_and_stream(demo, demo_data):
    import openai

    client = openai.OpenAI(base_url=demo + "/v1", api_key="x", max_retries=0)
    prompt, j = str(demo_data.prompts[3]), 2
    model = demo_data.models[j]
    logged = int(demo_data.output_tokens[3, j])
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}])
    assert r.object == "chat.completion" and r.model == model
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == logged == len(r.choices[0].message.content.split())
    assert r.usage.prompt_tokens == int(demo_data.input_tokens[3, j])
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    again = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}])
    assert again.choices[0].message.content == r.choices[0].message.content  # deterministic
    other = client.chat.completions.create(model=demo_data.models[0], messages=[{"role": "user", "content": prompt}])
    assert other.choices[0].message.content != r.choices[0].message.content

    chunks = list(client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                                 stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == r.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == logged
    assert all(c.usage is None for c in chunks[:-1])


def test_openai_client_models_and_errors(demo, demo_data):
    import openai

    client = openai.OpenAI(base_url=demo + "/v1", api_key="x", max_retries=0)
    assert sorted(m.id for m in client.models.list().data) == sorted(demo_data.models)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="no-such-model", messages=MSG)
    demo.add_fault(demo_data.models[0], "429", count=1, retry_after=2)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=demo_data.models[0], messages=MSG)
    assert info.value.response.headers["retry-after"] == "2"
    assert info.value.response.headers["retry-after-ms"] == "2000"
    assert client.chat.completions.create(model=demo_data.models[0], messages=MSG).choices  # count used up
    with pytest.raises(openai.InternalServerError):
        demo.add_fault("*", "error", count=1)
        client.chat.completions.create(model=demo_data.models[1], messages=MSG)


def test_max_tokens_truncates_with_length_reason(open_pool):
    status, _, raw = _post(open_pool, "/v1/chat/completions", {"model": "m", "messages": MSG, "max_tokens": 5})
    body = json.loads(raw)
    assert status == 200 and body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 5 == len(body["choices"][0]["message"]["content"].split())


# ----------------------------------------------------------------------------- raw wire shapes per protocol
def test_anthropic_wire(open_pool):
    body = {"model": "claude-x", "max_tokens": 6, "system": "be brief", "messages": MSG}
    status, _, raw = _post(open_pool, "/v1/messages", body)
    msg = json.loads(raw)
    assert status == 200 and msg["type"] == "message" and msg["role"] == "assistant"
    assert msg["stop_reason"] == "max_tokens" and msg["usage"]["output_tokens"] == 6
    status, headers, raw = _post(open_pool, "/v1/messages", {**body, "stream": True})
    assert headers["content-type"].startswith("text/event-stream")
    events = [line[7:] for line in raw.decode().splitlines() if line.startswith("event: ")]
    assert events[:3] == ["message_start", "content_block_start", "ping"]
    assert events[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(events[3:-3]) == {"content_block_delta"}
    data = _sse(raw)
    assert "".join(d["delta"]["text"] for d in data if d["type"] == "content_block_delta") == msg["content"][0]["text"]
    assert data[-2]["usage"]["output_tokens"] == 6 and data[-2]["delta"]["stop_reason"] == "max_tokens"
    status, _, raw = _post(open_pool, "/v1/messages", {"model": "claude-x", "messages": MSG})
    assert status == 400 and json.loads(raw)["error"] == {"type": "invalid_request_error",
                                                          "message": "max_tokens: Field required"}


def test_gemini_wire(open_pool):
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 4}}
    status, _, raw = _post(open_pool, "/v1beta/models/gem-x:generateContent", body)
    whole = json.loads(raw)
    assert status == 200 and whole["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert whole["usageMetadata"]["candidatesTokenCount"] == 4
    text = whole["candidates"][0]["content"]["parts"][0]["text"]
    _, _, raw = _post(open_pool, "/v1beta/models/gem-x:streamGenerateContent?alt=sse", body)
    frames = _sse(raw)
    assert "".join(f["candidates"][0]["content"]["parts"][0]["text"] for f in frames) == text
    assert frames[-1]["candidates"][0]["finishReason"] == "MAX_TOKENS"
    _, _, raw = _post(open_pool, "/v1beta/models/gem-x:streamGenerateContent", body)  # a JSON array
    arr = json.loads(raw)
    assert "".join(f["candidates"][0]["content"]["parts"][0]["text"] for f in arr) == text


def test_ollama_wire(open_pool):
    body = {"model": "llama", "messages": MSG, "options": {"num_predict": 3}}
    status, headers, raw = _post(open_pool, "/api/chat", body)  # Ollama streams unless told not to
    assert status == 200 and headers["content-type"] == "application/x-ndjson"
    records = [json.loads(line) for line in raw.decode().splitlines()]
    assert [r["done"] for r in records] == [False] * (len(records) - 1) + [True]
    assert records[-1]["eval_count"] == 3 and records[-1]["done_reason"] == "length"
    _, _, raw = _post(open_pool, "/api/chat", {**body, "stream": False})
    whole = json.loads(raw)
    assert whole["done"] and whole["message"]["content"] == "".join(r["message"]["content"] for r in records)


@pytest.mark.parametrize("path,body,needle", [
    ("/v1/chat/completions", {"model": "nope", "messages": MSG}, b'"code":"model_not_found"'),
    ("/v1/messages", {"model": "nope", "max_tokens": 5, "messages": MSG}, b'"type":"not_found_error"'),
    ("/v1beta/models/nope:generateContent", {"contents": [{"parts": [{"text": "x"}]}]}, b'"status":"NOT_FOUND"'),
    ("/api/chat", {"model": "nope", "messages": MSG}, b"not found, try pulling it first"),
])
def test_unknown_model_is_the_protocols_404(demo, path, body, needle):
    status, _, raw = _post(demo, path, body)
    assert status == 404 and needle in raw


@pytest.mark.parametrize("body,needle", [
    (b"{not json", "could not parse the JSON body"),
    ({"messages": MSG}, "you must provide a model parameter"),
    ({"model": "m", "messages": []}, "non-empty array"),
    ({"model": "m", "messages": MSG, "max_tokens": 0}, "positive integer"),
])
def test_bad_requests_are_400(open_pool, body, needle):
    status, _, raw = _post(open_pool, "/v1/chat/completions", body)
    assert status == 400 and needle in json.loads(raw)["error"]["message"]


# ----------------------------------------------------------------------------- faults on the wire
def test_reset_closes_without_a_response(open_pool):
    open_pool.add_fault("r", "reset", count=1)
    with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
        _post(open_pool, "/v1/chat/completions", {"model": "r", "messages": MSG})
    assert _post(open_pool, "/v1/chat/completions", {"model": "r", "messages": MSG})[0] == 200


def test_no_response_never_answers(open_pool):
    open_pool.add_fault("n", "no_response", count=1)
    with pytest.raises(TimeoutError):
        _post(open_pool, "/v1/chat/completions", {"model": "n", "messages": MSG}, timeout=0.3)


def test_cut_stream_has_no_final_chunk(open_pool):
    open_pool.add_fault("c", "cut", count=1)
    with pytest.raises(http.client.IncompleteRead) as info:
        _post(open_pool, "/v1/chat/completions", {"model": "c", "messages": MSG, "stream": True})
    partial = info.value.partial.decode()
    assert "[DONE]" not in partial and '"finish_reason":"stop"' not in partial


def test_malformed_chunk_mid_stream(open_pool):
    open_pool.add_fault("x", "malformed", count=1)
    _, _, raw = _post(open_pool, "/v1/chat/completions", {"model": "x", "messages": MSG, "stream": True})
    with pytest.raises(json.JSONDecodeError):
        _sse(raw)
    assert raw.endswith(b"data: [DONE]\n\n")  # the stream itself went on


def test_stall_first_sends_headers_then_waits(open_pool):
    open_pool.add_fault("s", "stall_first", count=1, stall_s=0.3)
    t = time.perf_counter()
    status, _, raw = _post(open_pool, "/v1/chat/completions", {"model": "s", "messages": MSG, "stream": True})
    assert status == 200 and raw.endswith(b"data: [DONE]\n\n") and time.perf_counter() - t >= 0.3


def test_flap_alternates(open_pool):
    open_pool.add_fault("f", "flap", period=2)
    codes = [_post(open_pool, "/v1/chat/completions", {"model": "f", "messages": MSG})[0] for _ in range(6)]
    assert codes == [200, 200, 500, 500, 200, 200]
    stats = open_pool.stats()
    assert stats["requests"]["f"] == 6 and stats["faults_injected"]["f"] == {"flap": 2}


def test_fault_admin_errors_are_clear(open_pool):
    status, _, raw = _post(open_pool, "/_faults", {"model": "m", "kind": "explode"})
    assert status == 400 and "unknown fault kind 'explode'" in json.loads(raw)["error"]["message"]


@pytest.mark.parametrize("text,match", [
    ("gpt-4", "expected MODEL=KIND"), ("gpt-4=boom", "unknown fault kind"), ("m=error:x", "COUNT must be"),
    ("m=error:0", "integer >= 1"),
])
def test_parse_fault_errors(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_fault(text)


def test_fault_table_order_and_wildcard():
    t = FaultTable()
    t.add(Fault("*", "error"))
    t.add(Fault("a", "429", count=1))
    assert t.take("a").kind == "429" and t.take("a").kind == "error" and t.take("b").kind == "error"


# ----------------------------------------------------------------------------- answers and latency
def test_logged_latency_is_replayed(demo_data):
    book = AnswerBook.from_data("demo")
    j, i = 4, 7
    model, prompt = demo_data.models[j], str(demo_data.prompts[i])
    a = book.answer(model, prompt)
    ttft, per = book.timing(model, prompt, a.output_tokens, a.logged_latency_s)
    assert a.output_tokens == int(demo_data.output_tokens[i, j])
    assert ttft + per * a.output_tokens == pytest.approx(float(demo_data.latency[i, j]))
    # a prompt outside the data: the model's typical length
    assert book.answer(model, "never logged").output_tokens == int(np.median(demo_data.output_tokens[:, j]))


def test_fixed_latency_is_a_lower_bound(open_pool):
    with running(latency_ms=150) as url:
        t = time.perf_counter()
        assert _post(url, "/v1/chat/completions", {"model": "m", "messages": MSG})[0] == 200
        assert time.perf_counter() - t >= 0.15


def test_open_pool_answers_any_name_and_lists_it(open_pool):
    assert _post(open_pool, "/api/chat", {"model": "brand-new", "messages": MSG, "stream": False})[0] == 200
    host, port = open_pool.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request("GET", "/api/tags")
    assert "brand-new" in [m["name"] for m in json.loads(conn.getresponse().read())["models"]]
    conn.close()


# ----------------------------------------------------------------------------- the command line
def test_command_line_subprocess_with_fault():
    with running(data="demo", latency_ms=0, faults=["small-8b=error:1"], process=True) as url:
        body = {"model": "small-8b", "messages": MSG}
        assert _post(url, "/v1/chat/completions", body)[0] == 500
        assert _post(url, "/v1/chat/completions", body)[0] == 200
        assert url.stats()["pool"]["source"] == "demo"


def test_command_line_bad_flags_exit_2():
    out = subprocess.run([sys.executable, "-m", "serve.provider", "--port", "0", "--fault", "m=boom"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 2 and "unknown fault kind 'boom'" in out.stderr


def test_port_in_use_is_reported():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(OSError), running(port=port):
            pass
