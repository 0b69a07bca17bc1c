"""The ASGI application, composed explicitly: lifespan builds the state, one dispatch table routes paths.

Plain ASGI rather than a framework router: the hot path is one dict lookup from the path to its
handler. Nothing is created at import; :func:`create_app` builds an app from :class:`Settings`, and
its lifespan startup loads the policy, the cache, the provider pool, the metrics and the logbook
(:class:`State`), so the port opens only once the service can answer. Shutdown (after the server
has drained in-flight requests) stops following the registry, closes provider connections and
flushes the logbook.

========================  ======  ==============================================================
path                      method  handler
========================  ======  ==============================================================
``/v1/chat/completions``  POST    :func:`serve.api.chat.chat_completions`
``/v1/feedback``          POST    :func:`serve.api.feedback.feedback` (needs ``logbook.dir``)
``/v1/models``            GET     :func:`serve.api.admin.models`
``/healthz``              GET     alive
``/readyz``               GET     ready (policy loaded, not draining), with the policy version
``/metrics``              GET     Prometheus text format
========================  ======  ==============================================================
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from serve.api import admin
from serve.api.chat import chat_completions
from serve.api.errors import APIError
from serve.api.feedback import feedback
from serve.api.http import ClientGone, Receive, Scope, Send, new_request_id, send_error
from serve.decide import Decider, MicroBatcher, encode_in_thread
from serve.logbook import Logbook, make_logbook
from serve.metrics import Metrics
from serve.registry import AliasFollower, Policy, PolicyHolder, load_policy, parse_spec
from serve.settings import ENV_PREFIX, Settings

__all__ = ["ServeApp", "State", "create_app", "create_app_from_env"]

log = logging.getLogger("serve")

CHAT_PATHS = ("/v1/chat/completions", "/chat/completions")
FEEDBACK_PATHS = ("/v1/feedback", "/feedback")


class State:
    """Everything a request needs, built in the lifespan (never at import)."""

    def __init__(self, settings: Settings, holder: PolicyHolder, decider: Decider, pool: Any,
                 provider_error: type[BaseException], cache: Any, cache_embedder: Any, metrics: Metrics,
                 logbook: Logbook, follower: AliasFollower | None) -> None:
        self.settings = settings
        self.holder = holder
        self.decider = decider
        self.pool = pool
        self.provider_error = provider_error
        self.cache = cache
        self.cache_embedder = cache_embedder
        self.metrics = metrics
        self.logbook = logbook
        self.follower = follower
        self.online: Any = None  # serve.online.OnlineLearner when online learning is on
        self._snapshots: asyncio.Task[None] | None = None
        self.ready = False
        self.draining = False
        self.supported_params: frozenset[str] | None = None  # generation parameters the providers take
        self._extra_models = frozenset(_configured_models(settings.providers))
        self._passthrough: tuple[Policy | None, frozenset[str]] = (None, frozenset())

    def passthrough_models(self, policy: Policy) -> frozenset[str]:
        """Models a request may name directly: the policy's pool plus any configured provider model."""
        cached_for, models = self._passthrough
        if cached_for is not policy:
            models = policy.models | self._extra_models
            self._passthrough = (policy, models)
        return models

    def provider_health(self) -> Any:
        health = getattr(self.pool, "health", None)
        try:
            return health() if health is not None else {}
        except Exception as exc:  # health is informative; it must never fail readiness
            return {"error": str(exc)}


def _configured_models(providers: dict[str, Any]) -> list[str]:
    models = providers.get("models") if isinstance(providers, dict) else None
    if isinstance(models, dict):
        return [str(m) for m in models]
    if isinstance(models, list):
        return [str(m.get("name", m.get("model", ""))) if isinstance(m, dict) else str(m) for m in models]
    return []


Handler = Callable[[State, Send], Awaitable[int]]
GET_ROUTES: dict[str, Handler] = {
    "/v1/models": admin.models, "/models": admin.models,
    "/healthz": admin.healthz, "/readyz": admin.readyz, "/metrics": admin.metrics,
}


