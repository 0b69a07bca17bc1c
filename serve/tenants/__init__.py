"""Tenants: who may call (keys, tokens, roles), how much they may spend and send, and what was decided.

:class:`Tenancy` is built in the service's lifespan and holds the authenticator, the per-tenant
limits and the limiter that enforces them, the audit log and the recent decisions. The request path
only does dict lookups and arithmetic here; the tenant store (SQLite) is re-read in the background
when it changes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import numpy as np

from serve.api.errors import APIError
from serve.tenants.auth import Authenticator, Principal
from serve.tenants.explain import DecisionStore, Explanation
from serve.tenants.keys import KeyIndex, KeyStore
from serve.tenants.limits import Limiter, LimitExceeded, Limits

__all__ = ["DecisionStore", "Explanation", "Principal", "Tenancy", "downgrade", "limited_tenants", "workers_problem"]

log = logging.getLogger("serve")
UNLIMITED = Limits()


class Tenancy:
    """Authentication, limits, audit and decisions of one service process (see the module docs)."""

    def __init__(self, *, store: KeyStore | None, defaults: dict[str, Limits], limiter: Limiter,
                 audit: Any, decisions: DecisionStore, oidc: Any = None, reload_s: float = 2.0,
                 shared_cache: Any = None, unshared_workers: int = 0) -> None:
        self.store = store
        #: > 1: this many worker processes run without shared limit state and per-worker limits were not
        #: chosen, so budgets and rate limits set while serving cannot be enforced and fail closed
        self.unshared_workers = unshared_workers
        self.defaults = defaults
        self.limiter = limiter
        self.audit = audit
        self.decisions = decisions
        self.reload_s = reload_s
        self.shared_cache = shared_cache  # serve.tenants.shared.RedisCache, when Redis is configured
        from serve.api.dashboard import Savings

        self.savings = Savings()
        self.experiment: Any = None  # serve.experiments.Experiment, when one runs
        self.auth = Authenticator(None, oidc)
        self.overrides_: dict[str, Limits] = {}
        self._version: Any = None
        self._task: asyncio.Task[None] | None = None
        if store is not None:
            self.reload()

    # ------------------------------------------------------------------ store
    def reload(self) -> None:
        """Re-read keys and limits from the store (blocking: call it off the event loop when serving)."""
        assert self.store is not None
        version = self.store.version()
        keys = KeyIndex(self.store.keys())
        overrides = {}
        for tenant, spec in self.store.limits().items():
            try:
                overrides[tenant] = Limits.from_dict(spec)
            except Exception as exc:  # a bad row must not disable the others; it is reported
                log.error("tenant store: limits of %r are invalid and ignored: %s", tenant, exc)
        self.auth = Authenticator(keys, self.auth.oidc)
        self.overrides_ = overrides
        self._version = version

    def start(self) -> None:
        if self.store is not None and self.reload_s > 0:
            self._task = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        assert self.store is not None
        while True:
            await asyncio.sleep(self.reload_s)
            try:
                if await asyncio.to_thread(self.store.version) != self._version:
                    await asyncio.to_thread(self.reload)
            except Exception as exc:
                log.warning("tenant store %s: reload failed (keeping the keys in memory): %s", self.store.path, exc)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.limiter.close()
        if self.shared_cache is not None:
            await self.shared_cache.close()
        await asyncio.to_thread(self.audit.close)

    # ------------------------------------------------------------------ limits
    def limits(self, tenant: str) -> Limits:
        got = self.overrides_.get(tenant) or self.defaults.get(tenant) or self.defaults.get("*")
        return got if got is not None else UNLIMITED

    async def admit(self, tenant: str, limits: Limits) -> None:
        """Count the request against the tenant's rate limits; 429 (with Retry-After) when one is used up.

        503 ``limits_unavailable`` when the tenant has limits that cannot be enforced across this
        service's worker processes (they fail closed, like budgets when Redis is down).
        """
        if self.unshared_workers > 1:
            raise refusal(LimitExceeded("limits_store", self.unshared_message(tenant), None, status=503))
        try:
            await self.limiter.admit(tenant, limits, time.time())
        except LimitExceeded as exc:
            raise refusal(exc) from None

    def unshared_message(self, tenant: str | None) -> str:
        who = "this tenant has" if tenant is None else f"tenant {tenant!r} has"
        return (f"{who} a budget or rate limits, and this service runs {self.unshared_workers} worker processes "
                "without redis_url, so they cannot be enforced across workers and fail closed; configure redis_url, "
                "run --workers 1, or set per_worker_limits: true to enforce them in each worker.")

    async def reserve(self, tenant: str, limits: Limits, predicted: float) -> tuple[bool, float]:
        try:
            return await self.limiter.reserve(tenant, limits, predicted, time.time())
        except LimitExceeded as exc:
            raise refusal(exc) from None

    async def settle(self, tenant: str, limits: Limits, predicted: float, actual: float, tokens: int) -> None:
        try:
            await self.limiter.settle(tenant, limits, predicted, actual, tokens, time.time())
        except Exception as exc:  # the answer was sent; a lost settlement is logged, never raised
            log.error("could not settle %.6g USD for tenant %r: %s", actual, tenant, exc)


def refusal(exc: LimitExceeded) -> APIError:
    """A limit as an OpenAI-style error: 429 (rate) or 402/503 (budget), with Retry-After when it resets."""
    headers = []
    if exc.reset_at is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(exc.reset_at - time.time()))).encode()))
    kind = "rate_limit_error" if exc.status == 429 else ("budget_error" if exc.status == 402 else "server_error")
    code = {"budget_store": "budget_unavailable", "limits_store": "limits_unavailable"}.get(exc.which,
                                                                                          f"{exc.which}_exceeded")
    return APIError(exc.status, exc.message, type=kind, code=code, headers=headers)


def budget_refusal(tenant: str, limits: Limits, predicted: float, left: float, what: str | None = None) -> APIError:
    """402 ``budget_exceeded``: what is left of which budget, what the request needed (``what``), when it resets."""
    from serve.tenants.limits import period_bucket

    period, reset = period_bucket(limits.budget_period, time.time())
    when = "it does not reset (total budget)" if reset is None else \
        f"it resets at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(reset))}"
    what = what or f"this request is predicted to cost {predicted:.6g} USD"
    return refusal(LimitExceeded("budget", f"tenant {tenant!r} has {left:.6g} USD left of its {limits.budget_usd:g} USD "
                                           f"budget for {period} and {what}; {when}. Ask an admin to raise the "
                                           "budget.", reset, status=402))


def downgrade(decision: Any, left: float, allowed: tuple[str, ...] | None, fallbacks: int) -> list[str]:
    """Models whose predicted cost fits in ``left`` USD, best first by the decision's utility (q - lam * cost)."""
    models = decision.models
    cost = np.asarray(decision.cost, dtype=float)
    util = np.asarray(decision.quality, dtype=float) - decision.lam * cost
    ok = cost <= left
    if allowed:
        ok &= np.isin(np.asarray(models), np.asarray(allowed))
    order = [int(j) for j in np.argsort(-util, kind="stable") if ok[j]]
    return [models[j] for j in order[: fallbacks + 1]]


