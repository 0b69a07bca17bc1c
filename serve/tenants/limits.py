"""Per-tenant budgets and limits, and the in-process state that enforces them.

:class:`Limits` is what an operator sets for a tenant (settings ``tenants.<name>`` or ``tenants."*"``
for everyone, overridden per tenant by the admin endpoint / ``python -m serve.admin budgets set``):

=================  ===========================================================================
``budget_usd``     spend allowed per ``budget_period`` (``day``, ``month`` -- calendar, UTC -- or
                   ``total``); None: no budget
``on_budget``      ``refuse`` (402) or ``downgrade`` (route to the best model whose predicted
                   cost still fits, and refuse only when none does)
``rpm`` / ``tpm``  requests / tokens per minute (fixed one-minute windows; tokens are counted
                   when the answer is known, so a window's last request can pass the limit by
                   its own size); None: unlimited
``max_body_bytes`` a per-tenant request size limit below the service's own ``max_body_bytes``
=================  ===========================================================================

The budget rule (the same in memory and in Redis, where each step is one atomic script):

1. **Reserve before any call.** A request starts only if ``spent + reserved + predicted <= budget``
   for the predicted cost of the model it calls first; that amount is added to ``reserved``.
2. **Cover every model that is called.** Before a fallback is called (the first model failed), the
   request must hold that fallback's predicted cost: the difference to what it holds is reserved
   by the same check. A fallback the budget cannot cover is *skipped* -- never called -- and the
   next candidate tried; when none is left the answer is 402 ``budget_exceeded`` (which budget,
   what is left, when it resets).
3. **Settle once.** When the request ends, its actual cost is added to ``spent`` and everything it
   reserved is released from ``reserved`` (a failed request releases all and spends nothing).

So every provider call is covered by a reservation, and the budget is passed only where a model
costs more than predicted. A request whose actual cost exceeds what it reserved is charged in full,
but its excess is never taken out of other requests' reservations, and while ``spent + reserved``
is at or above the budget no reservation (first or fallback) is granted: such a request pushes the
tenant over by at most its own ``actual - reserved``. The spend of a period therefore ends at most
the sum of those excesses over the requests in flight when the budget ran out -- one request's
difference when at most one of them exceeded its prediction, and nothing when predictions are
upper estimates. (No admission rule can do better without an upper bound on each call's cost:
the calls have started when their costs become known.) :class:`MemoryLimiter` keeps the state in
this process; :class:`serve.tenants.shared.RedisLimiter` keeps the same state in Redis for several
replicas.

>>> import asyncio
>>> lim, lm = MemoryLimiter(), Limits(budget_usd=1.0, rpm=2)
>>> asyncio.run(lim.reserve("acme", lm, 0.75, now=0.0))
(True, 1.0)
>>> asyncio.run(lim.reserve("acme", lm, 0.75, now=0.0))  # 0.75 reserved already: 0.25 left
(False, 0.25)
"""

from __future__ import annotations

import calendar
import time
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

from router.errors import ConfigError

__all__ = ["LimitExceeded", "Limiter", "Limits", "MemoryLimiter", "period_bucket", "window"]

PERIODS = ("day", "month", "total")
POLICIES = ("refuse", "downgrade")


class LimitExceeded(Exception):
    """A tenant hit a limit: ``which`` (``rpm``, ``tpm``, ``budget``), HTTP ``status``, reset time (UNIX s)."""

    def __init__(self, which: str, message: str, reset_at: float | None, status: int = 429) -> None:
        super().__init__(message)
        self.which = which
        self.message = message
        self.reset_at = reset_at
        self.status = status


@dataclass(frozen=True, slots=True)
class Limits:
    """One tenant's budget and limits (see the module docs); all None means unlimited."""

    budget_usd: float | None = None
    budget_period: str = "month"
    on_budget: str = "refuse"
    rpm: int | None = None
    tpm: int | None = None
    max_body_bytes: int | None = None

    def __post_init__(self) -> None:
        def bad(key: str, what: str) -> ConfigError:
            return ConfigError(f"limits.{key} = {getattr(self, key)!r} is invalid: it must be {what}.")

        if self.budget_usd is not None and not self.budget_usd >= 0:
            raise bad("budget_usd", "a number >= 0 (USD), or null for no budget")
        if self.budget_period not in PERIODS:
            raise bad("budget_period", "one of " + ", ".join(PERIODS))
        if self.on_budget not in POLICIES:
            raise bad("on_budget", "one of " + ", ".join(POLICIES))
        for key in ("rpm", "tpm"):
            v = getattr(self, key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise bad(key, "a whole number >= 1, or null for unlimited")
        if self.max_body_bytes is not None and (not isinstance(self.max_body_bytes, int) or self.max_body_bytes < 1024):
            raise bad("max_body_bytes", "a whole number >= 1024")

    @classmethod
    def from_dict(cls, raw: Any) -> Limits:
        """Limits from a mapping (an admin request or the store); unknown keys are errors."""
        if not isinstance(raw, dict):
            raise ConfigError(f"limits must be a JSON object, got {type(raw).__name__}.")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"unknown limit(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
        kw = dict(raw)
        for key in ("budget_usd",):
            if kw.get(key) is not None:
                if isinstance(kw[key], bool) or not isinstance(kw[key], int | float):
                    raise ConfigError(f"limits.{key} must be a number, got {kw[key]!r}.")
                kw[key] = float(kw[key])
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def unlimited(self) -> bool:
        return self.budget_usd is None and self.rpm is None and self.tpm is None


def window(now: float) -> tuple[int, float]:
    """The one-minute window of ``now``: (its number, the UNIX time it ends)."""
    w = int(now // 60)
    return w, (w + 1) * 60.0


def period_bucket(period: str, now: float) -> tuple[str, float | None]:
    """The budget period of ``now``: (its name, when it resets, UTC; None for ``total``)."""
    if period == "total":
        return "total", None
    t = time.gmtime(now)
    if period == "day":
        start = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0))
        return time.strftime("%Y-%m-%d", t), float(start + 86400)
    y, m = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return time.strftime("%Y-%m", t), float(calendar.timegm((y, m, 1, 0, 0, 0)))


