"""The service's traffic log and feedback over real HTTP: records in the training schema, feedback
durable before its 200 and joined when the log is read, rotation, torn tails, and ``kill -9``."""

from __future__ import annotations

import json
import signal
import threading
import time
import warnings

import numpy as np
import pytest
from serve_support import MATH, Service, http

from router.data.logs import conform_log, read_log, scan_log
from router.data.schema import TRAFFIC_LOG_SCHEMA
from router.data.servicelog import TornLogWarning, read_service_log

PROMPTS = [MATH, "Write a Python function that parses a CSV file", "hi, how are you today?",
           "Translate 'good morning' into French", "Summarise the plot of Hamlet in two sentences"]


@pytest.fixture(scope="module")
def provider():
    from serve.provider import running

    with running(data="demo", latency_ms=2) as url:
        yield url


def _config(provider: str, log_dir, **logbook) -> dict:
    from router.data.synthetic import MODELS

    providers = {"endpoints": {"local": {"protocol": "openai", "api_base": provider}},
                 "models": {m.name: {"endpoint": "local", "input_cost_per_token": m.input_price,
                                     "output_cost_per_token": m.output_price} for m in MODELS}}
    return {"providers": providers, "cache": {"encoder": {"kind": "hashing", "dim": 256}, "threshold": 0.99},
            "logbook": {"dir": str(log_dir), **logbook}}


def _chat(url: str, prompt: str, *, cache: bool = False, model: str = "router") -> tuple[int, dict, dict]:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}],
                       "routing": {"cache": cache}}).encode()
    status, headers, raw = http("POST", url + "/v1/chat/completions", body, {"content-type": "application/json"})
    return status, {k.lower(): v for k, v in headers.items()}, json.loads(raw)


def _feedback(url: str, body: object) -> tuple[int, dict]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, _, out = http("POST", url + "/v1/feedback", raw, {"content-type": "application/json"})
    return status, json.loads(out)


@pytest.fixture(scope="module")
def logged(provider, router_dir, tmp_path_factory):
    """A service with a traffic log; yields (service, log dir); stopped cleanly at the end."""
    tmp = tmp_path_factory.mktemp("serve-log")
    log_dir = tmp / "traffic"
    svc = Service(str(router_dir), provider_url=provider, config=_config(provider, log_dir), tmp=tmp)
    svc.wait_ready()
    yield svc, log_dir
    assert svc.stop() in (0, -signal.SIGTERM), svc.output()


def test_every_request_is_logged_in_the_training_schema_with_its_decision(logged):
    svc, log_dir = logged
    sent = {}
    for p in PROMPTS:
        status, h, body = _chat(svc.url, p)
        assert status == 200
        sent[h["x-request-id"]] = (p, h, body)
    status, h, _ = _chat(svc.url, PROMPTS[0], cache=True)
    status, hit, _ = _chat(svc.url, PROMPTS[0], cache=True)
    assert hit["x-cache"] == "hit"
    status, passthrough, _ = _chat(svc.url, PROMPTS[1], model="code-34b")
    time.sleep(0.3)  # > one commit window (50 ms): the records are on disk while the service runs
    decisions = read_log(log_dir)  # what training reads: the policy's routing decisions only
    assert hit["x-request-id"] not in decisions["request_id"].to_list()
    assert passthrough["x-request-id"] not in decisions["request_id"].to_list()
    everything, report = read_service_log(log_dir, decisions_only=False)
    df = conform_log(everything).collect()
    assert report.excluded == {} and read_service_log(log_dir)[1].excluded == {"cache_hit": 1, "passthrough": 1}
    by_id = {r["request_id"]: r for r in df.iter_rows(named=True)}
    assert set(sent) | {h["x-request-id"], hit["x-request-id"], passthrough["x-request-id"]} <= set(by_id)
    assert set(TRAFFIC_LOG_SCHEMA) <= set(df.columns)
    for rid, (prompt, headers, body) in sent.items():
        row = by_id[rid]
        assert json.loads(row["messages"]) == [{"role": "user", "content": prompt}]
        assert row["prompt"] == prompt  # the rendered conversation, what the router encodes
        assert row["chosen_model"] == headers["x-route-model"] == body["model"] == row["answered_model"]
        assert row["policy_version"] == headers["x-route-policy-version"]
        assert 0 < row["propensity"] <= 1 and row["routed"] is True and row["cache"] == "bypass"
        assert row["cost"] > 0 and row["latency_s"] > 0 and row["total_s"] >= row["latency_s"]
        assert row["output_tokens"] == body["usage"]["completion_tokens"] > 0
        assert row["input_tokens"] == body["usage"]["prompt_tokens"]
        assert row["tenant"] == "default" and row["status"] == 200 and row["quality"] is None
        assert row["predicted_cost"] == pytest.approx(float(headers["x-route-predicted-cost"]), rel=1e-4)
        assert abs(row["timestamp"].timestamp() - time.time()) < 600
    assert by_id[h["x-request-id"]]["cache"] == "miss"
    assert by_id[hit["x-request-id"]]["cache"] == "hit_exact" and by_id[hit["x-request-id"]]["cost"] == 0
    assert by_id[passthrough["x-request-id"]]["routed"] is False
    assert by_id[passthrough["x-request-id"]]["propensity"] == 1.0
    assert scan_log(log_dir).collect().height == decisions.height == df.height - 2  # the lazy reader