class ServeApp:
    """The ASGI callable. ``state`` is None until lifespan startup has finished."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state: State | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        t0 = time.perf_counter()
        path = scope["path"]
        state = self.state
        if state is None or not state.ready:
            await send_error(send, APIError(503, "the service is starting; retry in a moment.", code="not_ready"), [])
            return
        metrics = state.metrics
        if path in CHAT_PATHS:
            rid = new_request_id(scope)
            if scope["method"] != "POST":
                status = await _error(send, APIError(405, f"{path} takes POST.", code="method_not_allowed"), rid)
                metrics.request(path, status)
                return
            metrics.inflight += 1
            try:
                status = await chat_completions(state, scope, receive, send, rid, t0)
            except APIError as err:
                status = await _error(send, err, rid)
            except ClientGone:
                status = 499
            except Exception:
                log.exception("request %s failed", rid)
                status = await _error(send, APIError(500, f"internal error while serving request {rid}; "
                                                          "report it with this id.", code="internal_error"), rid)
            finally:
                metrics.inflight -= 1
            metrics.request(CHAT_PATHS[0], status)
            return
        if path in FEEDBACK_PATHS:
            await self._feedback(state, scope, receive, send)
            return
        handler = GET_ROUTES.get(path)
        if handler is None:
            status = await _error(send, APIError(404, f"no route {path[:100]!r}; this service serves "
                                                      "POST /v1/chat/completions, POST /v1/feedback, GET /v1/models, /healthz, /readyz, "
                                                      "/metrics.", code="not_found"), None)
            metrics.request("other", status)
            return
        if scope["method"] not in ("GET", "HEAD"):
            status = await _error(send, APIError(405, f"{path} takes GET.", code="method_not_allowed"), None)
        else:
            status = await handler(state, send)
        metrics.request(path, status)

    async def _feedback(self, state: State, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            status = await _error(send, APIError(405, f"{scope['path']} takes POST.", code="method_not_allowed"), None)
        else:
            try:
                status = await feedback(state, scope, receive, send)
            except APIError as err:
                status = await _error(send, err, None)
            except ClientGone:
                status = 499
            except Exception:
                log.exception("feedback failed")
                status = await _error(send, APIError(500, "internal error while recording feedback; "
                                                          "retry, and report it if it persists.",
                                                     code="internal_error"), None)
        state.metrics.feedback[status] += 1
        state.metrics.request(FEEDBACK_PATHS[0], status)

    # ------------------------------------------------------------------ lifespan
    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    self.state = await build_state(self.settings)
                    self.state.ready = True
                except Exception as exc:
                    log.error("startup failed: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                if self.state is not None:
                    await close_state(self.state)
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _error(send: Send, err: APIError, rid: str | None) -> int:
    headers = [(b"x-request-id", rid.encode())] if rid else []
    try:
        await send_error(send, err, headers)
    except RuntimeError:  # the response had started; nothing more can be said on it
        log.warning("error after the response started: %s", err.message)
    return err.status


async def build_state(settings: Settings) -> State:
    """Load the policy, cache, provider pool and logbook (blocking parts run in a thread)."""
    t0 = time.perf_counter()
    spec = parse_spec(settings.model)
    policy = await asyncio.to_thread(load_policy, spec)
    holder = PolicyHolder(policy)
    metrics = Metrics()
    metrics.policy_version = policy.version
    loop = asyncio.get_running_loop()
    decider = Decider(holder, fallbacks=settings.fallbacks, max_batch=settings.batch_max,
                      window_s=settings.batch_window_ms / 1000.0,
                      in_thread=encode_in_thread(settings.encode_in_thread, policy.router.encoder),
                      on_batch=metrics.batch_sizes.observe)
    cache: Any = None
    cache_embedder: Any = None
    if settings.cache.enabled:
        cache = await asyncio.to_thread(_build_cache, settings)
        cache_embedder = MicroBatcher(lambda texts: list(cache.embed(texts)), max_batch=settings.batch_max,
                                      window_s=settings.batch_window_ms / 1000.0,
                                      in_thread=encode_in_thread(settings.encode_in_thread, cache.encoder_),
                                      name="cache-embed")
    from serve.providers import SUPPORTED_PARAMS, ProviderError, ProviderPool

    pool = ProviderPool.from_config(settings.providers or None, settings.provider_url, list(policy.router.models))
    follower = None
    if spec.kind == "alias" and settings.registry_poll_s > 0:
        def swapped(old: Policy, new: Policy) -> None:
            def apply() -> None:
                metrics.policy_swaps += 1
                metrics.policy_version = new.version
            loop.call_soon_threadsafe(apply)

        def failed(message: str) -> None:
            log.warning("%s", message)

            def count() -> None:
                metrics.policy_errors += 1
            loop.call_soon_threadsafe(count)

        follower = AliasFollower(spec, holder, settings.registry_poll_s, on_swap=swapped, on_error=failed)
        follower.start()
    state = State(settings, holder, decider, pool, ProviderError, cache, cache_embedder, metrics,
                  make_logbook(settings.logbook, on_commit=metrics.committed), follower)
    state.supported_params = frozenset(SUPPORTED_PARAMS)
    if settings.online.enabled:
        await asyncio.to_thread(_start_online, state, policy.router)
        if settings.online.snapshot_dir and settings.online.snapshot_s > 0:
            state._snapshots = asyncio.create_task(_snapshot_every(state))
    log.info("serving %s (%s) after %.1f s", policy.version, settings.model, time.perf_counter() - t0)
    return state


def _start_online(state: State, router: Any) -> None:
    """Build the online learner over the served router and hook it to decisions and feedback."""
    from serve.online import OnlineLearner

    on = state.settings.online
    learner = OnlineLearner(router, policy=on.policy, lam=on.lam, epsilon=on.epsilon, alpha=on.alpha,
                            warm_prompts=on.warm_prompts, warm_weight=on.warm_weight,
                            max_explore_share=on.max_explore_share, seed=on.seed)
    state.online = learner
    state.decider.online = learner
    metrics = state.metrics

    def learn(row: dict[str, Any]) -> None:
        if learner.on_feedback(row):
            metrics.online_updates += 1

    state.logbook.feedback_listeners.append(learn)  # type: ignore[attr-defined]


async def _snapshot_every(state: State) -> None:
    on = state.settings.online
    while True:
        await asyncio.sleep(on.snapshot_s)
        await asyncio.to_thread(_snapshot, state)


def _snapshot(state: State) -> None:
    on = state.settings.online
    if state.online is None or not on.snapshot_dir:
        return
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    path = state.online.snapshot(os.path.join(on.snapshot_dir, f"online-{stamp}-{os.getpid()}"))
    log.info("online policy snapshot (%d updates) written to %s", state.online.updates_, path)


def _build_cache(settings: Settings) -> Any:
    from router.encoders import encoder_from_config
    from serve.cache import SemanticCache

    cs = settings.cache
    encoder = encoder_from_config(dict(cs.encoder)) if cs.encoder else None
    cache = SemanticCache(encoder, threshold=cs.threshold, ttl_s=cs.ttl_s, max_entries=cs.max_entries)
    cache.embed(["warm up the cache encoder"])
    return cache


async def close_state(state: State) -> None:
    state.draining = True
    if state._snapshots is not None:
        state._snapshots.cancel()
    if state.online is not None and state.settings.online.snapshot_dir:
        await asyncio.to_thread(_snapshot, state)
    if state.follower is not None:
        await asyncio.to_thread(state.follower.stop)
    await state.pool.aclose()
    state.decider.close()
    if state.cache_embedder is not None:
        state.cache_embedder.close()
    await asyncio.to_thread(state.logbook.close)


def create_app(settings: Settings) -> ServeApp:
    """The ASGI app for ``settings`` (state is built when the server runs its lifespan)."""
    return ServeApp(settings)


def create_app_from_env() -> ServeApp:
    """Factory for worker processes: settings arrive as JSON in ``ROUTER_SERVE_SETTINGS_JSON``."""
    import json

    raw = os.environ.get(ENV_PREFIX + "SETTINGS_JSON")
    if not raw:
        raise RuntimeError(f"{ENV_PREFIX}SETTINGS_JSON is not set; start the service with `python -m serve`.")
    return create_app(Settings.from_dict(json.loads(raw)))
