"""Open-loop (fixed-rate) HTTP load generator for loopback benchmarks.

Request ``i`` is due at ``t0 + i / rate`` whatever happened to the requests before it: the generator
never waits for a response before sending the next request, so a slow server builds a queue instead
of slowing the client down. Latency is measured from the *scheduled* time to the last byte of the
response, so time a request spends waiting for a free connection (or behind a stalled one) is counted
and coordinated omission is avoided.

The client is lean on purpose, so that one core can offer 5,000+ requests/s: raw asyncio protocols,
HTTP/1.1 keep-alive connections (one request in flight per connection, no pipelining), request bytes
built before the clock starts, uvloop when it is installed. Only loopback targets are accepted.

Example (a server must listen on the port)::

    from bench.loadgen import LoadSpec, run_load
    spec = LoadSpec(url="http://127.0.0.1:9000/v1/chat/completions", rate=200, duration_s=2)
    result = run_load(spec, [b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'])
    print(result.achieved_rate, result.latency_ms["p95"], result.errors)

Command line: ``python bench/loadgen.py --url URL --rate 500 --duration 3 --body '{...}'`` prints the
result as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import cast
from urllib.parse import urlsplit

import numpy as np

_now = time.perf_counter  # uvloop's loop.time() has millisecond steps; latencies need finer
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
MAX_REQUESTS = 2_000_000


@dataclass(frozen=True)
class LoadSpec:
    """What to send, how fast and for how long.

    ``rate`` requests/s for ``warmup_s + duration_s`` seconds; requests due in the first ``warmup_s``
    seconds are sent but left out of the statistics (connections opening, caches filling). A request
    that has no complete response ``timeout_s`` after its scheduled time counts as a ``timeout`` error
    and its connection is dropped. ``track_header`` names a response header whose values are counted
    (``x-cache`` gives hit/miss counts).
    """

    url: str
    rate: float
    duration_s: float
    warmup_s: float = 1.0
    timeout_s: float = 5.0
    max_connections: int = 1024
    headers: tuple[tuple[str, str], ...] = ()
    track_header: str = "x-cache"

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme != "http" or not parts.hostname or parts.port is None:
            raise ValueError(f"url must look like http://127.0.0.1:PORT/path, got {self.url!r}")
        if parts.hostname not in LOOPBACK:
            raise ValueError(f"the load generator only targets loopback (127.0.0.1), got host {parts.hostname!r}")
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError(f"rate must be a positive number of requests/s, got {self.rate}")
        if not (self.duration_s > 0 and self.warmup_s >= 0 and self.timeout_s > 0):
            raise ValueError(
                f"duration_s and timeout_s must be > 0 and warmup_s >= 0, got duration_s={self.duration_s}, "
                f"warmup_s={self.warmup_s}, timeout_s={self.timeout_s}"
            )
        if self.n_requests > MAX_REQUESTS:
            raise ValueError(
                f"rate x (warmup_s + duration_s) = {self.n_requests} requests, over the bound of {MAX_REQUESTS}; "
                "lower the rate or the duration"
            )
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {self.max_connections}")

    @property
    def n_requests(self) -> int:
        return int(math.ceil(self.rate * (self.warmup_s + self.duration_s)))

    @property
    def n_warmup(self) -> int:
        return int(math.ceil(self.rate * self.warmup_s))


@dataclass
class LoadResult:
    """What one open-loop run measured (statistics over the requests due after the warm-up)."""

    offered_rate: float
    achieved_rate: float
    sent: int
    measured: int
    ok: int
    errors: dict[str, int]
    error_rate: float
    latency_ms: dict[str, float]
    dispatch_lag_ms: dict[str, float]
    header_counts: dict[str, int]
    connections_opened: int
    wall_s: float
    loadgen_cpu_s: float
    status_counts: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _percentiles(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "max": float("nan"), "mean": float("nan")}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(values.max()), "mean": float(values.mean())}


def build_requests(spec: LoadSpec, bodies: Sequence[bytes] | Callable[[int], bytes]) -> list[bytes]:
    """The raw HTTP/1.1 requests, one per scheduled send (bodies reused cyclically when a sequence)."""
    parts = urlsplit(spec.url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    head = f"POST {path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\nContent-Type: application/json\r\n"
    for name, value in spec.headers:
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            raise ValueError(f"header {name!r} contains a line break")
        head += f"{name}: {value}\r\n"
    head_b = head.encode("latin-1")
    n = spec.n_requests
    if callable(bodies):
        raw = [bodies(i) for i in range(n)]
    else:
        if len(bodies) == 0:
            raise ValueError("bodies is empty: give at least one request body")
        raw = [bodies[i % len(bodies)] for i in range(n)]
    cache: dict[bytes, bytes] = {}
    out = []
    for body in raw:
        if not isinstance(body, bytes | bytearray):
            raise ValueError(f"request bodies must be bytes, got {type(body).__name__}")
        req = cache.get(body)
        if req is None:
            req = head_b + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + bytes(body)
            if len(cache) < 100_000:
                cache[body] = req
        out.append(req)
    return out


class _Run:
    """State of one run: schedule, connection pool, per-request outcome arrays."""

    def __init__(self, spec: LoadSpec, requests: list[bytes]) -> None:
        self.spec = spec
        self.requests = requests
        n = len(requests)
        self.loop = asyncio.get_running_loop()
        self.sched = np.empty(n)
        self.done = [math.nan] * n
        self.dispatched = np.full(n, np.nan)
        self.status = [0] * n  # HTTP status; 0 = no response
        self.error_kind: dict[int, str] = {}
        self.tracked: collections.Counter[str] = collections.Counter()
        self.idle: list[_Conn] = []
        self.pending: collections.deque[int] = collections.deque()
        self.busy: set[_Conn] = set()
        self.n_conns = 0  # open or opening
        self.connecting: set[asyncio.Task] = set()
        self.opened = 0
        self.outstanding = 0
        self.all_done = asyncio.Event()
        self.track = spec.track_header.lower().encode() + b":" if spec.track_header else b""
        parts = urlsplit(spec.url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = int(parts.port or 80)

    # -- scheduling -----------------------------------------------------------------------
    async def schedule(self) -> None:
        n = len(self.requests)
        interval = 1.0 / self.spec.rate
        t0 = _now() + 0.01
        self.sched[:] = t0 + np.arange(n) * interval
        sched = self.sched.tolist()
        self.outstanding = n
        dispatched = [math.nan] * n
        i = 0
        while i < n:
            now = _now()
            while i < n and sched[i] <= now:
                dispatched[i] = now
                self.dispatch(i)
                i += 1
            if i < n:
                await asyncio.sleep(max(0.0, sched[i] - _now()))
        self.dispatched[:] = dispatched

    def dispatch(self, i: int) -> None:
        if self.idle:
            self.idle.pop().send(i)
            return
        self.pending.append(i)
        if self.n_conns < self.spec.max_connections:
            self.connect()

    def connect(self) -> None:
        self.n_conns += 1
        task = self.loop.create_task(self.open_connection())
        self.connecting.add(task)
        task.add_done_callback(self.connecting.discard)

    async def open_connection(self) -> None:
        try:
            await self.loop.create_connection(lambda: _Conn(self), self.host, self.port)
        except OSError as exc:
            self.n_conns -= 1
            if self.pending:
                self.finish(self.pending.popleft(), 0, f"connect: {type(exc).__name__}")
            return
        self.opened += 1

    def release(self, conn: _Conn) -> None:
        if self.pending:
            conn.send(self.pending.popleft())
        else:
            self.idle.append(conn)

    def finish(self, i: int, status: int, error: str | None = None, tracked: bytes | None = None) -> None:
        if not math.isnan(self.done[i]):
            return
        self.done[i] = _now()
        self.status[i] = status
        if error is not None:
            self.error_kind[i] = error
        elif status >= 400:
            self.error_kind[i] = f"http {status}"
        if tracked is not None and i >= self.spec.n_warmup:
            self.tracked[tracked.decode("latin-1", "replace").strip().lower()] += 1
        self.outstanding -= 1
        if self.outstanding == 0:
            self.all_done.set()

    async def watchdog(self) -> None:
        """Drop connections whose request is past its timeout; time out requests still queued."""
        timeout = self.spec.timeout_s
        while not self.all_done.is_set():
            await asyncio.sleep(0.05)
            now = _now()
            for conn in [c for c in self.busy if now - self.sched[c.current] > timeout]:
                conn.fail("timeout")
            while self.pending and now - self.sched[self.pending[0]] > timeout:
                self.finish(self.pending.popleft(), 0, "timeout")

    async def close(self) -> None:
        """Cancel connections still opening, drop every open one, and let their callbacks run."""
        self.all_done.set()
        tasks = list(self.connecting)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for conn in list(self.busy) + self.idle:
            if conn.transport is not None:
                conn.transport.abort()
        await asyncio.sleep(0.01)


class _Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with at most one request in flight."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.current = -1
        self.buf = bytearray()
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.run.release(self)

    def send(self, i: int) -> None:
        self.current = i
        self.run.busy.add(self)
        assert self.transport is not None
        self.transport.write(self.run.requests[i])

    def data_received(self, data: bytes) -> None:
        if self.current < 0:
            return  # unsolicited bytes between requests; ignore
        self.buf += data
        self._parse()

    def _parse(self) -> None:
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buf[:end]).lower()
        try:
            status = int(head[9:12])
        except ValueError:
            self.fail("bad response")
            return
        body_start = end + 4
        pos = head.find(b"\r\ncontent-length:")
        if pos >= 0:
            stop = head.find(b"\r\n", pos + 2)
            length = int(head[pos + 17 : stop if stop >= 0 else len(head)])
            if len(buf) < body_start + length:
                return
            consumed = body_start + length
        elif b"\r\ntransfer-encoding: chunked" in head:
            consumed = self._chunked_end(buf, body_start)
            if consumed < 0:
                return
        else:
            self.fail("no content-length")  # a close-delimited body: not used by the targets here
            return
        tracked = None
        if self.run.track:
            pos = head.find(b"\r\n" + self.run.track)
            if pos >= 0:
                stop = head.find(b"\r\n", pos + 2)
                tracked = head[pos + 2 + len(self.run.track) : stop if stop >= 0 else len(head)]
        del buf[:consumed]
        i, self.current = self.current, -1
        self.run.busy.discard(self)
        self.run.finish(i, status, None, tracked)
        if b"\r\nconnection: close" in head:
            self.closing = True
            assert self.transport is not None
            self.transport.close()
        else:
            self.run.release(self)

    @staticmethod
    def _chunked_end(buf: bytearray, pos: int) -> int:
        """Offset just past the last chunk (and trailers), or -1 when more bytes are needed."""
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return -1
            size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
            if size == 0:
                end = buf.find(b"\r\n\r\n", eol)
                return -1 if end < 0 else end + 4
            pos = eol + 2 + size + 2
            if pos > len(buf):
                return -1

    def fail(self, kind: str) -> None:
        if self.current >= 0:
            i, self.current = self.current, -1
            self.run.finish(i, 0, kind)
        self.run.busy.discard(self)
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        run = self.run
        if self in run.idle:
            run.idle.remove(self)
        if self.current >= 0:
            self.fail("connection lost")
        run.busy.discard(self)
        run.n_conns -= 1
        if run.pending and run.n_conns < run.spec.max_connections and not run.all_done.is_set():
            run.connect()


async def run_load_async(spec: LoadSpec, bodies: Sequence[bytes] | Callable[[int], bytes]) -> LoadResult:
    """Run one open-loop load (see :class:`LoadSpec`) on the running event loop."""
    requests = build_requests(spec, bodies)
    run = _Run(spec, requests)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.perf_counter()
    watchdog = asyncio.create_task(run.watchdog())
    try:
        await run.schedule()
        await asyncio.wait_for(run.all_done.wait(), timeout=spec.timeout_s + 1.0)
    except TimeoutError:
        pass  # the watchdog has already failed every request past its deadline
    finally:
        watchdog.cancel()
        await run.close()
    wall = time.perf_counter() - wall0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    return _summarise(spec, run, wall, (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime))


def _summarise(spec: LoadSpec, run: _Run, wall: float, cpu: float) -> LoadResult:
    w = spec.n_warmup
    sched = run.sched[w:]
    done = np.asarray(run.done, dtype=float)[w:]
    status = np.asarray(run.status, dtype=np.int32)[w:]
    finished = ~np.isnan(done)
    errors: collections.Counter[str] = collections.Counter()
    for i, kind in run.error_kind.items():
        if i >= w:
            errors[kind] += 1
    never = int((~finished).sum())
    if never:
        errors["no response"] += never
    ok_mask = finished & (status >= 200) & (status < 400)
    measured = len(sched)
    ok = int(ok_mask.sum())
    lat = (done[ok_mask] - sched[ok_mask]) * 1e3
    # Responses trail their sends by about one latency: measure the span from the first send to the last
    # response, less the smallest latency, so a target that keeps up shows the offered rate.
    span = float(np.nanmax(done) - sched[0] - lat.min() / 1e3) if ok else 0.0
    achieved = ok / max(span, float(sched[-1] - sched[0]) + 1.0 / spec.rate) if ok else 0.0
    lag = (run.dispatched[w:] - sched) * 1e3
    codes = collections.Counter(str(int(s)) for s in status[finished])
    return LoadResult(
        offered_rate=spec.rate,
        achieved_rate=float(achieved),
        sent=len(run.requests),
        measured=measured,
        ok=ok,
        errors=dict(errors),
        error_rate=float((measured - ok) / measured) if measured else 0.0,
        latency_ms=_percentiles(lat),
        dispatch_lag_ms=_percentiles(lag[~np.isnan(lag)]),
        header_counts=dict(run.tracked),
        connections_opened=run.opened,
        wall_s=wall,
        loadgen_cpu_s=cpu,
        status_counts=dict(codes),
    )


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when installed (a faster client), else asyncio's default."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_load(spec: LoadSpec, bodies: Sequence[bytes] | Callable[[int], bytes]) -> LoadResult:
    """Run one open-loop load in a fresh event loop and return what it measured.

    ``bodies``: request bodies (JSON bytes), reused cyclically, or a function ``i -> bytes`` giving the
    body of request ``i``.
    """
    loop = new_event_loop()
    try:
        return loop.run_until_complete(run_load_async(spec, bodies))
    finally:
        loop.close()


_NULL_BODY = b'{"id": "null", "object": "chat.completion", "choices": []}'
_NULL_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(_NULL_BODY)).encode()
    + b"\r\n\r\n"
    + _NULL_BODY
)


class NullServer(asyncio.Protocol):
    """A near-free HTTP/1.1 server (fixed JSON answer): measures the load generator's own ceiling."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            pos = head.find(b"\r\ncontent-length:")
            length = 0
            if pos >= 0:
                stop = head.find(b"\r\n", pos + 2)
                length = int(head[pos + 17 : stop if stop >= 0 else len(head)])
            if len(self.buf) < end + 4 + length:
                return
            del self.buf[: end + 4 + length]
            assert self.transport is not None
            self.transport.write(_NULL_RESPONSE)


