"""Online learning inside the service: a bandit policy that explores with logged propensities and
learns from ``POST /v1/feedback``.

With ``online.enabled`` the decision of a routed request (at the router's own operating point,
no per-request override) is taken by a contextual-bandit policy (:mod:`router.policies`:
``egreedy``, ``linucb`` or ``thompson``) over the **same** context the offline router's policy
would see (:meth:`router.router.Router._policy_context` of its embedding), within the models the
router's rule allows (limits still apply):

* **warm start**: the policy starts from the served (offline) router -- the first
  ``warm_prompts`` routed prompts add the router's predicted rewards ``quality - lam * cost`` for
  every model as pseudo-observations of weight ``warm_weight``; afterwards only real feedback
  teaches it, so it can leave the offline router where feedback disagrees;
* **exploration with propensities**: the model is drawn from the policy's probabilities and
  the drawn model's probability is the logged propensity (``explored`` marks a draw other than
  the greedy pick); a tenant whose explored share reached ``max_explore_share`` gets the greedy
  pick with propensity 1;
* **updates**: a feedback (durable first, see :mod:`serve.trafficlog`) is applied to the policy
  at once, under a lock, from the context remembered for that request id (the last
  ``memory`` requests): staleness is the feedback's commit window, well under a second;
* **the out-of-distribution guard learns too**: when the router has a guard (:mod:`router.ood`), each
  feedback also updates the guard's per-model priors and trust (:meth:`router.ood.OODGuard.update`,
  the method ``Router.update_guard`` calls offline), weighted by ``1 / propensity``, so prompts of a
  task the router never saw are shrunk toward what this traffic's ratings say about each model
  rather than toward the training means; the router's own decisions (requests with per-request
  overrides, and the warm start) use the updated guard at once;
* **snapshots**: :meth:`OnlineLearner.snapshot` writes a normal router directory with the policy
  (and the updated guard) inside (every ``snapshot_s`` seconds to ``snapshot_dir``, and on shutdown), which
  ``training promote`` can judge and register as a candidate. The service never moves a registry
  alias: the champion changes only by promotion.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["OnlineChoice", "OnlineLearner"]


class OnlineChoice:
    """The online policy's pick for one prompt; ``guard`` is (raw predicted quality (m,), distance) or None."""

    __slots__ = ("action", "context", "explored", "greedy", "guard", "propensity")

    def __init__(self, action: int, propensity: float, explored: bool, greedy: int, context: np.ndarray,
                 guard: tuple[np.ndarray, float] | None = None) -> None:
        self.action, self.propensity, self.explored, self.greedy, self.context, self.guard = (
            action, propensity, explored, greedy, context, guard)


class _Pending:
    """What a routed request leaves for its feedback."""

    __slots__ = ("actual_cost", "choice", "cost", "tenant")

    def __init__(self, choice: OnlineChoice, cost: float, tenant: str) -> None:
        self.choice, self.cost, self.tenant, self.actual_cost = choice, cost, tenant, False


