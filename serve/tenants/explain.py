"""Why a request went where it did: a bounded in-memory store of recent decisions, by request id.

The chat handler fills one :class:`Explanation` per request (references to what it computed anyway,
no copies); ``GET /v1/decisions/{request_id}`` renders it. Only the newest ``capacity`` requests are
kept (oldest dropped first). Older decisions are in the traffic log when one is configured
(``logbook``): each record there carries the request id, tenant, every candidate's predictions,
the policy version and the cache outcome, so an operator can read them back by request id.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DecisionStore", "Explanation"]


@dataclass(slots=True)
class Explanation:
    """One request's decision, as the handler saw it."""

    request_id: str
    tenant: str
    timestamp: float
    requested_model: str
    routed: bool
    policy_version: str
    options: Any = None  # serve.decide.RouteOptions
    decision: Any = None  # serve.decide.Decision
    cache: str = "bypass"
    cache_detail: str | None = None
    budget_rule: str | None = None
    chosen_model: str | None = None
    answered_model: str | None = None
    status: int | None = None
    experiment: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = self.decision
        out: dict[str, Any] = {
            "request_id": self.request_id, "tenant": self.tenant, "timestamp": self.timestamp,
            "requested_model": self.requested_model, "routed": self.routed, "policy_version": self.policy_version,
            "chosen_model": self.chosen_model, "answered_model": self.answered_model, "status": self.status,
            "cache": {"outcome": self.cache, "detail": self.cache_detail},
            "budget_rule": self.budget_rule, "experiment": self.experiment, "notes": self.notes,
        }
        o = self.options
        out["constraints"] = None if o is None else {
            "lam": o.lam, "mu": o.mu, "allowed_models": list(o.allowed) if o.allowed else None,
            "max_cost": o.max_cost, "max_latency": o.max_latency}
        if d is not None:
            out["policy_version"] = d.version  # the policy that decided (an experiment's challenger, a new version)
            out["reason"] = d.reason
            out["lam_applied"] = d.lam
            out["propensity"] = d.propensity
            out["router_choice"] = d.chosen
            out["fallback_order"] = list(d.candidates)
            out["candidates"] = [
                {"model": m, "predicted_quality": float(d.quality[j]), "predicted_cost_usd": float(d.cost[j]),
                 "predicted_latency_s": float(d.latency[j])} for j, m in enumerate(d.models)]
        else:
            out["reason"] = ("pass-through: the request named this model" if not self.routed
                             else "answered from the cache before any routing" if self.cache.startswith("hit")
                             else "no routing decision was made")
            out["candidates"] = []
        return out


class DecisionStore:
    """The newest ``capacity`` explanations by request id (a dict plus insertion order)."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, Explanation] = OrderedDict()

    def add(self, exp: Explanation) -> None:
        items = self._items
        items[exp.request_id] = exp
        if len(items) > self.capacity:
            items.popitem(last=False)

    def get(self, request_id: str) -> Explanation | None:
        return self._items.get(request_id)

    def __len__(self) -> int:
        return len(self._items)
