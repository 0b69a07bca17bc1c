"""``POST /v1/chat/completions``: the hot path, top to bottom.

auth (tenant) -> read and validate -> cache (exact, then semantic) -> decide -> provider call
(with fallbacks) -> store in the cache -> respond (JSON or SSE) -> metrics and the decision record.

A streamed answer starts (status and headers) only when the provider's first chunk has arrived,
so a fallback before the first token is invisible to the client and the headers name the model
that answers. A stream that breaks after the first token ends with an SSE ``error`` event and no
``[DONE]``: the OpenAI client raises, and a truncated answer is never reported as complete (nor
cached).
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import TYPE_CHECKING, Any

import orjson

from router.errors import RoutingError
from serve.api.budget import Bill, Topup, reserve
from serve.api.errors import APIError
from serve.api.http import ClientGone, Receive, Scope, Send, send_bytes, sse_start
from serve.api.http import header_ascii as _ascii
from serve.api.parse import ChatRequest, parse_chat
from serve.decide import Decision
from serve.logbook import DecisionRecord
from serve.lookup import LookupItem
from serve.tenants.explain import Explanation
from serve.tenants.limits import Limits

if TYPE_CHECKING:
    from serve.app import State

__all__ = ["chat_completions"]

MAX_REASON = 200
_DONE = b"data: [DONE]\n\n"


def authenticate(scope: Scope) -> str:
    """The tenant of a request: from the credential the app checked (``scope["principal"]``), never the body."""
    principal = scope.get("principal")
    return principal.tenant if principal is not None else "default"


async def chat_completions(state: State, scope: Scope, receive: Receive, send: Send, rid: str,
                           t0: float) -> int:
    """Serve one chat completion; returns the HTTP status sent.

    Before anything is read: the tenant's rate limits (429). The body is then read up to the smaller
    of the service's and the tenant's size limit (413), and the decision is explained in
    ``state.tenancy.decisions`` whatever the outcome.
    """
    from serve.api.http import read_body

    tenant = authenticate(scope)
    tenancy = state.tenancy
    limits = tenancy.limits(tenant)
    if not limits.unlimited:
        await tenancy.admit(tenant, limits)
    limit = state.settings.max_body_bytes
    if limits.max_body_bytes is not None:
        limit = min(limit, limits.max_body_bytes)
    raw = await read_body(scope, receive, limit)
    policy = state.holder.current
    req = parse_chat(raw, models=state.passthrough_models(policy), profiles=state.settings.profiles,
                     max_messages=state.settings.max_messages, supported=state.supported_params)
    exp = Explanation(rid, tenant, time.time(), req.model, req.routed, policy.version, req.options)
    tenancy.decisions.add(exp)
    bill = Bill()
    experiment = tenancy.experiment
    arm = None
    if experiment is not None and req.routed:
        arm = experiment.arm(tenant, req.body.get("user"))
        exp.experiment = {"name": experiment.name, "mode": experiment.mode, "arm": arm}
    try:
        status = exp.status = await _chat(state, receive, send, rid, t0, tenant, req, policy, limits, exp, bill)
    except APIError as err:
        exp.status = err.status
        raise
    finally:
        if bill.model is not None:
            exp.answered_model = bill.model
        if not limits.unlimited and (bill.reserved or bill.actual or bill.tokens):
            await tenancy.settle(tenant, limits, bill.reserved, bill.actual, bill.tokens)
        if arm is not None:
            experiment.observe(arm, exp.decision, exp.status, bill.actual if bill.model else 0.0)
    exp.status = status
    return status


async def _chat(state: State, receive: Receive, send: Send, rid: str, t0: float, tenant: str, req: ChatRequest,
                policy: Any, limits: Limits, exp: Explanation, bill: Bill) -> int:
    metrics = state.metrics
    record = DecisionRecord(rid, time.time(), tenant, req.messages, req.model, 1.0, req.routed, policy.version,
                            "bypass", stream=req.stream) if state.logbook.enabled else None

    # ---- cache: exact key first (no embedding), then nearest neighbour in the request's scope
    cache = state.cache
    key: tuple[str, str] | None = None
    embedding = None
    known: dict[str, Any] | None = None  # the cache encoder's vector of the text, for the router to reuse
    looked_up: Decision | None = None  # decided in the same batch as the cache lookup (serve.lookup)
    if cache is not None and req.use_cache:
        try:
            key = (cache.scope(tenant, req.body), cache.text(req.messages))
        except RoutingError:
            key = None  # e.g. no user turn: nothing to key on, so no caching
        if key is not None and key[1].strip():
            hit = cache.get_exact(*key)
            shared = state.tenancy.shared_cache
            if hit is None and shared is not None:  # the replicas' shared tier (Redis), exact match
                value = await shared.get(key[0], key[1])
                if value is not None:
                    hit = SharedHit(value)
                    exp.cache_detail = "shared tier (redis)"
            if hit is None:
                fused = req.routed and (exp.experiment is None or exp.experiment["arm"] != "challenger")
                t_look = time.perf_counter()
                found = await state.lookup.submit(LookupItem(key[0], key[1], req.messages, req.options, tenant, fused))
                embedding, hit = found.embedding, found.hit
                known = {key[1]: found.raw}
                if isinstance(found.error, RoutingError):
                    raise _unroutable(found.error) from None
                if found.error is not None:
                    raise found.error
                looked_up = found.decision
                if looked_up is not None:
                    metrics.decide_latency.observe(time.perf_counter() - t_look)
            if hit is not None:
                outcome = "hit_exact" if hit.exact else "hit_semantic"
                metrics.cache[outcome] += 1
                exp.cache = outcome
                exp.cache_detail = exp.cache_detail or f"similarity {hit.similarity:.3f}, age {hit.age_s:.0f} s"
                exp.chosen_model = exp.answered_model = str(hit.value.get("model", ""))
                return await _from_cache(state, send, req, rid, t0, hit, outcome, policy.version, record)
            metrics.cache["miss"] += 1
        else:
            key = None
            metrics.cache["bypass"] += 1
    else:
        metrics.cache["bypass"] += 1
    cache_outcome = "miss" if key is not None else "bypass"

    # ---- decide
    decision: Decision | None = None
    if req.routed:
        t_dec = time.perf_counter()
        try:
            ex_info = exp.experiment
            experiment = state.tenancy.experiment
            other = None  # the decider of the arm that does not act, scored in the background
            if ex_info is not None and ex_info["arm"] == "challenger":
                decision = await experiment.decider.decide(req.messages, req.options)
                metrics.decide_latency.observe(time.perf_counter() - t_dec)
                other = state.decider if state.online is None else None  # online draws have side effects
            else:
                if looked_up is not None:
                    decision = looked_up
                else:
                    decision = await state.decider.decide(req.messages, req.options, tenant, known)
                    metrics.decide_latency.observe(time.perf_counter() - t_dec)
                other = experiment.decider if ex_info is not None else None
            if ex_info is not None:
                ex_info["version"] = decision.version
                if other is not None and (ex_info["mode"] == "shadow" or state.logbook.keeps_shadow):
                    experiment.score_other(ex_info["arm"], req.messages, req.options, decision, other, exp,
                                           state.logbook)
        except RoutingError as exc:
            raise _unroutable(exc) from None
        candidates = list(decision.candidates)
        chosen = decision.chosen
        metrics.decisions[(chosen, "routed")] += 1
        if decision.ood is not None:  # drift: the share of prompts far from the router's training data
            metrics.ood_checked += 1
            metrics.ood_flagged += decision.ood
        headers = [
            (b"x-route-model", _ascii(chosen)),
            (b"x-route-policy-version", _ascii(decision.version)),
            (b"x-route-predicted-cost", f"{decision.predicted_cost:.6g}".encode()),
            (b"x-route-reason", _ascii(decision.reason, MAX_REASON)),
        ]
        if exp.experiment is not None:
            headers.append((b"x-route-experiment-arm", exp.experiment["arm"].encode()))
    else:
        chosen = req.model
        candidates = [chosen]
        metrics.decisions[(chosen, "passthrough")] += 1
        headers = [
            (b"x-route-model", _ascii(chosen)),
            (b"x-route-policy-version", _ascii(policy.version)),
            (b"x-route-reason", b"pass-through: the request named this model"),
        ]
    exp.decision, exp.cache = decision, cache_outcome
    if decision is not None:
        state.tenancy.savings.add(decision)
    guard: Topup | None = None
    if limits.budget_usd is not None:
        chosen, candidates = await reserve(state, tenant, req, limits, decision, chosen, candidates, headers, exp, bill)
        if decision is not None and len(candidates) > 1:
            guard = Topup(state, tenant, limits, decision, bill, exp)
    exp.chosen_model = chosen
    headers.append((b"x-cache", b"miss" if key is not None else b"bypass"))
    if record is not None:
        record.cache = cache_outcome
        if decision is not None:
            record.chosen_model = decision.chosen
            record.propensity = decision.propensity
            record.predicted_cost = decision.predicted_cost
            record.predicted = decision.predictions()
            record.policy_version = decision.version
            record.lam = decision.lam
            record.ood = decision.ood
            record.explored = decision.online is not None and decision.online.explored
            if exp.experiment is not None:
                record.experiment, record.arm = exp.experiment["name"], exp.experiment["arm"]
    if decision is not None and decision.online is not None:  # the online policy decided: learn from feedback
        state.online.remember(rid, decision.online, decision.predicted_cost, tenant)  # type: ignore[union-attr]
        metrics.online_explored += decision.online.explored

    # ---- provider call
    if req.stream:
        return await _stream(state, receive, send, req, rid, t0, candidates, chosen, headers, key, embedding, record,
                             bill, guard)
    t_call = time.perf_counter()
    try:
        async with asyncio.timeout(state.settings.request_timeout_s):
            done = await state.pool.complete(candidates, req.messages, req.params, guard=guard)
    except TimeoutError:
        raise _failed(state, record, t0, _timeout(state, candidates[0])) from None
    except state.provider_error as exc:
        raise _failed(state, record, t0, _provider_failed(state, candidates, exc, guard)) from None
    provider_s = time.perf_counter() - t_call
    if len(done.attempts) > 1:
        _count_attempts(state, done.attempts)
    _account(state, done.model, chosen, provider_s, done.cost_usd, done.input_tokens, done.output_tokens)
    bill.done(done.model, done.cost_usd, done.input_tokens, done.output_tokens)
    if decision is not None and decision.online is not None and done.cost_usd is not None:
        state.online.cost_of(rid, float(done.cost_usd))  # type: ignore[union-attr]
    message: dict[str, Any] = {"role": "assistant", "content": done.text}
    if done.tool_calls:
        message["tool_calls"] = done.tool_calls
    elif key is not None and cache is not None and done.finish_reason in ("stop", "length"):
        entry = {"text": done.text, "model": done.model, "finish_reason": done.finish_reason,
                 "input_tokens": done.input_tokens, "output_tokens": done.output_tokens}
        cache.put(key[0], key[1], entry, embedding=embedding, unit=embedding is not None)
        _share(state, key, entry, embedding)
    body = orjson.dumps({
        "id": "chatcmpl-" + rid, "object": "chat.completion", "created": int(time.time()), "model": done.model,
        "choices": [{"index": 0, "message": message, "finish_reason": done.finish_reason, "logprobs": None}],
        "usage": _usage(done.input_tokens, done.output_tokens),
    })
    headers.append((b"x-request-id", rid.encode()))
    if record is not None:  # queued before the answer leaves, so feedback on it always finds the request
        _finish(record, done.model, done.cost_usd, provider_s, t0, done.input_tokens, done.output_tokens)
        await _log_answered(state, record)
    await send_bytes(send, 200, body, headers)
    metrics.added_latency.observe(max(time.perf_counter() - t0 - provider_s, 0.0))
    return 200


def _unroutable(exc: RoutingError) -> APIError:
    """A request the router cannot decide (bad input), as the client sees it: a 400."""
    return APIError(400, f"cannot route this request: {exc}", param="messages")


class SharedHit:
    """A hit from the replicas' shared cache tier, shaped like the local cache's hits."""

    __slots__ = ("value",)
    exact = True
    similarity = 1.0
    age_s = 0.0

    def __init__(self, value: dict[str, Any]) -> None:
        self.value = value


_pending: set[asyncio.Task[None]] = set()


def _share(state: State, key: tuple[str, str], entry: dict[str, Any], embedding: Any) -> None:
    """Write an answer to the shared cache tier in the background (never delays the response)."""
    shared = state.tenancy.shared_cache
    if shared is not None:
        task = asyncio.get_running_loop().create_task(shared.put(key[0], key[1], entry, embedding))
        _pending.add(task)
        task.add_done_callback(_pending.discard)


async def _from_cache(state: State, send: Send, req: ChatRequest, rid: str, t0: float, hit: Any, outcome: str,
                      version: str, record: DecisionRecord | None) -> int:
    value = hit.value
    model = str(value.get("model", ""))
    headers = [
        (b"x-route-model", _ascii(model)),
        (b"x-route-policy-version", _ascii(version)),
        (b"x-route-predicted-cost", b"0"),
        (b"x-route-reason", _ascii(f"cache {outcome[4:]} hit (similarity {hit.similarity:.3f}, "
                                   f"age {hit.age_s:.0f}s); answered by {model} earlier", MAX_REASON)),
        (b"x-cache", b"hit"),
        (b"x-request-id", rid.encode()),
    ]
    text = str(value.get("text", ""))
    finish = value.get("finish_reason") or "stop"
    itok, otok = int(value.get("input_tokens") or 0), int(value.get("output_tokens") or 0)
    if record is not None:  # queued before the answer leaves, so feedback on it always finds the request
        record.cache = outcome
        record.chosen_model = model
        _finish(record, model, 0.0, 0.0, t0, itok, otok)
        await _log_answered(state, record)
    if req.stream:
        await sse_start(send, headers)
        cid = "chatcmpl-" + rid
        created = int(time.time())
        events = [_chunk(cid, created, model, {"role": "assistant", "content": text}, None),
                  _chunk(cid, created, model, {}, finish)]
        if req.include_usage:
            events.append(_usage_chunk(cid, created, model, itok, otok))
        events.append(_DONE)
        await send({"type": "http.response.body", "body": b"".join(events)})
    else:
        body = orjson.dumps({
            "id": "chatcmpl-" + rid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish, "logprobs": None}],
            "usage": _usage(itok, otok),
        })
        await send_bytes(send, 200, body, headers)
    state.metrics.added_latency.observe(time.perf_counter() - t0)
    return 200


async def _stream(state: State, receive: Receive, send: Send, req: ChatRequest, rid: str, t0: float,
                  candidates: list[str], chosen: str, headers: list[tuple[bytes, bytes]], key: tuple[str, str] | None,
                  embedding: Any, record: DecisionRecord | None, bill: Bill | None = None,
                  guard: Topup | None = None) -> int:
    metrics = state.metrics
    deadline = asyncio.get_running_loop().time() + state.settings.request_timeout_s
    t_call = time.perf_counter()
    gen = state.pool.stream(candidates, req.messages, req.params, guard=guard).__aiter__()
    try:
        async with asyncio.timeout_at(deadline):
            first = await gen.__anext__()
    except StopAsyncIteration:
        raise _failed(state, record, t0, APIError(
            502, f"the provider for {candidates[0]!r} ended the stream without an answer.",
            code="provider_error")) from None
    except TimeoutError:
        await _close(gen)
        raise _failed(state, record, t0, _timeout(state, candidates[0])) from None
    except state.provider_error as exc:
        raise _failed(state, record, t0, _provider_failed(state, candidates, exc, guard)) from None
    first_s = time.perf_counter() - t_call
    model = first.model or chosen
    headers.append((b"x-request-id", rid.encode()))
    await sse_start(send, headers)
    metrics.added_latency.observe(max(time.perf_counter() - t0 - first_s, 0.0))
    gone = asyncio.ensure_future(_wait_disconnect(receive))
    cid, created = "chatcmpl-" + rid, int(time.time())
    parts: list[str] = [first.text or ""]
    finish = first.finish_reason
    itok, otok, cost = first.input_tokens, first.output_tokens, first.cost_usd
    error: str | None = None
    await send({"type": "http.response.body", "more_body": True,
                "body": _chunk(cid, created, model, {"role": "assistant", "content": first.text or ""}, None)})
    try:
        async with asyncio.timeout_at(deadline):
            async for ch in gen:
                if gone.done():
                    raise ClientGone()
                if ch.text:
                    parts.append(ch.text)
                    await send({"type": "http.response.body", "more_body": True,
                                "body": _chunk(cid, created, model, {"content": ch.text}, None)})
                if ch.finish_reason:
                    finish = ch.finish_reason
                itok = ch.input_tokens or itok
                otok = ch.output_tokens or otok
                cost = ch.cost_usd or cost
                if ch.attempts and len(ch.attempts) > 1:
                    _count_attempts(state, ch.attempts)
    except ClientGone:
        await _close(gen)
        error = "client disconnected"
    except TimeoutError:
        await _close(gen)
        error = f"the answer did not finish within {state.settings.request_timeout_s:g} s"
    except state.provider_error as exc:
        _count_attempts(state, getattr(exc, "attempts", None))
        error = f"the provider stream of {model!r} broke mid-answer: {getattr(exc, 'message', exc)}"
    except Exception as exc:  # never leave a cut stream looking complete
        await _close(gen)
        error = f"the stream failed mid-answer ({type(exc).__name__}: {exc})"
    finally:
        gone.cancel()
    provider_s = time.perf_counter() - t_call
    status = 200
    if error is None and not finish:
        error = f"the provider stream of {model!r} ended without a finish reason (cut mid-answer)"
    if error is not None:
        metrics.stream_breaks += 1
        metrics.provider_errors[(model, "stream_break")] += 1
        payload = orjson.dumps({"error": {"message": error + "; the answer above is incomplete, retry the request.",
                                          "type": "upstream_error", "param": None, "code": "stream_broken"}})
        await send({"type": "http.response.body", "body": b"data: " + payload + b"\n\n"})
        status = 502
    else:
        tail = [_chunk(cid, created, model, {}, finish)]
        if req.include_usage:
            tail.append(_usage_chunk(cid, created, model, itok or 0, otok or 0))
        tail.append(_DONE)
        if record is not None:  # queued before [DONE] leaves, so feedback on it always finds the request
            _finish(record, model, cost, time.perf_counter() - t_call, t0, itok, otok)
            queued: DecisionRecord = record
            record = None
            try:
                await _log_answered(state, queued)
            except APIError as err:  # not recorded as promised: the stream ends with the error, not [DONE]
                tail, status = [b"data: " + orjson.dumps(err.payload()) + b"\n\n"], err.status
        await send({"type": "http.response.body", "body": b"".join(tail)})
        text = "".join(parts)
        if key is not None and state.cache is not None and finish in ("stop", "length"):
            entry = {"text": text, "model": model, "finish_reason": finish, "input_tokens": itok, "output_tokens": otok}
            state.cache.put(key[0], key[1], entry, embedding=embedding, unit=embedding is not None)
            _share(state, key, entry, embedding)
    _account(state, model, chosen, provider_s, cost, itok, otok)
    if bill is not None:
        bill.done(model, cost, itok, otok)
    if record is not None:
        _finish(record, model, cost, provider_s, t0, itok, otok)
        record.status, record.error = status, error
        state.logbook.on_decision(record)
    return status


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return


async def _close(gen: Any) -> None:
    aclose = getattr(gen, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # closing a broken stream must not mask the error being reported
            pass


def _chunk(cid: str, created: int, model: str, delta: dict[str, Any], finish: str | None) -> bytes:
    return b"data: " + orjson.dumps({
        "id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }) + b"\n\n"


def _usage_chunk(cid: str, created: int, model: str, itok: int, otok: int) -> bytes:
    return b"data: " + orjson.dumps({
        "id": cid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [],
        "usage": _usage(itok, otok),
    }) + b"\n\n"


def _usage(itok: int | None, otok: int | None) -> dict[str, int]:
    i, o = int(itok or 0), int(otok or 0)
    return {"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o}


def _account(state: State, model: str, chosen: str, provider_s: float, cost: float | None,
             itok: int | None, otok: int | None) -> None:
    m = state.metrics
    m.answered[model] += 1
    if model != chosen:
        m.fallbacks += 1
    m.provider_latency.observe(model, provider_s)
    if cost:
        m.spend[model] += cost
    if itok:
        m.tokens[(model, "input")] += itok
    if otok:
        m.tokens[(model, "output")] += otok


def _finish(record: DecisionRecord, model: str, cost: float | None, provider_s: float, t0: float,
            itok: int | None, otok: int | None) -> None:
    record.answered_model = model
    record.cost = cost
    record.latency_s = provider_s
    record.total_s = time.perf_counter() - t0
    record.input_tokens = itok
    record.output_tokens = otok


async def _log_answered(state: State, record: DecisionRecord) -> None:
    """Queue the record of an answer about to leave; with ``logbook.answer_after_commit``, wait until it is
    on disk first (a failed commit is a 503: the answer could not be recorded as promised)."""
    state.logbook.on_decision(record)
    if state.settings.logbook.answer_after_commit:
        try:
            await state.logbook.committed()  # type: ignore[attr-defined]
        except OSError as exc:
            raise APIError(503, f"the answer could not be recorded in the traffic log ({exc}); retry later.",
                           code="log_unavailable") from None


def _failed(state: State, record: DecisionRecord | None, t0: float, err: APIError) -> APIError:
    """Write the decision record of a request that got no answer (the decision still happened); return ``err``."""
    if record is not None:
        record.status, record.error = err.status, err.message
        record.total_s = time.perf_counter() - t0
        state.logbook.on_decision(record)
    return err


def _timeout(state: State, model: str) -> APIError:
    state.metrics.provider_errors[(model, "timeout")] += 1
    return APIError(504, f"no answer within {state.settings.request_timeout_s:g} s (request_timeout_s); "
                         "retry, or raise the timeout in the service settings.", code="timeout")


def _provider_failed(state: State, candidates: list[str], exc: Any, guard: Topup | None = None) -> APIError:
    """The pool's :class:`~serve.providers.ProviderError` as an OpenAI error with its status
    (the budget's refusal when the budget guard skipped what was left to try)."""
    status = int(getattr(exc, "status", 0) or 502)
    kind = str(getattr(exc, "kind", "") or "provider_error")
    _count_attempts(state, getattr(exc, "attempts", None))
    message = str(getattr(exc, "message", exc))
    if kind == "over_budget" and guard is not None:
        return guard.refusal(getattr(exc, "attempts", None))
    if status == 400:
        return APIError(400, f"the provider refused the request: {message}", code=kind)
    headers = []
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after:
        headers.append((b"retry-after", str(max(1, math.ceil(retry_after))).encode()))
    hint = "; retry later." if getattr(exc, "retryable", True) else "."
    return APIError(status, f"no answer from {', '.join(candidates)}: {message}{hint}", code=kind,
                    type="rate_limit_error" if status == 429 else "upstream_error", headers=headers)


def _count_attempts(state: State, attempts: Any) -> None:
    """Failed attempts (retries, fallbacks) by model and kind, for the provider error counter."""
    if not attempts:
        return
    errors = state.metrics.provider_errors
    for a in attempts:
        if not a.ok and a.kind != "over_budget":  # skipped for the budget: not the provider's error
            errors[(a.model, str(a.kind or a.status or "error"))] += 1
