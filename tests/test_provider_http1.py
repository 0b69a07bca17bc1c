"""The small HTTP/1.1 client of whole provider answers, against raw servers on loopback."""

from __future__ import annotations

import asyncio

import pytest

from serve.providers.calls import CallError
from serve.providers.http1 import Http1Client


async def _serve(answer):
    """A loopback server whose handler ``answer(request_bytes, writer)`` writes the raw reply."""
    seen = {"connections": 0, "requests": []}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen["connections"] += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                body = await reader.readexactly(length)
                seen["requests"].append((head, body))
                if await answer(head + body, writer) is False:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/v1/chat/completions", seen


def _ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


def test_answers_come_back_whole_on_one_kept_alive_connection():
    async def main():
        async def answer(req, w):
            w.write(_ok(b'{"n": %d}' % len(req)))

        server, url, seen = await _serve(answer)
        client = Http1Client()
        got = [await client.post(url, b'{"q": %d}' % i, {"content-type": "application/json", "x-k": "v"})
               for i in range(5)]
        await client.aclose()
        server.close()
        return got, seen

    got, seen = asyncio.run(main())
    assert [g[0] for g in got] == [200] * 5 and all(g[2].startswith(b'{"n": ') for g in got)
    assert got[0][1]["content-type"] == "application/json"
    assert seen["connections"] == 1  # kept alive and reused
    head, body = seen["requests"][3]
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n") and b"\r\nx-k: v\r\n" in head
    assert body == b'{"q": 3}'


def test_chunked_answers_and_error_statuses_with_retry_after():
    async def main():
        async def answer(req, w):
            if b'"fail"' in req:
                w.write(b"HTTP/1.1 429 Too Many\r\nRetry-After: 7\r\ncontent-length: 2\r\n\r\n{}")
            else:
                w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n: 1\r\n1\r\n}\r\n0\r\n\r\n")

        server, url, _ = await _serve(answer)
        client = Http1Client()
        ok = await client.post(url, b'"x"', {})
        bad = await client.post(url, b'"fail"', {})
        await client.aclose()
        server.close()
        return ok, bad

    ok, bad = asyncio.run(main())
    assert ok == (200, {"transfer-encoding": "chunked"}, b'{"a": 1}')
    assert bad[0] == 429 and bad[1]["retry-after"] == "7"


@pytest.mark.parametrize("reply, kind", [
    (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"cut\": ", "truncated"),
    (b"this is not http\r\n\r\n", "malformed"),
    (b"", "connection"),
])
def test_a_broken_answer_is_a_clear_error_and_the_connection_is_not_reused(reply, kind):
    async def main():
        async def answer(req, w):
            if b'"good"' in req:
                w.write(_ok(b"{}"))
                return True
            w.write(reply)
            await w.drain()
            return False  # close the connection

        server, url, seen = await _serve(answer)
        client = Http1Client()
        with pytest.raises(CallError) as err:
            await client.post(url, b'"bad"', {})
        after = await client.post(url, b'"good"', {})
        await client.aclose()
        server.close()
        return err.value, after, seen

    err, after, seen = asyncio.run(main())
    assert err.kind == kind
    assert after[0] == 200 and seen["connections"] == 2


def test_a_cancelled_call_closes_its_connection():
    async def main():
        async def answer(req, w):
            if b'"slow"' in req:
                await asyncio.sleep(5)
            w.write(_ok(b"{}"))

        server, url, seen = await _serve(answer)
        client = Http1Client()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await client.post(url, b'"slow"', {})
        idle_after_cancel = client.idle_connections()
        ok = await client.post(url, b'"fast"', {})
        await client.aclose()
        server.close()
        return idle_after_cancel, ok, seen

    idle, ok, seen = asyncio.run(main())
    assert idle == 0 and ok[0] == 200 and seen["connections"] == 2


def test_nothing_listening_is_a_connection_error():
    async def main():
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        with pytest.raises(CallError) as err:
            await Http1Client().post(f"http://127.0.0.1:{port}/x", b"{}", {})
        return err.value

    assert asyncio.run(main()).kind == "connection"
