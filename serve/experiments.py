"""Experiments between two policies: an A/B split, or a shadow challenger, and a per-arm report.

Configured by the ``experiment`` settings (off while ``name`` is unset)::

    experiment: {name: lam-test, challenger: models:/demo-router@challenger, split: 0.1,
                 sticky: user, mode: ab}

* ``mode: ab`` -- a share ``split`` of routed requests is decided by the challenger instead of the
  served policy (the champion); the response's ``x-route-experiment-arm`` header and the decision's
  explanation name the arm.
* ``mode: shadow`` -- the champion decides and acts on every request; the challenger decides the
  same request in the background (never delaying the answer) and only its choice is recorded.
* ``sticky``: ``tenant`` (a tenant always gets the same arm) or ``user`` (the OpenAI ``user`` field,
  within its tenant; requests without one fall back to the tenant). Assignment is a hash of the
  experiment name and that key, so it is the same on every replica and after restarts.

The report (``GET /v1/admin/experiments``) gives per arm: requests, errors, spend, and the mean
*predicted* quality and cost of the chosen models with a 95% normal interval; in shadow mode how
often the challenger agreed with the champion, and a direct-method estimate of both policies' utility
(quality - lam * cost) on the same requests, each choice scored by the champion's predictions (one
yardstick for both), with 95% intervals. Estimates from observed quality (feedback joined to the
traffic log, inverse propensity weighting) are not computed here.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ArmStats", "Experiment"]

ARMS = ("champion", "challenger")


@dataclass
class _Mean:
    n: int = 0
    s: float = 0.0
    ss: float = 0.0

    def add(self, v: float) -> None:
        self.n += 1
        self.s += v
        self.ss += v * v

    def summary(self) -> dict[str, Any]:
        if not self.n:
            return {"mean": None, "ci95": None}
        mean = self.s / self.n
        var = max(self.ss / self.n - mean * mean, 0.0) * self.n / max(self.n - 1, 1)
        half = 1.96 * math.sqrt(var / self.n)
        return {"mean": mean, "ci95": [mean - half, mean + half]}


@dataclass
class ArmStats:
    """Running totals of one arm."""

    requests: int = 0
    errors: int = 0
    spend_usd: float = 0.0
    quality: _Mean = field(default_factory=_Mean)
    cost: _Mean = field(default_factory=_Mean)
    models: dict[str, int] = field(default_factory=dict)
    agree: int = 0

    def report(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "spend_usd": self.spend_usd,
                "predicted_quality": self.quality.summary(), "predicted_cost_usd": self.cost.summary(),
                "models": dict(sorted(self.models.items()))}


class Experiment:
    """One experiment (see the module docs); ``decider`` decides for the challenger."""

    def __init__(self, name: str, mode: str, split: float, sticky: str, decider: Any, version: str) -> None:
        self.name = name
        self.mode = mode
        self.split = split
        self.sticky = sticky
        self.decider = decider
        self.version = version
        self.arms = {a: ArmStats() for a in ARMS}
        self.shadow_ = ArmStats()
        self.dm_champion_ = _Mean()
        self.dm_challenger_ = _Mean()
        self._tasks: set[asyncio.Task[None]] = set()

    def arm(self, tenant: str, user: Any) -> str:
        """The arm of a request: a stable hash of the experiment and the sticky key, below ``split`` = challenger."""
        if self.mode == "shadow":
            return "champion"
        key = tenant if self.sticky == "tenant" or not isinstance(user, str) or not user else f"{tenant}/{user}"
        h = int.from_bytes(hashlib.sha256(f"{self.name}\0{key}".encode()).digest()[:8], "big")
        return "challenger" if h / 2.0**64 < self.split else "champion"

    def observe(self, arm: str, decision: Any, status: int | None, spend: float) -> None:
        """Count one finished request of ``arm`` (decision None: answered from the cache or not routed)."""
        st = self.arms[arm]
        st.requests += 1
        if status is None or status >= 400:
            st.errors += 1
        st.spend_usd += spend
        if decision is not None:
            st.quality.add(decision.predicted_quality)
            st.cost.add(decision.predicted_cost)
            st.models[decision.chosen] = st.models.get(decision.chosen, 0) + 1

    def shadow(self, messages: list[Any], options: Any, champion: Any, exp: Any) -> None:
        """Let the challenger decide the same request in the background; record its choice only."""
        task = asyncio.get_running_loop().create_task(self._shadow(messages, options, champion, exp))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _shadow(self, messages: list[Any], options: Any, champion: Any, exp: Any) -> None:
        try:
            d = await self.decider.decide(messages, options)
        except Exception:  # a challenger that cannot decide is counted, never surfaced to the caller
            self.shadow_.errors += 1
            return
        st = self.shadow_
        st.requests += 1
        st.quality.add(d.predicted_quality)
        st.cost.add(d.predicted_cost)
        st.models[d.chosen] = st.models.get(d.chosen, 0) + 1
        st.agree += d.chosen == champion.chosen
        # direct-method estimate on a common yardstick: both choices scored by the champion's predictions
        if d.chosen in champion.models:
            j = champion.models.index(d.chosen)
            self.dm_challenger_.add(float(champion.quality[j]) - champion.lam * float(champion.cost[j]))
            self.dm_champion_.add(champion.predicted_quality - champion.lam * champion.predicted_cost)
        if exp.experiment is not None:
            exp.experiment["shadow_choice"] = d.chosen
            exp.experiment["shadow_predicted_quality"] = d.predicted_quality
            exp.experiment["shadow_predicted_cost"] = d.predicted_cost

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "mode": self.mode, "split": self.split, "sticky": self.sticky,
                               "challenger_version": self.version,
                               "arms": {a: s.report() for a, s in self.arms.items()}}
        if self.mode == "shadow":
            sh = self.shadow_.report()
            sh["agreement"] = self.shadow_.agree / self.shadow_.requests if self.shadow_.requests else None
            sh["utility_under_champion_model"] = {"champion": self.dm_champion_.summary(),
                                                  "challenger": self.dm_challenger_.summary()}
            out["shadow"] = sh
        return out

    def close(self) -> None:
        self.decider.close()
