"""The service follows ``models:/NAME@champion`` -- and an experiment's ``models:/NAME@challenger`` -- in a
real MLflow SQLite store: an alias move under load swaps the policy with no failed request, and later
responses, explanations and the experiment report name the new version."""

from __future__ import annotations

import json
import threading
import time

import pytest
from serve_support import MATH, Service, http, register_router, tiny_router

pytestmark = pytest.mark.slow

NAME = "serve-follow"


def _register(tmp, router_version: str, lam: float) -> str:
    """A registry version laid out as ``training fit --register`` lays it out, without the pyfunc packaging
    (tests/test_lifecycle.py covers that), so the setup takes a second, not thirty."""
    tiny_router(tmp / router_version, lam=lam)
    return register_router(NAME, tmp / router_version, tmp / "registry")


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    import mlflow

    tmp = tmp_path_factory.mktemp("reg")
    strong = _register(tmp, "v1", 0.0)  # routes hard prompts to strong models
    cheap = _register(tmp, "v2", 1e6)  # routes everything to the cheapest
    mlflow.MlflowClient().set_registered_model_alias(NAME, "champion", strong)
    return strong, cheap


def test_alias_move_is_followed_under_load_without_a_failed_request(versions, tmp_path):
    import mlflow

    from serve.provider import running

    strong, cheap = versions
    body = json.dumps({"model": "router", "messages": [{"role": "user", "content": MATH}],
                       "routing": {"cache": False}}).encode()
    with running(data="demo", latency_ms=2) as provider:
        svc = Service(f"models:/{NAME}@champion", provider_url=provider, tmp=tmp_path,
                      config={"registry_poll_s": 0.2, "cache": {"enabled": False},
                              "audit": {"path": str(tmp_path / "audit.jsonl"), "hmac_key": "swap-test"}})
        try:
            svc.wait_ready()
            results: list[tuple[int, str, str, float]] = []
            stop = threading.Event()

            def load() -> None:
                while not stop.is_set():
                    status, headers, _ = http("POST", svc.url + "/v1/chat/completions", body,
                                              {"content-type": "application/json"})
                    results.append((status, headers.get("x-route-policy-version", ""),
                                    headers.get("x-route-model", ""), time.monotonic()))

            threads = [threading.Thread(target=load) for _ in range(6)]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 60
            while len(results) < 30 and time.monotonic() < deadline:  # serving under load before the move
                time.sleep(0.05)
            moved_at = time.monotonic()
            mlflow.MlflowClient().set_registered_model_alias(NAME, "champion", cheap)
            deadline = moved_at + 30
            while time.monotonic() < deadline and not any(v == f"{NAME}/{cheap}" for _, v, _, _ in results[-20:]):
                time.sleep(0.05)
            time.sleep(0.5)
            stop.set()
            for t in threads:
                t.join(30)
            metrics = http("GET", svc.url + "/metrics")[2].decode()
        finally:
            svc.stop()
    statuses = {s for s, _, _, _ in results}
    assert statuses == {200}, f"failed requests during the move: {statuses}\n{svc.output()}"
    before = [r for r in results if r[3] < moved_at]
    assert before and {v for _, v, _, _ in before} == {f"{NAME}/{strong}"}
    assert {m for _, _, m, _ in before} != {"small-8b"}
    new = [r for r in results if r[1] == f"{NAME}/{cheap}"]
    assert new, f"the new version was never served\n{svc.output()}"
    assert {m for _, _, m, _ in new} == {"small-8b"}  # the new policy decides
    first_new = min(r[3] for r in new)
    assert all(r[1] == f"{NAME}/{cheap}" for r in results if r[3] > first_new + 0.2)  # and keeps deciding
    assert len(results) > 50
    assert "router_policy_swaps_total 1" in metrics
    assert f'router_policy_info{{version="{NAME}/{cheap}"}} 1' in metrics
    # the swap is in the audit log, which verifies
    from serve.audit import verify

    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    swaps = [r["detail"] for r in records if r["kind"] == "model.swap"]
    assert swaps == [{"old": f"{NAME}/{strong}", "new": f"{NAME}/{cheap}", "source": f"models:/{NAME}@champion"}]
    assert verify(tmp_path / "audit.jsonl", b"swap-test").ok


