"""Server CPU per request of our HTTP/1.1 protocol class (serve.api.protocol) against uvicorn's httptools one.

Run: ``python bench/bench_http_protocol.py [--requests 20000] [--connections 8] [--runs 3] [--model DIR]``
-> ``bench/results/http_protocol.json`` and ``bench/results/http_protocol.md`` (with the machine).

Every server runs pinned to core ``--server-cpu`` (``taskset``); this process, the load, to ``--client-cpu``,
with the local provider (``--latency-ms 0``) that the service's first, uncached, requests go to. All servers
start first and stay up; then ``--runs`` rounds measure each configuration in turn (A B C D E, A B C D E, ...),
so the shared machine's noise spreads over all of them. One measurement: ``--requests`` POSTs, closed loop over
``--connections`` keep-alive connections (each sends its next request when the previous answer is in), after a
warm-up of ``--warmup`` requests; recorded is the server process's CPU time (user + system, all threads, from
``/proc/PID/stat``) per request, and the requests per second.

Configurations:

* ``empty, uvicorn``: an empty ASGI app (reads the body, answers a 12-byte JSON body) on uvicorn with uvloop and
  its httptools protocol (uvicorn's other defaults, as the service has them);
* ``empty, ours``: the same app and uvicorn settings with ``http="serve.api.protocol:ServeHttpProtocol"``;
* ``cache hits, uvicorn`` / ``cache hits, ours``: ``python -m serve`` (``http_protocol: uvicorn`` or ``serve``)
  answering exact cache hits: ``--prompts`` distinct prompts are sent once first (misses, answered by the local
  provider and cached), then cycled; every measured answer must carry ``x-cache: hit``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = Path(__file__).resolve().parent / "results"
OURS = "serve.api.protocol:ServeHttpProtocol"
EMPTY_BODY = b'{"ok": true}'

EMPTY_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(EMPTY_BODY)).encode())]


async def empty_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the body, answers ``EMPTY_BODY``: the floor of an ASGI server."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": EMPTY_HEADERS})
    await send({"type": "http.response.body", "body": EMPTY_BODY})


def serve_empty(port: int, http: str) -> None:
    import uvicorn

    uvicorn.run(empty_app, host="127.0.0.1", port=port, http=http, loop="uvloop", lifespan="off", log_level="info",
                access_log=False)


HIT_BODY = b"x" * 420
HIT_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"420"),
               (b"x-route-model", b"frontier-xl"), (b"x-route-policy-version", b"router-v1"),
               (b"x-route-predicted-cost", b"0"),
               (b"x-route-reason", b"cache exact hit (similarity 1.000, age 3s); answered by frontier-xl earlier"),
               (b"x-cache", b"hit"), (b"x-request-id", b"req-1a2b-0123456789ab-1f")]


async def hit_shaped_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the headers and body size of one of the service's cache hits (no work in between)."""
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": HIT_HEADERS})
    await send({"type": "http.response.body", "body": HIT_BODY})


