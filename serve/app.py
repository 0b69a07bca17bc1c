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
``/v1/decisions/{id}``    GET     :func:`serve.api.manage.decisions` (why a request went where)
``/v1/admin/...``         *       :func:`serve.api.manage.dispatch_admin` (keys, limits, reload, audit)
``/dashboard``            GET     :func:`serve.api.dashboard.page` (static; polls ``/v1/dashboard``)
========================  ======  ==============================================================

Every path but ``/healthz`` and ``/readyz`` needs a credential when authentication is on, and the
role's permission for the path (:data:`PERMISSIONS`, :mod:`serve.tenants.auth`); the principal is put
in the ASGI scope as ``scope["principal"]`` for the handlers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

from serve.api import admin, dashboard, manage
from serve.api.chat import chat_completions
from serve.api.errors import APIError
from serve.api.feedback import feedback
from serve.api.http import ClientGone, Receive, Scope, Send, header, new_request_id, send_error
from serve.decide import Decider, encode_in_thread
from serve.logbook import Logbook, make_logbook
from serve.metrics import Metrics
from serve.registry import AliasFollower, Policy, PolicyHolder, load_policy, parse_spec
from serve.settings import ENV_PREFIX, Settings
from serve.tenants import Tenancy
from serve.tenants.auth import Principal, forbidden

__all__ = ["ServeApp", "State", "create_app", "create_app_from_env"]

log = logging.getLogger("serve")

CHAT_PATHS = ("/v1/chat/completions", "/chat/completions")
#: the permission each path needs (None: public); prefixes below, anything else needs any credential
PERMISSIONS: dict[str, str | None] = {
    "/v1/chat/completions": "route", "/chat/completions": "route", "/v1/feedback": "feedback",
    "/feedback": "feedback", "/v1/models": "models", "/models": "models", "/metrics": "metrics",
    "/healthz": None, "/readyz": None, "/dashboard": None, "/v1/dashboard": "dashboard",
}
PREFIX_PERMISSIONS = (("/v1/admin/", "admin"), ("/v1/decisions/", "decisions"))
REFUSALS = (401, 402, 403, 413, 429)
FEEDBACK_PATHS = ("/v1/feedback", "/feedback")


class State:
    """Everything a request needs, built in the lifespan (never at import)."""

    def __init__(self, settings: Settings, holder: PolicyHolder, decider: Decider, pool: Any,
                 provider_error: type[BaseException], cache: Any, lookup: Any, metrics: Metrics,
                 logbook: Logbook, follower: AliasFollower | None, tenancy: Tenancy) -> None:
        self.settings = settings
        self.holder = holder
        self.decider = decider
        self.pool = pool
        self.provider_error = provider_error
        self.cache = cache
        self.lookup = lookup  # serve.lookup.Lookup when the cache is on
        self.metrics = metrics
        self.logbook = logbook
        self.follower = follower
        self.tenancy = tenancy
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


#: the garbage collector's thresholds in a service process (see :func:`tune_gc`)
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Set up the garbage collector for a long-running service process, once its state is loaded.

    Everything loaded at start (the router, encoders, indexes: hundreds of thousands of objects) is
    moved out of the collector's sight (``gc.freeze``), and the youngest generation is collected
    after 50,000 new objects instead of 700. With Python's defaults, at 1,000 requests/s the collector
    ran 165 times in six seconds, 0.31 s in all, and a full collection stopped the event loop for
    169 ms; frozen and with these thresholds it ran once (14 ms), and the benchmark step's P99 fell
    from 753 to 96 ms. Called by ``python -m serve`` (and its workers), not when the app is embedded.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class ServeApp:
    """The ASGI callable. ``state`` is None until lifespan startup has finished.

    ``tune_gc``: after startup, set up the garbage collector for a service process (:func:`tune_gc`);
    ``python -m serve`` does, an app embedded in another process (tests, notebooks) does not.
    """

    def __init__(self, settings: Settings, *, tune_gc: bool = False) -> None:
        self.settings = settings
        self.tune_gc = tune_gc
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
        perm = PERMISSIONS.get(path, "")
        if perm == "":
            perm = next((p for prefix, p in PREFIX_PERMISSIONS if path.startswith(prefix)), "any")
        principal: Principal | None = None
        if perm is not None:
            try:
                principal = await state.tenancy.auth.authenticate(header(scope, b"authorization"), time.time())
                if perm != "any" and not principal.can(perm):
                    raise forbidden(principal, perm, f"{scope['method']} {path[:100]}")
            except APIError as err:
                status = await _error(send, err, None)
                _refused(state, scope, principal, err)
                metrics.request("refused", status)
                return
            scope["principal"] = principal
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
                if status in REFUSALS:
                    _refused(state, scope, principal, err)
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
        if path == "/dashboard" or path == "/v1/dashboard":
            if scope["method"] != "GET":
                status = await _error(send, APIError(405, f"{path} takes GET.", code="method_not_allowed"), None)
            elif principal is None:
                status = await dashboard.page(state, send)
            else:
                status = await dashboard.data(state, send, principal)
            metrics.request(path, status)
            return
        if perm in ("admin", "decisions") and principal is not None:
            try:
                if perm == "admin":
                    status = await manage.dispatch_admin(state, scope, receive, send, principal)
                else:
                    status = await manage.decisions(state, scope, receive, send, principal)
            except APIError as err:
                status = await _error(send, err, None)
            except ClientGone:
                status = 499
            metrics.request(perm, status)
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
                    if self.tune_gc:
                        tune_gc()
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


