"""What one attempt returns or raises, shared by the native and the litellm adapters.

:class:`CallError` is internal: the pool turns it into an :class:`~serve.providers.types.Attempt` and, when
every candidate failed, into a :class:`~serve.providers.types.ProviderError`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

__all__ = ["RETRY_SAME", "CallError", "Piece", "Result", "classify_status", "redact", "retry_after"]

#: Error kinds worth retrying on the same deployment (others go straight to the next candidate).
RETRY_SAME = frozenset({"rate_limited", "server_error", "connection", "malformed", "truncated"})


@dataclass
class Result:
    """A whole answer from one attempt."""

    text: str
    finish_reason: str
    input_tokens: int | None
    output_tokens: int | None
    tool_calls: list[dict] | None = None


@dataclass
class Piece:
    """One parsed stream event: text, or (last) the finish with usage."""

    text: str
    finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None


class CallError(Exception):
    """One attempt failed: ``kind`` (a key of ``ERROR_KINDS``), the HTTP status if any, a safe message."""

    def __init__(self, kind: str, status: int | None, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s


def redact(text: str, key: str | None) -> str:
    """``text`` with every occurrence of ``key`` (and of its long prefix / suffix) replaced by ``***``."""
    if key and len(key) >= 4:
        text = text.replace(key, "***")
        if len(key) >= 12:  # providers echo keys partly masked: "sk-abc...xyz"
            text = text.replace(key[:8], "***").replace(key[-6:], "***")
    return text


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date), or None."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if ra is None:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(ra).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _message_of(body: bytes) -> str:
    try:
        obj: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body[:300].decode("utf-8", "replace")
    err = obj.get("error", obj) if isinstance(obj, dict) else obj
    if isinstance(err, dict):
        err = err.get("message", err)
    return str(err)[:300]


def classify_status(status: int, headers: Mapping[str, str], body: bytes, key: str | None) -> CallError:
    """The :class:`CallError` of a non-200 answer."""
    msg = redact(f"HTTP {status}: {_message_of(body)}", key)
    if status == 429:
        return CallError("rate_limited", status, msg, retry_after(headers))
    if status in (408, 409) or status >= 500:
        return CallError("server_error", status, msg, retry_after(headers))
    if status in (400, 413, 422):
        return CallError("bad_request", status, msg)
    return CallError("upstream_config", status, msg)
