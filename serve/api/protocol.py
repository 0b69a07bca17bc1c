"""The service's HTTP/1.1 protocol class: uvicorn's httptools protocol with a leaner per-request path.

uvicorn runs it in place of its own (``uvicorn.Config(http="serve.api.protocol:ServeHttpProtocol")``),
so uvicorn still owns the process: sockets, ``--workers N``, signals, lifespan, graceful shutdown
(it walks ``server_state.connections`` and ``server_state.tasks`` and calls :meth:`shutdown`), the
keep-alive timeout, flow control and ``limit_concurrency``. Parsing stays with httptools; what
changes is the work done per request, measured in ``bench/bench_http_protocol.py``:

* the response head is built when the app sends ``http.response.start`` but written together with
  the first body message, so a whole answer leaves in one ``transport.write`` (the ASGI spec lets a
  server hold the head until the first body message);
* header names are checked once per distinct name (uvicorn's rule, remembered), and header values
  all at once on the finished head (below), instead of two regular-expression searches per header;
* a request's body is kept as the chunks httptools hands over (no bytearray copies), and the
  request/response cycle signals its receiver with a flag plus a future made only when the app
  really has to wait, not an ``asyncio.Event`` per request;
* the keep-alive timer is armed once per idle period and re-armed for what is left, instead of
  being cancelled and created again around every request;
* a request's task takes itself out of ``server_state.tasks`` as it ends, instead of through a done
  callback that costs one more turn of the event loop per request.

Everything else is uvicorn's behaviour, kept on purpose and checked byte for byte against it in
``tests/test_http_protocol.py``: pipelining (one request at a time, reading paused behind it),
``Expect: 100-continue``, chunked request bodies, chunked responses when no content-length is
given, HEAD, ``connection: close``, a 500 when the app fails before starting its response and a
closed connection when it fails after, ``http.disconnect`` when the client goes away.

No CR/LF (or other control byte) can reach the wire from a header the app sends. Header names must
pass uvicorn's name rule (``HEADER_RE``: no control bytes, separators or spaces). For values, once
the head is joined, the number of control bytes in it (CR, LF and every other byte uvicorn's value
rule refuses; tab is allowed) must be exactly the two of each line end this class wrote itself;
any extra one means a value carries it, and :meth:`_Cycle.send` raises ``RuntimeError("Invalid HTTP
header value (header b'NAME').")`` before anything is written and before the response counts as started, so the app
can still answer 500 (uvicorn raises the same error but marks the response started, and the client
only sees the connection close).
"""

from __future__ import annotations

import asyncio
import contextvars
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httptools
from uvicorn.logging import TRACE_LOG_LEVEL
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT, service_unavailable
from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE, STATUS_LINE, HttpToolsProtocol
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

__all__ = ["ServeHttpProtocol"]

Message = MutableMapping[str, Any]
App = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
               Awaitable[None]]

#: every byte uvicorn refuses in a header value (controls but tab, and DEL), CR and LF among them
_CTL = bytes(range(0x00, 0x09)) + bytes(range(0x0A, 0x20)) + b"\x7f"
#: header names already checked -> their lower-case form (names come from the app: a handful of constants)
_NAMES: dict[bytes, bytes] = {}
_NAMES_MAX = 1024
_SPECIAL = frozenset((b"content-length", b"transfer-encoding", b"connection"))
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_FINAL_CHUNK = b"0\r\n\r\n"


def _checked_name(name: bytes) -> bytes:
    """``name`` lower-cased after uvicorn's name rule; remembered, so each distinct name is checked once."""
    if HEADER_RE.search(name):
        raise RuntimeError("Invalid HTTP header name.")
    low = name.lower()
    if len(_NAMES) < _NAMES_MAX:
        _NAMES[name] = low
    return low