def test_feedback_is_durable_joined_and_refused_clearly(logged):
    svc, log_dir = logged
    _, h1, _ = _chat(svc.url, PROMPTS[2])
    _, h2, _ = _chat(svc.url, PROMPTS[3])
    r1, r2 = h1["x-request-id"], h2["x-request-id"]
    status, body = _feedback(svc.url, {"request_id": r1, "score": 0.25, "comment": "too vague"})
    assert status == 200 and body == {"request_id": r1, "quality": 0.25, "status": "recorded"}
    # a 200 means on disk: the feedback part already holds it, without waiting
    assert any(r1 in p.read_text() for p in log_dir.glob("feedback-*.jsonl"))
    assert _feedback(svc.url, {"request_id": r2, "thumbs": "down"})[0] == 200
    status, err = _feedback(svc.url, {"request_id": r1, "thumbs": "up"})
    assert status == 409 and err["error"]["code"] == "duplicate_feedback" and r1 in err["error"]["message"]
    status, err = _feedback(svc.url, {"request_id": "req-never-seen", "score": 1})
    assert status == 404 and err["error"]["code"] == "unknown_request"
    assert err["error"]["type"] == "invalid_request_error" and err["error"]["param"] == "request_id"
    df = read_log(log_dir)
    q = dict(zip(df["request_id"].to_list(), df["quality"].to_list()))
    assert q[r1] == 0.25 and q[r2] == 0.0
    assert df.filter(df["request_id"] == r1)["feedback_comment"].item() == "too vague"
    metrics = http("GET", svc.url + "/metrics")[2].decode()
    assert 'router_feedback_total{status="200"} 2' in metrics and 'router_feedback_total{status="409"} 1' in metrics
    assert "router_log_commits_total " in metrics and "router_log_commits_total 0\n" not in metrics


BAD_FEEDBACK = [
    # (name, body, param, message substring)
    ("not JSON", b"{", None, "not valid JSON"),
    ("not an object", b"[1]", None, "must be a JSON object"),
    ("no request id", {"score": 1}, "request_id", "request_id must be"),
    ("request id not a string", {"request_id": 5, "score": 1}, "request_id", "request_id must be"),
    ("neither score nor thumbs", {"request_id": "r"}, None, "exactly one of score"),
    ("both score and thumbs", {"request_id": "r", "score": 1, "thumbs": "up"}, "score", "exactly one of score"),
    ("score above 1", {"request_id": "r", "score": 1.5}, "score", "out of range"),
    ("score a string", {"request_id": "r", "score": "good"}, "score", "must be a number"),
    ("score a bool", {"request_id": "r", "score": True}, "score", "must be a number"),
    ("thumbs sideways", {"request_id": "r", "thumbs": "sideways"}, "thumbs", "\"up\" or \"down\""),
    ("comment not text", {"request_id": "r", "score": 1, "comment": 3}, "comment", "comment must be a string"),
    ("unknown field", {"request_id": "r", "score": 1, "rating": 5}, "rating", "unknown field"),
]


@pytest.mark.parametrize("name,body,param,message", BAD_FEEDBACK, ids=[b[0] for b in BAD_FEEDBACK])
def test_bad_feedback_is_a_clear_400(logged, name, body, param, message):
    svc, _ = logged
    status, err = _feedback(svc.url, body)
    assert status == 400, name
    assert err["error"]["type"] == "invalid_request_error" and err["error"]["code"] == "invalid_feedback"
    assert err["error"]["param"] == param and message in err["error"]["message"]


def test_feedback_without_a_traffic_log_is_refused(provider, router_dir, tmp_path):
    config = _config(provider, tmp_path)
    config["logbook"] = {}
    svc = Service(str(router_dir), provider_url=provider, config=config, tmp=tmp_path)
    try:
        svc.wait_ready()
        status, err = _feedback(svc.url, {"request_id": "r", "score": 1})
        assert status == 404 and err["error"]["code"] == "feedback_disabled"
        assert "logbook.dir" in err["error"]["message"]
    finally:
        svc.stop()