class Limiter(Protocol):
    """Where budget and rate state lives (this process, or Redis shared by replicas)."""

    async def admit(self, tenant: str, limits: Limits, now: float) -> None: ...

    async def reserve(self, tenant: str, limits: Limits, predicted: float, now: float) -> tuple[bool, float]: ...

    async def settle(self, tenant: str, limits: Limits, predicted: float, actual: float, tokens: int,
                     now: float) -> None: ...

    async def usage(self, tenant: str, limits: Limits, now: float) -> dict[str, Any]: ...

    async def close(self) -> None: ...


def rate_refusal(tenant: str, which: str, limit: int, reset_at: float, now: float) -> LimitExceeded:
    unit = "requests" if which == "rpm" else "tokens"
    return LimitExceeded(which, f"tenant {tenant!r} reached its limit of {limit} {unit} per minute ({which}); "
                                f"it resets in {max(1, int(reset_at - now + 0.999))} s.", reset_at)


class MemoryLimiter:
    """Budgets and rate windows in this process's memory (one replica; see the module docs)."""

    def __init__(self) -> None:
        self._windows: dict[str, tuple[int, int, int]] = {}  # tenant -> (window, requests, tokens)
        self._spend: dict[tuple[str, str], list[float]] = {}  # (tenant, period) -> [spent, reserved]

    async def admit(self, tenant: str, limits: Limits, now: float) -> None:
        """Count one request against ``rpm``; refuse when ``rpm`` or ``tpm`` is used up in this minute."""
        if limits.rpm is None and limits.tpm is None:
            return
        w, reset_at = window(now)
        cur, reqs, toks = self._windows.get(tenant, (w, 0, 0))
        if cur != w:
            reqs, toks = 0, 0
        if limits.rpm is not None and reqs >= limits.rpm:
            raise rate_refusal(tenant, "rpm", limits.rpm, reset_at, now)
        if limits.tpm is not None and toks >= limits.tpm:
            raise rate_refusal(tenant, "tpm", limits.tpm, reset_at, now)
        self._windows[tenant] = (w, reqs + 1, toks)

    async def reserve(self, tenant: str, limits: Limits, predicted: float, now: float) -> tuple[bool, float]:
        """Reserve ``predicted`` USD if it fits: (whether it did, USD left before this reservation)."""
        if limits.budget_usd is None:
            return True, float("inf")
        bucket, _ = period_bucket(limits.budget_period, now)
        acc = self._spend.setdefault((tenant, bucket), [0.0, 0.0])
        left = limits.budget_usd - acc[0] - acc[1]
        if predicted > left or left <= 0:
            return False, max(left, 0.0)
        acc[1] += predicted
        return True, left

    async def settle(self, tenant: str, limits: Limits, predicted: float, actual: float, tokens: int,
                     now: float) -> None:
        """Replace a reservation by the actual cost, and count the tokens in this minute."""
        if limits.budget_usd is not None:
            bucket, _ = period_bucket(limits.budget_period, now)
            acc = self._spend.setdefault((tenant, bucket), [0.0, 0.0])
            acc[0] += actual
            acc[1] = max(acc[1] - predicted, 0.0)
        if tokens and limits.tpm is not None:
            w, _ = window(now)
            cur, reqs, toks = self._windows.get(tenant, (w, 0, 0))
            self._windows[tenant] = (w, reqs, toks + tokens) if cur == w else (w, 0, tokens)

    async def usage(self, tenant: str, limits: Limits, now: float) -> dict[str, Any]:
        bucket, reset = period_bucket(limits.budget_period, now)
        spent, reserved = self._spend.get((tenant, bucket), [0.0, 0.0])
        w, _ = window(now)
        cur, reqs, toks = self._windows.get(tenant, (w, 0, 0))
        if cur != w:
            reqs, toks = 0, 0
        return {"period": bucket, "spent_usd": spent, "reserved_usd": reserved, "budget_usd": limits.budget_usd,
                "budget_resets_at": reset, "requests_this_minute": reqs, "tokens_this_minute": toks}

    async def close(self) -> None:
        return None
