"""The service's HTTP/1.1 protocol class (serve.api.protocol) over real loopback sockets with raw bytes.

Two uvicorn servers run the same small ASGI app in background threads, one with uvicorn's own httptools
protocol and one with ours; a table of raw requests (keep-alive, pipelining, chunked and 100-continue
bodies, HEAD, errors before and after the response started, body limits, malformed input) must get
byte-identical answers from both, apart from the Date header. Then the behaviours that need a closer
look: pipelined order, a chunked body arriving whole, 100 Continue before the body, a header value with
CR/LF refused, a client leaving mid-stream, the keep-alive timeout, graceful shutdown, and
``python -m serve`` handing our class to uvicorn on both its single-process and ``--workers`` paths.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from typing import Any

import pytest
import uvicorn
from serve_support import free_port

from serve.api.errors import APIError
from serve.api.http import read_body, send_error

OURS = "serve.api.protocol:ServeHttpProtocol"
THEIRS = "httptools"


def make_app(seen: dict[str, threading.Event]) -> Any:
    """The test app; ``seen["disconnect"]`` is set when a stream notices its client has gone."""

    async def respond(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                *(headers or [])]})
        await send({"type": "http.response.body", "body": body})

    async def read_all(receive: Any) -> bytes:
        parts = []
        while True:
            msg = await receive()
            parts.append(msg.get("body", b""))
            if not msg.get("more_body"):
                return b"".join(parts)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # a websocket handed over by uvicorn: refused by returning
            return
        path = scope["path"]
        if path.startswith("/echo"):
            body = await read_all(receive)
            doc = {k: scope[k] for k in ("type", "http_version", "method", "path", "root_path", "scheme")}
            doc.update(raw_path=scope["raw_path"].decode("latin1"), query_string=scope["query_string"].decode("latin1"),
                       headers=[[k.decode("latin1"), v.decode("latin1")] for k, v in scope["headers"]],
                       body=body.decode("latin1"), state=scope["state"], asgi=scope["asgi"])
            await respond(send, 200, json.dumps(doc, sort_keys=True).encode())
        elif path == "/limit":  # the service's own bounded body reader
            try:
                body = await read_body(scope, receive, 1024)
            except APIError as err:
                await send_error(send, err, [])
                return
            await respond(send, 200, b'{"size": %d}' % len(body))
        elif path == "/chunked":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"ab", "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": True})
            await send({"type": "http.response.body", "body": b"cde", "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        elif path == "/sse":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
            for i in range(3):
                await send({"type": "http.response.body", "body": b"data: %d\n\n" % i, "more_body": True})
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
        elif path == "/te":  # an explicit transfer-encoding: chunked, several pieces
            await send({"type": "http.response.start", "status": 201, "headers": [(b"Transfer-Encoding", b"chunked")]})
            await send({"type": "http.response.body", "body": b"x" * 10, "more_body": True})
            await send({"type": "http.response.body", "body": b"y", "more_body": False})
        elif path == "/empty":
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body"})
        elif path == "/close":
            await respond(send, 200, b'{"bye": 1}', [(b"connection", b"close")])
        elif path == "/big":
            await respond(send, 200, b"z" * 300_000)
        elif path == "/boom-before":
            raise RuntimeError("failed before the response")
        elif path == "/boom-after":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
            await send({"type": "http.response.body", "body": b"12345", "more_body": True})
            raise RuntimeError("failed mid-response")
        elif path == "/none":
            return
        elif path == "/short":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
            await send({"type": "http.response.body", "body": b"12345"})
        elif path == "/long":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"3")]})
            await send({"type": "http.response.body", "body": b"12345"})
        elif path == "/crlf":
            try:
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-length", b"2"), (b"x-note", b"fine\r\nset-cookie: evil=1")]})
            except RuntimeError as exc:
                await respond(send, 500, json.dumps({"refused": str(exc)}).encode())
                return
            await send({"type": "http.response.body", "body": b"ok"})
        elif path == "/bad-name":
            try:
                await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a\r\nx-b", b"1")]})
            except RuntimeError as exc:
                await respond(send, 500, json.dumps({"refused": str(exc)}).encode())
        elif path == "/forever":  # streams until the client goes away
            await read_all(receive)
            gone = asyncio.ensure_future(receive())
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
            for _ in range(2000):
                if gone.done():
                    if gone.result()["type"] == "http.disconnect":
                        seen["disconnect"].set()
                    return
                await send({"type": "http.response.body", "body": b"data: tick\n\n", "more_body": True})
                await asyncio.sleep(0.01)
            await send({"type": "http.response.body", "body": b""})
        elif path == "/slow":
            await read_all(receive)
            seen["slow-started"].set()
            await asyncio.sleep(0.5)
            await respond(send, 200, b'{"slow": true}')
        else:
            await respond(send, 404, b'{"error": "no route"}')

    return app


class Running:
    """A uvicorn server with ``http`` as its protocol, on a free port, in a background thread."""

    def __init__(self, http: str, **config: Any) -> None:
        self.seen = {"disconnect": threading.Event(), "slow-started": threading.Event()}
        self.port = free_port()
        options = {"timeout_keep_alive": 1, "access_log": False, **config}
        self.server = uvicorn.Server(uvicorn.Config(make_app(self.seen), host="127.0.0.1", port=self.port, http=http,
                                                    loop="uvloop", lifespan="off", log_config=None, **options))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the test server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def servers():
    with Running(THEIRS) as theirs, Running(OURS) as ours:
        yield {"theirs": theirs, "ours": ours}


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def read_to_eof(sock: socket.socket) -> bytes:
    parts = []
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        parts.append(data)
    return b"".join(parts)


def exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` at once and read until the server closes the connection."""
    with connect(port) as sock:
        sock.sendall(data)
        return read_to_eof(sock)