class _StubTransport(asyncio.Transport):
    """What a protocol needs of a socket transport, without the socket: writes are counted and dropped."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: Any) -> None:
        self.writes += 1

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


async def _in_process(http: str, app: Any, n: int) -> dict[str, float]:
    import uvicorn
    from uvicorn.server import ServerState

    config = uvicorn.Config(app, http=http, lifespan="off", proxy_headers=False, log_config=None)
    config.load()
    state = ServerState()
    state.default_headers = [(b"date", b"Tue, 01 Dec 2026 06:00:00 GMT"), (b"server", b"uvicorn")]
    proto = config.http_protocol_class(config=config, server_state=state, app_state={},  # type: ignore[call-arg]
                                       _loop=asyncio.get_running_loop())
    transport = _StubTransport()
    proto.connection_made(transport)
    request = post("/v1/chat/completions", b'{"model": "m"}')
    for _ in range(n // 10):  # warm-up
        proto.data_received(request)
        await asyncio.sleep(0)  # the request's task runs (the app never waits), then this coroutine resumes
    c0 = time.process_time()
    for _ in range(n):
        proto.data_received(request)
        await asyncio.sleep(0)
    cpu = time.process_time() - c0
    if state.total_requests != n + n // 10:
        raise RuntimeError(f"{http}: {state.total_requests} of {n + n // 10} requests answered in process")
    proto.connection_lost(None)
    return {"requests": n, "cpu_us_per_request": 1e6 * cpu / n, "writes_per_request": transport.writes / (n + n // 10)}


def in_process(http: str, app: Any, n: int) -> dict[str, float]:
    """The protocol object fed ``n`` requests one after another on uvloop, no sockets: its own CPU (and the app's)."""
    import uvloop

    return uvloop.run(_in_process(http, app, n))


class _Conn(asyncio.Protocol):
    """One keep-alive connection of the closed-loop client: sends the next request when an answer is complete."""

    def __init__(self, requests: list[bytes], start: int, n: int, done: asyncio.Future[None], tally: dict[str, int]):
        self.requests, self.i, self.left, self.done, self.tally = requests, start, n, done, tally
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.transport.write(self.requests[self.i % len(self.requests)])
        self.i += 1

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end].lower()
            at = head.find(b"content-length: ") + 16
            stop = head.find(b"\r\n", at)
            length = int(head[at:stop] if stop > 0 else head[at:])
            if len(buf) < end + 4 + length:
                break
            buf = buf[end + 4 + length:]
            self.tally["ok" if head.startswith(b"http/1.1 200") else "bad"] += 1
            if b"x-cache: hit" in head:
                self.tally["hit"] += 1
            self.left -= 1
            if self.left > 0:
                self._send()
            elif not self.done.done():
                self.done.set_result(None)
        self.buf = buf

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(RuntimeError(f"the server closed a connection with {self.left} requests left"))


def _same(conn: _Conn) -> _Conn:
    return conn


