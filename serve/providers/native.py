"""Calls over plain keep-alive HTTP, for the four wire protocols, text conversations.

One :class:`NativeClient` per pool sends whole (non-streamed) calls over its own small HTTP/1.1 client
(:mod:`serve.providers.http1`) and streams over one ``aiohttp.ClientSession``, both made on first use in
the running loop. Each protocol is a small codec: the URL, headers and body of a request, and a parser for the whole
answer or for its stream. A stream parser only reports the finish once the provider's end marker arrived
(OpenAI ``data: [DONE]`` or a clean end after the finish chunk, Anthropic ``message_stop``, Gemini the chunk
with ``finishReason`` then a clean end, Ollama ``done: true``), so a cut or truncated stream is an error,
never a short answer. Timeouts are the pool's business (``asyncio.timeout`` around these calls).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from serve.providers.calls import CallError, Piece, Result, classify_status, redact
from serve.providers.types import Deployment

__all__ = ["CODECS", "NativeClient"]

_std_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON of a request body (orjson; the standard library for what orjson refuses,
    such as integers beyond 64 bits)."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        return _std_dumps(obj).encode()

_ERR_BODY_LIMIT = 4096


def _base(dep: Deployment, default_prefix: str) -> str:
    """``api_base`` without a trailing slash; a bare ``scheme://host[:port]`` gets ``default_prefix``."""
    base = dep.api_base.rstrip("/")
    if default_prefix and urlsplit(base).path in ("", "/"):
        base += default_prefix
    return base


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)


def _loads(data: bytes, what: str) -> Any:
    try:
        return orjson.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:  # orjson.JSONDecodeError is a ValueError
        raise CallError("malformed", None, f"{what} is not valid JSON ({exc})") from None


# ============================================================================ codecs
class _OpenAI:
    sse = True

    def url(self, dep: Deployment, stream: bool) -> str:
        return _base(dep, "/v1") + "/chat/completions"

    def headers(self, key: str | None) -> dict[str, str]:
        h = {"content-type": "application/json"}
        if key:
            h["authorization"] = f"Bearer {key}"
        return h

    def body(self, dep: Deployment, messages: list[dict], params: dict, stream: bool) -> dict[str, Any]:
        b: dict[str, Any] = {"model": dep.wire_model, "messages": messages, **params}
        if stream:
            b["stream"] = True
            b["stream_options"] = {"include_usage": True}
        return b

    def whole(self, obj: Any) -> Result:
        try:
            choice = obj["choices"][0]
            msg = choice["message"]
            usage = obj.get("usage") or {}
            return Result(msg.get("content") or "", choice.get("finish_reason") or "stop",
                          usage.get("prompt_tokens"), usage.get("completion_tokens"), msg.get("tool_calls"))
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise CallError("malformed", None, f"answer lacks {exc}") from None

    def parser(self) -> _OpenAIStream:
        return _OpenAIStream()


class _OpenAIStream:
    def __init__(self) -> None:
        self.finish: str | None = None
        self.usage: dict[str, Any] = {}
        self.done = False

    def feed(self, line: bytes) -> list[Piece]:
        if not line.startswith(b"data:"):
            return []
        data = line[5:].strip()
        if data == b"[DONE]":
            self.done = True
            return []
        obj = _loads(data, "a stream chunk")
        if not isinstance(obj, dict):
            raise CallError("malformed", None, "a stream chunk is not an object")
        if "error" in obj:
            raise CallError("server_error", None, f"error event in stream: {str(obj['error'])[:300]}")
        if obj.get("usage"):
            self.usage = obj["usage"]
        out = []
        for ch in obj.get("choices") or ():
            delta = ch.get("delta") or {}
            text = delta.get("content")
            if text:
                out.append(Piece(text))
            if ch.get("finish_reason"):
                self.finish = ch["finish_reason"]
        return out

    def end(self) -> Piece:
        """The final piece at a clean end of the body; raises when the end marker never came."""
        if self.finish is None:
            raise CallError("truncated", None, "the stream ended without a finish_reason")
        return Piece("", self.finish, self.usage.get("prompt_tokens"), self.usage.get("completion_tokens"))


