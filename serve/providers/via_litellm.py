"""Calls through litellm, for what the native codecs don't translate: protocol ``litellm`` (any litellm model
string: Bedrock, Vertex, Cohere, ...) and requests with tools or non-text content to Anthropic, Gemini and
Ollama deployments.

litellm is imported on the first call only (it takes seconds to import). It is asked for one attempt
(``num_retries=0``): retries, fallbacks and timeouts stay with the pool. A caveat, measured against the local
provider: litellm's Gemini and Ollama stream parsers skip an unparseable chunk and still report
``finish_reason="stop"``, so a stream through litellm is only as complete as litellm says; the native codecs
(used for text conversations on those protocols) do not have this hole.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from serve.providers.calls import CallError, Piece, Result, redact, retry_after
from serve.providers.types import Deployment

__all__ = ["LitellmClient", "litellm_model"]

_PREFIX = {"openai": "openai/", "anthropic": "anthropic/", "gemini": "gemini/", "ollama": "ollama_chat/"}


def litellm_model(dep: Deployment) -> tuple[str, str | None]:
    """``(litellm model string, api_base)`` of a deployment."""
    base = dep.api_base.rstrip("/") or None
    if dep.protocol == "litellm":
        return dep.wire_model, base
    if base is not None and urlsplit(base).path in ("", "/"):
        base += {"openai": "/v1", "gemini": "/v1beta"}.get(dep.protocol, "")
    return _PREFIX[dep.protocol] + dep.wire_model, base


def _litellm() -> Any:
    import litellm

    litellm.suppress_debug_info = True
    return litellm


def _classify(exc: BaseException, key: str | None) -> CallError:
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    msg = redact(f"{name}: {str(exc)[:300]}", key)
    if "Timeout" in name:
        return CallError("timeout", status if isinstance(status, int) else None, msg)
    if not isinstance(status, int):
        return CallError("connection", None, msg)
    if status == 429:
        headers = getattr(getattr(exc, "response", None), "headers", None) or {}
        return CallError("rate_limited", status, msg, retry_after(headers))
    if status in (408, 409) or status >= 500:
        # litellm reports a broken connection or stream as a 500 APIConnectionError
        kind = "connection" if "Connection" in name or "MidStream" in name else "server_error"
        return CallError(kind, None if kind == "connection" else status, msg)
    if status in (400, 413, 422):
        return CallError("bad_request", status, msg)
    return CallError("upstream_config", status, msg)


class LitellmClient:
    """One-attempt calls through ``litellm.acompletion``."""

    async def aclose(self) -> None:
        return None

    async def complete(self, dep: Deployment, key: str | None, messages: list[dict], params: dict) -> Result:
        litellm = _litellm()
        model, base = litellm_model(dep)
        try:
            r = await litellm.acompletion(model=model, messages=messages, api_base=base, api_key=key,
                                          num_retries=0, timeout=dep.timeout_s, **params)
        except Exception as exc:
            raise _classify(exc, key) from None
        try:
            choice = r.choices[0]
            usage = getattr(r, "usage", None)
            calls = getattr(choice.message, "tool_calls", None)
            return Result(choice.message.content or "", choice.finish_reason or "stop",
                          getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None),
                          [c.model_dump() if hasattr(c, "model_dump") else dict(c) for c in calls] if calls else None)
        except (AttributeError, IndexError, TypeError) as exc:
            raise CallError("malformed", None, f"litellm answer lacks {exc}") from None

    async def stream(self, dep: Deployment, key: str | None, messages: list[dict],
                     params: dict) -> AsyncIterator[Piece]:
        litellm = _litellm()
        model, base = litellm_model(dep)
        finish = None
        n_in = n_out = None
        try:
            it = await litellm.acompletion(model=model, messages=messages, api_base=base, api_key=key,
                                           num_retries=0, timeout=dep.timeout_s, stream=True,
                                           stream_options={"include_usage": True}, **params)
            async for ch in it:
                usage = getattr(ch, "usage", None)
                if usage is not None:
                    n_in = getattr(usage, "prompt_tokens", n_in)
                    n_out = getattr(usage, "completion_tokens", n_out)
                for c in ch.choices or ():
                    text = getattr(c.delta, "content", None)
                    if text:
                        yield Piece(text)
                    if c.finish_reason:
                        finish = c.finish_reason
        except CallError:
            raise
        except Exception as exc:
            raise _classify(exc, key) from None
        if finish is None:
            raise CallError("truncated", None, "the litellm stream ended without a finish_reason")
        yield Piece("", finish, n_in, n_out)
