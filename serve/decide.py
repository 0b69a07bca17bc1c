"""The live decision: concurrent requests are routed together by the same ``Router.route`` as offline.

:class:`MicroBatcher` collects work items and runs one function over the whole batch:

* a batch closes when ``max_batch`` items wait. Otherwise the batcher looks at the rate items have
  been arriving at (an exponentially decayed count, time constant ``RATE_TAU_S``): when fewer than one
  more item is expected within ``window_s``, the batch closes at the end of the current event-loop
  turn (no added wait; every request that reached this step in this turn goes together); else it
  waits ``window_s``, or less when ``target`` items are expected sooner. A batch has a large fixed
  cost (for the demo router ~1.5-2.5 ms, most of it the kNN's pass over its training matrix, against
  ~0.1 ms per added prompt), so a busy service must route many requests per call, while a request
  that would wait alone gains nothing. Measured with the service benchmark: with a 1 ms window this
  rule made batches of 2-3 at 700 requests/s and the fixed cost saturated the core; waiting whenever
  a batch had run in the last 50 ms instead made every request at 150/s wait the whole 3 ms window
  for batches of 1.4. With 3 ms the rule waits from ~333 requests/s on;
* ``in_thread`` runs the batch in one worker thread (slow encoders such as MiniLM, so the event
  loop keeps serving while a batch encodes; items arriving meanwhile form the next batch), otherwise
  inline on the loop (the static and hashing encoders take well under a millisecond, less than the
  hand-off to a thread costs).

:class:`Decider` is the decision step on top: one ``Router.embed`` for the batch, then one
``Router.route(..., embedded=...)`` per distinct set of routing options (usually one), at the
router's saved decision rule unless the request overrides it. Every candidate's predicted quality,
cost and latency is known before any provider call; the candidate list for the provider is the
chosen model followed by the other allowed models in order of the rule's utility (the fallback
order), keeping to the request's cost and latency limits.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

from router.base import Encoder
from serve.registry import Policy, PolicyHolder

__all__ = ["Decider", "Decision", "KnownVectors", "MicroBatcher", "RouteOptions", "encode_in_thread"]

T = TypeVar("T")
R = TypeVar("R")

SLOW_ENCODERS = ("sentence_transformer",)
RATE_TAU_S = 0.1  # time constant of the arrival-rate estimate that sizes the batching window


def encode_in_thread(setting: str, encoder: Any) -> bool:
    """Whether batches run in a worker thread: ``always``, ``never`` or ``auto`` (slow encoders only)."""
    if setting != "auto":
        return setting == "always"
    kind = getattr(encoder, "kind", "")
    inner = getattr(encoder, "encoder", None)  # caching wrappers
    return kind in SLOW_ENCODERS or getattr(inner, "kind", "") in SLOW_ENCODERS


class MicroBatcher(Generic[T, R]):
    """Run ``fn(items) -> results`` over batches of concurrently submitted items.

    ``fn`` returns one result per item, or an exception instance for an item that failed (that item's
    future raises it; the others succeed).
    """

    def __init__(self, fn: Callable[[list[T]], Sequence[R | BaseException]], *, max_batch: int = 64,
                 window_s: float = 0.0, in_thread: bool = False, name: str = "batch",
                 on_batch: Callable[[int], None] | None = None, target: int = 16) -> None:
        self.fn = fn
        self.max_batch = max_batch
        self.window_s = window_s
        self.target = min(target, max_batch)
        self.rate = 0.0  # items per second, decayed with RATE_TAU_S (see submit)
        self._last_submit = 0.0
        self.in_thread = in_thread
        self.on_batch = on_batch
        self._items: list[T] = []
        self._futures: list[asyncio.Future[R]] = []
        self._scheduled = False
        self._busy = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=name) if in_thread else None

    def submit(self, item: T) -> asyncio.Future[R]:
        """Queue ``item``; the returned future resolves when its batch has run."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        fut: asyncio.Future[R] = loop.create_future()
        self._items.append(item)
        self._futures.append(fut)
        now = loop.time()
        self.rate = self.rate * math.exp((self._last_submit - now) / RATE_TAU_S) + 1.0 / RATE_TAU_S
        self._last_submit = now
        if self._busy:
            return fut  # the running batch flushes the queue when it finishes
        if len(self._items) >= self.max_batch:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            wait = self.wait_s()
            if wait > 0:
                loop.call_later(wait, self._flush)
            else:
                loop.call_soon(self._flush)
        return fut

    def wait_s(self) -> float:
        """How long a batch that opens now waits for more items: 0 when fewer than one more is expected
        within ``window_s`` at the current rate, else ``window_s``, or less when ``target`` items are
        expected sooner."""
        rate, window = self.rate, self.window_s
        if window <= 0 or rate * window < 1.0:
            return 0.0
        return min(window, max(0, self.target - len(self._items)) / rate)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=False)

    # ------------------------------------------------------------------ internals
    def _flush(self) -> None:
        self._scheduled = False
        if self._busy or not self._items:
            return
        assert self._loop is not None
        items, futures = self._items[: self.max_batch], self._futures[: self.max_batch]
        del self._items[: self.max_batch], self._futures[: self.max_batch]
        if self.on_batch is not None:
            self.on_batch(len(items))
        if self._executor is None:
            self._deliver(futures, self._run(items))
            if self._items and not self._scheduled:
                self._scheduled = True
                self._loop.call_soon(self._flush)
            return
        self._busy = True
        cf = self._loop.run_in_executor(self._executor, self._run, items)
        cf.add_done_callback(lambda f: self._thread_done(f, futures))

    def _run(self, items: list[T]) -> Sequence[R | BaseException]:
        try:
            results = self.fn(items)
        except Exception as exc:  # fn is expected to isolate failures itself; this is the last guard
            return [exc] * len(items)
        if len(results) != len(items):
            err = RuntimeError(f"batch function returned {len(results)} results for {len(items)} items")
            return [err] * len(items)
        return results

    def _thread_done(self, f: asyncio.Future[Sequence[R | BaseException]], futures: list[asyncio.Future[R]]) -> None:
        self._busy = False
        exc = f.exception()
        results: Sequence[R | BaseException] = [exc] * len(futures) if exc is not None else f.result()
        self._deliver(futures, results)
        if self._items:
            self._flush()

    @staticmethod
    def _deliver(futures: list[asyncio.Future[R]], results: Sequence[R | BaseException]) -> None:
        for fut, res in zip(futures, results):
            if fut.done():  # the request was cancelled meanwhile
                continue
            if isinstance(res, BaseException):
                fut.set_exception(res)
            else:
                fut.set_result(res)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class RouteOptions:
    """Per-request overrides of the decision rule; None keeps the router's saved value."""

    lam: float | None = None
    mu: float | None = None
    allowed: tuple[str, ...] | None = None
    max_cost: float | None = None
    max_latency: float | None = None


