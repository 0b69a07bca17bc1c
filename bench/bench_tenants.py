"""Added service CPU per request with keys, limits, audit and Redis on, against the same service with them off.

Run: ``python bench/bench_tenants.py [--requests 2000] [--concurrency 16]`` -> ``bench/results/tenants.json``
and ``bench/results/tenants.md`` (with the machine's details). Needs ``redis-server`` (scripts/ensure_redis.sh).

In one run: the local provider (``--latency-ms 0``) and a throw-away ``redis-server`` on loopback, then
``python -m serve`` with a tiny hashing-encoder router in three configurations, measured in turn, twice each
(A B C A B C) to spread the machine's noise:

* ``off``: no tenant store, no audit, no Redis (authentication off, the default);
* ``keys+limits+audit``: API keys, a member key with a budget, ``rpm`` and ``tpm`` limits, the audit log;
* ``+redis``: the same with budgets, rate windows and the shared cache tier in Redis.

Every request is a routed chat completion with the cache bypassed (``routing.cache: false``), so each one
authenticates, is admitted, reserves and settles its budget. What is recorded is the service process's CPU
time (user + system from ``/proc/PID/stat``) per request, after a warm-up, and the requests per second.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = Path(__file__).resolve().parent / "results"
PROMPT = [{"role": "user", "content": "Prove rigorously a theorem about prime numbers"}]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start(router: Path, provider: str, config: dict[str, Any], tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _port()
    cfg = tmp / f"serve-{port}.json"
    cfg.write_text(json.dumps(config))
    proc = subprocess.Popen([sys.executable, "-m", "serve", "--model", str(router), "--port", str(port),
                             "--provider-url", str(provider), "--config", str(cfg)], cwd=ROOT,
                            stdout=(tmp / f"serve-{port}.log").open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("the service did not start:\n" + (tmp / f"serve-{port}.log").read_text()[-3000:])
        time.sleep(0.1)


async def _load(url: str, key: str | None, n: int, concurrency: int) -> float:
    import aiohttp

    body = {"model": "router", "messages": PROMPT, "routing": {"cache": False}, "max_tokens": 16}
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:
        async def worker(k: int) -> None:
            for _ in range(k):
                async with s.post(url + "/v1/chat/completions", json=body, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"status {r.status}")
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(n // concurrency) for _ in range(concurrency)))
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is not installed; run scripts/ensure_redis.sh")
    from serve.provider import running
    from serve.tenants.keys import KeyStore
    from tests.serve_support import tiny_router

    tmp = Path(tempfile.mkdtemp())
    tiny_router(tmp / "router")
    store = KeyStore(tmp / "tenants.db")
    key = store.create("bench", "member")[1]
    store.set_limits("bench", {"budget_usd": 1e9, "budget_period": "month", "on_budget": "refuse",
                               "rpm": 10**9, "tpm": 10**12, "max_body_bytes": None})
    rport = _port()
    redis = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    tenant_cfg = {"auth": {"store": str(store.path)},
                  "audit": {"path": str(tmp / "audit.jsonl"), "hmac_key": "bench-key"}}
    configs = {"off": ({}, None), "keys+limits+audit": (tenant_cfg, key),
               "+redis": ({**tenant_cfg, "redis_url": f"redis://127.0.0.1:{rport}/0"}, key)}
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
    try:
        with running(data="demo", latency_ms=0, process=True) as provider:
            for _ in range(2):
                for name, (extra, k) in configs.items():
                    config = {"cache": {"encoder": {"kind": "hashing", "dim": 256}, "threshold": 0.9}, **extra}
                    proc, url = _start(tmp / "router", provider, config, tmp)
                    try:
                        asyncio.run(_load(url, k, 200, args.concurrency))  # warm-up
                        c0 = _cpu(proc.pid)
                        wall = asyncio.run(_load(url, k, args.requests, args.concurrency))
                        cpu = _cpu(proc.pid) - c0
                        n = args.requests // args.concurrency * args.concurrency
                        rows[name].append({"cpu_ms_per_request": 1000 * cpu / n, "requests_per_s": n / wall})
                    finally:
                        proc.send_signal(signal.SIGTERM)
                        proc.wait(30)
    finally:
        redis.terminate()
        redis.wait(10)
    summary = {name: {"cpu_ms_per_request": min(r["cpu_ms_per_request"] for r in rs),
                      "requests_per_s": max(r["requests_per_s"] for r in rs), "runs": rs} for name, rs in rows.items()}
    base = summary["off"]["cpu_ms_per_request"]
    for s in summary.values():
        s["added_cpu_ms_per_request"] = s["cpu_ms_per_request"] - base
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "loadavg": os.getloadavg(), "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tenants.json").write_text(json.dumps({"machine": machine, "args": vars(args), "results": summary},
                                                     indent=1))
    lines = ["# Service CPU per request: keys, limits, audit, Redis on vs off", "",
             f"Machine: {machine['cpus']} CPUs, {machine['platform']}, load average {machine['loadavg']}, "
             f"{machine['date']}. {args.requests} routed requests (cache bypassed), {args.concurrency} in flight, "
             "local provider at 0 ms; best of two runs each.", "",
             "| configuration | service CPU ms / request | added vs off | requests / s |", "|---|---|---|---|"]
    for name, s in summary.items():
        lines.append(f"| {name} | {s['cpu_ms_per_request']:.3f} | {s['added_cpu_ms_per_request']:+.3f} | "
                     f"{s['requests_per_s']:.0f} |")
    (RESULTS / "tenants.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
