"""Deterministic CPU per request of the service, in process (no load generator, no HTTP server).

The shared machine's load makes open-loop numbers noisy; this measures ``time.process_time`` (CPU
of this process only) over a fixed amount of work:

* ``decide``: ``Decider`` batches of 1, 16 and 64 demo prompts (encode + predict + decide);
* ``app``: the ASGI app driven directly (``await app(scope, receive, send)``) in waves of
  ``--concurrency`` requests, with the real local provider (``python -m serve.provider``, a
  subprocess on loopback, not counted) behind it: routed cache misses, routed without a cache,
  pass-through, and exact cache hits. What it leaves out is uvicorn's own HTTP parsing (the empty
  uvicorn app costs ~0.12-0.15 ms per request here).

Run it against another checkout to compare (same run, same machine)::

    PYTHONPATH=/path/to/other/checkout python bench/serve_profile.py --model DIR --label before

``--profile FILE`` writes a cProfile of the routed-miss scenario.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # as `python -m serve` sets them
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prompts(n: int, salt: str) -> list[str]:
    import polars as pl

    demo = pl.read_parquet(ROOT / "datasets" / "demo" / "outcomes.parquet")["prompt"].unique().sort().to_list()
    return [f"{demo[i % len(demo)]} ({salt} {i})" for i in range(n)]


def bench_decide(model: str, rounds: int, repeat: int) -> dict[str, float]:
    from serve.decide import Decider
    from serve.registry import PolicyHolder, load_policy, parse_spec

    holder = PolicyHolder(load_policy(parse_spec(model)))
    dec = Decider(holder)
    prompts = [[{"role": "user", "content": p}] for p in _prompts(640, "decide")]
    out = {}
    for b in (1, 4, 8, 16, 64):
        batches = [[_item(p) for p in prompts[i:i + b]] for i in range(0, len(prompts) - b + 1, b)][:rounds]
        dec._compute(batches[0])
        best = float("inf")
        for _ in range(repeat):  # the least of a few runs: the machine is shared
            t = time.process_time()
            for batch in batches:
                dec._compute(batch)
            best = min(best, time.process_time() - t)
        out[f"decide_b{b}_ms_per_request"] = best / (len(batches) * b) * 1e3
    return out


def equivalence(model: str, n: int) -> dict[str, Any]:
    """Decisions of the fast paths against the reference paths (FAISS kNN, torch MLP, model2vec's own
    ``encode``) on ``n`` demo prompts, in batches of 1 and 16: chosen models that differ, and the largest
    difference of any probability and predicted quality."""
    import numpy as np

    import router.encoders.static as static_mod
    import router.predictors.knn as knn_mod
    from router.predictors import KNNPredictor, MLPPredictor
    from router.router import Router

    fast, ref = Router.load(model), Router.load(model)
    members = getattr(ref.quality, "models_", None) or [ref.quality]
    limit = knn_mod.NUMPY_SEARCH_MAX_VALUES
    knn_mod.NUMPY_SEARCH_MAX_VALUES = 0
    for m in members:
        if isinstance(m, KNNPredictor):
            m._build()  # a FAISS index again
        if isinstance(m, MLPPredictor):
            m._predict = m._predict_torch  # type: ignore[method-assign]
    knn_mod.NUMPY_SEARCH_MAX_VALUES = limit
    prompts = [[{"role": "user", "content": p}] for p in _prompts(n, "eq")]
    plain = static_mod._plain_lookup
    diff, dp, dq = 0, 0.0, 0.0
    for b in (1, 16):
        for i in range(0, n if b == 16 else min(n, 256), b):
            a = fast.route(prompts[i:i + b])
            static_mod._plain_lookup = lambda _m: False  # type: ignore[assignment]
            try:
                r = ref.route(prompts[i:i + b])
            finally:
                static_mod._plain_lookup = plain
            diff += int((a.chosen_index != r.chosen_index).sum())
            dp = max(dp, float(np.abs(a.probabilities - r.probabilities).max()))
            dq = max(dq, float(np.abs(a.quality - r.quality).max()))
    return {"equivalence_prompts": n + min(n, 256), "equivalence_chosen_differ": diff,
            "equivalence_max_prob_diff": dp, "equivalence_max_quality_diff": dq}


def _item(messages: Any) -> Any:
    from serve.decide import DEFAULT_OPTIONS, _Item

    return _Item(messages, DEFAULT_OPTIONS)


class _Lifespan:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict] = asyncio.Queue()

    async def start(self) -> None:
        self.task = asyncio.ensure_future(self.app({"type": "lifespan"}, self.inbox.get, self.outbox.put))
        await self.inbox.put({"type": "lifespan.startup"})
        msg = await self.outbox.get()
        if msg["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"startup failed: {msg}")

    async def stop(self) -> None:
        await self.inbox.put({"type": "lifespan.shutdown"})
        await self.outbox.get()
        await self.task


async def _request(app: Any, body: bytes) -> tuple[int, dict[bytes, bytes]]:
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "query_string": b"", "http_version": "1.1", "scheme": "http", "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8000), "root_path": "", "raw_path": b"/v1/chat/completions"}
    sent = False
    result: dict[str, Any] = {}

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(msg: dict) -> None:
        if msg["type"] == "http.response.start":
            result["status"] = msg["status"]
            result["headers"] = dict(msg.get("headers", []))

    await app(scope, receive, send)
    return result["status"], result["headers"]


def _body(prompt: str, model: str) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 16}).encode()


async def _scenario(app: Any, bodies: list[bytes], concurrency: int, expect_cache: str | None) -> float:
    t = time.process_time()
    other = 0  # answers whose x-cache differs from the expected one (demo prompts have near-duplicates)
    for i in range(0, len(bodies), concurrency):
        res = await asyncio.gather(*(_request(app, b) for b in bodies[i:i + concurrency]))
        for status, headers in res:
            if status != 200:
                raise RuntimeError(f"unexpected answer {status} {headers}")
            other += bool(expect_cache and headers.get(b"x-cache") != expect_cache.encode())
    if other > 0.05 * len(bodies):
        raise RuntimeError(f"{other} of {len(bodies)} answers were not cache {expect_cache}s")
    return (time.process_time() - t) / len(bodies) * 1e3


async def bench_app(model: str, provider_url: str, n: int, concurrency: int, profile: str | None) -> dict[str, float]:
    from serve.app import ServeApp
    from serve.settings import CacheSettings, Settings

    out: dict[str, float] = {}
    for cache_on in (True, False):
        app = ServeApp(Settings(model=model, provider_url=provider_url, registry_poll_s=0,
                                cache=CacheSettings(enabled=cache_on)))
        life = _Lifespan(app)
        await life.start()
        try:
            pool = sorted(app.state.holder.current.models)
            warm = [_body(p, "router") for p in _prompts(64, f"warm{cache_on}")]
            await _scenario(app, warm, concurrency, None)
            if cache_on:
                miss = [_body(p, "router") for p in _prompts(n, "miss")]
                prof = cProfile.Profile() if profile else None
                if prof:
                    prof.enable()
                out["routed_miss_cache_on_ms"] = await _scenario(app, miss, concurrency, "miss")
                if prof:
                    prof.disable()
                    prof.dump_stats(profile)
                out["cache_hit_ms"] = await _scenario(app, miss, concurrency, "hit")
            else:
                out["routed_no_cache_ms"] = await _scenario(app, [_body(p, "router") for p in _prompts(n, "nc")],
                                                            concurrency, None)
                bodies = [_body(p, pool[i % len(pool)]) for i, p in enumerate(_prompts(n, "pt"))]
                out["passthrough_ms"] = await _scenario(app, bodies, concurrency, None)
        finally:
            await life.stop()
    return out


async def _timed(app: Any, body: bytes, times: list[float]) -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    status, _ = await _request(app, body)
    if status != 200:
        raise RuntimeError(f"status {status}")
    times.append(loop.time() - t0)


async def bench_open_loop(model: str, provider_url: str, rate: float, seconds: float,
                          windows_ms: list[float]) -> dict[str, float]:
    """Requests started at a fixed rate (open loop, in process) with the cache on, all misses, for each
    micro-batching window: CPU per request, mean decision batch size and P95 time in the app beyond the
    provider's latency (the provider answers after its fixed latency)."""
    from serve.app import ServeApp
    from serve.settings import Settings

    out: dict[str, float] = {}
    for w in windows_ms:
        app = ServeApp(Settings(model=model, provider_url=provider_url, registry_poll_s=0, batch_window_ms=w))
        life = _Lifespan(app)
        await life.start()
        try:
            await _scenario(app, [_body(p, "router") for p in _prompts(64, f"ow{w}")], 16, None)
            n = int(rate * seconds)
            bodies = [_body(p, "router") for p in _prompts(n, f"open{w}")]
            loop = asyncio.get_running_loop()
            times: list[float] = []

            batches0 = (app.state.metrics.batch_sizes.count, app.state.metrics.batch_sizes.sum)
            start, tasks = loop.time(), []
            c0 = time.process_time()
            for i, b in enumerate(bodies):
                delay = start + i / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.ensure_future(_timed(app, b, times)))
            await asyncio.gather(*tasks)
            cpu = time.process_time() - c0
            h = app.state.metrics.batch_sizes
            times.sort()
            out[f"open_{rate:g}rps_w{w:g}ms_cpu_ms"] = cpu / n * 1e3
            out[f"open_{rate:g}rps_w{w:g}ms_mean_batch"] = (h.sum - batches0[1]) / max(1, h.count - batches0[0])
            out[f"open_{rate:g}rps_w{w:g}ms_p95_ms"] = times[int(0.95 * (len(times) - 1))] * 1e3
        finally:
            await life.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="router directory the service loads")
    ap.add_argument("--requests", type=int, default=1024, help="requests per app scenario")
    ap.add_argument("--concurrency", type=int, default=16, help="requests in flight together")
    ap.add_argument("--rounds", type=int, default=64, help="decider batches per batch size")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each decider measurement (the least counts)")
    ap.add_argument("--equivalence", type=int, default=0,
                    help="also compare the fast paths' decisions with the reference paths on this many prompts")
    ap.add_argument("--open-rate", type=float, default=0.0,
                    help="instead of the fixed-work scenarios: start requests at this rate (open loop)")
    ap.add_argument("--open-seconds", type=float, default=3.0, help="seconds of open-loop load per window")
    ap.add_argument("--windows", default="0,1,2,4", help="micro-batching windows (ms) for --open-rate")
    ap.add_argument("--provider-latency-ms", type=float, default=0.0, help="the local provider's fixed latency")
    ap.add_argument("--label", default="", help="name of this run in the output")
    ap.add_argument("--profile", default=None, help="write a cProfile of the routed-miss scenario here")
    args = ap.parse_args(argv)
    import serve

    port = _free_port()
    prov = subprocess.Popen([sys.executable, "-m", "serve.provider", "--port", str(port), "--data", "demo",
                             "--latency-ms", f"{args.provider_latency_ms:g}"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        res: dict[str, Any] = {"label": args.label, "code": str(Path(serve.__file__).parents[1])}
        if args.equivalence:
            res.update(equivalence(args.model, args.equivalence))
        if args.open_rate:
            windows = [float(w) for w in args.windows.split(",")]
            res.update(asyncio.run(bench_open_loop(args.model, url, args.open_rate, args.open_seconds, windows)))
        else:
            res.update(bench_decide(args.model, args.rounds, args.repeat))
            res.update(asyncio.run(bench_app(args.model, url, args.requests, args.concurrency, args.profile)))
    finally:
        prov.terminate()
        prov.wait(10)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