async def _drive(port: int, requests: list[bytes], n: int, connections: int) -> dict[str, int]:
    loop = asyncio.get_running_loop()
    tally = {"ok": 0, "bad": 0, "hit": 0}
    per = max(1, n // connections)
    conns = []
    for k in range(connections):
        done: asyncio.Future[None] = loop.create_future()
        conn = _Conn(requests, k * 7, per, done, tally)
        transport, _ = await loop.create_connection(functools.partial(_same, conn), "127.0.0.1", port)
        conns.append((transport, done))
    await asyncio.gather(*(d for _, d in conns))
    for transport, _ in conns:
        transport.close()
    return tally


def drive(port: int, requests: list[bytes], n: int, connections: int) -> dict[str, int]:
    import uvloop

    return uvloop.run(_drive(port, requests, n, connections))


def post(path: str, body: bytes) -> bytes:
    return (b"POST %s HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
            % (path.encode(), len(body))) + body


def chat_body(prompt: str) -> bytes:
    return json.dumps({"model": "router", "messages": [{"role": "user", "content": prompt}], "max_tokens": 32}).encode()


def chat(prompt: str) -> bytes:
    return post("/v1/chat/completions", chat_body(prompt))


PROMPTS = [f"In one sentence, what is the capital of country number {i} in an alphabetical list of countries?"
           for i in range(1000)]


def measure(svc: Any, port: int, requests: list[bytes], n: int, warmup: int, connections: int,
            want_hits: bool) -> dict[str, Any]:
    drive(port, requests, warmup, connections)
    svc.wait_idle(max_s=5)
    c0, t0 = svc.cpu_seconds(), time.perf_counter()
    tally = drive(port, requests, n, connections)
    cpu, wall = svc.cpu_seconds() - c0, time.perf_counter() - t0
    done = tally["ok"] + tally["bad"]
    if tally["bad"]:
        raise RuntimeError(f"{svc.name}: {tally['bad']} of {done} answers were not 200")
    if want_hits and tally["hit"] != done:
        raise RuntimeError(f"{svc.name}: only {tally['hit']} of {done} answers were cache hits")
    return {"requests": done, "cpu_ms_per_request": 1000 * cpu / done, "requests_per_s": done / wall,
            "cache_hits": tally["hit"]}


def measure_open_loop(svc: Any, port: int, bodies: list[bytes], rate: float, duration: float,
                      want_hits: bool) -> dict[str, Any]:
    from bench.loadgen import LoadSpec, run_load

    spec = LoadSpec(url=f"http://127.0.0.1:{port}/v1/chat/completions", rate=rate, duration_s=duration, warmup_s=0.5)
    svc.wait_idle(max_s=5)
    c0 = svc.cpu_seconds()
    res = run_load(spec, bodies)
    cpu = svc.cpu_seconds() - c0
    if res.error_rate > 0:
        raise RuntimeError(f"{svc.name}: errors at {rate}/s: {res.errors}")
    if want_hits and res.header_counts.get("hit", 0) != res.measured:
        raise RuntimeError(f"{svc.name}: x-cache counts {res.header_counts} for {res.measured} measured requests")
    return {"requests": res.sent, "cpu_ms_per_request": 1000 * cpu / res.sent, "achieved_rate": res.achieved_rate,
            "latency_ms_p50": res.latency_ms["p50"], "latency_ms_p95": res.latency_ms["p95"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=20_000, help="measured requests per configuration and run")
    ap.add_argument("--warmup", type=int, default=2_000, help="requests before each measurement")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3, help="rounds over all configurations (interleaved)")
    ap.add_argument("--in-process-requests", type=int, default=50_000,
                    help="requests per in-process measurement (protocol object, stub transport)")
    ap.add_argument("--rate", type=float, default=2000.0, help="requests/s of the open-loop measurement")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds of the open-loop measurement")
    ap.add_argument("--prompts", type=int, default=200, help="distinct cached prompts the hit load cycles")
    ap.add_argument("--model", default=None, help="router directory (default out/bench-serve/router, trained "
                                                  "once on the demo data with the static encoder if missing)")
    ap.add_argument("--server-cpu", default="0")
    ap.add_argument("--client-cpu", default="1")
    ap.add_argument("--out", default=str(RESULTS / "http_protocol"), help="output path without suffix")
    ap.add_argument("--serve-empty", nargs=2, metavar=("PORT", "HTTP"),
                    help="internal: run the empty app on uvicorn and nothing else")
    args = ap.parse_args(argv)
    if args.serve_empty:
        serve_empty(int(args.serve_empty[0]), args.serve_empty[1])
        return 0

    from bench.bench_serve import ensure_router
    from bench.serve_procs import Service, free_port, machine_info, versions

    machine = machine_info()  # before this process is pinned to one core
    os.sched_setaffinity(0, {int(args.client_cpu)})
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    model = ensure_router(argparse.Namespace(model=args.model), env)
    logs = Path(tempfile.mkdtemp(prefix="bench-http-"))
    prov_port = free_port()
    provider = Service("provider", [sys.executable, "-m", "serve.provider", "--port", str(prov_port), "--data", "demo",
                                    "--latency-ms", "0"], args.client_cpu, f"http://127.0.0.1:{prov_port}/healthz", env,
                       logs / "provider.log", cwd=ROOT)
    configs: dict[str, dict[str, Any]] = {}
    for name, http in (("empty, uvicorn", "httptools"), ("empty, ours", OURS)):
        port = free_port()
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve-empty", str(port), http]
        configs[name] = {"port": port, "requests": [post("/v1/chat/completions", b'{"model": "m"}')], "hits": False,
                         "bodies": [b'{"model": "m"}'],
                         "svc": Service(name, cmd, args.server_cpu, None, env, logs / f"{port}.log", cwd=ROOT,
                                        ready_line="Uvicorn running on")}
    prompts = PROMPTS[:args.prompts]
    for name, proto in (("cache hits, uvicorn", "uvicorn"), ("cache hits, ours", "serve")):
        port = free_port()
        cmd = [sys.executable, "-m", "serve", "--model", str(model), "--port", str(port), "--provider-url",
               f"http://127.0.0.1:{prov_port}", "--log-level", "warning"]
        configs[name] = {"port": port, "requests": [chat(p) for p in prompts], "hits": True,
                         "bodies": [chat_body(p) for p in prompts],
                         "svc": Service(name, cmd, args.server_cpu, f"http://127.0.0.1:{port}/readyz",
                                        dict(env, ROUTER_SERVE_HTTP_PROTOCOL=proto), logs / f"{port}.log", cwd=ROOT)}
    inproc: dict[str, list[dict[str, Any]]] = {}
    for r in range(args.runs):
        for app_name, app in (("empty app", empty_app), ("hit-shaped answer", hit_shaped_app)):
            for proto_name, http in (("uvicorn", "httptools"), ("ours", OURS)):
                row = in_process(http, app, args.in_process_requests)
                inproc.setdefault(f"{app_name}, {proto_name}", []).append(row)
                print(f"run {r + 1} in process, {app_name}, {proto_name:8s} {row['cpu_us_per_request']:.2f} us CPU/request",
                      flush=True)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    open_loop: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    started: list[Any] = []
    try:
        provider.start()
        for cfg in configs.values():
            cfg["svc"].start()
            started.append(cfg["svc"])
            if cfg["hits"]:  # each prompt once: a miss, answered by the provider and cached
                drive(cfg["port"], cfg["requests"], len(cfg["requests"]), 1)
        for r in range(args.runs):
            for name, cfg in configs.items():
                row = measure(cfg["svc"], cfg["port"], cfg["requests"], args.requests, args.warmup, args.connections,
                              cfg["hits"])
                runs[name].append(row)
                print(f"run {r + 1} {name:32s} {row['cpu_ms_per_request']:.4f} ms CPU/request "
                      f"{row['requests_per_s']:8.0f} requests/s", flush=True)
            for name, cfg in configs.items():
                row = measure_open_loop(cfg["svc"], cfg["port"], cfg["bodies"], args.rate, args.duration, cfg["hits"])
                open_loop[name].append(row)
                print(f"run {r + 1} {name:32s} {row['cpu_ms_per_request']:.4f} ms CPU/request at {args.rate:g}/s "
                      f"(P95 {row['latency_ms_p95']:.2f} ms)", flush=True)
    finally:
        for svc in reversed(started):
            svc.stop()
        provider.stop()
    doc = report(args, runs, open_loop, inproc, machine, versions(ROOT))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(doc))
    print(f"wrote {out}.json and {out}.md")
    return 0


