"""The four wire protocols the local provider speaks: request parsing, bodies, stream frames, error bodies.

Each protocol is one small class with the same methods, so the server treats them alike:

* :class:`OpenAIWire` -- ``POST /v1/chat/completions`` (JSON, or SSE ``data: {chunk}`` ... ``data: [DONE]``;
  with ``stream_options.include_usage`` every chunk carries ``"usage": null`` and a last chunk with
  ``choices: []`` carries the usage), errors ``{"error": {"message", "type", "param", "code"}}``.
* :class:`AnthropicWire` -- ``POST /v1/messages`` (JSON, or SSE events message_start, content_block_start,
  ping, content_block_delta..., content_block_stop, message_delta (stop reason, output usage),
  message_stop), errors ``{"type": "error", "error": {"type", "message"}}``; ``max_tokens`` is required.
* :class:`GeminiWire` -- ``POST /v1beta/models/{model}:generateContent`` and ``:streamGenerateContent``
  (SSE with ``?alt=sse``, else a JSON array streamed element by element), errors
  ``{"error": {"code", "message", "status"}}``.
* :class:`OllamaWire` -- ``POST /api/chat`` (streams NDJSON unless ``"stream": false``, as Ollama does; the
  last record has ``done: true``, ``done_reason`` and the eval counts), errors ``{"error": "..."}``.

Frames are bytes ready to write as one HTTP chunk. Nothing here touches the network.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Protocol

from serve.provider.answers import Answer

__all__ = ["PROTOCOLS", "AnthropicWire", "BadRequest", "GeminiWire", "OllamaWire", "OpenAIWire", "Req", "Wire"]

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_PREFIX = os.urandom(4).hex()
_ids = itertools.count(1)


def _new_id() -> str:
    return f"{_PREFIX}{next(_ids):012x}"


class BadRequest(Exception):
    """A request the real provider would refuse with 400 (the message goes into its error body)."""


@dataclass
class Req:
    """What the server needs from a parsed request."""

    model: str
    prompt: str          # text of the last user message: the key of the answer
    chars: int           # characters of all message text (for the prompt-token estimate)
    max_tokens: int | None
    stream: bool
    usage_in_stream: bool = False  # OpenAI: stream_options.include_usage
    sse: bool = True               # Gemini: ?alt=sse (else a streamed JSON array)
    id: str = ""
    n_in: int = 0                  # prompt tokens (set by the server)
    started_ns: int = 0            # when the request arrived (time.perf_counter_ns)
    frames: int = 0                # stream frames written so far (Gemini opens its JSON array on the first)


class Wire(Protocol):
    """What every protocol provides (stream frames are bytes for one HTTP chunk each)."""

    name: str
    stream_type: bytes

    def parse(self, body: Any, path_model: str | None = None, query: str = "") -> Req: ...
    def body(self, r: Req, a: Answer, n_in: int) -> bytes: ...
    def head(self, r: Req, a: Answer, n_in: int) -> list[bytes]: ...
    def delta(self, r: Req, text: str) -> bytes: ...
    def tail(self, r: Req, a: Answer, n_in: int) -> list[bytes]: ...
    def malformed(self, r: Req, text: str) -> bytes: ...
    def error(self, status: int, message: str, code: str | None = None) -> bytes: ...
    def not_found(self, model: str) -> bytes: ...
    def models(self, names: list[str]) -> bytes: ...


def _text_of(content: Any, where: str) -> str:
    """The text of a message ``content``: a string or a list of parts with ``text``."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict):
                t = part.get("text")
                if isinstance(t, str):
                    out.append(t)
            else:
                raise BadRequest(f"{where}: each content part must be an object, got {type(part).__name__}.")
        return "".join(out)
    raise BadRequest(f"{where}: content must be a string or a list of parts, got {type(content).__name__}.")


def _conversation(messages: Any, where: str, user_roles: tuple[str, ...] = ("user",),
                  key: str = "content") -> tuple[str, int]:
    if not isinstance(messages, list) or not messages:
        raise BadRequest(f"'{where}' must be a non-empty array of messages.")
    prompt, chars = "", 0
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise BadRequest(f"'{where}[{i}]' must be an object with 'role' and '{key}'.")
        if key == "parts":
            text = _text_of(m.get("parts"), f"{where}[{i}].parts")
        else:
            text = _text_of(m.get(key), f"{where}[{i}].{key}")
        chars += len(text)
        if m.get("role", "user") in user_roles:
            prompt = text
    return prompt, chars