class _Anthropic:
    sse = True

    def url(self, dep: Deployment, stream: bool) -> str:
        return _base(dep, "/v1") + "/messages"

    def headers(self, key: str | None) -> dict[str, str]:
        h = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
        if key:
            h["x-api-key"] = key
        return h

    def body(self, dep: Deployment, messages: list[dict], params: dict, stream: bool) -> dict[str, Any]:
        system = [_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer")]
        msgs = [{"role": "assistant" if m.get("role") == "assistant" else "user", "content": _text(m.get("content"))}
                for m in messages if m.get("role") not in ("system", "developer")]
        b: dict[str, Any] = {"model": dep.wire_model, "messages": msgs,
                             "max_tokens": params.get("max_tokens") or params.get("max_completion_tokens") or 4096}
        if system:
            b["system"] = "\n\n".join(system)
        for ours, theirs in (("temperature", "temperature"), ("top_p", "top_p")):
            if ours in params:
                b[theirs] = params[ours]
        if "stop" in params:
            b["stop_sequences"] = [params["stop"]] if isinstance(params["stop"], str) else params["stop"]
        if "user" in params:
            b["metadata"] = {"user_id": params["user"]}
        if stream:
            b["stream"] = True
        return b

    @staticmethod
    def finish(stop: str | None) -> str:
        return {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}.get(
            stop or "end_turn", stop or "stop")

    def whole(self, obj: Any) -> Result:
        try:
            text = "".join(b.get("text", "") for b in obj["content"] if b.get("type") == "text")
            u = obj.get("usage") or {}
            return Result(text, self.finish(obj.get("stop_reason")), u.get("input_tokens"), u.get("output_tokens"))
        except (KeyError, TypeError, AttributeError) as exc:
            raise CallError("malformed", None, f"answer lacks {exc}") from None

    def parser(self) -> _AnthropicStream:
        return _AnthropicStream()


class _AnthropicStream:
    def __init__(self) -> None:
        self.finish: str | None = None
        self.n_in: int | None = None
        self.n_out: int | None = None
        self.done = False

    def feed(self, line: bytes) -> list[Piece]:
        if not line.startswith(b"data:"):
            return []
        obj = _loads(line[5:].strip(), "a stream event")
        t = obj.get("type") if isinstance(obj, dict) else None
        if t == "content_block_delta":
            text = (obj.get("delta") or {}).get("text")
            return [Piece(text)] if text else []
        if t == "message_start":
            self.n_in = ((obj.get("message") or {}).get("usage") or {}).get("input_tokens")
        elif t == "message_delta":
            self.finish = _Anthropic.finish((obj.get("delta") or {}).get("stop_reason"))
            self.n_out = (obj.get("usage") or {}).get("output_tokens", self.n_out)
        elif t == "message_stop":
            self.done = True
        elif t == "error":
            err = obj.get("error") or {}
            kind = "rate_limited" if err.get("type") == "rate_limit_error" else "server_error"
            raise CallError(kind, None, f"error event in stream: {str(err.get('message'))[:300]}")
        elif t is None:
            raise CallError("malformed", None, "a stream event has no type")
        return []

    def end(self) -> Piece:
        if not self.done or self.finish is None:
            raise CallError("truncated", None, "the stream ended before message_stop")
        return Piece("", self.finish, self.n_in, self.n_out)


class _Gemini:
    sse = True

    def url(self, dep: Deployment, stream: bool) -> str:
        verb = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"{_base(dep, '/v1beta')}/models/{quote(dep.wire_model, safe='')}:{verb}"

    def headers(self, key: str | None) -> dict[str, str]:
        h = {"content-type": "application/json"}
        if key:
            h["x-goog-api-key"] = key
        return h

    def body(self, dep: Deployment, messages: list[dict], params: dict, stream: bool) -> dict[str, Any]:
        system = [_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer")]
        contents = [{"role": "model" if m.get("role") == "assistant" else "user",
                     "parts": [{"text": _text(m.get("content"))}]}
                    for m in messages if m.get("role") not in ("system", "developer")]
        b: dict[str, Any] = {"contents": contents}
        if system:
            b["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
        gc: dict[str, Any] = {}
        mt = params.get("max_tokens") or params.get("max_completion_tokens")
        if mt:
            gc["maxOutputTokens"] = mt
        if "temperature" in params:
            gc["temperature"] = params["temperature"]
        if "top_p" in params:
            gc["topP"] = params["top_p"]
        if "stop" in params:
            gc["stopSequences"] = [params["stop"]] if isinstance(params["stop"], str) else params["stop"]
        if gc:
            b["generationConfig"] = gc
        return b

    @staticmethod
    def finish(reason: str) -> str:
        return {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter"}.get(reason, reason.lower())

    def whole(self, obj: Any) -> Result:
        try:
            cand = obj["candidates"][0]
            text = "".join(p.get("text", "") for p in (cand.get("content") or {}).get("parts") or ())
            u = obj.get("usageMetadata") or {}
            return Result(text, self.finish(cand.get("finishReason") or "STOP"), u.get("promptTokenCount"),
                          u.get("candidatesTokenCount"))
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise CallError("malformed", None, f"answer lacks {exc}") from None

    def parser(self) -> _GeminiStream:
        return _GeminiStream()


class _GeminiStream:
    def __init__(self) -> None:
        self.finish: str | None = None
        self.usage: dict[str, Any] = {}

    def feed(self, line: bytes) -> list[Piece]:
        if not line.startswith(b"data:"):
            return []
        obj = _loads(line[5:].strip(), "a stream chunk")
        if not isinstance(obj, dict):
            raise CallError("malformed", None, "a stream chunk is not an object")
        if "error" in obj:
            raise CallError("server_error", None, f"error in stream: {str(obj['error'])[:300]}")
        if obj.get("usageMetadata"):
            self.usage = obj["usageMetadata"]
        out = []
        for cand in obj.get("candidates") or ():
            text = "".join(p.get("text", "") for p in (cand.get("content") or {}).get("parts") or ())
            if text:
                out.append(Piece(text))
            if cand.get("finishReason"):
                self.finish = _Gemini.finish(cand["finishReason"])
        return out

    def end(self) -> Piece:
        if self.finish is None:
            raise CallError("truncated", None, "the stream ended without a finishReason")
        return Piece("", self.finish, self.usage.get("promptTokenCount"), self.usage.get("candidatesTokenCount"))


class _Ollama:
    sse = False

    def url(self, dep: Deployment, stream: bool) -> str:
        return _base(dep, "") + "/api/chat"

    def headers(self, key: str | None) -> dict[str, str]:
        h = {"content-type": "application/json"}
        if key:
            h["authorization"] = f"Bearer {key}"
        return h

    def body(self, dep: Deployment, messages: list[dict], params: dict, stream: bool) -> dict[str, Any]:
        msgs = [{"role": m.get("role", "user"), "content": _text(m.get("content"))} for m in messages]
        opts: dict[str, Any] = {}
        mt = params.get("max_tokens") or params.get("max_completion_tokens")
        if mt:
            opts["num_predict"] = mt
        for k in ("temperature", "top_p", "seed"):
            if k in params:
                opts[k] = params[k]
        if "stop" in params:
            opts["stop"] = [params["stop"]] if isinstance(params["stop"], str) else params["stop"]
        b: dict[str, Any] = {"model": dep.wire_model, "messages": msgs, "stream": stream}
        if opts:
            b["options"] = opts
        return b

    def whole(self, obj: Any) -> Result:
        try:
            if not obj.get("done", True):
                raise CallError("truncated", None, "the answer is not done")
            return Result((obj.get("message") or {}).get("content") or "", obj.get("done_reason") or "stop",
                          obj.get("prompt_eval_count"), obj.get("eval_count"))
        except (TypeError, AttributeError) as exc:
            raise CallError("malformed", None, f"answer lacks {exc}") from None

    def parser(self) -> _OllamaStream:
        return _OllamaStream()


class _OllamaStream:
    def __init__(self) -> None:
        self.final: dict[str, Any] | None = None

    def feed(self, line: bytes) -> list[Piece]:
        if not line.strip():
            return []
        obj = _loads(line, "a stream record")
        if not isinstance(obj, dict):
            raise CallError("malformed", None, "a stream record is not an object")
        if "error" in obj:
            raise CallError("server_error", None, f"error in stream: {str(obj['error'])[:300]}")
        if self.final is not None:
            raise CallError("malformed", None, "a record after done: true")
        text = (obj.get("message") or {}).get("content")
        if obj.get("done"):
            self.final = obj
        return [Piece(text)] if text else []

    def end(self) -> Piece:
        if self.final is None:
            raise CallError("truncated", None, "the stream ended without done: true")
        f = self.final
        return Piece("", f.get("done_reason") or "stop", f.get("prompt_eval_count"), f.get("eval_count"))


#: Protocol name -> codec.
CODECS: dict[str, Any] = {"openai": _OpenAI(), "anthropic": _Anthropic(), "gemini": _Gemini(), "ollama": _Ollama()}


# ============================================================================ the client
class NativeClient:
    """Calls deployments of the four wire protocols: whole answers over :class:`~serve.providers.http1.Http1Client`,
    streams over one pooled aiohttp session."""

    def __init__(self, connections: int = 0) -> None:
        self.connections = connections
        self._session: Any = None
        self._http1: Any = None  # serve.providers.http1.Http1Client, for whole answers

    def _get_session(self) -> Any:
        if self._session is None or self._session.closed:
            import aiohttp

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.connections, ttl_dns_cache=300, keepalive_timeout=60),
                timeout=aiohttp.ClientTimeout(total=None), skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def aclose(self) -> None:
        if self._http1 is not None:
            await self._http1.aclose()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def complete(self, dep: Deployment, key: str | None, messages: list[dict], params: dict) -> Result:
        """One whole answer, over :class:`~serve.providers.http1.Http1Client` (not aiohttp: see there)."""
        codec = CODECS[dep.protocol]
        data = _dumps(codec.body(dep, messages, params, False))
        if self._http1 is None:
            from serve.providers.http1 import Http1Client

            self._http1 = Http1Client()
        try:
            status, headers, body = await self._http1.post(codec.url(dep, False), data, codec.headers(key))
        except CallError as err:
            raise CallError(err.kind, err.status, redact(err.message, key), err.retry_after_s) from None
        if status != 200:
            raise classify_status(status, headers, body[:_ERR_BODY_LIMIT], key)
        return codec.whole(_loads(body, "the answer"))  # type: ignore[no-any-return]

    async def stream(self, dep: Deployment, key: str | None, messages: list[dict],
                     params: dict) -> AsyncIterator[Piece]:
        import aiohttp

        codec = CODECS[dep.protocol]
        parser = codec.parser()
        data = _dumps(codec.body(dep, messages, params, True))
        try:
            async with self._get_session().post(codec.url(dep, True), data=data,
                                                headers=codec.headers(key)) as resp:
                if resp.status != 200:
                    body = await resp.content.read(_ERR_BODY_LIMIT)
                    raise classify_status(resp.status, resp.headers, body, key)
                buf = b""
                async for data in resp.content.iter_any():
                    buf += data
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        for piece in parser.feed(line.rstrip(b"\r")):
                            yield piece
                if buf.strip():
                    for piece in parser.feed(buf.rstrip(b"\r")):
                        yield piece
                yield parser.end()
        except aiohttp.ClientPayloadError as exc:
            raise CallError("truncated", None, f"the stream was cut ({redact(str(exc), key)})") from None
        except aiohttp.ClientError as exc:
            raise CallError("connection", None, redact(f"{type(exc).__name__}: {exc}", key)) from None
