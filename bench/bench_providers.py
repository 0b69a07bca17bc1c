"""Client CPU per provider call: our ProviderPool against litellm, the OpenAI SDK and raw clients.

Run: ``python bench/bench_providers.py [--quick]`` -> ``bench/results/providers.json`` and
``bench/results/providers.md`` (with the machine's details).

The local provider (``python -m serve.provider --latency-ms 0``) runs as a subprocess pinned to the last CPU;
this process is pinned to the first. Each client makes ``--calls`` chat completions (``max_tokens`` 32,
a one-line prompt) with ``--concurrency`` of them in flight, after a warm-up; what is recorded is this
process's CPU time (all threads, ``time.process_time``) per call -- the cost a client adds to the service's
hot path -- and the calls per second. Clients, all against the same provider in the same run:

* ``aiohttp raw``: one pooled ``aiohttp.ClientSession``, POST + ``json.loads`` (the floor);
* ``http1 raw``: the same with the service's own client of whole answers (:mod:`serve.providers.http1`);
* ``httpx raw``: the same with ``httpx.AsyncClient``;
* ``pool native openai`` / ``pool native anthropic``: :class:`serve.providers.ProviderPool` (breaker,
  timeouts, retries bookkeeping, cost) over that client (streams over aiohttp);
* ``openai SDK``: ``openai.AsyncOpenAI(...).chat.completions.create``;
* ``litellm openai`` / ``litellm anthropic``: ``litellm.acompletion(..., num_retries=0)``;
* ``pool via litellm``: the pool with a ``litellm``-protocol deployment;
* streaming: ``pool native`` vs ``litellm`` with ``stream=True`` (16 chunks per answer).

A second table is the server side: CPU of the local provider's process per request (from
``/proc/PID/stat``) for plain and streamed answers, beside a minimal uvicorn ASGI app that returns a fixed
JSON body of the same size (the floor of an ASGI server here, uvicorn with httptools): the local provider is
its own small asyncio server so its faults can act on the socket, and this shows what that costs.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

RESULTS = Path(__file__).resolve().parent / "results"
MSG = [{"role": "user", "content": "Give me one sentence about routing."}]
MAX_TOKENS = 32


async def _measure(call: Callable[[], Awaitable[Any]], n: int, concurrency: int, warmup: int) -> dict[str, float]:
    async def worker(k: int) -> None:
        for _ in range(k):
            await call()

    per = max(1, warmup // concurrency)
    await asyncio.gather(*(worker(per) for _ in range(concurrency)))
    c0, w0 = time.process_time(), time.perf_counter()
    per = max(1, n // concurrency)
    await asyncio.gather(*(worker(per) for _ in range(concurrency)))
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    done = per * concurrency
    return {"calls": done, "cpu_ms_per_call": 1000 * cpu / done, "calls_per_s": done / wall}


async def run(url: str, n: int, n_slow: int, concurrency: int) -> dict[str, dict[str, float]]:
    import aiohttp
    import httpx

    from serve.providers import Deployment, ProviderPool

    out: dict[str, dict[str, float]] = {}
    body = json.dumps({"model": "m", "messages": MSG, "max_tokens": MAX_TOKENS}).encode()
    hdr = {"content-type": "application/json", "authorization": "Bearer x"}

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        async def aio() -> Any:
            async with s.post(url + "/v1/chat/completions", data=body, headers=hdr) as r:
                return json.loads(await r.read())
        out["aiohttp raw"] = await _measure(aio, n, concurrency, 200)

    from serve.providers.http1 import Http1Client

    h1 = Http1Client()

    async def http1() -> Any:
        return json.loads((await h1.post(url + "/v1/chat/completions", body, hdr))[2])
    out["http1 raw (serve.providers.http1)"] = await _measure(http1, n, concurrency, 200)
    await h1.aclose()

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency * 2)) as hc:
        async def hx() -> Any:
            r = await hc.post(url + "/v1/chat/completions", content=body, headers=hdr)
            return r.json()
        out["httpx raw"] = await _measure(hx, n, concurrency, 200)

    for proto in ("openai", "anthropic"):
        pool = ProviderPool([Deployment("m", proto, url)], {"m": "x"})
        params = {"max_tokens": MAX_TOKENS}

        async def pc(pool: Any = pool, params: dict = params) -> Any:
            return await pool.complete(["m"], MSG, params)
        out[f"pool native {proto}"] = await _measure(pc, n, concurrency, 200)
        await pool.aclose()

    pool = ProviderPool([Deployment("m", "openai", url)], {"m": "x"})

    async def ps() -> Any:
        async for _ in pool.stream(["m"], MSG, {"max_tokens": MAX_TOKENS}):
            pass
    out["stream: pool native openai"] = await _measure(ps, n, concurrency, 200)
    await pool.aclose()

    import openai

    oc = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0)

    async def sdk() -> Any:
        return await oc.chat.completions.create(model="m", messages=MSG, max_tokens=MAX_TOKENS)  # type: ignore[arg-type]
    out["openai SDK"] = await _measure(sdk, n, concurrency, 200)
    await oc.close()

    import litellm

    litellm.suppress_debug_info = True
    for name, model, base in (("litellm openai", "openai/m", url + "/v1"), ("litellm anthropic", "anthropic/m", url)):
        async def lc(model: str = model, base: str = base) -> Any:
            return await litellm.acompletion(model=model, api_base=base, api_key="x", messages=MSG,
                                             max_tokens=MAX_TOKENS, num_retries=0)
        out[name] = await _measure(lc, n_slow, concurrency, 50)

    async def ls() -> Any:
        it = await litellm.acompletion(model="openai/m", api_base=url + "/v1", api_key="x", messages=MSG,
                                       max_tokens=MAX_TOKENS, num_retries=0, stream=True)
        async for _ in it:
            pass
    out["stream: litellm openai"] = await _measure(ls, n_slow, concurrency, 50)

    pool = ProviderPool([Deployment("m", "litellm", url + "/v1", provider_model="openai/m")], {"m": "x"})

    async def pl() -> Any:
        return await pool.complete(["m"], MSG, {"max_tokens": MAX_TOKENS})
    out["pool via litellm (openai/)"] = await _measure(pl, n_slow, concurrency, 50)
    await pool.aclose()
    return out


_UVICORN_APP = """
import sys, uvicorn
BODY = open(sys.argv[2], 'rb').read()
async def app(scope, receive, send):
    if scope['type'] != 'http':
        return
    while (await receive()).get('more_body'):
        pass
    await send({'type': 'http.response.start', 'status': 200, 'headers': [(b'content-type', b'application/json')]})
    await send({'type': 'http.response.body', 'body': BODY})