def _max_tokens(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        if name == "num_predict" and isinstance(value, int) and not isinstance(value, bool) and value < 0:
            return None  # Ollama: -1 means no limit
        raise BadRequest(f"'{name}' must be a positive integer, got {value!r}.")
    return value


# ============================================================================ OpenAI
class OpenAIWire:
    """OpenAI chat completions."""

    name = "openai"
    stream_type = b"text/event-stream; charset=utf-8"
    error_types = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
                   429: "requests", 500: "server_error", 503: "server_error"}

    def parse(self, body: Any, path_model: str | None = None, query: str = "") -> Req:
        if not isinstance(body, dict):
            raise BadRequest("The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("you must provide a model parameter")
        prompt, chars = _conversation(body.get("messages"), "messages")
        mt = body.get("max_completion_tokens", body.get("max_tokens"))
        opts = body.get("stream_options") or {}
        return Req(model, prompt, chars, _max_tokens(mt, "max_tokens"), bool(body.get("stream")),
                   usage_in_stream=bool(isinstance(opts, dict) and opts.get("include_usage")), id=_new_id())

    def body(self, r: Req, a: Answer, n_in: int) -> bytes:
        return _dumps({
            "id": f"chatcmpl-{r.id}", "object": "chat.completion", "created": int(time.time()), "model": r.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": a.text, "refusal": None},
                         "logprobs": None, "finish_reason": a.finish_reason}],
            "usage": {"prompt_tokens": n_in, "completion_tokens": a.output_tokens,
                      "total_tokens": n_in + a.output_tokens},
            "system_fingerprint": "fp_local",
        }).encode()

    def _chunk(self, r: Req, delta: dict[str, Any], finish: str | None) -> bytes:
        d: dict[str, Any] = {"id": f"chatcmpl-{r.id}", "object": "chat.completion.chunk", "created": int(time.time()),
                             "model": r.model, "system_fingerprint": "fp_local",
                             "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if r.usage_in_stream:
            d["usage"] = None
        return b"data: " + _dumps(d).encode() + b"\n\n"

    def head(self, r: Req, a: Answer, n_in: int) -> list[bytes]:
        return [self._chunk(r, {"role": "assistant", "content": "", "refusal": None}, None)]

    def delta(self, r: Req, text: str) -> bytes:
        return self._chunk(r, {"content": text}, None)

    def tail(self, r: Req, a: Answer, n_in: int) -> list[bytes]:
        out = [self._chunk(r, {}, a.finish_reason)]
        if r.usage_in_stream:
            out.append(b"data: " + _dumps({
                "id": f"chatcmpl-{r.id}", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": r.model, "system_fingerprint": "fp_local", "choices": [],
                "usage": {"prompt_tokens": n_in, "completion_tokens": a.output_tokens,
                          "total_tokens": n_in + a.output_tokens}}).encode() + b"\n\n")
        out.append(b"data: [DONE]\n\n")
        return out

    def malformed(self, r: Req, text: str) -> bytes:
        return self.delta(r, text)[:-12] + b"\n\n"

    def error(self, status: int, message: str, code: str | None = None) -> bytes:
        return _dumps({"error": {"message": message, "type": self.error_types.get(status, "server_error"),
                                 "param": None, "code": code}}).encode()

    def not_found(self, model: str) -> bytes:
        return self.error(404, f"The model `{model}` does not exist or you do not have access to it.",
                          "model_not_found")

    def models(self, names: list[str]) -> bytes:
        return _dumps({"object": "list", "data": [{"id": m, "object": "model", "created": 0,
                                                   "owned_by": "local-provider"} for m in names]}).encode()


# ============================================================================ Anthropic
class AnthropicWire:
    """Anthropic messages."""

    name = "anthropic"
    stream_type = b"text/event-stream; charset=utf-8"
    error_types = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                   429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}

    def parse(self, body: Any, path_model: str | None = None, query: str = "") -> Req:
        if not isinstance(body, dict):
            raise BadRequest("The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("model: Field required")
        if "max_tokens" not in body:
            raise BadRequest("max_tokens: Field required")
        prompt, chars = _conversation(body.get("messages"), "messages")
        system = body.get("system")
        if system is not None:
            chars += len(_text_of(system, "system"))
        return Req(model, prompt, chars, _max_tokens(body.get("max_tokens"), "max_tokens"),
                   bool(body.get("stream")), id=_new_id())

    @staticmethod
    def _stop(a: Answer) -> str:
        return "max_tokens" if a.finish_reason == "length" else "end_turn"

    def body(self, r: Req, a: Answer, n_in: int) -> bytes:
        return _dumps({
            "id": f"msg_{r.id}", "type": "message", "role": "assistant", "model": r.model,
            "content": [{"type": "text", "text": a.text}], "stop_reason": self._stop(a), "stop_sequence": None,
            "usage": {"input_tokens": n_in, "output_tokens": a.output_tokens,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        }).encode()

    @staticmethod
    def _event(name: str, data: dict[str, Any]) -> bytes:
        return b"event: " + name.encode() + b"\ndata: " + _dumps(data).encode() + b"\n\n"

    def head(self, r: Req, a: Answer, n_in: int) -> list[bytes]:
        return [
            self._event("message_start", {"type": "message_start", "message": {
                "id": f"msg_{r.id}", "type": "message", "role": "assistant", "model": r.model, "content": [],
                "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": n_in, "output_tokens": 1, "cache_creation_input_tokens": 0,
                          "cache_read_input_tokens": 0}}}),
            self._event("content_block_start", {"type": "content_block_start", "index": 0,
                                                "content_block": {"type": "text", "text": ""}}),
            self._event("ping", {"type": "ping"}),
        ]

    def delta(self, r: Req, text: str) -> bytes:
        return self._event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                   "delta": {"type": "text_delta", "text": text}})

    def tail(self, r: Req, a: Answer, n_in: int) -> list[bytes]:
        return [
            self._event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            self._event("message_delta", {"type": "message_delta",
                                          "delta": {"stop_reason": self._stop(a), "stop_sequence": None},
                                          "usage": {"output_tokens": a.output_tokens}}),
            self._event("message_stop", {"type": "message_stop"}),
        ]

    def malformed(self, r: Req, text: str) -> bytes:
        return self.delta(r, text)[:-8] + b"\n\n"

    def error(self, status: int, message: str, code: str | None = None) -> bytes:
        return _dumps({"type": "error", "error": {"type": self.error_types.get(status, "api_error"),
                                                  "message": message}}).encode()

    def not_found(self, model: str) -> bytes:
        return self.error(404, f"model: {model}")

    def models(self, names: list[str]) -> bytes:
        data = [{"type": "model", "id": m, "display_name": m, "created_at": "2024-01-01T00:00:00Z"} for m in names]
        return _dumps({"data": data, "has_more": False, "first_id": names[0] if names else None,
                       "last_id": names[-1] if names else None}).encode()