def serve_null(port: int) -> None:
    """Run :class:`NullServer` on 127.0.0.1:``port`` until killed."""
    loop = new_event_loop()
    server = loop.run_until_complete(loop.create_server(NullServer, "127.0.0.1", port))
    print(f"null server on 127.0.0.1:{port}", flush=True)
    try:
        loop.run_forever()
    finally:
        server.close()
        loop.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="open-loop HTTP load on loopback; prints the result as JSON")
    ap.add_argument("--url", help="http://127.0.0.1:PORT/path")
    ap.add_argument("--serve-null", type=int, metavar="PORT", help="run the null server on PORT instead")
    ap.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    ap.add_argument("--duration", type=float, default=3.0, help="measured seconds (after the warm-up)")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--body", default='{"model": "m", "messages": [{"role": "user", "content": "hello"}]}')
    ap.add_argument("--unique", action="store_true", help="make every body unique (appends the request number)")
    args = ap.parse_args(argv)
    if args.serve_null:
        serve_null(args.serve_null)
        return 0
    if not args.url:
        ap.error("--url is required (or --serve-null PORT)")
    spec = LoadSpec(url=args.url, rate=args.rate, duration_s=args.duration, warmup_s=args.warmup, timeout_s=args.timeout)
    template = json.loads(args.body)

    def body(i: int) -> bytes:
        doc = json.loads(json.dumps(template))
        if args.unique:
            doc["messages"][-1]["content"] = f"{doc['messages'][-1]['content']} #{i}"
        return json.dumps(doc).encode()

    result = run_load(spec, body if args.unique else [json.dumps(template).encode()])
    json.dump(result.as_dict(), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
