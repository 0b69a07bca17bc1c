"""State shared by several service replicas through Redis: budgets, rate windows, and a cache tier.

:class:`RedisLimiter` is :class:`~serve.tenants.limits.MemoryLimiter` with its state in Redis; every
check-and-change is one Lua script, so Redis runs it atomically and two replicas cannot both spend
the last of a budget. :class:`RedisCache` shares the semantic cache: an exact-match tier every replica reads and writes
(keyed by the cache's scope -- tenant first -- and the text, both stored with the answer and compared
on read, so one tenant never reads another's answer even on a digest collision), and a replication
stream (``rc:stream``: scope, text, answer, embedding) that every replica follows in the background,
adding the others' answers to its own FAISS index in the same scope -- so a paraphrase cached by one
replica is a semantic hit on another, and lookups stay in-process.

When Redis cannot be reached (the rule, also in the README):

* **budgets fail closed**: a tenant *with a budget* gets 503 ``budget_unavailable`` (spend cannot be
  checked, so none is allowed); tenants without a budget are served;
* **rate limits and the cache fail open**: requests are served, unlimited and uncached, and the
  service logs a warning (once per outage); settlements that fail are logged with their amounts;
* after a failure Redis is not asked again for ``retry_s`` (so an outage costs no timeouts per
  request), and when it answers again everything is back, with the state it kept.

Keys: ``rt:b:<tenant>:<period>`` (hash ``spent``, ``reserved``; expires after its period),
``rt:w:<tenant>:<minute>`` (hash ``req``, ``tok``; expires after two minutes), ``rc:<tenant>:<sha256>``
(the cached answer; expires after the cache's TTL).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from typing import Any

import orjson

from serve.tenants.limits import LimitExceeded, Limits, period_bucket, rate_refusal, window

__all__ = ["STREAM", "RedisCache", "RedisLimiter"]

log = logging.getLogger("serve")
STREAM = "rc:stream"

_ADMIT = """
local req = tonumber(redis.call('HGET', KEYS[1], 'req') or '0')
local tok = tonumber(redis.call('HGET', KEYS[1], 'tok') or '0')
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
if rpm >= 0 and req >= rpm then return 1 end
if tpm >= 0 and tok >= tpm then return 2 end
redis.call('HINCRBY', KEYS[1], 'req', 1)
redis.call('EXPIRE', KEYS[1], 120)
return 0
"""
_RESERVE = """
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
local left = tonumber(ARGV[1]) - spent - reserved
local pred = tonumber(ARGV[2])
if left <= 0 or pred > left then
  if left < 0 then left = 0 end
  return {0, tostring(left)}
end
redis.call('HINCRBYFLOAT', KEYS[1], 'reserved', pred)
local ttl = tonumber(ARGV[3])
if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
return {1, tostring(left)}
"""
_SETTLE = """
if ARGV[4] == '1' then
  if tonumber(ARGV[2]) ~= 0 then redis.call('HINCRBYFLOAT', KEYS[1], 'spent', ARGV[2]) end
  local r = tonumber(redis.call('HINCRBYFLOAT', KEYS[1], 'reserved', -tonumber(ARGV[1])))
  if r < 1e-12 then redis.call('HSET', KEYS[1], 'reserved', 0) end
  local ttl = tonumber(ARGV[3])
  if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
end
if tonumber(ARGV[5]) > 0 then
  redis.call('HINCRBY', KEYS[2], 'tok', ARGV[5])
  redis.call('EXPIRE', KEYS[2], 120)
