"""Plain-ASGI primitives for the hot path: read a bounded body, send JSON, SSE and error responses.

Headers are lists of ``(bytes, bytes)`` as ASGI has them, so nothing is re-encoded per request.
"""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from serve.api.errors import APIError

__all__ = ["ClientGone", "header", "header_ascii", "new_request_id", "read_body", "send_bytes", "send_error", "sse_start"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

JSON = (b"content-type", b"application/json")
SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
               (b"x-accel-buffering", b"no")]
_SAFE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")


class ClientGone(Exception):
    """The client disconnected before the request was read or answered."""


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower-case bytes), or None."""
    for k, v in scope["headers"]:
        if k == name:
            return v  # type: ignore[no-any-return]
    return None


def header_ascii(text: str, limit: int = 128) -> bytes:
    """Header-safe bytes: printable ASCII only (others become ``?``), at most ``limit`` characters."""
    text = text[:limit]
    if text.isascii() and text.isprintable():
        return text.encode()
    return "".join(c if " " <= c <= "~" else "?" for c in text).encode()


_counter = 0
_PREFIX = ""  # "req-<pid>-<random>-", drawn once per process; ids add a counter
_PREFIX_PID = -1


def new_request_id(scope: Scope) -> str:
    """The caller's ``x-request-id`` when it is short and plain, else a new unique one."""
    given = header(scope, b"x-request-id")
    if given is not None and _SAFE_ID.match(given):
        return given.decode()
    global _counter, _PREFIX, _PREFIX_PID
    pid = os.getpid()
    if pid != _PREFIX_PID:  # first id of this process (a forked worker too): a new random prefix
        _PREFIX, _PREFIX_PID = f"req-{pid:x}-{os.urandom(6).hex()}-", pid
    _counter += 1
    return f"{_PREFIX}{_counter:x}"


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it grows past ``limit`` bytes."""
    length = header(scope, b"content-length")
    if length is not None:
        try:
            n = int(length)
        except ValueError:
            raise APIError(400, f"content-length {length[:32]!r} is not a number.", code="bad_header") from None
        if n > limit:
            raise _too_large(n, limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ClientGone()
        body = msg.get("body", b"")
        if body:
            size += len(body)
            if size > limit:
                raise _too_large(size, limit)
            chunks.append(body)
        if not msg.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(size: int, limit: int) -> APIError:
    return APIError(413, f"request body is larger than the service's limit of {limit} bytes (got at least {size}); "
                         "send fewer or shorter messages, or raise max_body_bytes in the service settings.",
                    code="request_too_large")


async def send_bytes(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]],
                     content_type: tuple[bytes, bytes] = JSON) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [content_type, (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, err: APIError, headers: list[tuple[bytes, bytes]]) -> None:
    await send_bytes(send, err.status, err.body(), [*headers, *err.headers])


async def sse_start(send: Send, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *headers]})