def test_parts_rotate_by_size_and_a_restart_appends_cleanly_and_still_takes_feedback(provider, router_dir, tmp_path):
    log_dir = tmp_path / "traffic"
    config = _config(provider, log_dir, rotate_mb=0.001, commit_ms=2)  # ~1 KB parts: rotate every 2nd commit
    svc = Service(str(router_dir), provider_url=provider, config=config, tmp=tmp_path)
    svc.wait_ready()
    first = []
    for p in PROMPTS:
        first.append(_chat(svc.url, p)[1]["x-request-id"])
        time.sleep(0.1)  # one commit per request (parts rotate between commits)
    assert svc.stop() in (0, -signal.SIGTERM)  # clean shutdown: everything committed
    parts = sorted(log_dir.glob("traffic-*.jsonl"))
    assert len(parts) >= 2
    assert read_log(log_dir)["request_id"].to_list() == first
    svc = Service(str(router_dir), provider_url=provider, config=config, tmp=tmp_path)
    svc.wait_ready()
    try:
        again = _chat(svc.url, PROMPTS[0])[1]["x-request-id"]
        assert _feedback(svc.url, {"request_id": first[1], "score": 1.0})[0] == 200  # known from the last run
        assert _feedback(svc.url, {"request_id": again, "score": 0.5})[0] == 200
    finally:
        svc.stop()
    assert set(parts) < set(log_dir.glob("traffic-*.jsonl"))  # old parts untouched, new ones added
    df = read_log(log_dir)
    assert df["request_id"].to_list() == [*first, again]
    assert df.filter(df["request_id"] == first[1])["quality"].item() == 1.0


def test_reader_skips_and_reports_a_torn_tail(tmp_path):
    from serve.logbook import DecisionRecord
    from serve.trafficlog import TrafficLog

    book = TrafficLog(tmp_path, commit_ms=5)
    for i in range(3):
        book.on_decision(DecisionRecord(f"r{i}", time.time(), "default", [{"role": "user", "content": f"q{i}"}],
                                        "small-8b", 0.5, True, "v1", "miss", cost=0.001))
    book.close()
    part = next(tmp_path.glob("traffic-*.jsonl"))
    whole = part.read_bytes()
    part.write_bytes(whole + whole.split(b"\n")[0][:40])  # a kill in the middle of the next line
    with pytest.warns(TornLogWarning, match="1 torn tail"):
        df, report = read_service_log(tmp_path)
    assert df["request_id"].to_list() == ["r0", "r1", "r2"] and report.torn == [(str(part), 40)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TornLogWarning)
        assert read_log(tmp_path).height == 3


