"""Cache lookup and decision in one batch: embed, search the cache, route the misses.

A routed request that misses the exact cache needs three things that each cost less per request
when done for many at once: the cache encoder's embedding of its text, the nearest cached text of
its scope, and, on a miss, the router's decision. :class:`Lookup` does all three in one
:class:`~serve.decide.MicroBatcher` batch: one encoder call for the batch's texts, one pass over
each scope's vectors (:meth:`~serve.cache.SemanticCache.get_many`), then one
``Decider.decide_many`` over the requests that missed, which reuses the cache encoder's rows when
the router's encoder is the same one. One batch also means one batching window instead of two.

The results are the same as the step-by-step path (embed, ``cache.get``, ``Decider.decide``): the
same encoder rows, the same nearest neighbour and threshold, the same decisions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from serve.decide import DEFAULT_OPTIONS, Decider, Decision, MicroBatcher, RouteOptions, encode_in_thread

__all__ = ["Lookup", "LookupItem", "LookupResult"]


@dataclass(slots=True)
class LookupItem:
    """One request: its cache scope and text; ``route`` asks for a decision when the cache misses."""

    scope: str
    text: str
    messages: list[Any]
    options: RouteOptions = DEFAULT_OPTIONS
    tenant: str = "default"
    route: bool = True


@dataclass(slots=True)
class LookupResult:
    """The cache encoder's row of the text (``raw``) and its unit row (the cache key), the hit if
    any, and on a miss the decision (or the error that prevented it) when one was asked for."""

    raw: np.ndarray
    embedding: np.ndarray
    hit: Any = None
    decision: Decision | None = None
    error: BaseException | None = None


class Lookup:
    """Batches cache lookups and decisions of concurrent requests (see the module docs)."""

    def __init__(self, cache: Any, decider: Decider, embed: Callable[[Any, list[str]], list[tuple[Any, Any]]], *,
                 max_batch: int = 64, window_s: float = 0.0, encode_in_thread_setting: str = "auto",
                 on_batch: Callable[[int], None] | None = None, target: int = 16) -> None:
        self.cache = cache
        self.decider = decider
        self._embed = embed
        self.batcher: MicroBatcher[LookupItem, LookupResult] = MicroBatcher(
            self._compute, max_batch=max_batch, window_s=window_s, name="lookup", on_batch=on_batch, target=target,
            in_thread=encode_in_thread(encode_in_thread_setting, cache.encoder_))

    def submit(self, item: LookupItem) -> asyncio.Future[LookupResult]:
        """A future of the item's lookup (await it)."""
        return self.batcher.submit(item)

    def close(self) -> None:
        self.batcher.close()

    def _compute(self, items: list[LookupItem]) -> list[LookupResult | BaseException]:
        try:
            rows = self._embed(self.cache, [it.text for it in items])
        except Exception:
            if len(items) == 1:
                raise
            return [self._one(it) for it in items]  # isolate the text that cannot be embedded
        hits = self.cache.get_many([(it.scope, it.text, unit) for it, (_, unit) in zip(items, rows)], unit=True)
        out: list[LookupResult | BaseException] = [LookupResult(raw, unit, hit) for (raw, unit), hit in zip(rows, hits)]
        todo = [i for i, (it, hit) in enumerate(zip(items, hits)) if hit is None and it.route]
        if todo:
            decided = self.decider.decide_many([(items[i].messages, items[i].options, items[i].tenant,
                                                 {items[i].text: rows[i][0]}) for i in todo])
            for i, d in zip(todo, decided):
                res = out[i]
                assert isinstance(res, LookupResult)
                if isinstance(d, BaseException):
                    res.error = d
                else:
                    res.decision = d
        return out

    def _one(self, item: LookupItem) -> LookupResult | BaseException:
        try:
            res = self._compute([item])[0]
        except Exception as exc:
            return exc
        return res