DEFAULT_OPTIONS = RouteOptions()


@dataclass(slots=True)
class Decision:
    """One request's routing decision.

    ``candidates`` is the provider order (chosen first, then fallbacks by utility); ``quality``,
    ``cost`` and ``latency`` are (m,) predictions for every model of ``models``, ``probabilities``
    the rule's (m,) probability of each (what an experiment records to score this policy off-policy).
    """

    chosen: str
    candidates: tuple[str, ...]
    propensity: float
    predicted_cost: float
    predicted_quality: float
    predicted_latency: float
    reason: str
    version: str
    lam: float
    models: tuple[str, ...]
    quality: np.ndarray
    cost: np.ndarray
    latency: np.ndarray
    ood: bool | None = None  # beyond the router's out-of-distribution threshold (None: no guard)
    online: Any = None  # the online policy's pick (serve.online.OnlineChoice) when it decided
    probabilities: np.ndarray | None = None  # (m,) the rule's probability of every model (None: online pick)

    def predictions(self) -> dict[str, dict[str, float]]:
        """Per model: predicted quality, cost (USD) and latency (s), for logging."""
        return {m: {"quality": float(self.quality[j]), "cost": float(self.cost[j]),
                    "latency": float(self.latency[j])} for j, m in enumerate(self.models)}


@dataclass(slots=True)
class _Item:
    messages: list[Any]
    options: RouteOptions
    tenant: str = "default"
    known: dict[str, np.ndarray] | None = None


