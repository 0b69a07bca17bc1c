"""Starting the local provider: the command line, and :func:`running` for tests and benchmarks.

``python -m serve.provider --port 9000 [--host 127.0.0.1] [--data demo|routerbench|PATH] [--latency-ms N]
[--seed S] [--max-chunks K] [--fault MODEL=KIND[:COUNT]]...`` prints one line
``local provider: http://HOST:PORT (...)`` once it listens (``--port 0`` picks a free port), and stops
cleanly on SIGINT / SIGTERM.

:func:`running` starts one in a background thread of this process (or, with ``process=True``, as a
subprocess) and stops it on exit, stalled connections included; it yields a :class:`ProviderHandle`, the
base URL as a ``str`` with helpers to inject faults and read the statistics over HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any

from serve.provider.answers import AnswerBook
from serve.provider.faults import Fault, FaultTable, parse_fault
from serve.provider.server import ProviderServer

__all__ = ["ProviderHandle", "build_book", "main", "running"]


class ProviderHandle(str):
    """The base URL of a running local provider (``http://127.0.0.1:PORT``), with admin helpers.

    ``pid`` is the subprocess's id when started with ``process=True`` (else this process's).
    """

    pid: int = os.getpid()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def add_fault(self, model: str, kind: str, count: int | None = None, **extra: Any) -> dict[str, Any]:
        """``POST /_faults``: e.g. ``add_fault("gpt-4", "429", count=2, retry_after=0.1)``."""
        body: dict[str, Any] = {"model": model, "kind": kind, **extra}
        if count is not None:
            body["count"] = count
        result: dict[str, Any] = self._call("POST", "/_faults", body)
        return result

    def clear_faults(self) -> None:
        """``DELETE /_faults``."""
        self._call("DELETE", "/_faults")

    def stats(self) -> dict[str, Any]:
        """``GET /_stats``."""
        result: dict[str, Any] = self._call("GET", "/_stats")
        return result


def build_book(data: str | None = None, *, seed: int = 0, latency_ms: float | None = None,
               max_chunks: int = 16) -> AnswerBook:
    """The answer book of a data source name / path, or an open pool when ``data`` is None."""
    if data is None:
        return AnswerBook(None, seed=seed, latency_ms=latency_ms, max_chunks=max_chunks)
    return AnswerBook.from_data(data, seed=seed, latency_ms=latency_ms, max_chunks=max_chunks)


class _ThreadServer:
    """A :class:`ProviderServer` on its own event loop in a daemon thread."""

    def __init__(self, server: ProviderServer, host: str, port: int) -> None:
        self.server, self.host, self.port = server, host, port
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name=f"local-provider-{port}", daemon=True)

    def _main(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            self.port = loop.run_until_complete(self.server.start(self.host, self.port))
        except BaseException as exc:  # e.g. the port is taken: report it to the starting thread
            self.error = exc
            self.ready.set()
            loop.close()
            return
        self.ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self.server.close())
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    def start(self) -> int:
        self.thread.start()
        self.ready.wait(30)
        if self.error is not None:
            raise self.error
        return self.port

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


@contextlib.contextmanager
def running(
    port: int = 0,
    *,
    host: str = "127.0.0.1",
    data: str | None = None,
    latency_ms: float | None = None,
    seed: int = 0,
    faults: Sequence[str | Fault] = (),
    max_chunks: int = 16,
    process: bool = False,
) -> Iterator[ProviderHandle]:
    """Run a local provider for the duration of a ``with`` block; yields its base URL.

    Args:
        port: port to listen on (0: a free one).
        data: ``"demo"``, ``"routerbench"``, a path to outcomes, or None for an open pool (any model name).
        latency_ms: fixed total latency per call (None: the per-model latency models).
        faults: faults active from the start, as ``MODEL=KIND[:COUNT]`` strings or :class:`Fault`.
        process: run ``python -m serve.provider`` as a subprocess instead of a thread of this process.

    Example:
        >>> import urllib.request, json
        >>> with running(latency_ms=0) as url:
        ...     req = urllib.request.Request(url + "/v1/chat/completions", method="POST",
        ...         data=json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}],
        ...                          "max_tokens": 3}).encode())
        ...     json.loads(urllib.request.urlopen(req).read())["usage"]["completion_tokens"]
        3
    """
    parsed = [f if isinstance(f, Fault) else parse_fault(f) for f in faults]
    if process:
        with _subprocess(port, host, data, latency_ms, seed, parsed, max_chunks) as url:
            yield url
        return
    table = FaultTable()
    for f in parsed:
        table.add(f)
    server = ProviderServer(build_book(data, seed=seed, latency_ms=latency_ms, max_chunks=max_chunks), table)
    ts = _ThreadServer(server, host, port)
    actual = ts.start()
    try:
        yield ProviderHandle(f"http://{host}:{actual}")
    finally:
        ts.stop()


@contextlib.contextmanager
def _subprocess(port: int, host: str, data: str | None, latency_ms: float | None, seed: int,
                faults: list[Fault], max_chunks: int) -> Iterator[ProviderHandle]:
    cmd = [sys.executable, "-m", "serve.provider", "--port", str(port), "--host", host, "--seed", str(seed),
           "--max-chunks", str(max_chunks)]
    if data is not None:
        cmd += ["--data", data]
    if latency_ms is not None:
        cmd += ["--latency-ms", str(latency_ms)]
    for f in faults:
        cmd += ["--fault", f"{f.model}={f.kind}" + (f":{f.count}" if f.count is not None else "")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout is not None else ""
        if not line.startswith("local provider: http://"):
            err = proc.stderr.read() if proc.stderr is not None and proc.poll() is not None else ""
            raise RuntimeError(f"the local provider did not start: {line.strip()} {err.strip()}")
        handle = ProviderHandle(line.split()[2])
        handle.pid = proc.pid
        yield handle
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serve.provider",
                                description="A local stand-in for LLM providers (OpenAI, Anthropic, Gemini, "
                                            "Ollama wire protocols) for tests, demos and benchmarks.")
    p.add_argument("--port", type=int, default=9000, help="port to listen on (0: a free one; default 9000)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--data", default=None,
                   help="demo | routerbench | PATH to outcomes: serve that pool with its logged lengths and "
                        "latencies (default: answer any model name)")
    p.add_argument("--latency-ms", type=float, default=None,
                   help="fixed total latency per call in ms (default: per-model latency models)")
    p.add_argument("--seed", type=int, default=0, help="seed of the answers and drawn latencies (default 0)")
    p.add_argument("--max-chunks", type=int, default=16, help="most stream chunks per answer (default 16)")
    p.add_argument("--fault", action="append", default=[], metavar="MODEL=KIND[:COUNT]",
                   help="inject a fault from the start (repeatable); MODEL may be '*'")
    return p


async def _serve(server: ProviderServer, host: str, port: int) -> None:
    actual = await server.start(host, port)
    book = server.book
    pool = "any model" if book.open_pool else f"{len(book.model_names())} models of {book.source}"
    latency = "per model" if book.latency_ms is None else f"{book.latency_ms:g} ms"
    print(f"local provider: http://{host}:{actual} ({pool}; latency {latency})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close()


def main(argv: Sequence[str] | None = None) -> int:
    """The ``python -m serve.provider`` entry point."""
    args = _parser().parse_args(argv)
    from router.errors import RoutingError

    try:
        table = FaultTable()
        for text in args.fault:
            table.add(parse_fault(text))
        book = build_book(args.data, seed=args.seed, latency_ms=args.latency_ms, max_chunks=args.max_chunks)
    except RoutingError as exc:
        print(f"python -m serve.provider: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(ProviderServer(book, table), args.host, args.port))
    except OSError as exc:
        print(f"python -m serve.provider: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0
