"""``--workers N``: limits that worker processes cannot share are a start-up error (or, opted in, per
worker, said at start), and feedback reaches its request whichever worker serves either -- duplicates
refused across workers too -- over real HTTP against ``python -m serve --workers 2``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from serve_support import MATH, ROOT, Service, free_port, http

pytestmark = pytest.mark.slow

CHAT = json.dumps({"model": "router", "messages": [{"role": "user", "content": MATH}],
                   "routing": {"cache": False}}).encode()


def _serve(router_dir, provider, tmp: Path, config: dict) -> subprocess.CompletedProcess[str]:
    path = tmp / "serve.json"
    path.write_text(json.dumps(config))
    return subprocess.run([sys.executable, "-m", "serve", "--model", str(router_dir), "--port", str(free_port()),
                           "--provider-url", provider, "--workers", "2", "--config", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def _store_with_limits(tmp: Path) -> str:
    from serve.tenants.keys import KeyStore

    store = KeyStore(tmp / "tenants.db")
    store.set_limits("globex", {"rpm": 60})
    return str(store.path)


UNSHARED = [  # (config, what the error names)
    ({"tenants": {"*": {"budget_usd": 5.0}}}, "tenants.*"),
    ({"tenants": {"acme": {"tpm": 1000}, "globex": {"rpm": 10}}}, "tenants.acme (and 1 more)"),
    ("store", "tenant store"),
]


@pytest.mark.parametrize(("config", "names"), UNSHARED, ids=["budget", "rates", "store"])
def test_workers_without_redis_and_with_limits_is_a_start_up_error(router_dir, provider, tmp_path, config, names):
    if config == "store":
        config = {"auth": {"store": _store_with_limits(tmp_path)}}
    out = _serve(router_dir, provider, tmp_path, config)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr  # one line: what is wrong and what to do
    line = lines[0]
    assert line.startswith("error: --workers 2 without redis_url") and names in line
    assert "configure redis_url" in line and "run --workers 1" in line and "per_worker_limits: true" in line


WORKERS_OK = [  # settings with which several workers start: (overrides, the note said at start or None)
    ({"workers": 2, "tenants": {"acme": {"max_body_bytes": 4096}}}, None),  # per-request: nothing to share
    ({"workers": 2, "tenants": {"*": {"budget_usd": 1.0}}, "redis_url": "redis://127.0.0.1:1/0"}, None),
    ({"workers": 1, "tenants": {"*": {"budget_usd": 1.0}}}, None),
    ({"workers": 3, "tenants": {"*": {"budget_usd": 1.0}}, "per_worker_limits": True}, "each of the 3 worker"),
]


@pytest.mark.parametrize(("overrides", "note"), WORKERS_OK)
def test_workers_problem_only_when_limits_cannot_be_shared(overrides, note):
    from serve.settings import Settings
    from serve.tenants import workers_problem

    problem, said = workers_problem(Settings.load(overrides={"model": "x", **overrides}, environ={}))
    assert problem is None
    if note is None:
        assert said is None
    else:
        assert said is not None and note in said and "nothing divided" in said


def test_per_worker_limits_opt_in_starts_and_says_so(router_dir, provider, tmp_path):
    config = {"cache": {"enabled": False}, "tenants": {"*": {"budget_usd": 5.0}}, "per_worker_limits": True}
    svc = Service(str(router_dir), provider_url=provider, config=config, tmp=tmp_path, extra_args=["--workers", "2"])
    try:
        svc.wait_ready()
        assert http("POST", svc.url + "/v1/chat/completions", CHAT, {"content-type": "application/json"})[0] == 200
        out = svc.output()
    finally:
        code = svc.stop()
    assert "warning: per_worker_limits: each of the 2 worker processes enforces every tenant's budget" in out, out
    assert "nothing divided" in out and "up to 2 times" in out
    assert code in (0, -signal.SIGTERM), out


@pytest.fixture(scope="module")
def two_workers(router_dir, provider, tmp_path_factory):
    """``--workers 2`` with a traffic log and a tenant store (no limits, no Redis); keys for acme, globex, admin."""
    from serve.tenants.keys import KeyStore

    tmp = tmp_path_factory.mktemp("workers")
    store = KeyStore(tmp / "tenants.db")
    keys = {t: store.create(t, "member")[1] for t in ("acme", "globex", "initech")}
    keys["admin"] = store.create("ops", "admin")[1]
    config = {"cache": {"enabled": False}, "auth": {"store": str(store.path)}, "logbook": {"dir": str(tmp / "log")}}
    svc = Service(str(router_dir), provider_url=provider, config=config, tmp=tmp, extra_args=["--workers", "2"])
    svc.wait_ready()
    yield {"svc": svc, "keys": keys, "log": tmp / "log", "store": store}
    if svc.proc.poll() is None:
        assert svc.stop() in (0, -signal.SIGTERM), svc.output()


def _post(world, path: str, key: str, body: bytes | dict, method: str = "POST"):
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    status, h, raw = http(method, world["svc"].url + path, body,
                          {"authorization": f"Bearer {key}", "content-type": "application/json"})
    return status, h, json.loads(raw)


def _pid(request_id: str) -> int:
    return int(request_id.split("-")[1], 16)  # req-<pid in hex>-...


def test_limits_cannot_be_set_at_run_time_when_workers_cannot_share_them(two_workers):
    status, _, body = _post(two_workers, "/v1/admin/tenants/acme/limits", two_workers["keys"]["admin"],
                            {"budget_usd": 1.0}, "PUT")
    assert status == 409 and body["error"]["code"] == "limits_not_shared", body
    assert "2 worker processes without redis_url" in body["error"]["message"]
    status, _, body = _post(two_workers, "/v1/admin/tenants/acme/limits", two_workers["keys"]["admin"],
                            {"max_body_bytes": 8192}, "PUT")  # per request: fine in every worker
    assert status == 200, body


def test_limits_written_to_the_store_while_serving_fail_closed(two_workers):
    import time

    two_workers["store"].set_limits("initech", {"budget_usd": 5.0})  # e.g. by `python -m serve.admin budgets set`
    deadline = time.monotonic() + 15
    run = 0
    while run < 8:  # both workers re-read the store (auth.reload_s); then every request is refused
        status, _, body = _post(two_workers, "/v1/chat/completions", two_workers["keys"]["initech"], CHAT)
        assert status in (200, 503), body
        run = run + 1 if status == 503 else 0
        if status == 503:
            assert body["error"]["code"] == "limits_unavailable" and "fail closed" in body["error"]["message"], body
        assert time.monotonic() < deadline, (status, body)


def test_feedback_reaches_its_request_on_any_worker(two_workers):
    keys = two_workers["keys"]
    rids = []
    for _ in range(80):  # a new connection each time: the kernel spreads them over the workers
        status, h, _ = _post(two_workers, "/v1/chat/completions", keys["acme"], CHAT)
        assert status == 200
        rids.append(h["x-request-id"])
    assert len({_pid(r) for r in rids}) == 2, "one worker served every request"
    for i, rid in enumerate(rids):  # feedback right after the answers, to whichever worker takes it
        status, _, body = _post(two_workers, "/v1/feedback", keys["acme"], {"request_id": rid, "score": (i % 5) / 4})
        assert status == 200 and body["status"] == "recorded", (rid, body)
    for rid in rids[:40]:  # a second feedback, to whichever worker: refused
        status, _, body = _post(two_workers, "/v1/feedback", keys["acme"], {"request_id": rid, "thumbs": "up"})
        assert status == 409 and body["error"]["code"] == "duplicate_feedback", (rid, body)
    for rid in rids[40:60]:  # another tenant's request is unknown, whichever worker served it
        status, _, body = _post(two_workers, "/v1/feedback", keys["globex"], {"request_id": rid, "score": 0.5})
        assert status == 404 and body["error"]["code"] == "unknown_request", (rid, body)
    status, _, body = _post(two_workers, "/v1/feedback", keys["acme"], {"request_id": "req-1-00000000-1", "score": 1})
    assert status == 404 and body["error"]["code"] == "unknown_request"
    two_workers["rated"] = {rid: (i % 5) / 4 for i, rid in enumerate(rids)}


def test_concurrent_duplicates_on_two_workers_get_one_200(two_workers):
    keys = two_workers["keys"]
    rids = [_post(two_workers, "/v1/chat/completions", keys["globex"], CHAT)[1]["x-request-id"] for _ in range(30)]
    outcomes: list[tuple[str, int]] = []

    def rate(rid: str) -> None:
        outcomes.append((rid, _post(two_workers, "/v1/feedback", keys["globex"], {"request_id": rid, "score": 1.0})[0]))

    threads = [threading.Thread(target=rate, args=(rid,)) for rid in rids for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    by_id: dict[str, list[int]] = {}
    for rid, status in outcomes:
        by_id.setdefault(rid, []).append(status)
    assert all(sorted(s) == [200, 409] for s in by_id.values()), by_id
    two_workers.setdefault("rated", {}).update({rid: 1.0 for rid in rids})


def test_all_feedback_is_joined_and_crossed_workers(two_workers):
    from router.data.logs import read_log

    rated = two_workers.get("rated")
    if not rated or len(rated) < 110:
        pytest.skip("needs the feedback tests above in this module to have run")
    svc = two_workers["svc"]
    assert svc.stop() in (0, -signal.SIGTERM), svc.output()  # flushes both workers' logs
    df = read_log(two_workers["log"])
    got = dict(zip(df["request_id"].to_list(), df["quality"].to_list()))
    assert {rid: got.get(rid) for rid in rated} == rated  # every 200 is on disk, joined once, with its score
    # both workers took feedback for requests the other one served (the writer's pid is in the part's name)
    crossed: Counter[int] = Counter()
    for part in two_workers["log"].glob("feedback-*.jsonl"):
        writer = int(part.name.rsplit("-", 2)[-2])  # feedback-<time>-<pid>-<seq>.jsonl
        for line in part.read_text().splitlines():
            if _pid(json.loads(line)["request_id"]) != writer:
                crossed[writer] += 1
    writers = {int(p.name.rsplit("-", 2)[-2]) for p in two_workers["log"].glob("traffic-*.jsonl")}
    assert len(writers) == 2 and set(crossed) == writers, (crossed, writers)
    claims = two_workers["log"] / ".feedback-claims"
    assert [p for p in claims.rglob("*") if p.is_file()] == []  # every claim released once its feedback was durable
