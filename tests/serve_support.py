"""Helpers of the end-to-end service tests: a tiny router, a free port, ``python -m serve`` as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: the prompts of the synthetic data the tiny routers learn from (and the local provider's pool)
MATH = "Prove rigorously a theorem about prime numbers and derive the closed form of the sum"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tiny_router(directory: Path, *, lam: float = 0.0, seed: int = 0, epsilon: float = 0.0) -> Any:
    """A hashing-encoder kNN router over the synthetic pool, saved to ``directory``; returns the Router.

    ``epsilon`` > 0 makes its rule explore (epsilon-greedy), so its traffic can score other policies off-policy.
    """
    from router.data.synthetic import generate
    from router.decision import DecisionRule
    from router.encoders import HashingEncoder
    from router.predictors import KNNPredictor
    from router.router import Router

    data = generate(600, seed=seed)
    router = Router.fit(data.outcomes, encoder=HashingEncoder(dim=128), predictor=KNNPredictor(k=10),
                        rule=DecisionRule(lam=lam, strategy="epsilon" if epsilon else "greedy", epsilon=epsilon))
    router.save(directory)
    return router


def register_router(name: str, router_dir: Path, root: Path) -> str:
    """Register a saved router directory as a new version of ``name`` in the MLflow registry
    (``MLFLOW_TRACKING_URI``); returns the version number.

    The version is laid out as ``training fit --register`` lays it out (``<source>/artifacts/router``), so
    ``models:/NAME/N`` loads as usual, but without the pyfunc packaging (tests/test_lifecycle.py covers that):
    a second, not ten.
    """
    import shutil

    import mlflow

    client = mlflow.MlflowClient()
    if not client.search_registered_models(f"name='{name}'"):
        client.create_registered_model(name)
    n = len(client.search_model_versions(f"name='{name}'")) + 1
    source = root / f"{name}-{n}"
    shutil.copytree(router_dir, source / "artifacts" / "router")
    return str(client.create_model_version(name, source=str(source)).version)


class Service:
    """``python -m serve`` in a subprocess on a free port; ``stop()`` sends SIGTERM and returns the exit code."""

    def __init__(self, model: str, *, provider_url: str, config: dict[str, Any] | None = None,
                 tmp: Path, extra_args: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "serve", "--model", model, "--port", str(self.port),
               "--provider-url", provider_url, *(extra_args or [])]
        if config is not None:
            path = tmp / f"serve-{self.port}.json"
            path.write_text(json.dumps(config))
            cmd += ["--config", str(path)]
        self.log = tmp / f"serve-{self.port}.log"
        self._fh = self.log.open("w")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self._fh, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Seconds until ``/readyz`` answered 200; raises with the service log when it did not."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"python -m serve exited with {self.proc.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        return time.monotonic() - t0
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"python -m serve was not ready within {timeout} s:\n{self.output()}")

    def output(self) -> str:
        if not self._fh.closed:
            self._fh.flush()
        return self.log.read_text()[-5000:]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._fh.close()
        return int(self.proc.returncode)


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one plain HTTP request; error statuses are returned, not raised."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


class RedisServer:
    """A throw-away ``redis-server`` on 127.0.0.1 (no persistence); ``stop()`` and ``start()`` again on one port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--protected-mode", "yes"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        client.close()
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None