@pytest.mark.parametrize("answer_after_commit", [False, True], ids=["answer-at-once", "answer-after-commit"])
def test_kill_9_under_load_loses_at_most_the_commit_window(provider, router_dir, tmp_path, answer_after_commit):
    """SIGKILL while requests and feedback flow: every readable record is complete, acknowledged feedback is
    all there, a restart appends; and what is lost is only the last, uncommitted window -- checked by order,
    not by clock. The clients note, before sending each request, how many answers they had received: those
    answers were queued before this request arrived, so the log (a prefix of the queue, see
    serve.trafficlog) holds all of them whenever it holds this request. With ``answer_after_commit`` an
    answer leaves only once its record is on disk, so no answered request may be missing at all."""
    log_dir = tmp_path / "traffic"
    commit_ms = 50
    svc = Service(str(router_dir), provider_url=provider, tmp=tmp_path,
                  config=_config(provider, log_dir, commit_ms=commit_ms, answer_after_commit=answer_after_commit))
    svc.wait_ready()
    answered: list[str] = []  # request ids in the order their answers arrived
    seen_before: dict[str, int] = {}  # request id -> answers received before it was sent
    acked: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def load(k: int) -> None:
        i = 0
        while not stop.is_set():
            with lock:
                seen = len(answered)
            try:
                status, h, _ = _chat(svc.url, f"{PROMPTS[i % len(PROMPTS)]} (client {k}, request {i})")
            except OSError:
                return
            i += 1
            if status != 200:
                continue
            with lock:
                answered.append(h["x-request-id"])
                seen_before[h["x-request-id"]] = seen
            if i % 3 == 0:
                try:
                    fs, _ = _feedback(svc.url, {"request_id": h["x-request-id"], "score": 0.5})
                except OSError:
                    return
                if fs == 200:
                    with lock:
                        acked.append(h["x-request-id"])

    threads = [threading.Thread(target=load, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(answered) < 150 and time.monotonic() < deadline:
        time.sleep(0.05)
    svc.proc.send_signal(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(30)
    svc.stop()
    assert len(answered) >= 150, svc.output()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TornLogWarning)
        df, report = read_service_log(log_dir)
        full = read_log(log_dir)  # validates every readable record against the schema
    assert full.height == df.height
    required = ["request_id", "timestamp", "messages", "chosen_model", "propensity", "cost", "latency_s",
                "policy_version", "cache", "status", "output_tokens"]
    assert df.select(required).null_count().sum_horizontal().item() == 0  # every readable record complete
    logged = set(df["request_id"].to_list())
    assert set(acked) <= logged and len(acked) > 10  # acknowledged feedback: its request is on disk...
    rated = df.filter(df["quality"].is_not_null())["request_id"].to_list()
    assert set(acked) <= set(rated)  # ...and so is the feedback itself
    # what is on disk is a prefix of what was answered: nothing answered before the last logged request was
    # sent is missing, so only the tail after the last commit can be lost
    through = max(seen_before[rid] for rid in logged if rid in seen_before)
    missing = [rid for rid in answered[:through] if rid not in logged]
    assert not missing, f"{len(missing)} of {through} requests answered before a logged one was sent are lost"
    lost = [rid for rid in answered if rid not in logged]
    print(f"answered {len(answered)}, logged {len(logged)}, answered but lost {len(lost)} "
          f"(answer_after_commit={answer_after_commit})")
    if answer_after_commit:
        assert not lost  # an answer left only after its record was on disk
    # the next start appends cleanly to new parts
    svc = Service(str(router_dir), provider_url=provider, config=_config(provider, log_dir), tmp=tmp_path)
    svc.wait_ready()
    try:
        rid = _chat(svc.url, PROMPTS[0])[1]["x-request-id"]
    finally:
        svc.stop()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TornLogWarning)
        after = read_log(log_dir)
    assert after.height == df.height + 1 and after["request_id"].to_list()[-1] == rid
    assert np.isfinite(after["propensity"].to_numpy()).all()


def test_simulator_replays_prompts_and_sends_true_feedback(provider, router_dir, tmp_path):
    import subprocess
    import sys

    from serve_support import ROOT

    from router.data.registry import load_source

    log_dir = tmp_path / "traffic"
    svc = Service(str(router_dir), provider_url=provider, config=_config(provider, log_dir), tmp=tmp_path)
    svc.wait_ready()
    try:
        out = subprocess.run(
            [sys.executable, "-m", "serve.simulate", "--url", svc.url, "--data", "demo", "--rate", "40",
             "--requests", "40", "--feedback-share", "0.5", "--seed", "3", "--no-cache", "--lam", "100",
             "--out", str(tmp_path / "rows.jsonl")],
            cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        svc.stop()
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["requests"] == summary["ok"] == 40 and summary["errors"] == {}
    assert 0 < summary["feedback_sent"] < 40 and summary["feedback_ok"] == summary["feedback_sent"]
    demo = load_source("demo")
    pos = {m: j for j, m in enumerate(demo.models)}
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    truth = [float(demo.quality[r["row"], pos[r["model"]]]) for r in rows]
    cost = [float(demo.cost[r["row"], pos[r["model"]]]) for r in rows]
    assert [r["quality"] for r in rows] == truth
    assert summary["mean_quality"] == pytest.approx(np.mean(truth))
    assert summary["spend"] == pytest.approx(sum(cost))
    assert summary["reward"] == pytest.approx(np.mean(truth) - 100 * np.mean(cost))
    assert sum(summary["models"].values()) == 40
    df = read_log(log_dir)
    version = df["policy_version"][0]
    assert summary["versions"] == {version: 40} and {r["policy_version"] for r in rows} == {version}
    assert all(0 <= r["sent_s"] <= r["answered_s"] for r in rows)
    assert [r["sent_s"] for r in rows] == sorted(r["sent_s"] for r in rows)  # written in the order sent
    q = dict(zip(df["request_id"].to_list(), df["quality"].to_list()))
    rated = [r for r in rows if r["feedback"] == 200]
    assert len(rated) == summary["feedback_ok"]
    assert all(q[r["request_id"]] == r["quality"] for r in rated)  # the log holds the data's truth
    assert sum(v is not None for v in q.values()) == len(rated)
    assert sorted(json.loads(m)[0]["content"] for m in df["messages"].to_list()) == sorted(
        str(demo.prompts[r["row"]]) for r in rows)
