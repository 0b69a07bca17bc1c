"""Cache keys: what must match exactly (the scope) and what is matched by meaning (the text).

A chat request is split in two:

* the **text** is the last user turn's text parts -- the question being asked. Only it is compared
  by embedding similarity, exactly as the threshold was calibrated (on pairs of single questions);
* the **scope** is ``"<tenant>#<digest>"``, where the digest is SHA-256 over a canonical JSON of
  everything else that can change the answer: every other message in full (system / developer
  prompts, earlier user and assistant turns, tool calls and tool results, names), the last user
  turn's non-text parts (images, audio, files) and role / name, and every request parameter
  except the few that cannot change the answer (:data:`IGNORED_PARAMS`). So ``model``,
  ``temperature``, ``top_p``, ``seed``, ``max_tokens``, ``n``, ``tools``, ``tool_choice``,
  ``response_format``, ``stop`` and the routing options (budget profile, lambda, allowed models,
  cost / latency caps) all split the cache, and so does any parameter we do not know: an unknown
  key can only cost hits, never serve a wrong answer.

Two requests share cached answers only when they have the same tenant, the same scope digest and
a semantically matching last question. A missing parameter and the same parameter set to its
default are different scopes (conservative: ``temperature`` absent vs ``1.0``).

The exact-match key is the text with line endings unified, Unicode NFC and surrounding white
space stripped; inner white space and case are kept (they matter in code and names).
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from router.errors import ConfigError

__all__ = ["IGNORED_PARAMS", "normalise", "parse_scope", "request_scope", "request_text"]

#: request keys that never change the answer and so do not split the cache.
IGNORED_PARAMS = frozenset(
    {"messages", "stream", "stream_options", "user", "metadata", "store", "timeout", "request_timeout", "cache"}
)

_DIGEST_CHARS = 32  # 128 bits of SHA-256, hex
_SCOPE = re.compile(rf"(.+)#[0-9a-f]{{{_DIGEST_CHARS}}}", re.DOTALL)


def _canonical(value: Any, path: str) -> Any:
    """JSON-able value with numbers unified (1 == 1.0) and keys sorted later when serialised.

    Exact type checks come first (``kind is dict``, ...): the ABC checks behind them cost more than the
    rest of the key for a typical request.
    """
    kind = type(value)
    if kind is str or value is None or kind is bool or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        f = float(value)
        if not math.isfinite(f):
            raise ConfigError(f"request field {path} is {value!r}; only finite numbers are allowed.")
        return f
    if kind is dict or isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"request field {path} has a non-string key {k!r}; JSON objects have string keys.")
            out[k] = v if type(v) is str else _canonical(v, f"{path}.{k}")
        return out
    if kind is list or isinstance(value, Sequence):
        return [v if type(v) is str else _canonical(v, f"{path}[{i}]") for i, v in enumerate(value)]
    raise ConfigError(
        f"request field {path} has type {type(value).__name__}; a cache key is built from JSON values only."
    )


def _check_messages(messages: Any) -> list[dict[str, Any]]:
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence) or not messages:
        raise ConfigError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts.")
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping) or not isinstance(msg.get("role"), str):
            raise ConfigError(f"message {i} must be a dict with a string 'role', got {msg!r:.80}.")
        content = msg.get("content")
        if content is not None and not isinstance(content, str | Sequence):
            raise ConfigError(
                f"message {i} content must be a str, a list of parts or null, got {type(content).__name__}."
            )
    return list(messages)


def _last_user(messages: list[dict[str, Any]]) -> int:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i]["role"] == "user":
            return i
    raise ConfigError("messages hold no 'user' turn; a cached answer is keyed on the user's last question.")


def _split_content(content: Any) -> tuple[str, list[Any]]:
    """(text parts joined by newlines, the other parts) of a message content."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    other: list[Any] = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, Mapping) and part.get("type", "text") == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        else:
            other.append(part)
    return "\n".join(texts), other


def request_text(messages: Any) -> str:
    """The text matched semantically: the text parts of the last user turn.

    Example:
        >>> request_text([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}])
        'Hi?'
    """
    msgs = _check_messages(messages)
    text, _ = _split_content(msgs[_last_user(msgs)].get("content"))
    return text


