"""The provider pool: one call = candidates in preference order, retries, fallback, circuit breakers.

:meth:`ProviderPool.complete` tries the router's candidates in order. On one deployment it retries errors
worth retrying (429, 5xx, a reset or cut connection, a malformed or truncated answer) up to
``max_retries`` times, waiting an exponential backoff with jitter, or the provider's ``Retry-After`` when
that is longer (a ``Retry-After`` beyond ``max_retry_after_s`` moves on at once). A timeout, a refused key or
an unknown model moves on to the next candidate without retrying; a request the provider calls invalid
(400, 413, 422) ends the call, since no other model would take it either.

A caller may pass ``guard``, an async check run before the first attempt on each candidate (after its
breaker let it through): it returns None to go ahead or a reason to skip the candidate, which is recorded
as an attempt of kind ``over_budget``; the service uses it to reserve a dearer fallback's predicted cost in
the tenant's budget, or skip it. When no candidate answered and one was skipped so, the error has kind
``over_budget`` and status 402.

Each deployment has a circuit breaker: ``failure_threshold`` consecutive failed attempts cool it down for
``cooldown_s``; candidates cooling down are skipped. After the cooldown one request probes it (half-open): a
success closes the breaker, a failure cools it down again.

:meth:`ProviderPool.stream` does the same until the first token; once a token has been given to the caller
there is no fallback, and a stream that breaks raises :class:`ProviderError` (``kind="stream_broken"``) --
never a last chunk with a ``finish_reason``. No call waits past its deployment's timeouts: ``timeout_s`` for a
whole attempt, ``first_token_timeout_s`` until the first token and ``idle_timeout_s`` between chunks.

Example (the local provider stands in for real ones):
    >>> import asyncio
    >>> from serve.provider import running
    >>> async def ask(url):
    ...     pool = ProviderPool.from_config(None, url, ["small", "big"])
    ...     try:
    ...         return await pool.complete(["big", "small"], [{"role": "user", "content": "hi"}],
    ...                                    {"max_tokens": 4})
    ...     finally:
    ...         await pool.aclose()
    >>> with running(latency_ms=0) as url:
    ...     c = asyncio.run(ask(url))
    >>> c.model, c.output_tokens, c.finish_reason, len(c.attempts)
    ('big', 4, 'length', 1)
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from router.errors import ConfigError
from serve.providers.calls import RETRY_SAME, CallError, Piece, Result
from serve.providers.native import NativeClient
from serve.providers.types import Attempt, Chunk, Completion, Deployment, ProviderError

__all__ = ["SUPPORTED_PARAMS", "ProviderPool"]

#: Request parameters the pool forwards (OpenAI names). Others are refused with a 400.
SUPPORTED_PARAMS = frozenset({"temperature", "max_tokens", "max_completion_tokens", "top_p", "stop", "user",
                              "tools", "tool_choice", "seed", "presence_penalty", "frequency_penalty",
                              "response_format"})
#: What the native Anthropic / Gemini / Ollama codecs translate; anything else goes through litellm.
_NATIVE_PARAMS = frozenset({"temperature", "max_tokens", "max_completion_tokens", "top_p", "stop", "user"})
#: Attempt kinds of candidates that were skipped, not called.
_SKIPPED = ("cooling_down", "no_deployment", "over_budget")

#: ``guard(model)``: None to call ``model``, or the reason to skip it.
Guard = Callable[[str], Awaitable[str | None]]


@functools.lru_cache(maxsize=1)
def _price_table() -> Any:
    from router.data.prices import PriceTable

    return PriceTable.load()


def _prices_of(dep: Deployment) -> tuple[float, float] | None:
    if dep.input_cost_per_token is not None and dep.output_cost_per_token is not None:
        return dep.input_cost_per_token, dep.output_cost_per_token
    try:
        table = _price_table()
    except Exception:  # no price map available: costs unknown
        return None
    for name in (dep.wire_model, dep.model):
        if name in table:
            i, o = table.lookup(name)
            return (dep.input_cost_per_token if dep.input_cost_per_token is not None else i,
                    dep.output_cost_per_token if dep.output_cost_per_token is not None else o)
    return None


class _Breaker:
    """Consecutive-failure circuit breaker of one deployment (monotonic clock)."""

    __slots__ = ("failures", "open_until", "probing", "threshold", "cooldown")

    def __init__(self, threshold: int, cooldown: float) -> None:
        self.threshold, self.cooldown = threshold, cooldown
        self.failures = 0
        self.open_until = 0.0
        self.probing = False

    def allow(self, now: float) -> bool:
        """Whether a request may go to this deployment now (taking the half-open probe if due)."""
        if self.failures < self.threshold:
            return True
        if now < self.open_until or self.probing:
            return False
        self.probing = True
        return True

    def success(self) -> None:
        self.failures, self.open_until, self.probing = 0, 0.0, False

    def failure(self, now: float) -> None:
        self.failures += 1
        self.probing = False
        if self.failures >= self.threshold:
            self.open_until = now + self.cooldown

    def release(self) -> None:
        """An attempt ended without a verdict (the caller went away): free the probe."""
        self.probing = False


def _safe_base(url: str) -> str:
    """The URL without credentials or query (for health output)."""
    if not url:
        return ""
    p = urlsplit(url)
    port = f":{p.port}" if p.port else ""
    return f"{p.scheme}://{p.hostname}{port}{p.path}"


def _needs_litellm(messages: list[dict], params: dict) -> bool:
    if any(k not in _NATIVE_PARAMS for k in params):
        return True
    for m in messages:
        if m.get("role") == "tool" or m.get("tool_calls"):
            return True
        c = m.get("content")
        if isinstance(c, list) and any(not (isinstance(p, dict) and p.get("type", "text") == "text") for p in c):
            return True
    return False


class ProviderPool:
    """Deployments of the router's models, with retries, fallback and circuit breakers.

    Args:
        deployments: one per model name.
        keys: ``{model: api key}`` (read from the environment / files by :meth:`from_config`).
        default_base_url: when given, a candidate without a deployment is called there with protocol
            ``openai`` (the no-configuration mode); when None such a candidate is skipped.
        failure_threshold: consecutive failed attempts that cool a deployment down.
        cooldown_s: how long a cooled-down deployment is skipped before a probe.
        backoff_s: first retry wait (doubles per retry, with jitter in [50%, 100%]).
        max_backoff_s: cap of the backoff.
        max_retry_after_s: longest ``Retry-After`` waited for on the same deployment.
        seed: seeds the jitter.
    """

    def __init__(
        self,
        deployments: Sequence[Deployment],
        keys: dict[str, str | None] | None = None,
        *,
        default_base_url: str | None = None,
        failure_threshold: int = 3,
        cooldown_s: float = 30.0,
        backoff_s: float = 0.1,
        max_backoff_s: float = 2.0,
        max_retry_after_s: float = 5.0,
        seed: int = 0,
    ) -> None:
        if isinstance(failure_threshold, bool) or not isinstance(failure_threshold, int) or failure_threshold < 1:
            raise ConfigError(f"failure_threshold must be an integer >= 1, got {failure_threshold!r}.")
        for name, v in (("cooldown_s", cooldown_s), ("backoff_s", backoff_s), ("max_backoff_s", max_backoff_s),
                        ("max_retry_after_s", max_retry_after_s)):
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                raise ConfigError(f"{name} must be a number of seconds >= 0, got {v!r}.")
        if default_base_url is not None:
            Deployment("probe", "openai", default_base_url)  # validates the URL
        self.deployments: dict[str, Deployment] = {}
        for d in deployments:
            if d.model in self.deployments:
                raise ConfigError(f"model {d.model!r} has two deployments; give each model one.")
            self.deployments[d.model] = d
        self.default_base_url = default_base_url
        self.failure_threshold = failure_threshold
        self.cooldown_s = float(cooldown_s)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.max_retry_after_s = float(max_retry_after_s)
        self.seed = seed
        self._keys = dict(keys or {})
        self._rng = random.Random(seed)
        self._breakers: dict[str, _Breaker] = {}
        self._prices: dict[str, tuple[float, float] | None] = {}
        self._native = NativeClient()
        self._litellm: Any = None

    @classmethod
    def from_config(cls, config: dict | None, default_base_url: str, models: Sequence[str]) -> ProviderPool:
        """Build from the ``providers`` section of the service config (see :mod:`serve.providers.config`).

        ``config=None`` routes every model (listed or not) to ``default_base_url`` with protocol ``openai``.
        """
        if config is None:
            return cls([Deployment(m, "openai", default_base_url) for m in models],
                       default_base_url=default_base_url)
        from serve.providers.config import parse_config

        parsed = parse_config(config, default_base_url, models)
        return cls(parsed.deployments, parsed.keys, default_base_url=parsed.default_base_url, **parsed.pool)

    # ------------------------------------------------------------------ public calls
    async def complete(self, candidates: Sequence[str], messages: list[dict], params: dict, *,
                       guard: Guard | None = None) -> Completion:
        """The first complete answer among ``candidates`` (preference order).

        ``guard``: checked before each candidate is first called (see the module docs).

        Raises:
            ProviderError: no candidate answered; ``status`` is what to give the client.
        """
        self._check(candidates, messages, params)
        t0 = time.perf_counter()
        attempts: list[Attempt] = []
        for dep, br in self._candidates(candidates, attempts):
            if guard is not None and not await self._guarded(guard, dep, br, attempts):
                continue
            client = self._client_for(dep, messages, params)
            key = self._keys.get(dep.model)
            for i in range(dep.max_retries + 1):
                ta = time.perf_counter()
                try:
                    async with asyncio.timeout(dep.timeout_s):
                        res = await client.complete(dep, key, messages, params)
                except CallError as exc:
                    err = exc
                except TimeoutError:
                    err = CallError("timeout", None, f"no answer within {dep.timeout_s:g} s")
                except asyncio.CancelledError:
                    br.release()
                    raise
                else:
                    br.success()
                    lat = time.perf_counter() - ta
                    attempts.append(Attempt(dep.model, True, 200, None, lat))
                    return self._completion(dep, res, messages, time.perf_counter() - t0, attempts)
                wait = self._after_failure(dep, br, err, ta, attempts, i)
                if wait is None:
                    break
                await asyncio.sleep(wait)
        raise self._final_error(attempts)

    async def stream(self, candidates: Sequence[str], messages: list[dict], params: dict, *,
                     guard: Guard | None = None) -> AsyncIterator[Chunk]:
        """Stream the answer of the first candidate that gives a first token (``guard``: as for :meth:`complete`).

        Yields text chunks, then one last chunk with ``finish_reason``, usage, cost and attempts.

        Raises:
            ProviderError: before the first chunk, when no candidate gave a first token; after it,
                ``kind="stream_broken"`` when the stream broke (the text so far is incomplete).
        """
        self._check(candidates, messages, params)
        t0 = time.perf_counter()
        attempts: list[Attempt] = []
        for dep, br in self._candidates(candidates, attempts):
            if guard is not None and not await self._guarded(guard, dep, br, attempts):
                continue
            client = self._client_for(dep, messages, params)
            key = self._keys.get(dep.model)
            for i in range(dep.max_retries + 1):
                ta = time.perf_counter()
                gen = client.stream(dep, key, messages, params)
                try:
                    async with asyncio.timeout(min(dep.first_token_timeout_s, dep.timeout_s)):
                        first = await _first_piece(gen)
                except (CallError, TimeoutError) as exc:
                    await _close(gen)
                    err = exc if isinstance(exc, CallError) else CallError(
                        "timeout", None, f"no first token within {min(dep.first_token_timeout_s, dep.timeout_s):g} s")
                    wait = self._after_failure(dep, br, err, ta, attempts, i)
                    if wait is None:
                        break
                    await asyncio.sleep(wait)
                    continue
                except BaseException:
                    await _close(gen)
                    br.release()
                    raise
                # committed to this deployment: no fallback from here on
                try:
                    async for chunk in self._rest(dep, br, gen, first, messages, t0, ta, attempts):
                        yield chunk
                finally:
                    br.release()
                    await _close(gen)
                return
        raise self._final_error(attempts)

    def health(self) -> dict[str, dict[str, Any]]:
        """Per-deployment state: ``ok``, ``cooling_down`` (until a wall-clock time) or ``probing``."""
        now_m, now_w = time.monotonic(), time.time()
        out: dict[str, dict[str, Any]] = {}
        for model, dep in sorted(self.deployments.items()):
            br = self._breakers.get(model)
            state, until = "ok", None
            if br is not None and br.failures >= br.threshold:
                if br.probing:
                    state = "probing"
                elif now_m < br.open_until:
                    state, until = "cooling_down", now_w + (br.open_until - now_m)
                else:
                    state = "half_open"
            out[model] = {"state": state, "cooling_down_until": until,
                          "consecutive_failures": 0 if br is None else br.failures,
                          "protocol": dep.protocol, "api_base": _safe_base(dep.api_base)}
        return out

    async def aclose(self) -> None:
        """Close pooled connections."""
        await self._native.aclose()

    # ------------------------------------------------------------------ internals
    def _check(self, candidates: Sequence[str], messages: list[dict], params: dict) -> None:
        if isinstance(candidates, str) or not candidates:
            raise ProviderError("candidates must be a non-empty list of model names.", status=400,
                                retryable=False, kind="bad_request")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise ProviderError("messages must be a non-empty list of {role, content} objects.", status=400,
                                retryable=False, kind="bad_request")
        bad = [k for k in params if k not in SUPPORTED_PARAMS]
        if bad:
            raise ProviderError(f"unsupported parameter(s) {sorted(bad)}; the router forwards "
                                f"{sorted(SUPPORTED_PARAMS)}.", status=400, retryable=False, kind="bad_request")

    def _deployment(self, model: str) -> Deployment | None:
        dep = self.deployments.get(model)
        if dep is None and self.default_base_url is not None:
            dep = self.deployments[model] = Deployment(model, "openai", self.default_base_url)
        return dep

    def _breaker(self, model: str) -> _Breaker:
        br = self._breakers.get(model)
        if br is None:
            br = self._breakers[model] = _Breaker(self.failure_threshold, self.cooldown_s)
        return br

    def _candidates(self, candidates: Sequence[str], attempts: list[Attempt]) -> Any:
        """Deployments to try, in order; records skipped candidates in ``attempts``."""
        for model in candidates:
            dep = self._deployment(model)
            if dep is None:
                attempts.append(Attempt(model, False, None, "no deployment configured for this model", 0.0,
                                        kind="no_deployment"))
                continue
            br = self._breaker(model)
            if not br.allow(time.monotonic()):
                left = max(0.0, br.open_until - time.monotonic())
                attempts.append(Attempt(model, False, None, f"cooling down for {left:.1f} s more", 0.0,
                                        kind="cooling_down", retry_after_s=left))
                continue
            yield dep, br

    @staticmethod
    async def _guarded(guard: Guard, dep: Deployment, br: _Breaker, attempts: list[Attempt]) -> bool:
        """Whether the caller's guard lets ``dep`` be called; a refusal is recorded and frees the breaker's probe."""
        try:
            why = await guard(dep.model)
        except BaseException:
            br.release()
            raise
        if why is None:
            return True
        br.release()
        attempts.append(Attempt(dep.model, False, None, why, 0.0, kind="over_budget"))
        return False

    def _client_for(self, dep: Deployment, messages: list[dict], params: dict) -> Any:
        if dep.protocol == "openai" or (dep.protocol != "litellm" and not _needs_litellm(messages, params)):
            return self._native
        if self._litellm is None:
            from serve.providers.via_litellm import LitellmClient

            self._litellm = LitellmClient()
        return self._litellm

    def _after_failure(self, dep: Deployment, br: _Breaker, err: CallError, ta: float,
                       attempts: list[Attempt], i: int) -> float | None:
        """Record a failed attempt; the wait before retrying the same deployment, or None to move on."""
        attempts.append(Attempt(dep.model, False, err.status, err.message, time.perf_counter() - ta,
                                kind=err.kind, retry_after_s=err.retry_after_s))
        if err.kind == "bad_request":
            br.release()
            raise ProviderError(f"{dep.model}: the provider refused the request: {err.message}", status=400,
                                retryable=False, kind="bad_request", attempts=attempts)
        br.failure(time.monotonic())
        if err.kind not in RETRY_SAME or i >= dep.max_retries or not br.allow(time.monotonic()):
            return None
        wait = min(self.max_backoff_s, self.backoff_s * 2**i) * (0.5 + 0.5 * self._rng.random())
        if err.retry_after_s is not None:
            if err.retry_after_s > self.max_retry_after_s:
                br.release()
                return None
            wait = max(wait, err.retry_after_s)
        return wait

    def _cost(self, dep: Deployment, n_in: int, n_out: int) -> float | None:
        if dep.model not in self._prices:
            self._prices[dep.model] = _prices_of(dep)
        p = self._prices[dep.model]
        return None if p is None else n_in * p[0] + n_out * p[1]

    def _completion(self, dep: Deployment, res: Result, messages: list[dict], latency: float,
                    attempts: list[Attempt]) -> Completion:
        n_in = res.input_tokens if res.input_tokens is not None else _estimate_in(messages)
        n_out = res.output_tokens if res.output_tokens is not None else max(1, len(res.text) // 4)
        return Completion(res.text, dep.model, res.finish_reason, n_in, n_out, latency,
                          self._cost(dep, n_in, n_out), attempts, res.tool_calls)

    async def _rest(self, dep: Deployment, br: _Breaker, gen: AsyncIterator[Piece], first: Piece,
                    messages: list[dict], t0: float, ta: float, attempts: list[Attempt]) -> AsyncIterator[Chunk]:
        """The committed part of a stream: the first piece, then the rest under the idle / total timeouts."""
        piece: Piece | None = first
        n_chars = 0
        deadline = ta + dep.timeout_s
        while True:
            assert piece is not None
            if piece.finish_reason is not None:
                br.success()
                attempts.append(Attempt(dep.model, True, 200, None, time.perf_counter() - ta))
                n_in = piece.input_tokens if piece.input_tokens is not None else _estimate_in(messages)
                n_out = piece.output_tokens if piece.output_tokens is not None else max(1, n_chars // 4)
                if piece.text:
                    yield Chunk(text=piece.text, model=dep.model)
                yield Chunk(model=dep.model, finish_reason=piece.finish_reason, input_tokens=n_in,
                            output_tokens=n_out, cost_usd=self._cost(dep, n_in, n_out),
                            latency_s=time.perf_counter() - t0, attempts=attempts)
                return
            if piece.text:
                n_chars += len(piece.text)
                yield Chunk(text=piece.text, model=dep.model)
            limit = min(dep.idle_timeout_s, deadline - time.perf_counter())
            err: CallError | None
            try:
                async with asyncio.timeout(max(0.0, limit)):
                    piece = await anext(gen, None)  # type: ignore[call-overload]
            except (CallError, TimeoutError) as exc:
                err = exc if isinstance(exc, CallError) else CallError(
                    "timeout", None, f"no next chunk within {limit:.3g} s")
                piece = None
            else:
                err = None if piece is not None else CallError("truncated", None, "the stream ended early")
            if err is not None:
                br.failure(time.monotonic())
                attempts.append(Attempt(dep.model, False, err.status, err.message, time.perf_counter() - ta,
                                        kind=err.kind))
                raise ProviderError(f"{dep.model}: the stream broke after {n_chars} characters "
                                    f"({err.kind}: {err.message}); the answer is incomplete.",
                                    status=502 if err.kind != "timeout" else 504, retryable=True,
                                    kind="stream_broken", attempts=attempts)

    def _final_error(self, attempts: list[Attempt]) -> ProviderError:
        tried = [a for a in attempts if a.kind not in _SKIPPED]
        summary = "; ".join(f"{a.model}: {a.kind}" + (f" ({a.error})" if a.error else "") for a in attempts[-6:])
        if not attempts:
            return ProviderError("no candidates", status=503, kind="no_deployment", attempts=attempts)
        if any(a.kind == "over_budget" for a in attempts):  # the caller's guard stopped what was left to try
            return ProviderError(f"no candidate answered within what the guard allowed: {summary}", status=402,
                                 retryable=False, kind="over_budget", attempts=attempts)
        if not tried:
            if all(a.kind == "no_deployment" for a in attempts):
                return ProviderError(f"no candidate model has a deployment: {summary}", status=503,
                                     retryable=False, kind="no_deployment", attempts=attempts)
            waits = [a.retry_after_s for a in attempts if a.retry_after_s is not None]
            return ProviderError(f"every candidate is cooling down after failures: {summary}", status=503,
                                 kind="cooling_down", attempts=attempts, retry_after_s=min(waits) if waits else None)
        last = tried[-1]
        if all(a.kind == "rate_limited" for a in tried):
            waits = [a.retry_after_s for a in tried if a.retry_after_s is not None]
            return ProviderError(f"every candidate is rate limited: {summary}", status=429, kind="rate_limited",
                                 attempts=attempts, retry_after_s=min(waits) if waits else None)
        status = 504 if last.kind == "timeout" else 502
        return ProviderError(f"no candidate gave a complete answer: {summary}", status=status, kind=last.kind or
                             "server_error", attempts=attempts)


def _estimate_in(messages: list[dict]) -> int:
    chars = 0
    for m in messages:
        c = m.get("content")
        chars += len(c) if isinstance(c, str) else sum(len(p.get("text", "")) for p in c or () if isinstance(p, dict))
    return max(1, chars // 4)


async def _first_piece(gen: AsyncIterator[Piece]) -> Piece:
    """The first piece with text or a finish (a stream without either is truncated)."""
    async for piece in gen:
        if piece.text or piece.finish_reason is not None:
            return piece
    raise CallError("truncated", None, "the stream ended before its first token")


async def _close(gen: Any) -> None:
    aclose = getattr(gen, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # closing a failed stream must not mask the failure
            pass