class KnownVectors(Encoder, register=False):
    """An encoder that returns the given vectors for texts it was handed and encodes only the others.

    The decision step wraps the router's encoder in one when the semantic cache has already encoded
    a request's text with an identical encoder (same kind and configuration): the router then reuses
    that vector instead of encoding the same text again. Rows are the encoder's own output for each
    text, which does not depend on what else is in the batch, so the decision is unchanged.

    Example:
        >>> from router.encoders import HashingEncoder
        >>> enc = HashingEncoder(dim=8)
        >>> known = {"hello": enc.encode(["hello"])[0]}
        >>> bool((KnownVectors(enc, known).encode(["hello", "world"]) == enc.encode(["hello", "world"])).all())
        True
    """

    kind: ClassVar[str] = "known_vectors"

    def __init__(self, encoder: Encoder, known: dict[str, np.ndarray]) -> None:
        self.encoder = encoder
        self.known = known
        self.reused = 0  # texts answered from ``known`` (for tests and metrics)

    @property
    def dim(self) -> int:
        return int(self.encoder.dim)

    def encode(self, texts: list[str]) -> np.ndarray:
        known = self.known
        missing = list(dict.fromkeys(t for t in texts if t not in known))
        fresh = dict(zip(missing, np.asarray(self.encoder.encode(missing), dtype=np.float32))) if missing else {}
        self.reused += len(texts) - sum(t in fresh for t in texts)
        return np.stack([fresh[t] if t in fresh else known[t] for t in texts]).astype(np.float32, copy=False)