def _refused(state: State, scope: Scope, principal: Principal | None, err: APIError) -> None:
    """Audit a refusal (who, what, why); cheap: one queued record."""
    audit = state.tenancy.audit
    if audit.enabled:
        audit.record("refusal", principal.credential if principal else "unauthenticated",
                     principal.tenant if principal else None, status=err.status, code=err.code,
                     path=scope["path"][:200], message=err.message[:300])


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
    cache: Any = None
    lookup: Any = None
    if settings.cache.enabled:
        cache = await asyncio.to_thread(_build_cache, settings)
    decider = Decider(holder, fallbacks=settings.fallbacks, max_batch=settings.batch_max,
                      window_s=settings.batch_window_ms / 1000.0, target=settings.batch_target,
                      in_thread=encode_in_thread(settings.encode_in_thread, policy.router.encoder),
                      on_batch=metrics.batch_sizes.observe,
                      shared_encoder=_identity(cache.encoder_) if cache is not None else None)
    if cache is not None:
        from serve.lookup import Lookup

        lookup = Lookup(cache, decider, embed_for_cache, max_batch=settings.batch_max,
                        window_s=settings.batch_window_ms / 1000.0, encode_in_thread_setting=settings.encode_in_thread,
                        on_batch=metrics.batch_sizes.observe, target=settings.batch_target)
    from serve.providers import SUPPORTED_PARAMS, ProviderError, ProviderPool

    pool = ProviderPool.from_config(settings.providers or None, settings.provider_url, list(policy.router.models))
    tenancy = await asyncio.to_thread(build_tenancy, settings)
    tenancy.start()
    ex = settings.experiment
    if ex.name:
        from serve.experiments import Experiment

        c_spec = parse_spec(ex.challenger)
        challenger = await asyncio.to_thread(load_policy, c_spec)
        c_holder = PolicyHolder(challenger)
        c_decider = Decider(c_holder, fallbacks=settings.fallbacks, max_batch=settings.batch_max,
                            window_s=settings.batch_window_ms / 1000.0, target=settings.batch_target,
                            in_thread=encode_in_thread(settings.encode_in_thread, challenger.router.encoder))
        experiment = tenancy.experiment = Experiment(ex.name, ex.mode, ex.split, ex.sticky, c_decider, c_holder,
                                                     lam=ex.lam)
        if c_spec.kind == "alias" and settings.registry_poll_s > 0:
            def challenger_swapped(new: Policy) -> None:
                experiment.swaps_ += 1

            def challenger_failed() -> None:
                experiment.follow_errors_ += 1
            experiment.follower = follow(c_spec, c_holder, settings.registry_poll_s, tenancy.audit, loop,
                                         challenger_swapped, challenger_failed, name="challenger-follower")
        log.info("experiment %s (%s): challenger %s, split %g by %s", ex.name, ex.mode, challenger.version,
                 ex.split, ex.sticky)
    follower = None
    if spec.kind == "alias" and settings.registry_poll_s > 0:
        def champion_swapped(new: Policy) -> None:
            metrics.policy_swaps += 1
            metrics.policy_version = new.version

        def champion_failed() -> None:
            metrics.policy_errors += 1
        follower = follow(spec, holder, settings.registry_poll_s, tenancy.audit, loop, champion_swapped,
                          champion_failed)
    state = State(settings, holder, decider, pool, ProviderError, cache, lookup, metrics,
                  make_logbook(settings.logbook, on_commit=metrics.committed), follower, tenancy)
    state.supported_params = frozenset(SUPPORTED_PARAMS)
    if tenancy.shared_cache is not None and cache is not None:
        tenancy.shared_cache.follow(cache)  # other replicas' answers into this FAISS index
    if settings.online.enabled:
        await asyncio.to_thread(_start_online, state, policy.router)
        if settings.online.snapshot_dir and settings.online.snapshot_s > 0:
            state._snapshots = asyncio.create_task(_snapshot_every(state))
    log.info("serving %s (%s) after %.1f s", policy.version, settings.model, time.perf_counter() - t0)
    return state