def request_scope(tenant: str, request: Mapping[str, Any]) -> str:
    """``"<tenant>#<digest>"``: the partition a request's answer may be shared in (see module doc).

    Example:
        >>> a = request_scope("acme", {"model": "router", "messages": [{"role": "user", "content": "Hi"}]})
        >>> b = request_scope("acme", {"model": "router", "messages": [{"role": "user", "content": "Yo"}]})
        >>> a == b, a.split("#")[0]
        (True, 'acme')
    """
    if not isinstance(tenant, str) or not tenant:
        raise ConfigError(f"tenant must be a non-empty str, got {tenant!r}.")
    if not isinstance(request, Mapping):
        raise ConfigError(f"request must be the chat request body as a dict, got {type(request).__name__}.")
    if "messages" not in request:
        raise ConfigError("request has no 'messages'; give the OpenAI chat body (messages, model, ...).")
    memo = _simple_key(tenant, request)
    if memo is not None:
        scope = _SIMPLE_SCOPES.get(memo)
        if scope is not None:
            return scope
    msgs = _check_messages(request["messages"])
    last = _last_user(msgs)
    _, other_parts = _split_content(msgs[last].get("content"))
    last_rest = {k: v for k, v in msgs[last].items() if k != "content"}
    params = {k: v for k, v in request.items() if k not in IGNORED_PARAMS}
    key = {
        "v": 1,
        "tenant": tenant,
        "before": msgs[:last],
        "last": {**last_rest, "other_parts": other_parts},
        "after": msgs[last + 1 :],
        "params": params,
    }
    try:
        blob = orjson.dumps(_canonical(key, "request"), option=orjson.OPT_SORT_KEYS)  # compact UTF-8, keys sorted
    except orjson.JSONEncodeError as exc:  # e.g. a lone surrogate in a string
        raise ConfigError(f"request cannot be keyed: {exc}; send valid UTF-8 text.") from None
    scope = f"{tenant}#{hashlib.sha256(blob).hexdigest()[:_DIGEST_CHARS]}"
    if memo is not None:
        if len(_SIMPLE_SCOPES) >= _SIMPLE_SCOPES_MAX:
            _SIMPLE_SCOPES.clear()
        _SIMPLE_SCOPES[memo] = scope
    return scope


#: scopes of single-turn requests with plain parameters, by (tenant, role, name, typed parameters): most
#: traffic shares a handful of these, and the canonical JSON and SHA-256 behind a scope cost ~25 us
_SIMPLE_SCOPES: dict[tuple[Any, ...], str] = {}
_SIMPLE_SCOPES_MAX = 4096
_PLAIN = (str, int, float, bool, type(None))


def _simple_key(tenant: str, request: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """A memo key standing for everything the scope digest of ``request`` covers, or None when the
    request is not simple: one message, a dict with a string role and string content and at most a
    string name, and parameters that are all plain scalars. Each value's type is part of the key, so
    values that compare equal but key differently (``True`` and ``1``) never share a memo entry."""
    msgs = request["messages"]
    if type(msgs) is not list or len(msgs) != 1:
        return None
    msg = msgs[0]
    if type(msg) is not dict or type(msg.get("content")) is not str or type(msg.get("role")) is not str:
        return None
    name = msg.get("name")
    if len(msg) != 2 + ("name" in msg) or (name is not None and type(name) is not str):
        return None
    params = []
    for k, v in request.items():
        if k in IGNORED_PARAMS:
            continue
        kind = type(v)
        if kind not in _PLAIN or type(k) is not str or (kind is float and not math.isfinite(v)):
            return None
        params.append((k, kind, v))
    params.sort(key=lambda p: p[0])
    return (tenant, msg["role"], "name" in msg, name, *params)


def parse_scope(scope: Any) -> str:
    """The tenant of a scope made by :func:`request_scope`; a clear error for anything else.

    Example:
        >>> parse_scope("acme#" + "0" * 32)
        'acme'
    """
    if isinstance(scope, str):
        match = _SCOPE.fullmatch(scope)
        if match is not None:
            return match.group(1)
    raise ConfigError(
        f"scope {scope!r:.80} is not a cache scope; build it with SemanticCache.scope(tenant, request)."
    )


def normalise(text: str) -> str:
    """Exact-match key: NFC, ``\\r\\n`` -> ``\\n``, surrounding white space stripped.

    Example:
        >>> normalise("  What is 2+2?\\r\\n")
        'What is 2+2?'
    """
    return unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n")).strip()
