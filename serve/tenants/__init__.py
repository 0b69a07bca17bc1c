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

__all__ = ["DecisionStore", "Explanation", "Principal", "Tenancy", "downgrade"]

log = logging.getLogger("serve")
UNLIMITED = Limits()


class Tenancy:
    """Authentication, limits, audit and decisions of one service process (see the module docs)."""

    def __init__(self, *, store: KeyStore | None, defaults: dict[str, Limits], limiter: Limiter,
                 audit: Any, decisions: DecisionStore, oidc: Any = None, reload_s: float = 2.0,
                 shared_cache: Any = None) -> None:
        self.store = store
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
        """Count the request against the tenant's rate limits; 429 (with Retry-After) when one is used up."""
        try:
            await self.limiter.admit(tenant, limits, time.time())
        except LimitExceeded as exc:
            raise refusal(exc) from None

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
    code = "budget_unavailable" if exc.which == "budget_store" else f"{exc.which}_exceeded"
    return APIError(exc.status, exc.message, type=kind, code=code, headers=headers)


def budget_refusal(tenant: str, limits: Limits, predicted: float, left: float) -> APIError:
    from serve.tenants.limits import period_bucket

    period, reset = period_bucket(limits.budget_period, time.time())
    when = "it does not reset (total budget)" if reset is None else \
        f"it resets at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(reset))}"
    return refusal(LimitExceeded("budget", f"tenant {tenant!r} has {left:.6g} USD left of its {limits.budget_usd:g} USD "
                                           f"budget for {period} and this request is predicted to cost {predicted:.6g} "
                                           f"USD; {when}. Ask an admin to raise the budget.", reset, status=402))


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
