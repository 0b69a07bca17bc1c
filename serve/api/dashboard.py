"""The operators' dashboard: ``GET /dashboard`` (a static page) polls ``GET /v1/dashboard`` (JSON).

The page holds no data, so it is served without a credential; it asks for a key once (or takes it
from the URL fragment, ``/dashboard#key=rk-...``, which browsers never send to the server), keeps it
in the tab's session storage and sends it as ``Authorization: Bearer`` when it polls the JSON every
two seconds. The JSON needs the ``dashboard`` permission (read-only and admin roles); budgets are
shown for every tenant to admins and for the caller's own tenant to read-only keys.

Savings are against always calling the model with the highest predicted quality: for every routed
request the service adds that model's predicted cost and the chosen model's predicted cost
(:class:`Savings`), so the two are compared on the same (predicted) scale; cache hits avoid a call
altogether and are counted apart.
"""

from __future__ import annotations

import time
from importlib import resources
from typing import TYPE_CHECKING, Any

import orjson

from serve.api.http import Send, send_bytes
from serve.tenants.auth import Principal

if TYPE_CHECKING:
    from serve.app import State

__all__ = ["Savings", "data", "page"]

_HTML = (b"content-type", b"text/html; charset=utf-8")


class Savings:
    """Predicted cost of the routed choices against always-the-best-model, summed over routed requests."""

    __slots__ = ("routed", "best", "requests")

    def __init__(self) -> None:
        self.routed = 0.0
        self.best = 0.0
        self.requests = 0

    def add(self, decision: Any) -> None:
        q = decision.quality
        self.best += float(decision.cost[int(q.argmax())])
        self.routed += decision.predicted_cost
        self.requests += 1


async def page(state: State, send: Send) -> int:
    html = resources.files("serve.api").joinpath("dashboard.html").read_bytes()
    await send_bytes(send, 200, html, [(b"cache-control", b"no-store")], content_type=_HTML)
    return 200


def _quantile(hist: Any, q: float) -> float | None:
    if not hist.count:
        return None
    target, acc = q * hist.count, 0
    for le, n in zip(hist.buckets, hist.counts):
        acc += n
        if acc >= target:
            return float(le)
    return float(hist.buckets[-1])


async def data(state: State, send: Send, principal: Principal) -> int:
    m = state.metrics
    t = state.tenancy
    chat = {s: n for (p, s), n in m.requests.items() if p == "/v1/chat/completions"}
    total = sum(chat.values())
    hits = m.cache.get("hit_exact", 0) + m.cache.get("hit_semantic", 0)
    looked = hits + m.cache.get("miss", 0)
    now = time.time()
    tenants = sorted(set(t.defaults) | set(t.overrides_) - {"*"}) if principal.role == "admin" else [principal.tenant]
    budgets = []
    for name in tenants:
        lim = t.limits(name)
        if lim.budget_usd is None:
            continue
        use = await t.limiter.usage(name, lim, now)
        budgets.append({"tenant": name, "budget_usd": lim.budget_usd, "period": lim.budget_period,
                        "spent_usd": use.get("spent_usd"), "reserved_usd": use.get("reserved_usd")})
    sv = t.savings
    body = {
        "time": now, "policy_version": m.policy_version, "inflight": m.inflight,
        "requests": {"total": total, "ok": chat.get(200, 0),
                     "client_errors": sum(n for s, n in chat.items() if 400 <= s < 500),
                     "server_errors": sum(n for s, n in chat.items() if s >= 500),
                     "refused": sum(n for (p, s), n in m.requests.items() if p == "refused")},
        "spend_usd": {"total": sum(m.spend.values()), "by_model": dict(m.spend)},
        "savings": {"routed_predicted_usd": sv.routed, "always_best_predicted_usd": sv.best,
                    "saved_usd": sv.best - sv.routed, "saved_fraction": (1 - sv.routed / sv.best) if sv.best else None,
                    "routed_requests": sv.requests, "cache_hits": hits},
        "cache": {"hits": hits, "misses": m.cache.get("miss", 0), "bypass": m.cache.get("bypass", 0),
                  "hit_rate": hits / looked if looked else None,
                  "replicated": t.shared_cache.replicated_ if t.shared_cache is not None else None},
        "models": dict(m.answered),
        "latency_ms": {"added_p50": _ms(_quantile(m.added_latency, 0.5)), "added_p95": _ms(_quantile(m.added_latency, 0.95)),
                       "provider_mean": {k: 1000 * h.sum / h.count for k, h in m.provider_latency.series.items() if h.count}},
        "errors": {"provider": sum(m.provider_errors.values()), "fallbacks": m.fallbacks,
                   "stream_breaks": m.stream_breaks},
        "budgets": budgets,
    }
    await send_bytes(send, 200, orjson.dumps(body), [(b"cache-control", b"no-store")])
    return 200


def _ms(v: float | None) -> float | None:
    return None if v is None else 1000 * v
