"""Experiments between two policies: an A/B split, or a shadow challenger, and a per-arm report.

Configured by the ``experiment`` settings (off while ``name`` is unset)::

    experiment: {name: lam-test, challenger: models:/demo-router@challenger, split: 0.1,
                 sticky: user, mode: ab, lam: null}

* ``mode: ab`` -- a share ``split`` of routed requests is decided by the challenger instead of the
  served policy (the champion); the response's ``x-route-experiment-arm`` header and the decision's
  explanation name the arm.
* ``mode: shadow`` -- the champion decides and acts on every request; the challenger decides the
  same request in the background (never delaying the answer) and only its choice is recorded.
* ``sticky``: ``tenant`` (a tenant always gets the same arm) or ``user`` (the OpenAI ``user`` field,
  within its tenant; requests without one fall back to the tenant). Assignment is a hash of the
  experiment name and that key, so it is the same on every replica and after restarts.
* A challenger given as ``models:/NAME@ALIAS`` follows its alias exactly as the champion does
  (:class:`serve.registry.AliasFollower`, every ``registry_poll_s``): a new version is loaded and
  warmed in the background and swapped in with one reference assignment; responses, explanations
  and the report name the version that decided.

**Counterfactual scores.** With a traffic log (``logbook.dir``) the policy that did *not* act on a
routed request decides it too, in the background: the challenger on the champion's requests (in
both modes) and, in ``ab`` mode, the champion on the challenger's (skipped while online learning
runs, whose draws have side effects). Its probabilities for every model and its predictions are
written as a ``shadow-*.jsonl`` line joined to the request (:mod:`serve.trafficlog`), so each arm's
logged traffic can score the other policy off-policy. This costs one more decision per experiment
request, off the hot path.

The report (``GET /v1/admin/experiments``) gives per arm: requests, errors, spend, the policy
versions that decided, and the mean *predicted* quality and cost of the chosen models with a 95%
normal interval; in shadow mode how often the challenger agreed with the champion and a
direct-method estimate of both policies' utility (quality - lam * cost) on the same requests, each
choice scored by the champion's predictions. Under ``off_policy`` it adds the estimates from
*observed* feedback in the traffic log (:mod:`serve.experiment_report`): per arm the realised
on-policy mean reward with its interval, and the other policy's value on that arm's traffic by IPS,
SNIPS and DR with intervals and overlap diagnostics.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ArmStats", "Experiment", "shadow_row"]

ARMS = ("champion", "challenger")
OTHER = {"champion": "challenger", "challenger": "champion"}


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
    versions: dict[str, int] = field(default_factory=dict)
    agree: int = 0

    def add(self, decision: Any) -> None:
        self.quality.add(decision.predicted_quality)
        self.cost.add(decision.predicted_cost)
        self.models[decision.chosen] = self.models.get(decision.chosen, 0) + 1
        self.versions[decision.version] = self.versions.get(decision.version, 0) + 1

    def report(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "spend_usd": self.spend_usd,
                "predicted_quality": self.quality.summary(), "predicted_cost_usd": self.cost.summary(),
                "models": dict(sorted(self.models.items())), "policy_versions": dict(sorted(self.versions.items()))}


def shadow_row(request_id: str, experiment: str, arm: str, acted: Any, shadow: Any) -> dict[str, Any]:
    """The ``shadow-*.jsonl`` line of one request: ``shadow`` (the policy of ``arm``, which did not act)
    scored on the request ``acted`` decided; see :mod:`serve.trafficlog` for the fields."""
    probs = shadow.probabilities
    pmap = None if probs is None else {m: float(probs[j]) for j, m in enumerate(shadow.models)}
    return {
        "request_id": request_id, "timestamp": dt.datetime.fromtimestamp(time.time(), dt.UTC).isoformat(),
        "experiment": experiment, "shadow_arm": arm, "shadow_version": shadow.version,
        "shadow_model": shadow.chosen,
        "shadow_propensity": None if pmap is None else pmap.get(acted.chosen, 0.0),
        "shadow_probabilities": pmap,
        "shadow_quality": {m: float(shadow.quality[j]) for j, m in enumerate(shadow.models)},
        "shadow_cost": {m: float(shadow.cost[j]) for j, m in enumerate(shadow.models)},
    }


class Experiment:
    """One experiment (see the module docs).

    ``decider`` decides for the challenger over ``holder`` (a :class:`serve.registry.PolicyHolder`,
    swapped by ``follower`` when the challenger follows a registry alias); ``lam`` is the cost weight
    of the reported reward (None: the champion's saved operating point).
    """

    def __init__(self, name: str, mode: str, split: float, sticky: str, decider: Any, holder: Any,
                 lam: float | None = None) -> None:
        self.name = name
        self.mode = mode
        self.split = split
        self.sticky = sticky
        self.decider = decider
        self.holder = holder
        self.lam = lam
        self.follower: Any = None  # serve.registry.AliasFollower of the challenger's alias, when it follows one
        self.swaps_ = 0
        self.follow_errors_ = 0
        self.arms = {a: ArmStats() for a in ARMS}
        self.shadow_ = ArmStats()
        self.scored_ = dict.fromkeys(ARMS, 0)  # counterfactual scores written, by the arm that was scored
        self.score_errors_ = 0
        self.dm_champion_ = _Mean()
        self.dm_challenger_ = _Mean()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def version(self) -> str:
        """The challenger's version now (it changes when its alias moves)."""
        return str(self.holder.current.version)

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
            st.add(decision)

    def score_other(self, acted_arm: str, messages: list[Any], options: Any, acted: Any, other: Any, exp: Any,
                    logbook: Any) -> None:
        """Let ``other`` (the decider of the arm that did not act) decide the same request in the background.

        ``acted`` is the decision of ``acted_arm`` that was served; ``exp`` the request's explanation.

        In shadow mode its choice is counted and explained; with a traffic log its scores are written
        (:func:`shadow_row`). Never delays nor fails the request.
        """
        task = asyncio.get_running_loop().create_task(
            self._score(acted_arm, messages, options, acted, other, exp, logbook))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _score(self, acted_arm: str, messages: list[Any], options: Any, acted: Any, other: Any, exp: Any,
                     logbook: Any) -> None:
        shadow = self.mode == "shadow"
        try:
            d = await other.decide(messages, options)
        except Exception:  # a policy that cannot decide is counted, never surfaced to the caller
            self.score_errors_ += 1
            if shadow:
                self.shadow_.errors += 1
            return
        scored = OTHER[acted_arm]
        if logbook is not None and logbook.keeps_shadow:
            logbook.on_shadow(shadow_row(exp.request_id, self.name, scored, acted, d))
            self.scored_[scored] += 1
        if shadow:
            self._shadowed(d, acted, exp)

    def _shadowed(self, d: Any, champion: Any, exp: Any) -> None:
        st = self.shadow_
        st.requests += 1
        st.add(d)
        st.agree += d.chosen == champion.chosen
        # direct-method estimate on a common yardstick: both choices scored by the champion's predictions
        if d.chosen in champion.models:
            j = champion.models.index(d.chosen)
            self.dm_challenger_.add(float(champion.quality[j]) - champion.lam * float(champion.cost[j]))
            self.dm_champion_.add(champion.predicted_quality - champion.lam * champion.predicted_cost)
        if exp.experiment is not None:
            exp.experiment["shadow_choice"] = d.chosen
            exp.experiment["shadow_version"] = d.version
            exp.experiment["shadow_predicted_quality"] = d.predicted_quality
            exp.experiment["shadow_predicted_cost"] = d.predicted_cost

    def report(self) -> dict[str, Any]:
        """The in-memory part of the report (this process's requests since it started)."""
        out: dict[str, Any] = {"name": self.name, "mode": self.mode, "split": self.split, "sticky": self.sticky,
                               "challenger_version": self.version, "challenger_source": self.holder.current.source,
                               "challenger_swaps": self.swaps_, "challenger_follow_errors": self.follow_errors_,
                               "counterfactual_scores": dict(self.scored_), "score_errors": self.score_errors_,
                               "arms": {a: s.report() for a, s in self.arms.items()}}
        if self.mode == "shadow":
            sh = self.shadow_.report()
            sh["agreement"] = self.shadow_.agree / self.shadow_.requests if self.shadow_.requests else None
            sh["utility_under_champion_model"] = {"champion": self.dm_champion_.summary(),
                                                  "challenger": self.dm_challenger_.summary()}
            out["shadow"] = sh
        return out

    def offpolicy(self, log_dir: Any, champion_lam: float) -> dict[str, Any]:
        """The ``off_policy`` part of the report, from the traffic log in ``log_dir`` (blocking: reads files)."""
        from serve.experiment_report import offpolicy_report

        return offpolicy_report(log_dir, self.name, self.lam if self.lam is not None else champion_lam)

    def close(self) -> None:
        """Stop following the challenger's alias and close its decider (blocking)."""
        if self.follower is not None:
            self.follower.stop()
        self.decider.close()