# ============================================================================ Gemini
class GeminiWire:
    """Google Gemini generateContent / streamGenerateContent."""

    name = "gemini"
    stream_type = b"text/event-stream"
    statuses = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}

    def parse(self, body: Any, path_model: str | None = None, query: str = "") -> Req:
        if not isinstance(body, dict):
            raise BadRequest("Invalid JSON payload received. The request body must be a JSON object.")
        if not path_model:
            raise BadRequest("the model is named in the path: /v1beta/models/{model}:generateContent")
        prompt, chars = _conversation(body.get("contents"), "contents", key="parts")
        si = body.get("systemInstruction") or body.get("system_instruction")
        if isinstance(si, dict):
            chars += len(_text_of(si.get("parts"), "systemInstruction.parts"))
        gc = body.get("generationConfig") or body.get("generation_config") or {}
        if not isinstance(gc, dict):
            raise BadRequest("generationConfig must be an object.")
        return Req(path_model, prompt, chars, _max_tokens(gc.get("maxOutputTokens", gc.get("max_output_tokens")),
                                                          "maxOutputTokens"),
                   stream=False, sse="alt=sse" in query, id=_new_id())

    @staticmethod
    def _finish(a: Answer) -> str:
        return "MAX_TOKENS" if a.finish_reason == "length" else "STOP"

    def _response(self, r: Req, text: str, finish: str | None, n_in: int, n_out: int) -> dict[str, Any]:
        cand: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
        if finish is not None:
            cand["finishReason"] = finish
        usage: dict[str, Any] = {"promptTokenCount": n_in}
        if n_out:
            usage.update(candidatesTokenCount=n_out, totalTokenCount=n_in + n_out)
        return {"candidates": [cand], "usageMetadata": usage, "modelVersion": r.model, "responseId": r.id}

    def body(self, r: Req, a: Answer, n_in: int) -> bytes:
        return _dumps(self._response(r, a.text, self._finish(a), n_in, a.output_tokens)).encode()

    def _frame(self, r: Req, d: dict[str, Any]) -> bytes:
        r.frames += 1
        if r.sse:
            return b"data: " + _dumps(d).encode() + b"\r\n\r\n"
        return (b"[" if r.frames == 1 else b",\r\n") + _dumps(d).encode()

    def head(self, r: Req, a: Answer, n_in: int) -> list[bytes]:
        return []

    def delta(self, r: Req, text: str) -> bytes:
        return self._frame(r, self._response(r, text, None, r.n_in, 0))

    def tail(self, r: Req, a: Answer, n_in: int) -> list[bytes]:
        last = self._frame(r, self._response(r, "", self._finish(a), n_in, a.output_tokens))
        return [last] if r.sse else [last, b"]"]

    def malformed(self, r: Req, text: str) -> bytes:
        f = self.delta(r, text)
        return f[:-12] + (b"\r\n\r\n" if r.sse else b"")

    def error(self, status: int, message: str, code: str | None = None) -> bytes:
        return _dumps({"error": {"code": status, "message": message,
                                 "status": self.statuses.get(status, "INTERNAL")}}).encode()

    def not_found(self, model: str) -> bytes:
        return self.error(404, f"models/{model} is not found for API version v1beta, or is not supported for "
                               "generateContent. Call ListModels to see the list of available models and their "
                               "supported methods.")

    def models(self, names: list[str]) -> bytes:
        return _dumps({"models": [{"name": f"models/{m}", "displayName": m, "supportedGenerationMethods":
                                   ["generateContent", "streamGenerateContent"]} for m in names]}).encode()


