"""A chat request's budget: the reservation before any provider call, top-ups for dearer fallbacks,
and what is settled at the end (the rule is in :mod:`serve.tenants.limits`).

:func:`reserve` reserves the chosen model's predicted cost in the tenant's budget, downgrades or
refuses (402); :class:`Topup` is the provider pool's guard that makes the request hold each fallback's
predicted cost before it is called, or skips it; :class:`Bill` is what the request holds and spent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from router.errors import RoutingError
from serve.api.errors import APIError
from serve.api.http import header_ascii as _ascii
from serve.api.parse import ChatRequest
from serve.decide import Decision, RouteOptions
from serve.tenants import budget_refusal, downgrade
from serve.tenants.explain import Explanation
from serve.tenants.limits import Limits

if TYPE_CHECKING:
    from serve.app import State

__all__ = ["Bill", "Topup", "passthrough_cost", "reserve"]


class Bill:
    """What one request holds in its tenant's budget (``reserved`` USD) and what it spent (actual USD,
    tokens, the answering model). Settled once, at the end: the actual cost is charged and every
    reservation made for the request (the first model's, and any fallback's top-up) released."""

    __slots__ = ("reserved", "actual", "tokens", "model")

    def __init__(self, reserved: float = 0.0) -> None:
        self.reserved = reserved
        self.actual = 0.0
        self.tokens = 0
        self.model: str | None = None

    def done(self, model: str, cost: float | None, itok: int | None, otok: int | None) -> None:
        self.model = model
        self.actual = self.reserved if cost is None else float(cost)
        self.tokens = int(itok or 0) + int(otok or 0)


class Topup:
    """The pool's guard for a budgeted request: before a candidate is called, make sure the request
    holds that candidate's predicted cost, reserving the difference atomically (the same reservation
    as the first, in memory or Redis); a candidate the budget cannot cover is skipped (see
    :mod:`serve.tenants.limits`)."""

    __slots__ = ("state", "tenant", "limits", "decision", "bill", "exp", "refused", "error")

    def __init__(self, state: State, tenant: str, limits: Limits, decision: Decision, bill: Bill,
                 exp: Explanation) -> None:
        self.state, self.tenant, self.limits, self.decision = state, tenant, limits, decision
        self.bill, self.exp = bill, exp
        self.refused: tuple[str, float, float] | None = None  # the last skipped (model, predicted, USD left)
        self.error: APIError | None = None  # the budget store failed (fail closed)

    async def __call__(self, model: str) -> str | None:
        d = self.decision
        try:
            cost = float(d.cost[d.models.index(model)])
        except ValueError:
            return None  # not one of the policy's models: nothing predicted beyond what the request holds
        held = self.bill.reserved
        if cost <= held:
            return None
        try:
            ok, left = await self.state.tenancy.reserve(self.tenant, self.limits, cost - held)
        except APIError as err:  # the budget store is unreachable: no spend is allowed
            self.error = err
            return "the budget store is unreachable"
        if ok:
            self.bill.reserved = cost
            self.exp.budget_rule = (self.exp.budget_rule or "") + f"; fallback {model}: {cost - held:.6g} USD more reserved"
            return None
        self.refused = (model, cost, left)
        self.exp.budget_rule = (self.exp.budget_rule or "") + (f"; fallback {model} skipped: predicted {cost:.6g} USD, "
                                                               f"this request holds {held:.6g}, {left:.6g} USD left")
        self.state.metrics.decisions[(model, "over_budget")] += 1
        return f"predicted {cost:.6g} USD; the budget has {left:.6g} USD left beyond the {held:.6g} this request holds"

    def refusal(self, attempts: Any) -> APIError:
        """The error when no candidate answered and this guard skipped what was left: the budget store's
        503, or a 402 naming the fallback the budget could not cover, what failed before it, and when the
        budget resets."""
        if self.error is not None:
            return self.error
        model, cost, left = self.refused or ("a fallback", 0.0, 0.0)
        failed = "; ".join(dict.fromkeys(f"{a.model}: {a.kind}" for a in attempts or () if a.kind != "over_budget"))
        return budget_refusal(self.tenant, self.limits, cost, left,
                              what=f"the fallback {model} is predicted to cost {cost:.6g} USD "
                                   f"(this request holds {self.bill.reserved:.6g}) after "
                                   f"{failed or 'the models before it'} failed")


async def reserve(state: State, tenant: str, req: ChatRequest, limits: Limits, decision: Decision | None,
                  chosen: str, candidates: list[str], headers: list[tuple[bytes, bytes]], exp: Explanation,
                  bill: Bill) -> tuple[str, list[str]]:
    """Reserve the predicted cost in the tenant's budget, downgrade to a cheaper model, or refuse (402).

    Runs before any provider call; returns the (possibly downgraded) model and candidate list.
    """
    tenancy = state.tenancy
    if decision is not None:
        predicted = decision.predicted_cost
    else:
        predicted = await passthrough_cost(state, req)
    ok, left = await tenancy.reserve(tenant, limits, predicted)
    if ok:
        bill.reserved = predicted
        exp.budget_rule = (f"within budget: {left:.6g} USD left of {limits.budget_usd:g} ({limits.budget_period}), "
                           f"{predicted:.6g} USD reserved")
        return chosen, candidates
    if limits.on_budget == "downgrade" and decision is not None:
        cheaper = downgrade(decision, left, req.options.allowed, state.settings.fallbacks)
        if cheaper:
            cost = float(decision.cost[decision.models.index(cheaper[0])])
            ok, _ = await tenancy.reserve(tenant, limits, cost)
            if ok:
                bill.reserved = cost
                exp.budget_rule = (f"downgraded from {chosen} (predicted {predicted:.6g} USD) to {cheaper[0]} "
                                   f"(predicted {cost:.6g} USD): {left:.6g} USD left of {limits.budget_usd:g}")
                headers[0] = (b"x-route-model", _ascii(cheaper[0]))
                if len(headers) > 2 and headers[2][0] == b"x-route-predicted-cost":
                    headers[2] = (b"x-route-predicted-cost", f"{cost:.6g}".encode())
                headers.append((b"x-route-budget", b"downgraded"))
                state.metrics.decisions[(cheaper[0], "downgraded")] += 1
                return cheaper[0], cheaper
    exp.budget_rule = (f"refused ({limits.on_budget}): predicted {predicted:.6g} USD, {left:.6g} USD left of "
                       f"{limits.budget_usd:g} ({limits.budget_period})")
    raise budget_refusal(tenant, limits, predicted, left)


async def passthrough_cost(state: State, req: ChatRequest) -> float:
    """A pass-through request's predicted cost: the policy's cost model for that model, when it knows it."""
    if req.model not in state.holder.current.models:
        return 0.0
    try:
        d = await state.decider.decide(req.messages, RouteOptions(allowed=(req.model,)))
    except RoutingError:
        return 0.0
    return d.predicted_cost
