"""The benchmark's open-loop load generator against the real local provider over loopback HTTP.

Counts and fields only; no assertion on speed. Bounds that follow from the schedule itself (a request
cannot finish before the provider's fixed latency; one connection serialises requests) are checked.
"""

from __future__ import annotations

import json
import math
import socket

import pytest

from bench.loadgen import LoadSpec, run_load
from serve.provider.run import running

CHAT = "/v1/chat/completions"


def body(model: str = "small-8b", content: str = "What is routing?", **extra: object) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 4,
                       **extra}).encode()


@pytest.fixture(scope="module")
def provider():
    with running(data="demo", latency_ms=5) as url:
        yield url


def test_counts_fields_and_schedule(provider):
    before = provider.stats()["total"]
    spec = LoadSpec(url=provider + CHAT, rate=50, duration_s=1.0, warmup_s=0.2, timeout_s=5,
                    track_header="content-type")
    result = run_load(spec, lambda i: body(content=f"question {i}"))
    assert spec.n_requests == 60 and spec.n_warmup == 10
    assert result.sent == 60
    assert result.measured == 50
    assert result.ok == 50
    assert result.errors == {} and result.error_rate == 0.0
    assert result.status_counts == {"200": 50}
    assert result.header_counts == {"application/json": 50}  # the tracked header, measured requests only
    assert provider.stats()["total"] - before == 60  # every scheduled request reached the provider once
    lat = result.latency_ms
    assert set(lat) == {"p50", "p95", "p99", "max", "mean"}
    assert all(math.isfinite(v) for v in lat.values())
    assert lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert lat["p50"] >= 4.0  # measured from the scheduled send: never below the provider's 5 ms
    assert result.offered_rate == 50 and result.achieved_rate > 0
    assert 1 <= result.connections_opened <= 60
    assert set(result.as_dict()) >= {"offered_rate", "achieved_rate", "errors", "latency_ms", "dispatch_lag_ms",
                                      "loadgen_cpu_s", "wall_s"}


def test_http_errors_and_chunked_streams_are_counted(provider):
    bodies = [body(), body(model="no-such-model"), body(stream=True)]
    spec = LoadSpec(url=provider + CHAT, rate=60, duration_s=0.5, warmup_s=0, timeout_s=5)
    result = run_load(spec, bodies)
    assert result.sent == 30
    assert result.status_counts == {"200": 20, "404": 10}  # streams (chunked bodies) parsed to the end
    assert result.errors == {"http 404": 10}
    assert result.ok == 20
    assert result.error_rate == pytest.approx(10 / 30)


def test_open_loop_counts_queueing_on_one_connection(provider):
    # 1 connection, 5 ms per request at 400/s (2.5 ms apart): the requests queue in the generator; latency
    # is measured from each request's scheduled time, so the queue shows (no coordinated omission)
    spec = LoadSpec(url=provider + CHAT, rate=400, duration_s=0.25, warmup_s=0, timeout_s=10, max_connections=1)
    result = run_load(spec, [body()])
    assert result.sent == 100 and result.ok == 100
    assert result.connections_opened == 1
    # the last request is due at 0.25 s and cannot finish before 100 x 5 ms = 0.5 s: >= 0.25 s late
    assert result.latency_ms["max"] >= 200.0
    assert result.achieved_rate <= 0.8 * spec.rate  # one connection serves at most 200/s


def test_refused_connections_are_errors_not_hangs():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    spec = LoadSpec(url=f"http://127.0.0.1:{port}{CHAT}", rate=20, duration_s=0.5, warmup_s=0, timeout_s=2)
    result = run_load(spec, [body()])
    assert result.sent == 10 and result.ok == 0
    assert sum(result.errors.values()) == 10
    assert all(k.startswith("connect") or k == "timeout" for k in result.errors)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"url": "http://10.0.0.1:80/x"}, "only targets loopback"),
        ({"url": "https://127.0.0.1:443/x"}, "url must look like"),
        ({"url": "http://127.0.0.1/x"}, "url must look like"),
        ({"rate": 0}, "rate must be a positive"),
        ({"duration_s": 0}, "duration_s and timeout_s must be > 0"),
        ({"rate": 1e6, "duration_s": 10}, "over the bound"),
        ({"max_connections": 0}, "max_connections must be >= 1"),
    ],
)
def test_bad_specs_say_what_to_fix(kwargs, match):
    args = {"url": "http://127.0.0.1:9/x", "rate": 10.0, "duration_s": 1.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        LoadSpec(**args)


def test_empty_bodies_rejected():
    spec = LoadSpec(url="http://127.0.0.1:9/x", rate=10, duration_s=0.1, warmup_s=0)
    with pytest.raises(ValueError, match="bodies is empty"):
        run_load(spec, [])


def test_profile_summary_known_answer():
    from bench.serve_procs import profile_summary

    raw = "main (m.py:1);step (m.py:2);search (x.py:3) 5\nmain (m.py:1);step (m.py:9);encode (x.py:9) 3\n" \
          "main (m.py:1);write (y.py:1) 2\n"
    s = profile_summary(raw)
    assert s["samples"] == 10
    assert s["top_self"] == [{"function": "search (x.py)", "percent": 50.0},
                             {"function": "encode (x.py)", "percent": 30.0},
                             {"function": "write (y.py)", "percent": 20.0}]
    # lines of one function merge (step at lines 2 and 9); the root frame under every sample is left out
    assert s["top_inclusive"][0] == {"function": "step (m.py)", "percent": 80.0}
    assert all(e["function"] != "main (m.py)" for e in s["top_inclusive"])


def test_summary_takes_the_highest_rate_before_the_first_miss():
    from bench.serve_report import summarise

    def row(rate, ok):
        return {"target": "ours-miss", "rate": rate, "sustained": ok, "cpu_s_per_1000": rate / 1000,
                "added_ms": {"p50": 1.0, "p95": 2.0, "p99": 3.0}, "achieved_rate": rate if ok else rate / 2,
                "error_rate": 0.0, "errors": {}}

    s = summarise([row(100, True), row(250, True), row(500, False), row(1000, True)])["ours-miss"]
    assert s["max_sustained_rate"] == 250
    assert s["cpu_ms_per_request"] == 0.25
    assert s["first_unsustained"] == {"rate": 500, "why": "achieved 250/s"}
