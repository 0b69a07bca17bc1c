"""Tenants over real HTTP: API keys (CLI and admin endpoint), roles on every endpoint, budgets and
rate limits refused or downgraded before any provider call, explanations per tenant, and the audit
log the service writes (verified by ``python -m serve.audit verify``)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import openai
import pytest
from serve_support import MATH, ROOT, Service, http

from router.router import Router

HMAC = "test-audit-key-0123456789"
PROMPT = [{"role": "user", "content": MATH}]
CHAT = json.dumps({"model": "router", "messages": PROMPT, "routing": {"cache": False}}).encode()


@pytest.fixture(scope="module")
def provider():
    from serve.provider import running

    with running(data="demo", latency_ms=2) as url:
        yield url


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def world(provider, router_dir, tmp_path_factory):
    """One service with a tenant store, an audit log, and keys of every role for tenants acme and globex."""
    from router.data.synthetic import MODELS
    from serve.tenants.keys import KeyStore

    tmp = tmp_path_factory.mktemp("tenants")
    store_path = tmp / "tenants.db"
    # the contract: the admin key comes from the command line, printed once
    out = cli("serve.admin", "keys", "create", "--store", str(store_path), "--tenant", "ops", "--role", "admin",
              "--name", "bootstrap")
    assert out.returncode == 0, out.stderr
    admin_key = out.stdout.strip()
    assert admin_key.startswith("rk-") and "store the key now" in out.stderr
    store = KeyStore(store_path)
    keys = {"admin": admin_key}
    for tenant in ("acme", "globex"):
        for role in ("member", "read-only"):
            keys[f"{tenant}/{role}"] = store.create(tenant, role)[1]
    now = time.time()
    keys["expired"] = store.create("acme", "member", expires_at=now - 50, now=now - 100)[1]
    providers = {"endpoints": {"local": {"protocol": "openai", "api_base": provider}},
                 "models": {m.name: {"endpoint": "local", "input_cost_per_token": m.input_price,
                                     "output_cost_per_token": m.output_price} for m in MODELS}}
    config = {"providers": providers, "cache": {"encoder": {"kind": "hashing", "dim": 256}, "threshold": 0.9},
              "auth": {"store": str(store_path), "reload_s": 0.2}, "logbook": {"dir": str(tmp / "traffic")},
              "audit": {"path": str(tmp / "audit.jsonl"), "hmac_key": HMAC, "checkpoint_every": 5}}
    svc = Service(str(router_dir), provider_url=provider, config=config, tmp=tmp)
    svc.wait_ready()
    yield {"svc": svc, "keys": keys, "store": store, "audit": tmp / "audit.jsonl", "provider": provider}
    assert svc.stop() in (0, -signal.SIGTERM), svc.output()


def call(world, method: str, path: str, key: str | None, body: bytes | dict | None = None):
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    status, h, raw = http(method, world["svc"].url + path, body, headers)
    return status, h, (json.loads(raw) if raw and raw[:1] in b"{[" else raw)


def provider_calls(world) -> int:
    return int(json.loads(http("GET", world["provider"] + "/_stats")[2])["total"])


# (method, path, body) -> the status each role gets; 403 bodies name the roles that may
ENDPOINTS = [
    ("POST", "/v1/chat/completions", CHAT, {"admin": 200, "member": 200, "read-only": 403}),
    ("GET", "/v1/models", None, {"admin": 200, "member": 200, "read-only": 200}),
    ("GET", "/metrics", None, {"admin": 200, "member": 403, "read-only": 200}),
    ("GET", "/v1/admin/keys", None, {"admin": 200, "member": 403, "read-only": 403}),
    ("GET", "/v1/admin/tenants", None, {"admin": 200, "member": 403, "read-only": 403}),
    ("PUT", "/v1/admin/tenants/nobody/limits", {"rpm": 5}, {"admin": 200, "member": 403, "read-only": 403}),
    ("GET", "/v1/admin/audit", None, {"admin": 200, "member": 403, "read-only": 403}),
    ("POST", "/v1/admin/reload", None, {"admin": 409, "member": 403, "read-only": 403}),  # no registry alias here
    ("GET", "/v1/decisions/req-unknown", None, {"admin": 404, "member": 404, "read-only": 404}),
    ("POST", "/v1/feedback", b"{}", {"admin": 400, "member": 400, "read-only": 403}),  # allowed, then the body is checked
]


@pytest.mark.parametrize(("method", "path", "body", "expected"), ENDPOINTS, ids=[f"{m} {p}" for m, p, _, _ in ENDPOINTS])
def test_every_endpoint_by_role(world, method, path, body, expected):
    for role, want in expected.items():
        key = world["keys"]["admin" if role == "admin" else f"acme/{role}"]
        status, _, payload = call(world, method, path, key, body)
        assert status == want, (role, payload)
        if status == 403:
            err = payload["error"]
            assert err["type"] == "permission_error" and err["code"] == "forbidden"
            assert f"has the {role} role" in err["message"] and "needs the" in err["message"]
    # without a credential every one of them is a 401 in OpenAI's error format
    status, h, payload = call(world, method, path, None, body)
    assert status == 401 and payload["error"]["type"] == "authentication_error"
    assert "Authorization: Bearer" in payload["error"]["message"] and h["www-authenticate"].startswith("Bearer")


def test_feedback_only_for_the_tenants_own_requests(world):
    keys = world["keys"]
    status, h, _ = call(world, "POST", "/v1/chat/completions", keys["acme/member"], CHAT)
    assert status == 200
    rid = h["x-request-id"]
    # another tenant cannot rate it, nor learn that it exists: the same 404 as an unknown id
    status, _, payload = call(world, "POST", "/v1/feedback", keys["globex/member"], {"request_id": rid, "score": 0.1})
    assert status == 404 and payload["error"]["code"] == "unknown_request", payload
    status, _, payload = call(world, "POST", "/v1/feedback", keys["acme/member"], {"request_id": rid, "thumbs": "up"})
    assert status == 200 and payload == {"request_id": rid, "quality": 1.0, "status": "recorded"}
    status, _, payload = call(world, "POST", "/v1/feedback", keys["admin"], {"request_id": rid, "score": 0.5})
    assert status == 409 and payload["error"]["code"] == "duplicate_feedback"


BAD_CREDENTIALS = [
    ("Bearer rk-000000000000-nope", "not valid"),
    ("Bearer rk-short", "malformed"),
    ("Basic dXNlcjpwYXNz", "must be `Bearer"),
    ("Bearer not-a-key-at-all", "not a valid API key"),
]


@pytest.mark.parametrize(("authorization", "message"), BAD_CREDENTIALS)
def test_bad_credentials_are_401_with_a_reason(world, authorization, message):
    before = provider_calls(world)
    status, _, raw = http("POST", world["svc"].url + "/v1/chat/completions", CHAT,
                          {"authorization": authorization, "content-type": "application/json"})
    assert status == 401 and message in json.loads(raw)["error"]["message"]
    assert provider_calls(world) == before


def test_health_probes_need_no_credential(world):
    assert call(world, "GET", "/healthz", None)[0] == 200
    assert call(world, "GET", "/readyz", None)[0] == 200


def test_expired_and_tampered_keys_are_refused(world):
    status, _, payload = call(world, "POST", "/v1/chat/completions", world["keys"]["expired"], CHAT)
    assert status == 401 and "expired at" in payload["error"]["message"]
    good = world["keys"]["acme/member"]
    tampered = good[:-1] + ("A" if good[-1] != "A" else "B")
    assert call(world, "POST", "/v1/chat/completions", tampered, CHAT)[0] == 401


def test_openai_client_with_a_key_and_the_tenant_comes_from_the_key(world):
    client = openai.OpenAI(base_url=world["svc"].url + "/v1", api_key=world["keys"]["acme/member"], max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="router", messages=PROMPT, user="globex", extra_body={"routing": {"cache": False}})
    rid = raw.headers["x-request-id"]
    # acme's member and read-only keys see the decision; globex's keys get a 404 as if it did not exist
    status, _, exp = call(world, "GET", f"/v1/decisions/{rid}", world["keys"]["acme/read-only"])
    assert status == 200 and exp["tenant"] == "acme"
    for other in ("globex/member", "globex/read-only"):
        status, _, payload = call(world, "GET", f"/v1/decisions/{rid}", world["keys"][other])
        assert status == 404 and payload["error"]["code"] == "decision_not_found"
    bad = openai.OpenAI(base_url=world["svc"].url + "/v1", api_key="rk-000000000000-nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="router", messages=PROMPT)


def test_decision_explains_every_candidate(world, router_dir):
    status, h, _ = call(world, "POST", "/v1/chat/completions", world["keys"]["acme/member"],
                        {"model": "router", "messages": PROMPT, "routing": {"cache": False, "lam": 5.0}})
    assert status == 200
    status, _, exp = call(world, "GET", "/v1/decisions/" + h["x-request-id"], world["keys"]["acme/member"])
    assert status == 200
    offline = Router.load(router_dir).route([PROMPT], lam=5.0)
    assert exp["chosen_model"] == offline.chosen[0] == h["x-route-model"] == exp["answered_model"]
    assert [c["model"] for c in exp["candidates"]] == list(offline.models)
    np.testing.assert_allclose([c["predicted_cost_usd"] for c in exp["candidates"]], offline.cost[0], rtol=1e-6)
    np.testing.assert_allclose([c["predicted_quality"] for c in exp["candidates"]], offline.quality[0], rtol=1e-6)
    assert exp["constraints"]["lam"] == 5.0 and exp["policy_version"] == h["x-route-policy-version"]
    assert exp["cache"]["outcome"] == "bypass" and exp["status"] == 200 and exp["budget_rule"] is None


def test_admin_endpoint_creates_lists_and_revokes_keys(world):
    admin = world["keys"]["admin"]
    status, _, made = call(world, "POST", "/v1/admin/keys", admin, {"tenant": "initech", "role": "member",
                                                                    "name": "svc", "expires_in_s": 3600})
    assert status == 201 and made["key"].startswith("rk-") and made["status"] == "active"
    key = made["key"]
    assert call(world, "POST", "/v1/chat/completions", key, CHAT)[0] == 200  # usable at once
    status, _, listed = call(world, "GET", "/v1/admin/keys?tenant=initech", admin)
    assert [k["key_id"] for k in listed["data"]] == [made["key_id"]]
    assert "key" not in listed["data"][0] and "digest" not in listed["data"][0]  # shown once, never again
    assert call(world, "DELETE", f"/v1/admin/keys/{made['key_id']}", admin)[0] == 200
    status, _, payload = call(world, "POST", "/v1/chat/completions", key, CHAT)
    assert status == 401 and "revoked" in payload["error"]["message"]
    assert call(world, "DELETE", "/v1/admin/keys/ffffffffffff", admin)[0] == 404
    status, _, payload = call(world, "POST", "/v1/admin/keys", admin, {"tenant": "initech", "role": "owner"})
    assert status == 400 and "role 'owner' is unknown" in payload["error"]["message"]


def test_cli_lists_and_revokes_and_the_running_service_follows(world):
    store = str(world["store"].path)
    key = world["store"].create("umbrella", "member")[1]
    key_id = key[3:15]
    deadline = time.monotonic() + 10
    while call(world, "POST", "/v1/chat/completions", key, CHAT)[0] != 200:  # picked up within reload_s
        assert time.monotonic() < deadline
        time.sleep(0.1)
    out = cli("serve.admin", "keys", "list", "--store", store, "--tenant", "umbrella", "--json")
    assert out.returncode == 0 and [r["key_id"] for r in json.loads(out.stdout)] == [key_id]
    out = cli("serve.admin", "keys", "revoke", "--store", store, key_id)
    assert out.returncode == 0 and key_id in out.stdout
    deadline = time.monotonic() + 10
    while call(world, "POST", "/v1/chat/completions", key, CHAT)[0] != 401:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    out = cli("serve.admin", "keys", "revoke", "--store", store, "000000000000")
    assert out.returncode == 2 and "no key with id" in out.stderr


def _limits(world, tenant: str, **limits):
    key = world["store"].create(tenant, "member")[1]
    status, _, payload = call(world, "PUT", f"/v1/admin/tenants/{tenant}/limits", world["keys"]["admin"], limits)
    assert status == 200, payload  # the admin change reloads the store, so the new key is known too
    return key


def test_budget_refuses_before_any_provider_call(world):
    key = _limits(world, "poor", budget_usd=1e-9, budget_period="day")
    before = provider_calls(world)
    status, h, payload = call(world, "POST", "/v1/chat/completions", key, CHAT)
    assert status == 402 and payload["error"]["code"] == "budget_exceeded"
    assert "tenant 'poor' has" in payload["error"]["message"] and "resets at" in payload["error"]["message"]
    assert int(h["retry-after"]) >= 1
    assert provider_calls(world) == before  # refused before the provider was asked
    exp = call(world, "GET", "/v1/decisions/" + h["x-request-id"], key)[2]
    assert exp["status"] == 402 and exp["budget_rule"].startswith("refused (refuse)")


def test_budget_downgrades_to_a_model_that_fits(world, router_dir):
    d = Router.load(router_dir).route([PROMPT])
    costs = dict(zip(d.models, d.cost[0]))
    best = d.chosen[0]
    budget = float(np.min(d.cost[0])) * 1.000001  # only the cheapest model fits, not the router's choice
    assert costs[best] > budget, "the test prompt must route to a model dearer than the cheapest"
    key = _limits(world, "thrifty", budget_usd=budget, on_budget="downgrade", budget_period="total")
    status, h, done = call(world, "POST", "/v1/chat/completions", key, CHAT)
    assert status == 200 and h["x-route-budget"] == "downgraded"
    assert h["x-route-model"] != best and costs[h["x-route-model"]] <= budget and done["model"] == h["x-route-model"]
    exp = call(world, "GET", "/v1/decisions/" + h["x-request-id"], key)[2]
    assert exp["budget_rule"].startswith(f"downgraded from {best}")
    usage = {t["tenant"]: t["usage"] for t in call(world, "GET", "/v1/admin/tenants", world["keys"]["admin"])[2]["data"]}
    assert usage["thrifty"]["spent_usd"] > 0 and usage["thrifty"]["reserved_usd"] == 0  # settled
    # spend the rest: once nothing fits, the downgrading tenant is refused too, before any provider call
    for _ in range(50):
        status, h, _ = call(world, "POST", "/v1/chat/completions", key, CHAT)
        if status == 402:
            break
    assert status == 402


def test_requests_per_minute_is_a_429_with_retry_after(world):
    key = _limits(world, "chatty", rpm=2)
    now = time.time()
    if now % 60 > 55:  # stay inside one fixed window
        time.sleep(61 - now % 60)
    assert [call(world, "POST", "/v1/chat/completions", key, CHAT)[0] for _ in range(2)] == [200, 200]
    before = provider_calls(world)
    status, h, payload = call(world, "POST", "/v1/chat/completions", key, CHAT)
    assert status == 429 and payload["error"]["code"] == "rpm_exceeded"
    assert "2 requests per minute (rpm)" in payload["error"]["message"] and 1 <= int(h["retry-after"]) <= 60
    assert provider_calls(world) == before
    # another tenant is not affected
    assert call(world, "POST", "/v1/chat/completions", world["keys"]["globex/member"], CHAT)[0] == 200


def test_tenant_request_size_limit(world):
    key = _limits(world, "terse", max_body_bytes=2048)
    big = json.dumps({"model": "router", "messages": [{"role": "user", "content": "x" * 4000}]}).encode()
    status, _, payload = call(world, "POST", "/v1/chat/completions", key, big)
    assert status == 413 and payload["error"]["code"] == "request_too_large" and "2048" in payload["error"]["message"]
    status, _, payload = call(world, "PUT", "/v1/admin/tenants/terse/limits", world["keys"]["admin"],
                              {"max_body_bytes": 10})
    assert status == 400 and "max_body_bytes" in payload["error"]["message"]


def test_audit_log_records_changes_and_refusals_and_verifies(world):
    call(world, "POST", "/v1/chat/completions", "rk-000000000000-nope", CHAT)
    call(world, "POST", "/v1/admin/keys", world["keys"]["admin"], {"tenant": "audited", "role": "read-only"})
    path = world["audit"]
    deadline = time.monotonic() + 10
    while True:
        kinds = [json.loads(line)["kind"] for line in path.read_text().splitlines()]
        if "key.create" in kinds and "refusal" in kinds:
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert kinds[0] == "service.start" and "checkpoint" in kinds and "limits.set" in kinds
    out = cli("serve.audit", "verify", str(path), env={"ROUTER_SERVE_AUDIT__HMAC_KEY": HMAC})
    assert out.returncode == 0 and out.stdout.startswith("OK:") and "signatures verified" in out.stdout
    status, _, rep = call(world, "GET", "/v1/admin/audit", world["keys"]["admin"])
    assert status == 200 and rep["ok"] and rep["records"] >= len(kinds)


CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def test_dashboard_json_by_role(world):
    for _ in range(3):
        call(world, "POST", "/v1/chat/completions", world["keys"]["acme/member"],
             {"model": "router", "messages": PROMPT})  # cached after the first
    status, _, d = call(world, "GET", "/v1/dashboard", world["keys"]["acme/read-only"])
    assert status == 200 and d["requests"]["total"] >= 3 and d["cache"]["hits"] >= 1
    assert d["savings"]["always_best_predicted_usd"] >= d["savings"]["routed_predicted_usd"] > 0
    assert sum(d["models"].values()) > 0 and d["spend_usd"]["total"] > 0
    assert call(world, "GET", "/v1/dashboard", world["keys"]["acme/member"])[0] == 403
    assert call(world, "GET", "/v1/dashboard", None)[0] == 401
    status, h, html = call(world, "GET", "/dashboard", None)  # the static shell holds no data
    assert status == 200 and h["content-type"].startswith("text/html") and b"/v1/dashboard" in html


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed; run scripts/ensure_chromium.sh")
@pytest.mark.parametrize(("name", "size"), [("phone", (390, 1700)), ("desktop", (1280, 900))])
def test_dashboard_renders_on_a_phone_and_a_desktop(world, tmp_path, name, size):
    from PIL import Image

    key = world["keys"]["admin"]
    _limits(world, "acme-budget", budget_usd=1.0)
    url = world["svc"].url + "/dashboard#key=" + key
    common = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
              f"--window-size={size[0]},{size[1]}"]
    dom = subprocess.run([*common, "--dump-dom", url], check=True, timeout=120, capture_output=True, text=True).stdout
    assert "live ·" in dom and 'class="bar"' in dom and "acme-budget (month)" in dom
    for model in json.loads(http("GET", world["svc"].url + "/v1/dashboard",
                                 headers={"authorization": f"Bearer {key}"})[2])["models"]:
        assert model in dom  # every answering model has its bar
    shot = Path(os.environ.get("DASHBOARD_SHOTS", tmp_path)) / f"dashboard-{name}.png"
    subprocess.run([*common, f"--screenshot={shot}", url], check=True, timeout=120, capture_output=True)
    img = np.asarray(Image.open(shot).convert("L"))
    assert img.shape[:2] == (size[1], size[0])
    assert float((img < 235).mean()) > 0.05  # cards, bars and text, not a blank page


def test_tokens_per_minute_count_after_the_answer(world):
    key = _limits(world, "wordy", tpm=1)
    now = time.time()
    if now % 60 > 55:
        time.sleep(61 - now % 60)
    assert call(world, "POST", "/v1/chat/completions", key, CHAT)[0] == 200  # its tokens pass the limit
    status, h, payload = call(world, "POST", "/v1/chat/completions", key, CHAT)
    assert status == 429 and payload["error"]["code"] == "tpm_exceeded" and "tokens per minute" in payload["error"]["message"]
    assert int(h["retry-after"]) >= 1


def test_a_streamed_answer_settles_its_budget(world):
    key = _limits(world, "streamer", budget_usd=10.0, budget_period="day")
    client = openai.OpenAI(base_url=world["svc"].url + "/v1", api_key=key, max_retries=0)
    chunks = list(client.chat.completions.create(model="router", messages=PROMPT, stream=True,
                                                 extra_body={"routing": {"cache": False}}))
    assert chunks[-1].choices[0].finish_reason == "stop"
    usage = {t["tenant"]: t["usage"] for t in call(world, "GET", "/v1/admin/tenants", world["keys"]["admin"])[2]["data"]}
    assert usage["streamer"]["spent_usd"] > 0 and usage["streamer"]["reserved_usd"] == 0


def test_bad_input_from_a_budgeted_tenant_reserves_nothing(world):
    key = _limits(world, "clumsy", budget_usd=10.0, budget_period="day")
    for body in (b"{not json", json.dumps({"model": "router", "messages": []}).encode(),
                 json.dumps({"model": "no-such-model", "messages": PROMPT}).encode()):
        status, _, payload = call(world, "POST", "/v1/chat/completions", key, body)
        assert status in (400, 404) and payload["error"]["message"]
    usage = {t["tenant"]: t["usage"] for t in call(world, "GET", "/v1/admin/tenants", world["keys"]["admin"])[2]["data"]}
    assert usage["clumsy"]["spent_usd"] == 0 and usage["clumsy"]["reserved_usd"] == 0


SETTINGS_ERRORS = [
    ({"tenants": {"acme": {"budget_usd": -1}}}, "tenants.acme: limits.budget_usd = -1.0 is invalid"),
    ({"tenants": {"acme": {"rpmm": 1}}}, "unknown limit(s) rpmm"),
    ({"tenants": {"acme": {"on_budget": "beg"}}}, "on_budget = 'beg' is invalid: it must be one of refuse, downgrade"),
    ({"audit": {"path": "a.jsonl"}}, "audit.path is set but no HMAC key"),
    ({"redis_url": "localhost:6379"}, "redis_url = 'localhost:6379' is invalid"),
    ({"auth": {"oidc": {"issuer": "https://id.example"}}}, "auth.oidc.audience"),
    ({"experiment": {"name": "x"}}, "experiment.challenger"),
    ({"experiment": {"name": "x", "challenger": "d", "split": 2}}, "experiment.split = 2.0 is invalid"),
    ({"experiment": {"name": "x", "challenger": "d", "lam": -1}}, "experiment.lam = -1.0 is invalid: it must be a finite"),
]


@pytest.mark.parametrize(("extra", "message"), SETTINGS_ERRORS)
def test_settings_errors_name_the_key(extra, message):
    from serve.settings import Settings, SettingsError

    with pytest.raises(SettingsError) as info:
        Settings.load(overrides={"model": "x", **extra}, environ={})
    assert message in str(info.value)
