"""A small HTTP/1.1 client for whole (non-streamed) provider answers, on asyncio protocols.

A provider call is one POST of a JSON body and one JSON answer. aiohttp's general-purpose client
spends about 0.2 ms of CPU on that here (request and response objects, cookie and redirect
handling, timers), a fifth of the service's budget per request; this client sends prebuilt request
bytes on a kept-alive connection and parses the answer with ``httptools`` (the C parser uvicorn
uses), which costs a fraction of that (``bench/bench_providers.py``). Streamed answers keep using
aiohttp.

Connections are pooled per origin (scheme, host, port) and reused while the server keeps them alive.
A connection whose answer did not complete -- an error, a cancelled call (the caller's timeout) --
is closed, never reused. Errors are the provider layer's :class:`~serve.providers.calls.CallError`
kinds: ``connection`` when nothing of the answer arrived, ``truncated`` when it was cut, ``malformed``
when it is not HTTP.
"""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

from serve.providers.calls import CallError

__all__ = ["Http1Client"]

MAX_IDLE_PER_ORIGIN = 256
MAX_ANSWER_BYTES = 64 * 1024 * 1024


class _Conn(asyncio.Protocol):
    """One connection; at most one request in flight (no pipelining)."""

    def __init__(self) -> None:
        import httptools

        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._waiter: asyncio.Future[tuple[int, dict[str, str], bytes]] | None = None
        self._reset()

    def _reset(self) -> None:
        self._status = 0
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._began = False

    # ---- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        import httptools

        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(CallError("malformed", None, f"the answer is not valid HTTP/1.1 ({exc})"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._began:
            self._fail(CallError("truncated", None, "the connection closed in the middle of the answer"))
        else:
            self._fail(CallError("connection", None, "the connection closed before an answer"
                                 + (f" ({type(exc).__name__}: {exc})" if exc else "")))

    # ---- httptools callbacks
    def on_message_begin(self) -> None:
        self._began = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_ANSWER_BYTES:
            self._fail(CallError("malformed", None, f"the answer is over {MAX_ANSWER_BYTES} bytes"))
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        result = (self._status, self._headers, b"".join(self._body))
        self._reset()
        if not self._parser.should_keep_alive():
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result(result)

    # ---- use
    def _fail(self, err: CallError) -> None:
        waiter, self._waiter = self._waiter, None
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(err)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def request(self, data: bytes) -> asyncio.Future[tuple[int, dict[str, str], bytes]]:
        assert self.transport is not None and self._waiter is None
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return waiter


class Http1Client:
    """POST a body, read the whole answer: ``(status, headers with lower-case names, body)``."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._ssl: ssl.SSLContext | None = None
        self._targets: dict[str, tuple[tuple[str, str, int], bytes, str]] = {}

    def _target(self, url: str) -> tuple[tuple[str, str, int], bytes, str]:
        """(origin, request-target, Host header) of ``url``, parsed once per URL."""
        found = self._targets.get(url)
        if found is None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise CallError("upstream_config", None, f"not an http(s) URL: {url!r}")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            host = parts.netloc.rpartition("@")[2]
            found = ((parts.scheme, parts.hostname, port), path.encode("latin-1"), host)
            if len(self._targets) < 1024:
                self._targets[url] = found
        return found

    async def _connect(self, origin: tuple[str, str, int]) -> _Conn:
        scheme, host, port = origin
        ctx = None
        if scheme == "https":
            ctx = self._ssl = self._ssl or ssl.create_default_context()
        try:
            _, conn = await asyncio.get_running_loop().create_connection(_Conn, host, port, ssl=ctx)
        except OSError as exc:
            raise CallError("connection", None, f"cannot connect to {host}:{port} ({type(exc).__name__}: {exc})") \
                from None
        return conn

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        origin, target, host = self._target(url)
        head = [b"POST ", target, b" HTTP/1.1\r\nhost: ", host.encode("latin-1"),
                b"\r\ncontent-length: ", str(len(body)).encode(), b"\r\n"]
        for name, value in headers.items():
            head += [name.encode("latin-1"), b": ", value.encode("latin-1"), b"\r\n"]
        head += [b"\r\n", body]
        data = b"".join(head)
        idle = self._idle.get(origin)
        conn = None
        while idle:
            candidate = idle.pop()
            if not candidate.closed:
                conn = candidate
                break
        if conn is None:
            conn = await self._connect(origin)
        done = False
        try:
            result = await conn.request(data)
            done = True
        finally:
            if not done:
                conn.close()  # an error or a cancelled call: the connection's state is unknown
        if not conn.closed:
            pool = self._idle.setdefault(origin, [])
            if len(pool) < MAX_IDLE_PER_ORIGIN:
                pool.append(conn)
            else:
                conn.close()
        return result

    async def aclose(self) -> None:
        for pool in self._idle.values():
            for conn in pool:
                conn.close()
        self._idle.clear()

    def idle_connections(self) -> int:
        """Kept-alive connections waiting for a request (for tests and metrics)."""
        return sum(not c.closed for pool in self._idle.values() for c in pool)