def read_response(sock: socket.socket, buffered: bytes = b"") -> tuple[bytes, bytes, bytes]:
    """(head, body, rest) of one content-length response read from ``sock``."""
    data = buffered
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        assert more, f"the connection closed mid-head: {data!r}"
        data += more
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
    while len(rest) < length:
        more = sock.recv(65536)
        assert more, "the connection closed mid-body"
        rest += more
    return head, rest[:length], rest[length:]


def no_date(data: bytes) -> bytes:
    return re.sub(rb"(?i)\r\ndate: [^\r\n]*", b"", data)


CLOSE = b"GET /echo?last=1 HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
CHUNKED_BODY = b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\n\r\n"
TABLE = {
    "GET with a query and an escaped path": b"GET /echo/a%20b?x=1&y=%20#frag HTTP/1.1\r\nhost: t\r\nX-Mixed-Case: V\r\n\r\n",
    "POST with content-length": b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 11\r\n\r\nhello world",
    "POST chunked": b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n" + CHUNKED_BODY,
    "expect 100-continue": b"POST /echo HTTP/1.1\r\nhost: t\r\nexpect: 100-continue\r\ncontent-length: 3\r\n\r\nabc",
    "pipelined keep-alive": (b"GET /echo?n=1 HTTP/1.1\r\nhost: t\r\n\r\n"
                             b"POST /echo?n=2 HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\nhi"
                             b"GET /chunked HTTP/1.1\r\nhost: t\r\n\r\nGET /sse HTTP/1.1\r\nhost: t\r\n\r\n"),
    "HEAD with content-length": b"HEAD /echo HTTP/1.1\r\nhost: t\r\n\r\n",
    "HEAD of a streamed answer": b"HEAD /chunked HTTP/1.1\r\nhost: t\r\n\r\n",
    "explicit transfer-encoding": b"GET /te HTTP/1.1\r\nhost: t\r\n\r\n",
    "204 without a body": b"GET /empty HTTP/1.1\r\nhost: t\r\n\r\n",
    "server-sent events": b"GET /sse HTTP/1.1\r\nhost: t\r\n\r\n",
    "app fails before the response": b"GET /boom-before HTTP/1.1\r\nhost: t\r\n\r\n",
    "app fails after the response started": b"GET /boom-after HTTP/1.1\r\nhost: t\r\n\r\n",
    "app returns without a response": b"GET /none HTTP/1.1\r\nhost: t\r\n\r\n",
    "body shorter than content-length": b"GET /short HTTP/1.1\r\nhost: t\r\n\r\n",
    "body longer than content-length": b"GET /long HTTP/1.1\r\nhost: t\r\n\r\n",
    "app asks to close": b"GET /close HTTP/1.1\r\nhost: t\r\n\r\nGET /echo?never=1 HTTP/1.1\r\nhost: t\r\n\r\n",
    "client asks to close": b"GET /echo HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
    "HTTP/1.0": b"GET /echo HTTP/1.0\r\nhost: t\r\n\r\n",
    "body over the limit by content-length": (b"POST /limit HTTP/1.1\r\nhost: t\r\ncontent-length: 5000\r\n\r\n"
                                              + b"x" * 5000),
    "chunked body over the limit": (b"POST /limit HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
                                    + b"400\r\n" + b"x" * 1024 + b"\r\n" + b"400\r\n" + b"y" * 1024 + b"\r\n0\r\n\r\n"),
    "body within the limit": b"POST /limit HTTP/1.1\r\nhost: t\r\ncontent-length: 4\r\n\r\nabcd",
    "large answer": b"GET /big HTTP/1.1\r\nhost: t\r\n\r\n",
    "large body (reading paused and resumed)": (b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 200000\r\n\r\n"
                                                + bytes(range(256)) * 781 + b"0" * 64),
    "large chunked body": (b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
                           + (b"8000\r\n" + b"q" * 0x8000 + b"\r\n") * 5 + b"0\r\n\r\n"),
    "HTTP/1.0 asking for keep-alive": b"GET /echo HTTP/1.0\r\nconnection: keep-alive\r\n\r\n",
    "unknown path": b"DELETE /nowhere HTTP/1.1\r\nhost: t\r\n\r\n",
    "unsupported upgrade (served as plain HTTP)": (b"GET /echo?up=1 HTTP/1.1\r\nhost: t\r\nconnection: upgrade\r\n"
                                                   b"upgrade: h2c\r\n\r\n"),
    "websocket upgrade (handed to uvicorn's websocket protocol)": (
        b"GET /echo HTTP/1.1\r\nhost: t\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\n"
        b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"),
    "malformed request line": b"GET /echo HTTP/9.Z\r\n\r\n",
    "malformed header": b"GET /echo HTTP/1.1\r\nhost t\r\n\r\n",
}


@pytest.mark.parametrize("case", list(TABLE))
def test_answers_are_byte_identical_to_uvicorns(servers, case):
    data = TABLE[case] + CLOSE
    theirs = no_date(exchange(servers["theirs"].port, data))
    ours = no_date(exchange(servers["ours"].port, data))
    assert theirs.startswith(b"HTTP/1.1 "), theirs[:200]
    assert ours == theirs


def test_scope_has_what_asgi_asks_for(servers):
    raw = exchange(servers["ours"].port, b"POST /echo/%7Eme?q=%20 HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
                                         b"connection: close\r\n\r\nok")
    doc = json.loads(raw.partition(b"\r\n\r\n")[2])
    assert doc == {"type": "http", "http_version": "1.1", "method": "POST", "path": "/echo/~me", "root_path": "",
                   "scheme": "http", "raw_path": "/echo/%7Eme", "query_string": "q=%20",
                   "headers": [["host", "t"], ["content-length", "2"], ["connection", "close"]], "body": "ok",
                   "state": {}, "asgi": {"version": "3.0", "spec_version": "2.3"}}


def test_pipelined_requests_are_answered_in_order_on_one_connection(servers):
    reqs = b"".join(b"POST /echo?n=%d HTTP/1.1\r\nhost: t\r\ncontent-length: 1\r\n\r\n%d" % (i, i) for i in range(6))
    with connect(servers["ours"].port) as sock:
        sock.sendall(reqs)
        rest = b""
        for i in range(6):
            head, body, rest = read_response(sock, rest)
            assert head.startswith(b"HTTP/1.1 200 OK")
            doc = json.loads(body)
            assert (doc["query_string"], doc["body"]) == (f"n={i}", str(i))
        sock.sendall(b"GET /echo?again=1 HTTP/1.1\r\nhost: t\r\n\r\n")  # the connection is still usable
        head, body, _ = read_response(sock, rest)
        assert json.loads(body)["query_string"] == "again=1"


def test_a_chunked_body_sent_in_pieces_reaches_the_app_whole(servers):
    with connect(servers["ours"].port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n")
        for piece in (b"3\r\nabc\r\n", b"4\r\nd", b"efg\r\n", b"0\r\n\r\n"):
            time.sleep(0.02)
            sock.sendall(piece)
        _, body, _ = read_response(sock)
    assert json.loads(body)["body"] == "abcdefg"


def test_100_continue_comes_before_the_body_is_sent(servers):
    with connect(servers["ours"].port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nhost: t\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n")
        interim = sock.recv(100)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"12345")
        head, body, _ = read_response(sock)
    assert head.startswith(b"HTTP/1.1 200 OK") and json.loads(body)["body"] == "12345"


@pytest.mark.parametrize("path, message", [("/crlf", "Invalid HTTP header value (header b'x-note')."),
                                           ("/bad-name", "Invalid HTTP header name.")])
def test_a_header_with_cr_or_lf_is_refused_before_anything_is_written(servers, path, message):
    with connect(servers["ours"].port) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nhost: t\r\n\r\n" % path.encode())
        head, body, _ = read_response(sock)
        assert head.startswith(b"HTTP/1.1 500 Internal Server Error")  # the app could still answer
        assert json.loads(body) == {"refused": message}
        assert b"evil" not in head and b"x-note" not in head and b"x-b" not in head
        sock.sendall(b"GET /echo HTTP/1.1\r\nhost: t\r\n\r\n")  # and the connection goes on
        head, _, _ = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200 OK")


def test_a_client_leaving_mid_stream_is_seen_as_http_disconnect(servers):
    srv = servers["ours"]
    srv.seen["disconnect"].clear()
    with connect(srv.port) as sock:
        sock.sendall(b"GET /forever HTTP/1.1\r\nhost: t\r\n\r\n")
        first = sock.recv(4096)
        assert first.startswith(b"HTTP/1.1 200 OK") and b"transfer-encoding: chunked" in first
    assert srv.seen["disconnect"].wait(10), "the app never saw http.disconnect"


@pytest.mark.parametrize("http", [OURS, THEIRS])
def test_an_idle_keep_alive_connection_closes_after_the_timeout_counted_from_its_last_answer(servers, http):
    srv = servers["ours" if http == OURS else "theirs"]  # both run with timeout_keep_alive=1
    with connect(srv.port) as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nhost: t\r\n\r\n")
        read_response(sock)
        time.sleep(0.6)  # idle, but less than the timeout: still open
        sock.sendall(b"GET /echo?second=1 HTTP/1.1\r\nhost: t\r\n\r\n")
        _, body, _ = read_response(sock)
        answered = time.monotonic()
        assert json.loads(body)["query_string"] == "second=1"
        assert read_to_eof(sock) == b""
        idle = time.monotonic() - answered
    assert idle >= 0.9  # the timeout restarts with each answer (loop clocks round to milliseconds)


def test_graceful_shutdown_lets_the_request_in_flight_finish():
    with Running(OURS) as srv:
        busy, idle = connect(srv.port), connect(srv.port)
        idle.sendall(b"GET /echo HTTP/1.1\r\nhost: t\r\n\r\n")
        read_response(idle)
        busy.sendall(b"GET /slow HTTP/1.1\r\nhost: t\r\n\r\n")
        assert srv.seen["slow-started"].wait(10)
        srv.server.should_exit = True
        answer = read_to_eof(busy)
        assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b'{"slow": true}')
        assert b"connection: close" in answer  # the answer says the connection ends with it
        assert read_to_eof(idle) == b""  # the idle keep-alive connection was closed
        srv.thread.join(20)
        assert not srv.thread.is_alive()
        busy.close()
        idle.close()


def test_finished_requests_leave_the_servers_task_and_connection_sets(servers):
    srv = servers["ours"]
    for path in ("/echo", "/boom-before", "/boom-after", "/none", "/sse", "/long"):
        exchange(srv.port, b"GET %s HTTP/1.1\r\nhost: t\r\n\r\n" % path.encode() + CLOSE)
    state = srv.server.server_state
    deadline = time.monotonic() + 10
    while (state.tasks or state.connections) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not state.tasks and not state.connections  # what graceful shutdown waits on


def test_the_access_log_reads_as_uvicorns(caplog):
    lines = {}
    for http in (THEIRS, OURS):
        caplog.clear()
        with caplog.at_level("INFO", logger="uvicorn.access"), Running(http, access_log=True) as srv:
            exchange(srv.port, b"GET /echo?q=1 HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        lines[http] = [r.getMessage().split(" - ", 1)[1] for r in caplog.records if r.name == "uvicorn.access"]
    assert lines[OURS] == lines[THEIRS] == ['"GET /echo?q=1 HTTP/1.1" 200']


def test_limit_concurrency_answers_503_as_uvicorn_does():
    with Running(THEIRS, limit_concurrency=1) as theirs, Running(OURS, limit_concurrency=1) as ours:
        data = b"GET /echo HTTP/1.1\r\nhost: t\r\n\r\n"
        a, b = no_date(exchange(theirs.port, data)), no_date(exchange(ours.port, data))
    assert b.startswith(b"HTTP/1.1 503 Service Unavailable") and a == b


def test_python_m_serve_runs_our_protocol_single_process_and_with_workers(router_dir, monkeypatch):
    from serve.__main__ import PROTOCOL, main
    from serve.api.protocol import ServeHttpProtocol

    seen: list[Any] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: seen.append(self.config))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.append(kw))
    monkeypatch.setenv("ROUTER_SERVE_SETTINGS_JSON", "")  # main sets it for the workers; restored afterwards
    main(["--model", str(router_dir), "--port", "1"])
    config = seen.pop()
    assert config.http == PROTOCOL
    config.load()
    assert config.http_protocol_class is ServeHttpProtocol
    main(["--model", str(router_dir), "--port", "1", "--workers", "2"])
    assert seen.pop()["http"] == PROTOCOL  # a module path: each worker process imports the class itself
    monkeypatch.setenv("ROUTER_SERVE_HTTP_PROTOCOL", "uvicorn")
    main(["--model", str(router_dir), "--port", "1"])
    assert seen.pop().http == "httptools"


def test_http_protocol_setting_takes_serve_or_uvicorn():
    from serve.settings import Settings, SettingsError

    assert Settings.load(overrides={"model": "r"}, environ={}).http_protocol == "serve"
    with pytest.raises(SettingsError, match="http_protocol.*serve or uvicorn"):
        Settings.load(overrides={"model": "r", "http_protocol": "h11"}, environ={})