def follow(spec: Any, holder: PolicyHolder, poll_s: float, audit: Any, loop: asyncio.AbstractEventLoop,
           on_swap: Callable[[Policy], None], on_error: Callable[[], None],
           name: str = "alias-follower") -> AliasFollower:
    """Start following ``spec``'s registry alias into ``holder`` (the champion's, or an experiment challenger's).

    Each swap is audited (``model.swap``: old and new version, the followed URI) and ``on_swap(new)``
    runs on the event loop; each failure is logged and ``on_error()`` runs on the event loop.
    """
    def swapped(old: Policy, new: Policy) -> None:
        audit.record("model.swap", "registry-follower", None, old=old.version, new=new.version, source=spec.text)
        loop.call_soon_threadsafe(on_swap, new)

    def failed(message: str) -> None:
        log.warning("%s", message)
        loop.call_soon_threadsafe(on_error)

    follower = AliasFollower(spec, holder, poll_s, on_swap=swapped, on_error=failed, name=name)
    follower.start()
    return follower


def embed_for_cache(cache: Any, texts: list[str]) -> list[tuple[Any, Any]]:
    """One batched encoding of the cache texts: per text, (the encoder's own row, the cache's unit row).

    The unit row is what ``cache.embed`` gives (the cache's key); the encoder's own row goes to the
    decision step, which reuses it when the router's encoder is identical (see ``Decider``).
    """
    from router.encoders._common import check_texts, l2_normalize

    items = check_texts(texts)
    raw = np.asarray(cache.encoder_.encode(items), dtype=np.float32)
    if raw.ndim != 2 or raw.shape[0] != len(items):
        raise RuntimeError(f"the cache encoder returned shape {raw.shape} for {len(items)} texts; expected (n, dim).")
    return list(zip(raw, l2_normalize(raw)))


def _identity(encoder: Any) -> dict[str, Any] | None:
    from serve.cache.thresholds import encoder_identity

    try:
        return encoder_identity(encoder)
    except Exception:  # no saved configuration: its vectors are never shared
        return None


def build_tenancy(settings: Settings) -> Tenancy:
    """Keys, limits, audit and the decision store from the settings (blocking: opens files)."""
    from serve.audit import AuditLog, NullAudit
    from serve.tenants.explain import DecisionStore
    from serve.tenants.keys import KeyStore
    from serve.tenants.limits import MemoryLimiter

    audit: Any = NullAudit()
    a = settings.audit
    if a.path:
        key = (a.hmac_key or "").encode() or Path(a.hmac_key_file or "").read_bytes().strip()
        path = a.path if settings.workers == 1 else f"{a.path}.{os.getpid()}"
        audit = AuditLog(path, key, checkpoint_every=a.checkpoint_every)
    store = KeyStore(settings.auth.store) if settings.auth.store else None
    limiter: Any = MemoryLimiter()
    shared_cache = None
    if settings.redis_url:
        from serve.tenants.shared import RedisCache, RedisLimiter

        limiter = RedisLimiter(settings.redis_url)
        if settings.cache.enabled:
            shared_cache = RedisCache(settings.redis_url, ttl_s=settings.cache.ttl_s)
    oidc = None
    if settings.auth.oidc.issuer:
        from serve.tenants.oidc import OIDCVerifier

        oidc = OIDCVerifier(settings.auth.oidc)
    unshared = settings.workers if settings.workers > 1 and not settings.redis_url and \
        not settings.per_worker_limits else 0
    tenancy = Tenancy(store=store, defaults=dict(settings.tenants), limiter=limiter, audit=audit,
                      decisions=DecisionStore(settings.decisions_kept), oidc=oidc, reload_s=settings.auth.reload_s,
                      shared_cache=shared_cache, unshared_workers=unshared)
    if not tenancy.auth.enabled:
        log.warning("authentication is OFF: no tenant store (auth.store) and no OIDC issuer are configured, so "
                    "every caller is tenant 'default' with the admin role. Configure auth.store before exposing "
                    "this service beyond localhost.")
    audit.record("service.start", "service", None, model=settings.model, auth=tenancy.auth.enabled)
    return tenancy


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
    if state.lookup is not None:
        state.lookup.close()
    await asyncio.to_thread(state.logbook.close)
    state.tenancy.audit.record("service.stop", "service", None)
    if state.tenancy.experiment is not None:
        await asyncio.to_thread(state.tenancy.experiment.close)
    await state.tenancy.close()


def create_app(settings: Settings) -> ServeApp:
    """The ASGI app of a service process for ``settings`` (state is built when the server runs its
    lifespan, then the garbage collector is set up for serving: :func:`tune_gc`)."""
    return ServeApp(settings, tune_gc=True)


def create_app_from_env() -> ServeApp:
    """Factory for worker processes: settings arrive as JSON in ``ROUTER_SERVE_SETTINGS_JSON``."""
    import json

    raw = os.environ.get(ENV_PREFIX + "SETTINGS_JSON")
    if not raw:
        raise RuntimeError(f"{ENV_PREFIX}SETTINGS_JSON is not set; start the service with `python -m serve`.")
    return create_app(Settings.from_dict(json.loads(raw)))
