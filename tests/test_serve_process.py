"""The service as a process: SIGTERM drains the requests in flight; ``--workers 2`` serves from two processes."""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest
from serve_support import MATH, Service, http, tiny_router

pytestmark = pytest.mark.slow

BODY = json.dumps({"model": "router", "messages": [{"role": "user", "content": MATH}],
                   "routing": {"cache": False}}).encode()


def test_sigterm_lets_requests_in_flight_finish(tmp_path):
    from serve.provider import running

    tiny_router(tmp_path / "r")
    with running(data="demo", latency_ms=1500) as provider:  # every answer takes 1.5 s
        svc = Service(str(tmp_path / "r"), provider_url=provider, tmp=tmp_path,
                      config={"cache": {"enabled": False}})
        svc.wait_ready()
        results: list[tuple[int, bytes]] = []

        def ask() -> None:
            status, _, body = http("POST", svc.url + "/v1/chat/completions", BODY,
                                   {"content-type": "application/json"})
            results.append((status, body))

        threads = [threading.Thread(target=ask) for _ in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # until all four wait on the provider inside the service
            if "router_inflight_requests 4\n" in http("GET", svc.url + "/metrics")[2].decode():
                break
            time.sleep(0.02)
        svc.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(30)
        code = svc.stop()
    assert code in (0, -signal.SIGTERM), svc.output()
    assert [s for s, _ in results] == [200] * 4, results
    assert all(json.loads(b)["choices"][0]["message"]["content"] for _, b in results)
    assert "Application shutdown complete" in svc.output()


def test_two_workers_serve_from_two_processes(tmp_path):
    from serve.provider import running

    tiny_router(tmp_path / "r")
    with running(data="demo", latency_ms=1) as provider:
        svc = Service(str(tmp_path / "r"), provider_url=provider, tmp=tmp_path,
                      config={"cache": {"enabled": False}}, extra_args=["--workers", "2"])
        try:
            svc.wait_ready()
            ids: set[str] = set()
            statuses = set()
            # a new connection each time: the kernel spreads them over the workers. /readyz answers as soon
            # as one worker is up, so keep asking (bounded) until the second one has started too
            deadline = time.monotonic() + 60
            while len(ids) < 2 and time.monotonic() < deadline:
                status, headers, _ = http("POST", svc.url + "/v1/chat/completions", BODY,
                                          {"content-type": "application/json"})
                statuses.add(status)
                ids.add(headers["x-request-id"].split("-")[1])  # req-<pid>-...
                if len(ids) < 2:
                    time.sleep(0.02)
        finally:
            code = svc.stop()
    assert statuses == {200}
    assert len(ids) == 2, f"all requests were served by one process\n{svc.output()}"
    assert code in (0, -signal.SIGTERM), svc.output()