uvicorn.run(app, host='127.0.0.1', port=int(sys.argv[1]), log_level='warning', access_log=False)
"""


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _drive(url: str, body: bytes, n: int, concurrency: int, pid: int) -> dict[str, float]:
    import aiohttp

    hdr = {"content-type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        async def one() -> None:
            async with s.post(url + "/v1/chat/completions", data=body, headers=hdr) as r:
                await r.read()

        async def worker(k: int) -> None:
            for _ in range(k):
                await one()

        await asyncio.gather(*(worker(10) for _ in range(concurrency)))
        c0, w0 = _proc_cpu(pid), time.perf_counter()
        per = max(1, n // concurrency)
        await asyncio.gather(*(worker(per) for _ in range(concurrency)))
        cpu, wall = _proc_cpu(pid) - c0, time.perf_counter() - w0
    done = per * concurrency
    return {"requests": done, "server_cpu_ms_per_request": 1000 * cpu / done, "requests_per_s": done / wall}


def server_side(n: int, concurrency: int, cpus: list[int]) -> dict[str, dict[str, float]]:
    import socket
    import subprocess
    import tempfile
    import urllib.request

    from serve.provider import running

    out: dict[str, dict[str, float]] = {}
    plain = json.dumps({"model": "m", "messages": MSG, "max_tokens": MAX_TOKENS}).encode()
    stream = json.dumps({"model": "m", "messages": MSG, "max_tokens": MAX_TOKENS, "stream": True}).encode()
    with running(latency_ms=0, process=True) as url:
        if len(cpus) >= 2:
            os.sched_setaffinity(url.pid, {cpus[-1]})
        sample = urllib.request.urlopen(urllib.request.Request(url + "/v1/chat/completions", data=plain)).read()
        out["local provider, plain"] = asyncio.run(_drive(url, plain, n, concurrency, url.pid))
        out["local provider, stream (16 chunks)"] = asyncio.run(_drive(url, stream, n, concurrency, url.pid))
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        f.write(sample)
        f.flush()
        proc = subprocess.Popen([sys.executable, "-c", _UVICORN_APP, str(port), f.name])
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(200):
                try:
                    urllib.request.urlopen(urllib.request.Request(base + "/v1/chat/completions", data=plain))
                    break
                except OSError:
                    time.sleep(0.05)
            if len(cpus) >= 2:
                os.sched_setaffinity(proc.pid, {cpus[-1]})
            out["uvicorn (httptools) fixed-body ASGI app"] = asyncio.run(_drive(base, plain, n, concurrency, proc.pid))
        finally:
            proc.terminate()
            proc.wait(10)
    return out


def machine() -> dict[str, Any]:
    from bench.machine import cpu_model

    model = cpu_model("")
    import aiohttp
    import litellm

    return {"platform": platform.platform(), "cpu": model or platform.processor(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "aiohttp": aiohttp.__version__,
            "litellm": getattr(litellm, "__version__", None) or _dist_version("litellm"),
            "note": "client pinned to CPU 0, local provider to the last CPU; cores shared with other jobs, "
                    "so numbers are indicative; compare rows within this run"}


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def write_markdown(doc: dict[str, Any], path: Path) -> None:
    mc = doc["machine"]
    base = doc["results"]["aiohttp raw"]["cpu_ms_per_call"]
    lines = [
        "# Provider calls: client CPU per call",
        "",
        f"Run {doc['date']} on {mc['platform']}, {mc['cpu']}, {mc['cpu_count']} CPUs ({mc['note']}), "
        f"Python {mc['python']}, aiohttp {mc['aiohttp']}, litellm {mc['litellm']}. Command: `{doc['command']}`.",
        "",
        f"Local provider at 0 ms latency, `max_tokens` {MAX_TOKENS}, {doc['concurrency']} calls in flight. "
        "CPU is this process's (all threads) per completed call.",
        "",
        "| client | calls | CPU ms / call | x aiohttp raw | calls / s |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in doc["results"].items():
        lines.append(f"| {name} | {r['calls']} | {r['cpu_ms_per_call']:.3f} | {r['cpu_ms_per_call'] / base:.1f} | "
                     f"{r['calls_per_s']:.0f} |")
    lines += ["", "Server side (the local provider's own CPU, same load generator):", "",
              "| server | requests | server CPU ms / request | requests / s |", "|---|---:|---:|---:|"]
    for name, r in doc["server"].items():
        lines.append(f"| {name} | {r['requests']} | {r['server_cpu_ms_per_request']:.3f} | "
                     f"{r['requests_per_s']:.0f} |")
    lines += ["", "The pool's hot path (OpenAI-compatible endpoints, and text conversations on Anthropic, Gemini "
              "and Ollama) is the native one: whole answers on `serve.providers.http1`, streams on aiohttp; litellm is "
              "used only where its translation is needed (protocol `litellm`, tools or non-text content on the "
              "non-OpenAI protocols)."]
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=3000, help="calls per fast client (default 3000)")
    ap.add_argument("--slow-calls", type=int, default=600, help="calls per litellm client (default 600)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--quick", action="store_true", help="a smoke run (few calls)")
    args = ap.parse_args()
    if args.quick:
        args.calls, args.slow_calls = 200, 50
    from serve.provider import running

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    with running(latency_ms=0, process=True) as url:
        if len(cpus) >= 2:
            os.sched_setaffinity(url.pid, {cpus[-1]})
            os.sched_setaffinity(0, {cpus[0]})
        results = asyncio.run(run(url, args.calls, args.slow_calls, args.concurrency))
    server = server_side(args.calls, args.concurrency, cpus)
    doc = {"date": dt.datetime.now().isoformat(timespec="seconds"), "command": " ".join(["python", *sys.argv]),
           "concurrency": args.concurrency, "machine": machine(), "results": results, "server": server}
    RESULTS.mkdir(exist_ok=True)
    suffix = "_quick" if args.quick else ""
    (RESULTS / f"providers{suffix}.json").write_text(json.dumps(doc, indent=2) + "\n")
    write_markdown(doc, RESULTS / f"providers{suffix}.md")
    for name, r in results.items():
        print(f"{name:32s} {r['cpu_ms_per_call']:8.3f} ms CPU/call  {r['calls_per_s']:8.0f} calls/s")
    for name, r in server.items():
        print(f"{name:36s} {r['server_cpu_ms_per_request']:8.3f} ms server CPU/request  {r['requests_per_s']:8.0f} req/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