def test_the_challenger_follows_its_alias_under_load_without_a_failed_request(versions, tmp_path):
    import mlflow

    from serve.provider import running

    strong, cheap = versions
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(NAME, "champion", strong)
    client.set_registered_model_alias(NAME, "challenger", strong)
    old, new = f"{NAME}/{strong}", f"{NAME}/{cheap}"
    with running(data="demo", latency_ms=2) as provider:
        svc = Service(f"models:/{NAME}@champion", provider_url=provider, tmp=tmp_path,
                      config={"registry_poll_s": 0.2, "cache": {"enabled": False},
                              "audit": {"path": str(tmp_path / "audit.jsonl"), "hmac_key": "swap-test"},
                              "experiment": {"name": "follow", "challenger": f"models:/{NAME}@challenger",
                                             "mode": "ab", "split": 0.5, "sticky": "user"}})
        try:
            svc.wait_ready()
            results: list[tuple[int, str, str, str, str, float]] = []
            stop = threading.Event()

            def load(worker: int) -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    body = json.dumps({"model": "router", "messages": [{"role": "user", "content": MATH}],
                                       "user": f"u{worker}-{n % 8}", "routing": {"cache": False}}).encode()
                    status, h, _ = http("POST", svc.url + "/v1/chat/completions", body,
                                        {"content-type": "application/json"})
                    results.append((status, h.get("x-route-experiment-arm", ""), h.get("x-route-policy-version", ""),
                                    h.get("x-route-model", ""), h.get("x-request-id", ""), time.monotonic()))

            threads = [threading.Thread(target=load, args=(i,)) for i in range(6)]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 60
            while len(results) < 30 and time.monotonic() < deadline:
                time.sleep(0.05)
            moved_at = time.monotonic()
            client.set_registered_model_alias(NAME, "challenger", cheap)
            deadline = moved_at + 30
            while time.monotonic() < deadline and not any(r[1] == "challenger" and r[2] == new for r in results[-20:]):
                time.sleep(0.05)
            time.sleep(0.5)
            stop.set()
            for t in threads:
                t.join(30)
            report = json.loads(http("GET", svc.url + "/v1/admin/experiments")[2])
            late = [r for r in results if r[1] == "challenger" and r[2] == new][-1]
            explained = json.loads(http("GET", svc.url + "/v1/decisions/" + late[4])[2])
            metrics = http("GET", svc.url + "/metrics")[2].decode()
            reload = json.loads(http("POST", svc.url + "/v1/admin/reload")[2])
        finally:
            svc.stop()
    assert {r[0] for r in results} == {200}, f"failed requests during the move\n{svc.output()}"
    assert reload == {"swapped": False, "policy_version": old, "challenger_swapped": False, "challenger_version": new}
    champion = [r for r in results if r[1] == "champion"]
    challenger = [r for r in results if r[1] == "challenger"]
    assert len(champion) > 20 and len(challenger) > 20
    assert {r[2] for r in champion} == {old} and "small-8b" not in {r[3] for r in champion}  # the champion stays
    before = [r for r in challenger if r[5] < moved_at]
    assert before and {r[2] for r in before} == {old}
    moved = [r for r in challenger if r[2] == new]
    assert moved, f"the challenger's new version was never served\n{svc.output()}"
    assert {r[3] for r in moved} == {"small-8b"}  # the new challenger decides its arm
    first_new = min(r[5] for r in moved)
    assert all(r[2] == new for r in challenger if r[5] > first_new + 0.2)  # and keeps deciding it
    assert explained["policy_version"] == new and explained["experiment"]["version"] == new
    assert explained["experiment"]["arm"] == "challenger" and explained["router_choice"] == "small-8b"
    assert report["challenger_version"] == new and report["challenger_swaps"] == 1
    assert report["challenger_source"] == f"models:/{NAME}@challenger"
    versions_seen = report["arms"]["challenger"]["policy_versions"]
    assert set(versions_seen) == {old, new} and sum(versions_seen.values()) == len(challenger)
    assert report["arms"]["champion"]["policy_versions"] == {old: len(champion)}
    assert "router_policy_swaps_total 0" in metrics and f'router_policy_info{{version="{old}"}} 1' in metrics
    from serve.audit import verify

    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    swaps = [r["detail"] for r in records if r["kind"] == "model.swap"]
    assert swaps == [{"old": old, "new": new, "source": f"models:/{NAME}@challenger"}]
    assert verify(tmp_path / "audit.jsonl", b"swap-test").ok


def test_startup_fails_fast_on_a_missing_registered_model(tmp_path):
    import subprocess
    import sys

    from serve_support import ROOT

    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "serve", "--model", "models:/no-such-router@champion", "--port", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot resolve models:/no-such-router@champion")
    assert "register the model" in lines[0]
    assert time.monotonic() - t0 < 30