class OnlineLearner:
    """The bandit policy of one service process (see the module docs).

    Args:
        router: the served (offline) router: pool, context, warm-start predictions, cost model.
        policy: ``egreedy``, ``linucb`` or ``thompson``.
        lam: reward ``quality - lam * cost``; None uses the router's saved operating point.
        epsilon, alpha: exploration of ``egreedy`` / UCB width of ``linucb``.
        warm_prompts, warm_weight: the warm start (see the module docs).
        max_explore_share: per tenant, the largest share of explored decisions.
        memory: request contexts kept for feedback.
        seed: seed of the policy's draws.
    """

    def __init__(self, router: Any, *, policy: str = "egreedy", lam: float | None = None, epsilon: float = 0.1,
                 alpha: float = 0.5, warm_prompts: int = 100, warm_weight: float = 0.1,
                 max_explore_share: float = 1.0, memory: int = 100_000, seed: int = 0) -> None:
        from router.errors import ConfigError
        from router.policies import POLICIES

        if policy not in ("egreedy", "linucb", "thompson"):
            raise ConfigError(f"online.policy = {policy!r} must be egreedy, linucb or thompson.")
        self.router = router
        self.lam = float(router.rule.lam if lam is None else lam)
        self.policy_name = policy
        self.warm_prompts = warm_prompts
        self.warm_weight = warm_weight
        self.max_explore_share = max_explore_share
        self.memory = memory
        dim = int(router._policy_context(router.embed(["dimension probe"])[0]).shape[1])
        m = len(router.models)
        kw: dict[str, Any] = {"seed": seed}
        if policy == "egreedy":
            kw["epsilon"] = epsilon
        elif policy == "linucb":
            kw["alpha"] = alpha
        self.policy_: Any = POLICIES[policy](m, dim, **kw)  # type: ignore[call-arg]
        self.lock = threading.Lock()
        self.warmed_ = 0
        self.updates_ = 0
        self.guard_updates_ = 0
        self.explored_ = 0
        self.decided_: defaultdict[str, int] = defaultdict(int)
        self.explored_by_tenant_: defaultdict[str, int] = defaultdict(int)
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._rng = np.random.default_rng(seed)

    # ------------------------------------------------------------------ decisions (decider thread)
    def choose(self, embeddings: np.ndarray, quality: np.ndarray, cost: np.ndarray, feasible: np.ndarray,
               tenants: list[str], guard: tuple[np.ndarray, np.ndarray] | None = None) -> list[OnlineChoice]:
        """Draw a model for each prompt (rows of the (n, d) embeddings, (n, m) predictions and mask).

        ``guard``: the router's (raw predicted quality (n, m), guard distance (n,)) from its
        :class:`~router.router.Decisions` (``raw_quality``, ``ood_distance``), kept so the feedback can
        teach the out-of-distribution guard; None when the router has no guard.
        """
        ctx = self.router._policy_context(embeddings)
        with self.lock:
            if self.warmed_ < self.warm_prompts:
                k = min(ctx.shape[0], self.warm_prompts - self.warmed_)
                self.policy_.warm_start(ctx[:k], quality[:k], lam=self.lam, cost=cost[:k], weight=self.warm_weight)
                self.warmed_ += k
            probs = np.atleast_2d(self.policy_.select(ctx, feasible))
            out = []
            for i, tenant in enumerate(tenants):
                p = probs[i]
                greedy = int(np.argmax(p))
                capped = (self.decided_[tenant] > 0
                          and self.explored_by_tenant_[tenant] >= self.max_explore_share * self.decided_[tenant])
                if capped or self.max_explore_share <= 0:
                    a, prop = greedy, 1.0
                else:
                    a = int(self._rng.choice(p.shape[0], p=p))
                    prop = float(p[a])
                explored = a != greedy
                self.decided_[tenant] += 1
                if explored:
                    self.explored_by_tenant_[tenant] += 1
                    self.explored_ += 1
                g = None if guard is None else (np.asarray(guard[0][i], dtype=np.float64), float(guard[1][i]))
                out.append(OnlineChoice(a, prop, explored, greedy, ctx[i], g))
        return out

    # ------------------------------------------------------------------ feedback (event loop)
    def remember(self, request_id: str, choice: OnlineChoice, cost: float, tenant: str) -> None:
        """Keep a routed request's context until its feedback arrives (oldest forgotten first)."""
        with self.lock:
            self._pending[request_id] = _Pending(choice, cost, tenant)
            while len(self._pending) > self.memory:
                self._pending.popitem(last=False)

    def cost_of(self, request_id: str, cost: float) -> None:
        """Record the request's actual cost (known after the provider answered)."""
        with self.lock:
            item = self._pending.get(request_id)
            if item is not None:
                item.cost, item.actual_cost = cost, True

    def on_feedback(self, row: dict[str, Any]) -> bool:
        """Apply one durable feedback to the policy (and the router's guard); False when the request's
        context is unknown."""
        with self.lock:
            item = self._pending.pop(str(row.get("request_id")), None)
            if item is None or row.get("quality") is None:
                return False
            ch, quality = item.choice, float(row["quality"])
            reward = quality - self.lam * item.cost
            self.policy_.update(ch.context[None, :], np.array([ch.action]), np.array([reward]))
            self.updates_ += 1
            guard = getattr(self.router, "ood", None)
            if guard is not None and ch.guard is not None and len(ch.guard[0]) == len(self.router.models):
                guard.update(ch.guard[0][None, :], np.array([ch.guard[1]]), np.array([quality]),
                             np.array([item.cost]) if item.actual_cost else None,
                             chosen=np.array([ch.action]), propensity=np.array([ch.propensity]))
                self.guard_updates_ += 1
        return True

    # ------------------------------------------------------------------ snapshots
    def snapshot(self, directory: str | Path) -> Path:
        """Write the policy as a router directory (registrable as a candidate version); returns it."""
        import copy

        from router.decision import DecisionRule
        from router.router import Router

        base = self.router
        with self.lock:
            policy = copy.deepcopy(self.policy_)
            guard = copy.deepcopy(getattr(base, "ood", None))
            n = self.updates_
        snap = Router(base.models, base.encoder, policy, base.cost, base.latency,
                      rule=DecisionRule(lam=self.lam, mu=float(base.rule.mu)), preprocessor=base.preprocessor,
                      features=base.features, ood=guard,
                      metadata={"router_kind": f"online:{self.policy_name}", "n_updates": n,
                                "warm_start": base.metadata.get("trained_on"), "snapshot_time": time.time()},
                      policy_lam=self.lam, policy_mu=float(base.rule.mu), context_windows=base.context_windows,
                      length_unit=base.length_unit)
        return snap.save(directory)