def limited_tenants(settings: Any) -> list[str]:
    """Where budgets or rate limits are set: ``tenants.<name>`` settings and the tenant store's rows.

    Opens the tenant store (``auth.store``) read-only when it exists; ``max_body_bytes`` alone is a
    per-request limit and needs no shared state.
    """
    found = [f"tenants.{name}" for name, lim in settings.tenants.items() if not lim.unlimited]
    path = settings.auth.store
    if path:
        from pathlib import Path

        if Path(path).exists():
            for name, spec in KeyStore(path).limits().items():
                try:
                    if not Limits.from_dict(spec).unlimited:
                        found.append(f"tenant store {path}: {name}")
                except Exception:  # an invalid row is reported (and ignored) when the service loads the store
                    continue
    return found


def workers_problem(settings: Any) -> tuple[str | None, str | None]:
    """(error, note) for ``--workers N`` and limits, before the workers start.

    Several workers without ``redis_url`` cannot share budgets and rate windows: with limits
    configured that is an error, unless ``per_worker_limits`` accepts that each worker enforces every
    limit on its own (the note says so).
    """
    n = settings.workers
    if n <= 1 or settings.redis_url:
        return None, None
    if settings.per_worker_limits:
        return None, (f"per_worker_limits: each of the {n} worker processes enforces every tenant's budget and rate "
                      f"limits on its own, nothing divided, so a tenant can use up to {n} times them; configure "
                      "redis_url to share one budget.")
    found = limited_tenants(settings)
    if not found:
        return None, None
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return (f"--workers {n} without redis_url, and budgets or rate limits are set ({found[0]}{more}): each worker "
            f"process would keep its own, so a tenant could spend {n} times its budget; configure redis_url (e.g. "
            "redis://127.0.0.1:6379/0) to share them, or run --workers 1 (or set per_worker_limits: true to enforce "
            "them in each worker on its own)."), None