class Decider:
    """Batches decisions of concurrent requests over the current policy (see the module docs)."""

    def __init__(self, holder: PolicyHolder, *, fallbacks: int = 2, max_batch: int = 64, window_s: float = 0.0,
                 in_thread: bool = False, on_batch: Callable[[int], None] | None = None,
                 shared_encoder: dict[str, Any] | None = None, target: int = 16) -> None:
        self.holder = holder
        self.fallbacks = fallbacks
        self.online: Any = None  # serve.online.OnlineLearner, set when online learning is on
        #: identity (:func:`serve.cache.thresholds.encoder_identity`) of the encoder whose vectors requests
        #: may bring along (the semantic cache's); reused only while the policy's encoder is identical
        self.shared_encoder = shared_encoder
        self._shares: tuple[Policy | None, bool] = (None, False)
        self.reused = 0  # texts whose vector came from the cache's encoder instead of a second encoding
        self.batcher: MicroBatcher[_Item, Decision] = MicroBatcher(
            self._compute, max_batch=max_batch, window_s=window_s, in_thread=in_thread, name="decide",
            on_batch=on_batch, target=target)

    def decide(self, messages: list[Any], options: RouteOptions = DEFAULT_OPTIONS,
               tenant: str = "default", known: dict[str, np.ndarray] | None = None) -> asyncio.Future[Decision]:
        """A future of the decision for one conversation (await it).

        ``known``: text -> (dim,) vector from the encoder named by ``shared_encoder``, used instead of
        encoding that text again when the policy's encoder is the same one.
        """
        return self.batcher.submit(_Item(messages, options, tenant, known))

    def close(self) -> None:
        self.batcher.close()

    def decide_many(self, requests: Sequence[tuple[list[Any], RouteOptions, str, dict[str, np.ndarray] | None]]
                    ) -> list[Decision | BaseException]:
        """Decide a batch now, on the calling thread: per request ``(messages, options, tenant, known)``
        as for :meth:`decide`; a request that cannot be decided gets its exception in its place."""
        return self._compute([_Item(m, o, t, k) for m, o, t, k in requests])

    def decide_now(self, messages: list[Any], options: RouteOptions = DEFAULT_OPTIONS) -> Decision:
        """Decide one conversation synchronously (no batching); raises on bad input."""
        res = self._compute([_Item(messages, options)])[0]
        if isinstance(res, BaseException):
            raise res
        return res

    # ------------------------------------------------------------------ batch core
    def _compute(self, items: list[_Item]) -> list[Decision | BaseException]:
        policy = self.holder.current  # one policy for the whole batch, even if a swap happens meanwhile
        router = policy.router
        prompts = [it.messages for it in items]
        encode_with = self._known_vectors(policy, items)
        try:
            emb, lengths = router.embed(prompts, encode_with=encode_with)
        except Exception:
            if len(items) == 1:
                raise
            return [self._one(policy, it) for it in items]  # isolate the prompt that cannot be embedded
        if encode_with is not None:
            self.reused += encode_with.reused
        groups: dict[RouteOptions, list[int]] = {}
        for i, it in enumerate(items):
            groups.setdefault(it.options, []).append(i)
        out: list[Decision | BaseException] = [RuntimeError("not decided")] * len(items)
        for opts, idx in groups.items():
            sel = np.asarray(idx)
            decided: list[Decision | BaseException]
            try:
                decided = [*self._route(policy, [prompts[i] for i in idx], opts, (emb[sel], lengths[sel]),
                                        [items[i].tenant for i in idx])]
            except Exception as exc:
                decided = [exc for _ in idx]
            for k, i in enumerate(idx):
                out[i] = decided[k]
        return out

    def _known_vectors(self, policy: Policy, items: list[_Item]) -> KnownVectors | None:
        if self.shared_encoder is None:
            return None
        known: dict[str, np.ndarray] = {}
        for it in items:
            if it.known:
                known.update(it.known)
        if not known:
            return None
        cached_for, shares = self._shares
        if cached_for is not policy:  # once per policy (a swap may bring another encoder)
            from serve.cache.thresholds import encoder_identity

            try:
                shares = encoder_identity(policy.router.encoder) == self.shared_encoder
            except Exception:  # an encoder without a saved configuration: nothing to compare, so no sharing
                shares = False
            self._shares = (policy, shares)
        return KnownVectors(policy.router.encoder, known) if shares else None

    def _one(self, policy: Policy, item: _Item) -> Decision | BaseException:
        try:
            return self._route(policy, [item.messages], item.options, None, [item.tenant])[0]
        except Exception as exc:
            return exc

    def _route(self, policy: Policy, prompts: list[Any], opts: RouteOptions,
               embedded: tuple[np.ndarray, np.ndarray] | None, tenants: list[str] | None = None) -> list[Decision]:
        router = policy.router
        online = self.online if (self.online is not None and opts == DEFAULT_OPTIONS
                                 and self.online.router is router) else None
        if online is not None and embedded is None:
            embedded = router.embed(prompts)
        d = router.route(prompts, lam=opts.lam, mu=opts.mu, allowed=opts.allowed, max_cost=opts.max_cost,
                         max_latency=opts.max_latency, embedded=embedded)
        picks = None
        if online is not None and embedded is not None:
            guard = None if d.raw_quality is None else (d.raw_quality, d.ood_distance)
            picks = online.choose(embedded[0], d.quality, d.cost, np.isfinite(d.utility),
                                  tenants or ["default"] * len(d), guard=guard)
        models = d.models
        max_cost = opts.max_cost if opts.max_cost is not None else router.rule.max_cost
        max_latency = opts.max_latency if opts.max_latency is not None else router.rule.max_latency
        order = np.argsort(-d.utility, axis=1, kind="stable")
        res = []
        for k in range(len(d)):
            ci = int(d.chosen_index[k])
            prop, reason, version = float(d.probabilities[k, ci]), d.reasons[k], policy.version
            if picks is not None:
                pick = picks[k]
                ci, prop = pick.action, pick.propensity
                version = policy.version + "+online"
                reason = (f"{models[ci]}: online {online.policy_name} drew it with p={prop:.3f}"  # type: ignore[union-attr]
                          + (" (exploring)" if pick.explored else " (greedy)"))
            cost, lat, util = d.cost[k], d.latency[k], d.utility[k]
            cands = [models[ci]]
            for j in order[k]:
                if len(cands) > self.fallbacks:
                    break
                if j == ci or not np.isfinite(util[j]):
                    continue
                if max_cost is not None and cost[j] > max_cost:
                    continue
                if max_latency is not None and lat[j] > max_latency:
                    continue
                cands.append(models[j])
            res.append(Decision(models[ci], tuple(cands), prop, float(cost[ci]),
                                float(d.quality[k, ci]), float(lat[ci]), reason, version,
                                float(d.lam), models, d.quality[k], cost, lat,
                                None if d.ood is None else bool(d.ood[k]), None if picks is None else picks[k],
                                d.probabilities[k] if picks is None else None))
        return res