class ServeHttpProtocol(HttpToolsProtocol):
    """One client connection; uvicorn builds one per accepted socket (``config``, ``server_state``, ``app_state``)."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._asgi = {"version": self.asgi_version, "spec_version": "2.3"}
        self._root_raw = self.root_path.encode("ascii")
        self._fresh_context = bool(getattr(config, "reset_contextvars", False))
        self._upgrading = False
        self._idle_since: float | None = None  # loop time the connection went idle; None while a request is on
        self._idle_timer: asyncio.TimerHandle | None = None

    # ----------------------------------------------------------------- connection events
    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        if self.logger.level <= TRACE_LOG_LEVEL:
            prefix = "{}:{} - ".format(*self.client) if self.client else ""
            self.logger.log(TRACE_LOG_LEVEL, "%sHTTP connection lost", prefix)
        cycle: _Cycle | None = self.cycle  # type: ignore[assignment]
        if cycle is not None:
            if not cycle.response_complete:
                cycle.disconnected = True
            cycle.notify()
        if self.flow is not None:
            self.flow.resume_writing()
        if exc is None:
            self.transport.close()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self.parser = None  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._idle_since = None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    # ----------------------------------------------------------------- parser callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.expect_100_continue = False
        self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        http_version = parser.get_http_version()
        method = parser.get_method().decode("ascii")
        if parser.should_upgrade() and self._should_upgrade():
            self._upgrading = True  # handed to the websocket protocol once feed_data raises HttpParserUpgrade
            self.scope = {"type": "http", "method": method, "headers": self.headers}  # type: ignore[typeddict-item]
            return
        self._upgrading = False
        parsed = httptools.parse_url(self.url)
        raw_path = parsed.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        root = self.root_path
        if root:
            path, raw_path = root + path, self._root_raw + raw_path
        scope = {
            "type": "http", "asgi": self._asgi, "http_version": http_version, "server": self.server,
            "client": self.client, "scheme": self.scheme, "root_path": root, "headers": self.headers,
            "state": self.app_state.copy(), "method": method, "path": path, "raw_path": raw_path,
            "query_string": parsed.query or b"",
        }
        self.scope = scope  # type: ignore[assignment]
        limit = self.limit_concurrency
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            app: App = service_unavailable  # type: ignore[assignment]
            self.logger.warning("Exceeded concurrency limit.")
        else:
            app = self.app  # type: ignore[assignment]
        existing = self.cycle
        cycle = _Cycle(self, scope, http_version != "1.0" and parser.should_keep_alive(), self.expect_100_continue)
        self.cycle = cycle  # type: ignore[assignment]
        if existing is None or existing.response_complete:
            self._start(cycle, app)
        else:  # pipelined: queued behind the request being answered, reading paused meanwhile
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, app))  # type: ignore[arg-type]

    def on_body(self, body: bytes) -> None:
        cycle: _Cycle = self.cycle  # type: ignore[assignment]
        if self._upgrading or cycle.response_complete:
            return
        cycle.chunks.append(body)
        cycle.size += len(body)
        if cycle.size > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        cycle.news = True
        if cycle.waiters:
            cycle.notify()

    def on_message_complete(self) -> None:
        cycle: _Cycle = self.cycle  # type: ignore[assignment]
        if self._upgrading or cycle.response_complete:
            return
        cycle.more_body = False
        cycle.news = True
        if cycle.waiters:
            cycle.notify()

    # ----------------------------------------------------------------- requests
    def _start(self, cycle: _Cycle, app: App) -> None:
        coro = cycle.run_asgi(app)
        if self._fresh_context:  # uvicorn's opt-in: no context leaks between requests
            task = self.loop.create_task(coro, context=contextvars.Context())
        else:
            task = self.loop.create_task(coro)
        # run_asgi takes the task out again as it ends (a done callback would cost one more turn of the loop);
        # only a task cancelled before its first step stays, which uvicorn does once it has stopped waiting
        # on this set (the graceful-shutdown timeout)
        self.tasks.add(task)
        cycle.task = task

    def on_response_complete(self) -> None:
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        flow = self.flow
        if flow.read_paused:
            flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start(cycle, app)  # type: ignore[arg-type]
            return
        loop = self.loop
        self._idle_since = loop.time()
        if self._idle_timer is None:
            self._idle_timer = loop.call_later(self.timeout_keep_alive, self._idle_check)

    def _idle_check(self) -> None:
        """Close the connection once it has been idle ``timeout_keep_alive`` seconds, else look again then."""
        self._idle_timer = None
        since = self._idle_since
        if since is None or self.transport.is_closing():
            return  # a request is on: the next response arms the timer again
        left = since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self._idle_timer = self.loop.call_later(left, self._idle_check)
        else:
            self.transport.close()

    def timeout_keep_alive_handler(self) -> None:
        self._idle_check()


class _Cycle:
    """One request and its response: the ``receive`` and ``send`` the app gets."""

    __slots__ = ("proto", "scope", "transport", "flow", "keep_alive", "waiting_for_100_continue", "disconnected",
                 "chunks", "size", "more_body", "news", "waiters", "response_started", "response_complete",
                 "chunked_encoding", "expected_content_length", "head", "finished", "task")

    def __init__(self, proto: ServeHttpProtocol, scope: dict[str, Any], keep_alive: bool, expect_100: bool) -> None:
        self.proto = proto
        self.scope = scope
        self.transport = proto.transport
        self.flow = proto.flow
        self.keep_alive = keep_alive
        self.waiting_for_100_continue = expect_100
        self.disconnected = False
        self.chunks: list[bytes] = []
        self.size = 0
        self.more_body = True
        self.news = False  # something for receive(): body, the end of it, a disconnect or the response's end
        self.waiters: list[asyncio.Future[None]] = []
        self.response_started = False
        self.response_complete = False
        self.chunked_encoding: bool | None = None
        self.expected_content_length = 0
        self.head: bytes | None = None  # the response head, held until the first body message
        self.finished = False  # run_asgi has returned: a late response end must not start the next request
        self.task: asyncio.Task[None] | None = None  # the task running run_asgi, in server_state.tasks until it ends

    def notify(self) -> None:
        self.news = True
        waiters = self.waiters
        if waiters:
            self.waiters = []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    async def run_asgi(self, app: App) -> None:
        logger = self.proto.logger
        try:
            result = await app(self.scope, self.receive, self.send)  # type: ignore[func-returns-value]
        except BaseException as exc:
            logger.error("Exception in ASGI application\n", exc_info=exc)
            if not self.response_started:
                await self.send_500_response()
            else:
                self._abort()
        else:
            if result is not None:
                logger.error("ASGI callable should return None, but returned '%s'.", result)
                self._abort()
            elif not self.response_started and not self.disconnected:
                logger.error("ASGI callable returned without starting response.")
                await self.send_500_response()
            elif not self.response_complete and not self.disconnected:
                logger.error("ASGI callable returned without completing response.")
                self._abort()
        finally:
            self.finished = True
            self.proto.tasks.discard(self.task)  # type: ignore[arg-type]

    def _abort(self) -> None:
        """Close the connection mid-response (the head, when held, goes out first, as uvicorn would have sent it)."""
        transport = self.transport
        if self.head is not None and not transport.is_closing():
            transport.write(self.head)
        self.head = None
        transport.close()

    async def send_500_response(self) -> None:
        await self.send({"type": "http.response.start", "status": 500,
                         "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"21"),
                                     (b"connection", b"close")]})
        await self.send({"type": "http.response.body", "body": b"Internal Server Error", "more_body": False})

    # ----------------------------------------------------------------- ASGI interface
    async def send(self, message: Message) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        if not self.response_started:
            if message["type"] != "http.response.start":
                raise RuntimeError(f"Expected ASGI message 'http.response.start', but got '{message['type']}'.")
            self._start_response(message)
            return
        if self.response_complete:
            raise RuntimeError(f"Unexpected ASGI message '{message['type']}' sent, after response already completed.")
        if message["type"] != "http.response.body":
            raise RuntimeError(f"Expected ASGI message 'http.response.body', but got '{message['type']}'.")
        body = message.get("body", b"")
        more_body = message.get("more_body", False)
        head = self.head
        if self.scope["method"] == "HEAD":
            self.expected_content_length = 0
            out = head
        elif self.chunked_encoding:
            parts = [head] if head is not None else []
            if body:
                parts += (b"%x\r\n" % len(body), body, b"\r\n")
            if not more_body:
                parts.append(_FINAL_CHUNK)
            out = b"".join(parts) if parts else None
        else:
            n = len(body)
            if n > self.expected_content_length:
                raise RuntimeError("Response content longer than Content-Length")
            self.expected_content_length -= n
            out = (head + body if body else head) if head is not None else body
        self.head = None
        if out:
            self.transport.write(out)
        if not more_body:
            if self.expected_content_length != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self.response_complete = True
            self.notify()
            if not self.keep_alive:
                self.transport.close()
            if not self.finished:
                self.proto.on_response_complete()

    def _start_response(self, message: Message) -> None:
        """Build and check the head (held in ``self.head``); nothing changes when a header is refused."""
        status = message["status"]
        proto = self.proto
        if proto.access_log:
            scope = self.scope
            proto.access_logger.info('%s - "%s %s HTTP/%s" %d', get_client_addr(scope), scope["method"],  # type: ignore[arg-type]
                                     get_path_with_query_string(scope), scope["http_version"], status)  # type: ignore[arg-type]
        content = [STATUS_LINE[status]]
        keep_alive, chunked, length, has_close = self.keep_alive, self.chunked_encoding, 0, False
        lines = 2  # the status line and the blank line that ends the head
        for headers in (proto.server_state.default_headers, message.get("headers", ())):
            for name, value in headers:
                low = _NAMES.get(name)
                if low is None:
                    low = _checked_name(name)
                if low in _SPECIAL:
                    if low == b"content-length":
                        if chunked is None:
                            length, chunked = int(value.decode()), False
                    elif low == b"transfer-encoding":
                        if value.lower() == b"chunked":
                            length, chunked = 0, True
                    elif b"close" in [token.lower().strip() for token in value.split(b",")]:
                        keep_alive, has_close = False, True
                content += (low, b": ", value, b"\r\n")
                lines += 1
        if not keep_alive and not has_close:
            content.append(b"connection: close\r\n")
            lines += 1
        if chunked is None and self.scope["method"] != "HEAD" and status not in (204, 304):
            chunked = True
            content.append(b"transfer-encoding: chunked\r\n")
            lines += 1
        content.append(b"\r\n")
        head = b"".join(content)
        if len(head) - len(head.translate(None, _CTL)) != 2 * lines:  # a control byte inside a value
            self._refuse(message)
        self.response_started = True
        self.waiting_for_100_continue = False
        self.keep_alive, self.chunked_encoding, self.expected_content_length = keep_alive, chunked, length
        self.head = head

    def _refuse(self, message: Message) -> None:
        for headers in (self.proto.server_state.default_headers, message.get("headers", ())):
            for name, value in headers:
                if HEADER_VALUE_RE.search(value):
                    raise RuntimeError(f"Invalid HTTP header value (header {name[:64]!r}).")
        raise RuntimeError("Invalid HTTP header value.")  # pragma: no cover - the count and the rule agree

    async def receive(self) -> Message:
        if self.waiting_for_100_continue and not self.transport.is_closing():
            self.transport.write(_CONTINUE)
            self.waiting_for_100_continue = False
        if not self.disconnected and not self.response_complete:
            flow = self.flow
            if flow.read_paused:
                flow.resume_reading()
            if not self.news:
                fut = self.proto.loop.create_future()
                self.waiters.append(fut)
                try:
                    await fut
                finally:
                    if fut in self.waiters:
                        self.waiters.remove(fut)
            self.news = False
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        chunks = self.chunks
        if not chunks:
            body = b""
        elif len(chunks) == 1:
            body = chunks[0]
        else:
            body = b"".join(chunks)
        self.chunks = []
        self.size = 0
        return {"type": "http.request", "body": body, "more_body": self.more_body}
