"""Validate a chat completion request body into a :class:`ChatRequest`; every problem is a clear 4xx.

Model names:

* ``"router"`` routes with the router's saved decision rule;
* ``"router-<profile>"`` routes with a profile from the service settings (``profiles:``);
* a model of the router's pool (or of the provider configuration) passes through: no routing.

Routing options ride in the body under ``"routing"`` (the OpenAI client's ``extra_body``)::

    {"routing": {"lam": 50, "mu": 0.1, "profile": "cheap", "allowed_models": ["a", "b"],
                 "max_cost": 0.01, "max_latency": 2.0, "cache": false}}

``lam`` (quality points per USD, >= 0) and ``mu`` (per second, >= 0) override the trade-off;
``allowed_models`` is intersected with the profile's list; ``max_cost`` (USD) and ``max_latency``
(seconds) cap the predicted cost and latency of the choice and of its fallbacks; ``cache: false``
neither reads nor writes the cache. Request fields win over the profile, the profile over the router.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from serve.api.errors import APIError
from serve.decide import DEFAULT_OPTIONS, RouteOptions
from serve.settings import Profile

__all__ = ["ChatRequest", "ROUTER_MODEL", "parse_chat"]

ROUTER_MODEL = "router"
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
ROUTING_KEYS = ("lam", "mu", "profile", "allowed_models", "max_cost", "max_latency", "cache")
# body fields the service handles itself; everything else goes to the provider unchanged
_OWN = frozenset({"model", "messages", "stream", "stream_options", "routing"})
_NUMBERS = {"temperature": (0.0, 2.0), "top_p": (0.0, 1.0), "presence_penalty": (-2.0, 2.0),
            "frequency_penalty": (-2.0, 2.0)}
_POSITIVE_INTS = ("max_tokens", "max_completion_tokens")


@dataclass(slots=True)
class ChatRequest:
    """A validated chat request.

    ``params`` are the generation parameters sent to the provider; ``routed`` is False for a
    pass-through model; ``options`` the effective routing overrides (profile then request).
    """

    body: dict[str, Any]
    model: str
    messages: list[Any]
    stream: bool
    include_usage: bool
    params: dict[str, Any]
    routed: bool
    profile: str | None
    options: RouteOptions
    use_cache: bool


def _bad(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def parse_chat(raw: bytes, *, models: Collection[str], profiles: Mapping[str, Profile], max_messages: int,
               supported: Collection[str] | None = None) -> ChatRequest:
    """Parse and validate; ``models`` is the pool a pass-through request may name, ``supported`` the
    generation parameters the providers take (others are refused, never dropped)."""
    if not raw:
        raise _bad("the request body is empty; send a JSON object with 'model' and 'messages'.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"the request body is not valid JSON ({exc}); send a JSON object with 'model' and 'messages'.",
                   code="invalid_json") from None
    if not isinstance(body, dict):
        raise _bad(f"the request body must be a JSON object, got {type(body).__name__}.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' must be a non-empty string: 'router', 'router-<profile>' or a model name "
                   "(GET /v1/models lists them).", param="model")
    messages = _messages(body.get("messages"), max_messages)
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _bad(f"'stream' must be true or false, got {stream!r:.40}.", param="stream")
    include_usage = False
    so = body.get("stream_options")
    if so is not None:
        if not isinstance(so, dict):
            raise _bad("'stream_options' must be an object.", param="stream_options")
        include_usage = bool(so.get("include_usage", False))
    params = _params(body, supported)
    routing = body.get("routing")
    if routing is not None and not isinstance(routing, dict):
        raise _bad(f"'routing' must be an object of routing options ({', '.join(ROUTING_KEYS)}).", param="routing")
    routing = routing or {}
    use_cache = routing.get("cache", True)
    if not isinstance(use_cache, bool):
        raise _bad("'routing.cache' must be true or false.", param="routing.cache")

    profile_name: str | None = None
    if model == ROUTER_MODEL or (model.startswith(ROUTER_MODEL + "-") and model[len(ROUTER_MODEL) + 1:] in profiles):
        routed = True
        if model != ROUTER_MODEL:
            profile_name = model[len(ROUTER_MODEL) + 1:]
    elif model in models:
        routed = False
    else:
        known = sorted(models)
        shown = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
        names = ", ".join(["router", *(f"router-{p}" for p in profiles)])
        raise APIError(404, f"model {model[:100]!r} does not exist here; use {names} or one of: {shown}.",
                       param="model", code="model_not_found")
    if not routed:
        extra = [k for k in routing if k != "cache"]
        if extra:
            raise _bad(f"routing options {extra} apply only when model is 'router' or 'router-<profile>', "
                       f"not to the concrete model {model!r}; drop them or ask for 'router'.", param="routing")
        options = DEFAULT_OPTIONS
    else:
        options, profile_name = _options(routing, profile_name, profiles, models)
    return ChatRequest(body, model, messages, stream, include_usage, params, routed, profile_name, options, use_cache)


def _messages(messages: Any, max_messages: int) -> list[Any]:
    if messages is None:
        raise _bad("'messages' is missing; send a list of {'role', 'content'} objects.", param="messages")
    if not isinstance(messages, list):
        raise _bad(f"'messages' must be a list of {{'role', 'content'}} objects, got {type(messages).__name__}.",
                   param="messages")
    if not messages:
        raise _bad("'messages' is empty; send at least one message.", param="messages")
    if len(messages) > max_messages:
        raise _bad(f"'messages' has {len(messages)} messages, more than this service's limit of {max_messages}; "
                   "shorten the conversation.", param="messages", code="too_many_messages")
    has_text = False
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise _bad(f"messages[{i}] must be an object with 'role' and 'content', got {type(m).__name__}.",
                       param=f"messages[{i}]")
        role = m.get("role")
        if role not in ROLES:
            raise _bad(f"messages[{i}].role must be one of {sorted(ROLES)}, got {role!r:.40}.",
                       param=f"messages[{i}].role")
        content = m.get("content")
        if isinstance(content, str):
            has_text = has_text or bool(content.strip())
        elif isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise _bad(f"messages[{i}].content[{j}] must be an object with a 'type'.",
                               param=f"messages[{i}].content")
                if part["type"] == "text":
                    t = part.get("text")
                    if not isinstance(t, str):
                        raise _bad(f"messages[{i}].content[{j}].text must be a string.",
                                   param=f"messages[{i}].content")
                    has_text = has_text or bool(t.strip())
        elif content is not None:
            raise _bad(f"messages[{i}].content must be a string, a list of parts or null, "
                       f"got {type(content).__name__}.", param=f"messages[{i}].content")
        elif role != "assistant":
            raise _bad(f"messages[{i}].content is missing; only assistant messages (tool calls) may omit it.",
                       param=f"messages[{i}].content")
    if not has_text:
        raise _bad("every message is empty; send some text to answer.", param="messages")
    return messages


def _params(body: dict[str, Any], supported: Collection[str] | None) -> dict[str, Any]:
    params = {k: v for k, v in body.items() if k not in _OWN}
    if supported is not None:
        unknown = [k for k in params if k not in supported and k != "n"]
        if unknown:
            raise _bad(f"unsupported parameter(s) {sorted(unknown)[:10]}; this service forwards "
                       f"{', '.join(sorted(supported))} (routing options go under 'routing').", param=unknown[0],
                       code="unsupported_parameter")
    for key, (lo, hi) in _NUMBERS.items():
        v = params.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi):
            raise _bad(f"'{key}' must be a number in [{lo:g}, {hi:g}], got {v!r:.40}.", param=key)
    for key in _POSITIVE_INTS:
        v = params.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise _bad(f"'{key}' must be a positive integer, got {v!r:.40}.", param=key)
    n = params.pop("n", None)
    if n is not None and n != 1:
        raise _bad(f"'n' must be 1 (one answer per request), got {n!r:.40}.", param="n")
    stop = params.get("stop")
    if stop is not None and not isinstance(stop, str) and not (
            isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise _bad("'stop' must be a string or a list of strings.", param="stop")
    return params


def _number(routing: Mapping[str, Any], key: str, *, positive: bool) -> float | None:
    v = routing.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0 or (positive and v == 0):
        need = "> 0" if positive else ">= 0"
        raise _bad(f"'routing.{key}' must be a finite number {need}, got {v!r:.40}.", param=f"routing.{key}")
    return float(v)


def _options(routing: Mapping[str, Any], profile_name: str | None, profiles: Mapping[str, Profile],
             models: Collection[str]) -> tuple[RouteOptions, str | None]:
    unknown = [k for k in routing if k not in ROUTING_KEYS]
    if unknown:
        raise _bad(f"unknown routing option(s) {unknown}; known: {', '.join(ROUTING_KEYS)}.", param="routing")
    asked = routing.get("profile")
    if asked is not None:
        if not isinstance(asked, str) or asked not in profiles:
            raise _bad(f"'routing.profile' {asked!r:.60} is not a profile of this service; known: "
                       f"{sorted(profiles) or 'none configured'}.", param="routing.profile")
        if profile_name is not None and asked != profile_name:
            raise _bad(f"model 'router-{profile_name}' and routing.profile {asked!r} disagree; give one.",
                       param="routing.profile")
        profile_name = asked
    if not routing and profile_name is None:
        return DEFAULT_OPTIONS, None
    prof = profiles[profile_name] if profile_name is not None else Profile()
    lam = _number(routing, "lam", positive=False)
    mu = _number(routing, "mu", positive=False)
    max_cost = _number(routing, "max_cost", positive=True)
    max_latency = _number(routing, "max_latency", positive=True)
    allowed: tuple[str, ...] | None = prof.allowed_models
    asked_models = routing.get("allowed_models")
    if asked_models is not None:
        if (not isinstance(asked_models, list) or not asked_models
                or not all(isinstance(m, str) for m in asked_models)):
            raise _bad("'routing.allowed_models' must be a non-empty list of model names.",
                       param="routing.allowed_models")
        missing = [m for m in asked_models if m not in models]
        if missing:
            raise _bad(f"'routing.allowed_models' names unknown model(s) {missing[:10]}; the pool is {sorted(models)}.",
                       param="routing.allowed_models", code="model_not_found")
        allowed = tuple(m for m in asked_models if allowed is None or m in allowed)
        if not allowed:
            raise _bad(f"'routing.allowed_models' leaves no model allowed by profile {profile_name!r} "
                       f"({list(prof.allowed_models or ())}).", param="routing.allowed_models")
    elif allowed is not None:
        missing = [m for m in allowed if m not in models]
        if missing:
            raise APIError(500, f"profile {profile_name!r} allows model(s) {missing} that the serving router does not "
                                "know; fix the service's profiles setting.", code="bad_profile")
    opts = RouteOptions(
        lam=lam if lam is not None else prof.lam,
        mu=mu if mu is not None else prof.mu,
        allowed=allowed,
        max_cost=max_cost if max_cost is not None else prof.max_cost,
        max_latency=max_latency if max_latency is not None else prof.max_latency,
    )
    return opts, profile_name