end
return 1
"""


def _client(url: str, timeout_s: float) -> Any:
    import redis.asyncio as aioredis

    # a bounded pool that waits for a free connection (up to the timeout) instead of failing under bursts
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=64, timeout=max(timeout_s, 5.0),
                                                    socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    return aioredis.Redis(connection_pool=pool, retry_on_timeout=False)


class _Breaker:
    """After a Redis error, skip Redis for ``retry_s`` seconds; warn once per outage."""

    def __init__(self, what: str, retry_s: float) -> None:
        self.what = what
        self.retry_s = retry_s
        self.down_until = 0.0
        self.down = False

    def open(self) -> bool:
        return time.monotonic() < self.down_until

    def failed(self, exc: BaseException) -> None:
        self.down_until = time.monotonic() + self.retry_s
        if not self.down:
            self.down = True
            log.warning("redis unreachable for %s (%s: %s); budgets fail closed, limits and cache fail open "
                        "until it answers", self.what, type(exc).__name__, exc)

    def ok(self) -> None:
        if self.down:
            self.down = False
            log.warning("redis answers again for %s", self.what)


class RedisLimiter:
    """Budgets and rate windows in Redis, shared by every replica (see the module docs)."""

    def __init__(self, url: str, *, timeout_s: float = 2.0, retry_s: float = 1.0, client: Any = None) -> None:
        self.url = url
        self.redis = client if client is not None else _client(url, timeout_s)
        self._admit = self.redis.register_script(_ADMIT)
        self._reserve = self.redis.register_script(_RESERVE)
        self._settle = self.redis.register_script(_SETTLE)
        self.breaker = _Breaker("limits", retry_s)

    @staticmethod
    def _budget_key(tenant: str, limits: Limits, now: float) -> tuple[str, int]:
        bucket, reset = period_bucket(limits.budget_period, now)
        ttl = 0 if reset is None else int(reset - now) + 3600
        return f"rt:b:{tenant}:{bucket}", ttl

    async def admit(self, tenant: str, limits: Limits, now: float) -> None:
        if limits.rpm is None and limits.tpm is None or self.breaker.open():
            return  # fail open while Redis is down
        w, reset_at = window(now)
        try:
            got = await self._admit(keys=[f"rt:w:{tenant}:{w}"],
                                    args=[-1 if limits.rpm is None else limits.rpm,
                                          -1 if limits.tpm is None else limits.tpm])
        except Exception as exc:
            self.breaker.failed(exc)
            return
        self.breaker.ok()
        if int(got) == 1:
            raise rate_refusal(tenant, "rpm", int(limits.rpm or 0), reset_at, now)
        if int(got) == 2:
            raise rate_refusal(tenant, "tpm", int(limits.tpm or 0), reset_at, now)

    async def reserve(self, tenant: str, limits: Limits, predicted: float, now: float) -> tuple[bool, float]:
        if limits.budget_usd is None:
            return True, float("inf")
        unavailable = LimitExceeded("budget_store", f"tenant {tenant!r} has a budget and the shared budget store "
                                                    "(Redis) cannot be reached, so no spend is allowed (budgets fail "
                                                    "closed); retry shortly.", now + self.breaker.retry_s, status=503)
        if self.breaker.open():
            raise unavailable
        key, ttl = self._budget_key(tenant, limits, now)
        try:
            ok, left = await self._reserve(keys=[key], args=[repr(limits.budget_usd), repr(float(predicted)), ttl])
        except Exception as exc:
            self.breaker.failed(exc)
            raise unavailable from None
        self.breaker.ok()
        return bool(int(ok)), float(left)

    async def settle(self, tenant: str, limits: Limits, predicted: float, actual: float, tokens: int,
                     now: float) -> None:
        budget = limits.budget_usd is not None
        toks = int(tokens) if tokens and limits.tpm is not None else 0
        if not budget and not toks:
            return
        key, ttl = self._budget_key(tenant, limits, now)
        w, _ = window(now)
        try:  # one round trip: the budget settlement and the minute's tokens together
            await self._settle(keys=[key, f"rt:w:{tenant}:{w}"],
                               args=[repr(float(predicted)), repr(float(actual)), ttl, "1" if budget else "0", toks])
        except Exception as exc:
            self.breaker.failed(exc)
            log.error("redis: could not settle tenant %r (predicted %.6g, actual %.6g USD, %d tokens): %s",
                      tenant, predicted, actual, tokens, exc)

    async def usage(self, tenant: str, limits: Limits, now: float) -> dict[str, Any]:
        key, _ = self._budget_key(tenant, limits, now)
        bucket, reset = period_bucket(limits.budget_period, now)
        w, _ = window(now)
        try:
            b = await self.redis.hgetall(key)
            r = await self.redis.hgetall(f"rt:w:{tenant}:{w}")
        except Exception as exc:
            return {"error": f"redis unreachable: {exc}"}
        return {"period": bucket, "spent_usd": float(b.get(b"spent", 0)), "reserved_usd": float(b.get(b"reserved", 0)),
                "budget_usd": limits.budget_usd, "budget_resets_at": reset,
                "requests_this_minute": int(r.get(b"req", 0)), "tokens_this_minute": int(r.get(b"tok", 0))}

    async def close(self) -> None:
        await self.redis.aclose()


class RedisCache:
    """An exact-match answer cache in Redis, shared by replicas; fails open (see the module docs)."""

    def __init__(self, url: str, *, ttl_s: float = 3600.0, timeout_s: float = 0.5, retry_s: float = 1.0,
                 stream_len: int = 100_000, client: Any = None) -> None:
        self.redis = client if client is not None else _client(url, timeout_s)
        self.ttl_s = ttl_s
        self.stream_len = stream_len
        self.breaker = _Breaker("cache", retry_s)
        self.origin = os.urandom(8).hex()  # this replica, so it skips its own stream entries
        self.replicated_ = 0
        self._warned = False
        self._task: asyncio.Task[None] | None = None

    @staticmethod
    def key(scope: str, text: str) -> str:
        tenant = scope.split("#", 1)[0]
        digest = hashlib.sha256(scope.encode() + b"\0" + text.encode()).hexdigest()
        return f"rc:{tenant}:{digest}"

    async def get(self, scope: str, text: str) -> dict[str, Any] | None:
        if self.breaker.open():
            return None
        try:
            raw = await self.redis.get(self.key(scope, text))
        except Exception as exc:
            self.breaker.failed(exc)
            return None
        self.breaker.ok()
        if raw is None:
            return None
        entry = orjson.loads(raw)
        if entry.get("scope") != scope or entry.get("text") != text:  # never serve across scopes
            return None
        return entry.get("value")  # type: ignore[no-any-return]

    async def put(self, scope: str, text: str, value: dict[str, Any], embedding: Any = None) -> None:
        """Store an answer for every replica: the exact-match entry, and an event on the replication stream."""
        if self.breaker.open():
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.set(self.key(scope, text), orjson.dumps({"scope": scope, "text": text, "value": value}),
                     px=int(self.ttl_s * 1000))
            fields = {"o": self.origin, "s": scope, "t": text, "v": orjson.dumps(value)}
            if embedding is not None:
                import numpy as np

                fields["e"] = np.asarray(embedding, dtype=np.float32).reshape(-1).tobytes()
            pipe.xadd(STREAM, fields, maxlen=self.stream_len, approximate=True)
            await pipe.execute()
        except Exception as exc:
            self.breaker.failed(exc)

    def follow(self, local: Any) -> None:
        """Replicate other replicas' answers into ``local`` (the semantic cache) from the stream, in the background."""
        self._task = asyncio.get_running_loop().create_task(self._follow(local))

    async def _follow(self, local: Any) -> None:
        import numpy as np

        last = "$"  # only answers cached from now on; a cache may start cold
        while True:
            try:
                got = await self.redis.xread({STREAM: last}, count=256, block=200)  # under the socket timeout
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.breaker.failed(exc)
                await asyncio.sleep(self.breaker.retry_s)
                continue
            self.breaker.ok()
            for _, entries in got or []:
                for entry_id, f in entries:
                    last = entry_id
                    if f.get(b"o") == self.origin.encode():
                        continue
                    try:
                        emb = np.frombuffer(f[b"e"], dtype=np.float32) if b"e" in f else None
                        local.put(f[b"s"].decode(), f[b"t"].decode(), orjson.loads(f[b"v"]), embedding=emb)
                        self.replicated_ += 1
                    except Exception as exc:  # e.g. another encoder's dimension: skip the entry, say so once
                        if not self._warned:
                            self._warned = True
                            log.warning("shared cache: cannot replicate an entry into the local cache: %s", exc)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.redis.aclose()
