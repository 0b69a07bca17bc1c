"""The local provider's HTTP/1.1 server: a small asyncio protocol, so faults can act on the socket itself.

Why not uvicorn: the faults must show on the wire as a real provider's failures do -- a TCP reset with no
response, a chunked stream closed without its last chunk, a body short of its ``Content-Length`` -- and an
ASGI app cannot reach the socket to do that. It costs about what uvicorn (httptools) costs for a fixed body
(``bench/results/providers.md``). It speaks keep-alive HTTP/1.1 with ``Content-Length`` or chunked request
bodies and answers each connection's requests in order.

Routes:

======================================================= ==========================================
``POST /v1/chat/completions``                           OpenAI (``GET /v1/models`` lists the pool)
``POST /v1/messages``                                   Anthropic (``GET /v1/models`` with an
                                                        ``anthropic-version`` header lists the pool)
``POST /v1beta/models/{model}:generateContent``         Gemini (``:streamGenerateContent[?alt=sse]``;
                                                        ``GET /v1beta/models`` lists the pool)
``POST /api/chat``                                      Ollama (``GET /api/tags`` lists the pool)
``POST /_faults``, ``DELETE /_faults``, ``GET /_faults`` inject, clear, list faults
``GET /_stats``                                         requests per model and protocol, how many
                                                        carried a key (never the key), faults, the pool
``GET /healthz``                                        ``{"ok": true}``
======================================================= ==========================================
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import struct
import time
from typing import Any
from urllib.parse import unquote

from serve.provider.answers import Answer, AnswerBook
from serve.provider.faults import Fault, FaultTable
from serve.provider.wire import PROTOCOLS, BadRequest, Req, Wire

__all__ = ["ProviderServer"]

_MAX_HEAD = 64 * 1024
_MAX_BODY = 32 * 1024 * 1024
_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
            413: b"Payload Too Large", 429: b"Too Many Requests", 431: b"Request Header Fields Too Large",
            500: b"Internal Server Error", 503: b"Service Unavailable"}
_JSON = b"application/json"


class ProviderServer:
    """Serves an :class:`AnswerBook` over HTTP with the faults of a :class:`FaultTable`.

    Args:
        book: the pool, answers and latencies.
        faults: the fault table (shared with whoever injects faults programmatically).
    """

    def __init__(self, book: AnswerBook, faults: FaultTable | None = None) -> None:
        self.book = book
        self.faults = faults if faults is not None else FaultTable()
        self.requests: dict[str, int] = {}
        self.by_protocol: dict[str, int] = {}
        self.with_key = 0
        self.conns: set[_Conn] = set()
        self._server: asyncio.base_events.Server | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on ``host:port`` (0 picks a free port); returns the port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Conn(self), host, port, backlog=4096, reuse_address=True)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and drop every open connection (stalled handlers are cancelled)."""
        if self._server is not None:
            self._server.close()
        for c in list(self.conns):
            c.abort()
        if self._server is not None:
            await self._server.wait_closed()

    def stats(self) -> dict[str, Any]:
        """Requests per model and protocol, injected faults, active faults and the pool."""
        return {"requests": dict(self.requests), "total": sum(self.requests.values()),
                "by_protocol": dict(self.by_protocol), "with_key": self.with_key, "faults_injected": {k: dict(v) for k, v in
                                                                          self.faults.injected.items()},
                "faults": self.faults.to_json(), "pool": self.book.describe()}

    # ------------------------------------------------------------------ dispatch
    async def handle(self, c: _Conn, method: str, path: str, query: str, headers: dict[bytes, bytes],
                     body: bytes) -> None:
        wire: Wire | None = None
        model = None
        if method == "POST":
            if path == "/v1/chat/completions":
                wire = PROTOCOLS["openai"]
            elif path == "/v1/messages":
                wire = PROTOCOLS["anthropic"]
            elif path == "/api/chat":
                wire = PROTOCOLS["ollama"]
            elif path.startswith("/v1beta/models/"):
                rest = path[len("/v1beta/models/"):]
                model, sep, verb = rest.rpartition(":")
                model = unquote(model)
                if sep and verb in ("generateContent", "streamGenerateContent"):
                    wire = PROTOCOLS["gemini"]
            elif path == "/_faults":
                return self._add_fault(c, body)
        elif method == "GET":
            if path == "/v1/models":
                w = PROTOCOLS["anthropic" if b"anthropic-version" in headers else "openai"]
                return c.respond(200, w.models(self.book.model_names()))
            if path == "/v1beta/models":
                return c.respond(200, PROTOCOLS["gemini"].models(self.book.model_names()))
            if path == "/api/tags":
                return c.respond(200, PROTOCOLS["ollama"].models(self.book.model_names()))
            if path == "/_stats":
                return c.respond(200, json.dumps(self.stats()).encode())
            if path == "/_faults":
                return c.respond(200, json.dumps(self.faults.to_json()).encode())
            if path == "/healthz":
                return c.respond(200, b'{"ok":true}')
        elif method == "DELETE" and path == "/_faults":
            self.faults.clear()
            return c.respond(200, b'{"cleared":true}')
        if wire is None:
            return c.respond(404, json.dumps({"error": {"message": f"no route {method} {path}", "type":
                                                        "invalid_request_error", "param": None,
                                                        "code": None}}).encode())
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return c.respond(400, wire.error(400, f"We could not parse the JSON body of your request ({exc})."))
        try:
            r = wire.parse(payload, model, query)
        except BadRequest as exc:
            return c.respond(400, wire.error(400, str(exc)))
        if wire.name == "gemini" and path.endswith(":streamGenerateContent"):
            r.stream = True
        r.started_ns = time.perf_counter_ns()
        self.requests[r.model] = self.requests.get(r.model, 0) + 1
        self.by_protocol[wire.name] = self.by_protocol.get(wire.name, 0) + 1
        if b"authorization" in headers or b"x-api-key" in headers or b"x-goog-api-key" in headers:
            self.with_key += 1  # counted, never stored
        if not self.book.knows(r.model):
            return c.respond(404, wire.not_found(r.model))
        fault = self.faults.take(r.model)
        if fault is not None and await self._early_fault(c, wire, fault):
            return
        answer = self.book.answer(r.model, r.prompt, r.max_tokens)
        r.n_in = self.book.input_tokens_of(r.model, r.prompt, r.chars)
        ttft, per_token = self.book.timing(r.model, r.prompt, answer.output_tokens, answer.logged_latency_s)
        if r.stream:
            await self._stream(c, wire, r, answer, ttft, per_token, fault)
        else:
            await self._whole(c, wire, r, answer, ttft + per_token * answer.output_tokens, fault)

    def _add_fault(self, c: _Conn, body: bytes) -> None:
        try:
            fault = Fault.from_json(json.loads(body))
        except ValueError as exc:  # ConfigError is a ValueError, like a JSON error
            return c.respond(400, json.dumps({"error": {"message": str(exc), "type": "invalid_request_error"}})
                             .encode())
        self.faults.add(fault)
        return c.respond(200, json.dumps({"added": fault.to_json()}).encode())

    async def _early_fault(self, c: _Conn, wire: Wire, f: Fault) -> bool:
        """Faults that replace the whole response; True when the request is finished."""
        if f.kind in ("error", "flap"):
            c.respond(500, wire.error(500, "The server had an error while processing your request. Sorry about that!"))
            return True
        if f.kind == "429":
            ra = f.retry_after
            c.respond(429, wire.error(429, f"Rate limit reached. Please try again in {ra:g}s.", "rate_limit_exceeded"),
                      extra=b"retry-after: %d\r\nretry-after-ms: %d\r\n" % (math.ceil(ra), round(ra * 1000)))
            return True
        if f.kind == "reset":
            c.reset()
            return True
        if f.kind == "no_response":
            await _stall(None)
            return True
        return False

    async def _whole(self, c: _Conn, wire: Wire, r: Req, a: Answer, total_s: float, f: Fault | None) -> None:
        kind = f.kind if f is not None else None
        if kind == "stall_first":
            await _stall(f.stall_s)  # type: ignore[union-attr]
        if total_s > 0:
            await asyncio.sleep(total_s)
        body = wire.body(r, a, r.n_in)
        if kind == "malformed":
            return c.respond(200, body[: len(body) // 2])
        if kind in ("cut", "stall_mid"):
            c.write(c.head(200, _JSON, len(body)) + body[: len(body) // 2])
            if kind == "cut":
                return c.close()
            await _stall(f.stall_s)  # type: ignore[union-attr]
            c.write(body[len(body) // 2:])
            return c.done()
        c.respond(200, body)

    async def _stream(self, c: _Conn, wire: Wire, r: Req, a: Answer, ttft: float, per_token: float,
                      f: Fault | None) -> None:
        kind = f.kind if f is not None else None
        loop = asyncio.get_running_loop()
        start = loop.time()
        c.write(c.head(200, wire.stream_type, None) + b"".join(_chunk(x) for x in wire.head(r, a, r.n_in)))
        if kind == "stall_first":
            await _stall(f.stall_s)  # type: ignore[union-attr]
            start = loop.time()
        pieces = a.pieces
        half = len(pieces) // 2
        per_piece = math.ceil(a.output_tokens / len(pieces)) if pieces else 0
        sent = 0
        for i, piece in enumerate(pieces):
            if kind is not None and i == half:
                if kind == "cut":
                    return c.close()
                if kind == "stall_mid":
                    await _stall(f.stall_s)  # type: ignore[union-attr]
                    start = loop.time() - ttft - per_token * sent
                elif kind == "malformed":
                    c.write(_chunk(wire.malformed(r, piece)))
            wait = start + ttft + per_token * sent - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            c.write(_chunk(wire.delta(r, piece)))
            sent += per_piece
        wait = start + ttft + per_token * a.output_tokens - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        c.write(b"".join(_chunk(x) for x in wire.tail(r, a, r.n_in)) + b"0\r\n\r\n")
        c.done()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def _stall(seconds: float | None) -> None:
    """Wait ``seconds``, or until cancelled (the client went away) when None."""
    if seconds is None:
        await asyncio.Event().wait()
    elif seconds > 0:
        await asyncio.sleep(seconds)


class _Conn(asyncio.Protocol):
    """One client connection: parses requests and runs them one at a time."""

    def __init__(self, server: ProviderServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.task: asyncio.Task[None] | None = None
        self.keep_alive = True
        self.closed = False

    # ------------------------------------------------------------------ asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.conns.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.task is None:
            self._next()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.conns.discard(self)
        if self.task is not None:
            self.task.cancel()

    # ------------------------------------------------------------------ parsing
    def _next(self) -> None:
        """Start the next complete request in the buffer, if any."""
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > _MAX_HEAD:
                self.respond(431, b'{"error":{"message":"request head too large"}}')
                self.close()
            return
        lines = bytes(buf[:end]).split(b"\r\n")
        try:
            method, target, version = lines[0].decode("latin-1").split(" ", 2)
        except ValueError:
            self.respond(400, b'{"error":{"message":"malformed request line"}}')
            return self.close()
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers[k.strip().lower()] = v.strip()
        start = end + 4
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            try:
                parsed = _dechunk(buf, start)
            except ValueError:
                self.respond(400, b'{"error":{"message":"bad chunked body"}}')
                return self.close()
            if parsed is None:
                return
            body, consumed = parsed
        else:
            try:
                n = int(headers.get(b"content-length", b"0"))
            except ValueError:
                self.respond(400, b'{"error":{"message":"bad Content-Length"}}')
                return self.close()
            if n > _MAX_BODY:
                self.respond(413, b'{"error":{"message":"request body too large"}}')
                return self.close()
            if len(buf) < start + n:
                return
            body, consumed = bytes(buf[start:start + n]), start + n
        del buf[:consumed]
        conn = headers.get(b"connection", b"").lower()
        self.keep_alive = conn != b"close" and (version != "HTTP/1.0" or conn == b"keep-alive")
        path, _, query = target.partition("?")
        self.task = asyncio.get_running_loop().create_task(self._run(method, path, query, headers, body))

    async def _run(self, method: str, path: str, query: str, headers: dict[bytes, bytes], body: bytes) -> None:
        try:
            await self.server.handle(self, method, path, query, headers, body)
        except asyncio.CancelledError:
            return
        except Exception as exc:  # a bug here must not kill the connection silently
            if not self.closed:
                self.respond(500, json.dumps({"error": {"message": f"local provider bug: {exc!r}"}}).encode())
        finally:
            self.task = None
        if not self.closed and self.buf:
            self._next()

    # ------------------------------------------------------------------ writing
    def head(self, status: int, ctype: bytes, length: int | None, extra: bytes = b"") -> bytes:
        framing = b"transfer-encoding: chunked\r\n" if length is None else b"content-length: %d\r\n" % length
        conn = b"" if self.keep_alive else b"connection: close\r\n"
        return (b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\n%s%s%s\r\n"
                % (status, _REASONS.get(status, b"Unknown"), ctype, framing, conn, extra))

    def respond(self, status: int, body: bytes, ctype: bytes = _JSON, extra: bytes = b"") -> None:
        """Write a whole response."""
        self.write(self.head(status, ctype, len(body), extra) + body)
        self.done()

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def done(self) -> None:
        """The response is complete: close unless keep-alive."""
        if not self.keep_alive:
            self.close()

    def close(self) -> None:
        """Close after flushing what was written (FIN)."""
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def reset(self) -> None:
        """Reset the connection (RST, nothing sent)."""
        if self.transport is None or self.closed:
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.closed = True
            self.transport.abort()


def _dechunk(buf: bytearray, start: int) -> tuple[bytes, int] | None:
    """Decode a chunked body starting at ``start``; None until it is complete."""
    out = bytearray()
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";")[0] or b"0", 16)
        pos = eol + 2
        if size == 0:
            end = buf.find(b"\r\n", pos)  # trailers end with an empty line
            while end >= 0 and end != pos:
                pos = end + 2
                end = buf.find(b"\r\n", pos)
            if end < 0:
                return None
            return bytes(out), end + 2
        if len(buf) < pos + size + 2:
            return None
        out += buf[pos:pos + size]
        pos += size + 2
