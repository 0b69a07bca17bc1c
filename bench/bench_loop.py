"""What closing the loop costs the service: added latency and CPU per request with the traffic log,
feedback and online learning on, against the same service without them, in one run.

    python bench/bench_loop.py [--requests 1500] [--rate 100] [--out bench/results/loop.json]

Both configurations serve the same tiny router (hashing encoder, kNN over the synthetic pool) in front
of the local provider (fixed 5 ms latency), cache off, driven open-loop by ``python -m serve.simulate``
(demo prompts; "loop on" also posts a feedback for every request). Reported per configuration: the
service's mean and P95 added latency (from its ``router_added_latency_seconds`` histogram, bucket
resolution) and its CPU seconds per 1,000 requests (user + system time of the service process, read
from ``/proc``; feedback requests count against the loop). The two runs alternate twice.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _added(metrics: str) -> tuple[float, float]:
    """(mean, p95) of router_added_latency_seconds from the Prometheus text."""
    buckets, total, count = [], 0.0, 0
    for line in metrics.splitlines():
        if line.startswith("router_added_latency_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), int(float(line.split()[-1]))))
        elif line.startswith("router_added_latency_seconds_sum"):
            total = float(line.split()[-1])
        elif line.startswith("router_added_latency_seconds_count"):
            count = int(float(line.split()[-1]))
    p95 = next((le for le, n in buckets if count and n >= 0.95 * count), float("nan"))
    return (total / count if count else float("nan")), p95


def run_once(loop_on: bool, router_dir: Path, provider: str, tmp: Path, requests: int, rate: float) -> dict[str, Any]:
    from serve_support import Service, http

    from serve.simulate import simulate

    config: dict[str, Any] = {"cache": {"enabled": False}}
    if loop_on:
        config["logbook"] = {"dir": str(tmp / f"log-{time.time_ns()}")}
        config["online"] = {"enabled": True}
    svc = Service(str(router_dir), provider_url=provider, config=config, tmp=tmp)
    svc.wait_ready(120)
    try:
        simulate(argparse.Namespace(url=svc.url, data="demo", rate=rate, requests=50, feedback_share=0.0, seed=9,
                                    task=None, lam=0.0, model="router", no_cache=True, timeout=60.0, out=None))
        cpu0 = _cpu_s(svc.proc.pid)
        summary = simulate(argparse.Namespace(
            url=svc.url, data="demo", rate=rate, requests=requests, feedback_share=1.0 if loop_on else 0.0, seed=1,
            task=None, lam=0.0, model="router", no_cache=True, timeout=60.0, out=None))
        cpu = _cpu_s(svc.proc.pid) - cpu0
        mean, p95 = _added(http("GET", svc.url + "/metrics")[2].decode())
    finally:
        svc.stop()
    return {"loop": loop_on, "requests": summary["requests"], "ok": summary["ok"],
            "feedback_ok": summary["feedback_ok"], "achieved_rate": summary["achieved_rate"],
            "cpu_ms_per_request": 1000.0 * cpu / summary["requests"], "added_latency_mean_ms": 1000 * mean,
            "added_latency_p95_ms_bucket": 1000 * p95}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=1500)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "loop.json"))
    a = p.parse_args()
    from serve_support import tiny_router

    from serve.provider import running

    rows = []
    with tempfile.TemporaryDirectory() as d, running(data="demo", latency_ms=5) as provider:
        tmp = Path(d)
        tiny_router(tmp / "router")
        for _ in range(2):
            for loop_on in (False, True):
                row = run_once(loop_on, tmp / "router", provider, tmp, a.requests, a.rate)
                print(json.dumps(row), flush=True)
                rows.append(row)
    doc = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows, "requests": a.requests,
           "rate": a.rate, "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                                       "python": platform.python_version(),
                                       "load_average": os.getloadavg(),
                                       "note": "shared machine; service, provider and load generator unpinned"}}
    Path(a.out).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