def _ratios(runs: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    med = {name: statistics.median(r["cpu_ms_per_request"] for r in rows) for name, rows in runs.items()}
    ratios = {}
    for what, ours, theirs in (("empty app", "empty, ours", "empty, uvicorn"),
                               ("cache hits", "cache hits, ours", "cache hits, uvicorn")):
        per_run = [a["cpu_ms_per_request"] / b["cpu_ms_per_request"] for a, b in zip(runs[ours], runs[theirs])]
        ratios[what] = {"ours_over_uvicorn_median": med[ours] / med[theirs], "per_run": per_run,
                        "saved_ms_per_request_median": med[theirs] - med[ours]}
    return med, ratios


def report(args: argparse.Namespace, runs: dict[str, list[dict[str, Any]]], open_loop: dict[str, list[dict[str, Any]]],
           inproc: dict[str, list[dict[str, Any]]], machine: dict, vers: dict) -> dict:
    med, ratios = _ratios(runs)
    ol_med, ol_ratios = _ratios(open_loop)
    return {"date": dt.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join(["python", "bench/bench_http_protocol.py", *sys.argv[1:]]),
            "settings": {k: v for k, v in vars(args).items() if k != "out"}, "machine": machine, "versions": vers,
            "note": f"servers pinned to core {args.server_cpu}, client and local provider to core {args.client_cpu}; "
                    "the machine is shared with other jobs, so compare rows within this run",
            "runs": runs, "median_cpu_ms_per_request": med, "ratios": ratios,
            "open_loop": open_loop, "open_loop_median_cpu_ms_per_request": ol_med, "open_loop_ratios": ol_ratios,
            "in_process": inproc,
            "in_process_ratios": {what: statistics.median(
                a["cpu_us_per_request"] / b["cpu_us_per_request"]
                for a, b in zip(inproc[f"{what}, ours"], inproc[f"{what}, uvicorn"]))
                for what in ("empty app", "hit-shaped answer")}}


def _tables(runs: dict[str, list[dict[str, Any]]], med: dict[str, float], ratios: dict[str, dict[str, Any]],
            extra: str, fmt: Any) -> list[str]:
    n = len(next(iter(runs.values())))
    lines = ["| configuration | " + " | ".join(f"run {i + 1} CPU ms/req" for i in range(n))
             + f" | median CPU ms/req | {extra} (runs) |", "|---|" + "---:|" * (n + 2)]
    for name, rows in runs.items():
        lines.append(f"| {name} | " + " | ".join(f"{r['cpu_ms_per_request']:.4f}" for r in rows)
                     + f" | {med[name]:.4f} | " + ", ".join(fmt(r) for r in rows) + " |")
    lines += ["", "| comparison | ours / uvicorn (medians) | per run | saved ms/request (medians) |",
              "|---|---:|---|---:|"]
    for what, r in ratios.items():
        lines.append(f"| {what} | {r['ours_over_uvicorn_median']:.2f} | "
                     + ", ".join(f"{x:.2f}" for x in r["per_run"]) + f" | {r['saved_ms_per_request_median']:.4f} |")
    return lines


def markdown(doc: dict) -> str:
    m, s = doc["machine"], doc["settings"]
    lines = ["# HTTP/1.1 protocol: server CPU per request, ours against uvicorn's", "",
             f"Run {doc['date']} on {m['cpu']} ({m['nproc']} cores, kernel {m['kernel']}, Python {m['python']}, "
             f"load average at start {m['load_average_at_start']}); uvicorn {doc['versions'].get('uvicorn')}, "
             f"uvloop {doc['versions'].get('uvloop')}, httptools {doc['versions'].get('httptools')}, commit "
             f"{doc['versions'].get('git_commit')}. Command: `{doc['command']}`. {doc['note'][0].upper()}{doc['note'][1:]}. "
             "CPU is the server process's user + system time (`/proc/PID/stat`) per request. Each round measures "
             "every configuration once, closed loop then open loop; rounds are interleaved.", "",
             f"## Closed loop: {s['requests']} POSTs over {s['connections']} keep-alive connections "
             f"(after {s['warmup']} warm-up requests)", ""]
    lines += _tables(doc["runs"], doc["median_cpu_ms_per_request"], doc["ratios"], "requests/s",
                     lambda r: f"{r['requests_per_s']:.0f}")
    lines += ["", f"## Open loop: {s['rate']:g} requests/s for {s['duration']:g} s (+0.5 s warm-up), `bench/loadgen.py`",
              "", "Requests leave on a fixed schedule whatever the answers do, so each one mostly gets its own turn "
              "of the event loop, as in the serving benchmark; CPU over all requests sent.", ""]
    lines += _tables(doc["open_loop"], doc["open_loop_median_cpu_ms_per_request"], doc["open_loop_ratios"],
                     "P95 latency ms", lambda r: f"{r['latency_ms_p95']:.2f}")
    s_ip = doc["in_process"]
    lines += ["", "## In process, no sockets", "",
              f"The protocol object fed the same POST {s['in_process_requests']} times with a stub transport (uvloop, this "
              "process's CPU time): what is left is the protocol's Python work, the task per request and the app; the "
              "hit-shaped answer has the 8 headers and 420-byte body of one of the service's cache hits. Free of the "
              "socket and most of the machine's noise.", "",
              "| in process | " + " | ".join(f"run {i + 1} CPU us/req" for i in range(s["runs"]))
              + " | writes per request |", "|---|" + "---:|" * (s["runs"] + 1)]
    for name, rows in s_ip.items():
        lines.append(f"| {name} | " + " | ".join(f"{r['cpu_us_per_request']:.2f}" for r in rows)
                     + f" | {rows[0]['writes_per_request']:.0f} |")
    lines += ["", "Ours / uvicorn in process (median over runs): " + ", ".join(
        f"{what} {x:.2f}" for what, x in doc["in_process_ratios"].items()) + "."]
    lines += ["", "The cache-hit rows are `python -m serve` with `http_protocol: uvicorn` and with `http_protocol: serve` "
              "(the default): they differ by the protocol class alone. Every measured hit answer carried "
              "`x-cache: hit`."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