# ============================================================================ Ollama
class OllamaWire:
    """Ollama /api/chat."""

    name = "ollama"
    stream_type = b"application/x-ndjson"

    def parse(self, body: Any, path_model: str | None = None, query: str = "") -> Req:
        if not isinstance(body, dict):
            raise BadRequest("invalid request body: expected a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("model is required")
        prompt, chars = _conversation(body.get("messages"), "messages")
        opts = body.get("options") or {}
        if not isinstance(opts, dict):
            raise BadRequest("options must be an object")
        return Req(model, prompt, chars, _max_tokens(opts.get("num_predict"), "num_predict"),
                   stream=body.get("stream", True) is not False, id=_new_id())

    @staticmethod
    def _now() -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())

    def _final(self, r: Req, a: Answer, n_in: int, text: str) -> dict[str, Any]:
        dur = max(0, time.perf_counter_ns() - r.started_ns) if r.started_ns else 0
        return {"model": r.model, "created_at": self._now(), "message": {"role": "assistant", "content": text},
                "done": True, "done_reason": "length" if a.finish_reason == "length" else "stop",
                "total_duration": dur, "load_duration": 0, "prompt_eval_count": n_in,
                "prompt_eval_duration": 0, "eval_count": a.output_tokens, "eval_duration": dur}

    def body(self, r: Req, a: Answer, n_in: int) -> bytes:
        return _dumps(self._final(r, a, n_in, a.text)).encode()

    def head(self, r: Req, a: Answer, n_in: int) -> list[bytes]:
        return []

    def delta(self, r: Req, text: str) -> bytes:
        return _dumps({"model": r.model, "created_at": self._now(),
                       "message": {"role": "assistant", "content": text}, "done": False}).encode() + b"\n"

    def tail(self, r: Req, a: Answer, n_in: int) -> list[bytes]:
        return [_dumps(self._final(r, a, n_in, "")).encode() + b"\n"]

    def malformed(self, r: Req, text: str) -> bytes:
        return self.delta(r, text)[:-10] + b"\n"

    def error(self, status: int, message: str, code: str | None = None) -> bytes:
        return _dumps({"error": message}).encode()

    def not_found(self, model: str) -> bytes:
        return self.error(404, f"model '{model}' not found, try pulling it first")

    def models(self, names: list[str]) -> bytes:
        return _dumps({"models": [{"name": m, "model": m, "modified_at": "2024-01-01T00:00:00Z", "size": 0,
                                   "digest": "", "details": {}} for m in names]}).encode()


#: Protocol name -> its wire implementation.
PROTOCOLS: dict[str, Wire] = {"openai": OpenAIWire(), "anthropic": AnthropicWire(), "gemini": GeminiWire(), "ollama": OllamaWire()}
