"""``python -m serve``: the routing service (OpenAI-compatible) on uvicorn with uvloop and our HTTP/1.1 protocol.

    python -m serve --model DIR|models:/NAME@ALIAS [--port 8000] [--host 127.0.0.1]
                    [--provider-url http://127.0.0.1:9000] [--config FILE] [--workers N]

Without a provider configuration every model is sent to the OpenAI-compatible endpoint at
``--provider-url`` (start one with ``python -m serve.provider --port 9000``). ``--workers N`` runs N
uvicorn worker processes that accept on one listening socket bound by the parent; with budgets or
rate limits set they need ``redis_url`` (shared limits) or ``per_worker_limits: true``, else the
service exits at once with code 2 and one line saying so. SIGINT/SIGTERM
stop accepting, let in-flight requests finish (up to ``shutdown_timeout_s``), then close.
Settings come from ``--config`` and ``ROUTER_SERVE_*`` variables (see :mod:`serve.settings`); a flag
given on the command line wins.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path
from typing import Any

# A request's math is a few small matrix products: one thread is fastest. Extra BLAS / OpenMP threads
# only spin-wait between requests, burning the core the service is given and delaying the event loop.
# Set before numpy, torch or faiss load (a value the operator exported is kept).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

__all__ = ["PROTOCOL", "main"]

#: the protocol class uvicorn runs (``http_protocol: serve``), as ``uvicorn.Config(http=...)`` takes it
PROTOCOL = "serve.api.protocol:ServeHttpProtocol"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="router directory, models:/NAME@ALIAS or models:/NAME/VERSION")
    p.add_argument("--port", type=int, help="TCP port (default 8000)")
    p.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--provider-url", dest="provider_url",
                   help="OpenAI-compatible endpoint for models without a provider entry (default http://127.0.0.1:9000)")
    p.add_argument("--config", help="settings file (YAML or JSON)")
    p.add_argument("--workers", type=int, help="worker processes (default 1)")
    p.add_argument("--log-level", dest="log_level", help="critical, error, warning, info (default), debug")
    return p


def _preflight(model: str) -> None:
    """Cheap checks of --model before the server starts, so mistakes fail fast with one line."""
    from router.errors import PersistenceError
    from serve.registry import parse_spec

    spec = parse_spec(model)
    if spec.kind == "dir":
        path = Path(model)
        if not path.is_dir():
            raise PersistenceError(f"--model {model}: no such directory; give a router directory written by "
                             "`python -m training fit --out DIR`, or models:/NAME@ALIAS.")
        if not (path / "router.json").is_file():
            raise PersistenceError(f"--model {model}: no router.json in that directory; give a directory "
                             "written by Router.save / `python -m training fit --out DIR`.")
    elif spec.kind == "alias":
        from serve.registry import resolve_alias

        resolve_alias(spec)


def main(argv: list[str] | None = None) -> int:
    # one worker process serves on one core: numeric libraries must not spin up a thread per core
    # (FAISS's OpenMP threads alone cost more CPU than a decision); set before numpy/faiss load
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    args = _parser().parse_args(argv)
    from router.errors import RoutingError
    from serve.settings import ENV_PREFIX, Settings

    try:
        settings = Settings.load(args.config, overrides={
            "model": args.model, "port": args.port, "host": args.host, "provider_url": args.provider_url,
            "workers": args.workers, "log_level": args.log_level})
        _preflight(settings.model)
        from serve.tenants import workers_problem

        problem, note = workers_problem(settings)
    except RoutingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if note is not None:
        print(f"warning: {note}", file=sys.stderr, flush=True)

    import uvicorn

    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)  # the service's own messages, as uvicorn's
    log_config["loggers"]["serve"] = {"handlers": ["default"], "level": settings.log_level.upper(), "propagate": False}
    # The HTTP/1.1 protocol is our own class (serve.api.protocol: uvicorn's httptools protocol with a leaner
    # per-request path), named by module path so worker processes import it too.
    http = PROTOCOL if settings.http_protocol == "serve" else "httptools"
    common: dict[str, Any] = {"log_config": log_config, "host": settings.host, "port": settings.port, "loop": "uvloop",
                              "http": http, "lifespan": "on", "log_level": settings.log_level,
                              "access_log": settings.access_log,
                              "timeout_graceful_shutdown": max(1, round(settings.shutdown_timeout_s))}
    if settings.workers > 1:
        os.environ[ENV_PREFIX + "SETTINGS_JSON"] = settings.to_json()
        uvicorn.run("serve.app:create_app_from_env", factory=True, workers=settings.workers, **common)
        return 0
    from serve.app import create_app

    config = uvicorn.Config(create_app(settings), **common)
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 3


if __name__ == "__main__":
    raise SystemExit(main())
