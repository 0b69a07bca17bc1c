"""``GET /v1/models``, ``/healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import orjson

from serve.api.http import Send, send_bytes

if TYPE_CHECKING:
    from serve.app import State

__all__ = ["healthz", "metrics", "models", "readyz"]

_TEXT = (b"content-type", b"text/plain; version=0.0.4; charset=utf-8")


async def models(state: State, send: Send) -> int:
    """The routing names (``router``, ``router-<profile>``) then every model that passes through."""
    policy = state.holder.current
    created = int(policy.loaded_at)
    data = [{"id": "router", "object": "model", "created": created, "owned_by": "router",
             "policy_version": policy.version}]
    data += [{"id": f"router-{name}", "object": "model", "created": created, "owned_by": "router",
              "policy_version": policy.version} for name in state.settings.profiles]
    data += [{"id": m, "object": "model", "created": created, "owned_by": "provider"}
             for m in sorted(state.passthrough_models(policy))]
    await send_bytes(send, 200, orjson.dumps({"object": "list", "data": data}), [])
    return 200


async def healthz(state: State, send: Send) -> int:
    """Alive: the process answers (even while draining)."""
    await send_bytes(send, 200, b'{"status":"ok"}', [])
    return 200


async def readyz(state: State, send: Send) -> int:
    """Ready to serve chat requests: a policy is loaded and the service is not shutting down."""
    policy = state.holder.current
    ready = state.ready and not state.draining
    body = {"status": "ready" if ready else ("draining" if state.draining else "starting"),
            "policy_version": policy.version, "model": policy.source, "models": list(policy.router.models),
            "policy_age_s": round(time.time() - policy.loaded_at, 1),
            "cache": state.cache is not None, "providers": state.provider_health()}
    status = 200 if ready else 503
    await send_bytes(send, status, orjson.dumps(body), [])
    return status


async def metrics(state: State, send: Send) -> int:
    await send_bytes(send, 200, state.metrics.render().encode(), [], content_type=_TEXT)
    return 200
