"""Records that cross the provider interface: deployments, completions, stream chunks, attempts, errors.

Error tree (all under :class:`router.errors.RoutingError`)::

    RoutingError
    └── ProviderError           a call (with its retries and fallbacks) did not give a complete answer
                                .status     HTTP status to give the client (OpenAI-style: 400, 429, 502, 503, 504)
                                .retryable  whether the client may retry later
                                .kind       what went wrong (see KINDS below)
                                .attempts   every attempt made, in order
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from router.errors import ConfigError, RoutingError

__all__ = ["ERROR_KINDS", "PROTOCOLS", "Attempt", "Chunk", "Completion", "Deployment", "ProviderError"]

#: Protocols a deployment can speak.
PROTOCOLS = ("openai", "anthropic", "gemini", "ollama", "litellm")

#: ``ProviderError.kind`` values (also ``Attempt.kind`` for failed attempts).
ERROR_KINDS = {
    "rate_limited": "the provider answered 429",
    "server_error": "the provider answered 5xx",
    "bad_request": "the provider refused the request as invalid (400, 413, 422): retrying elsewhere won't help",
    "upstream_config": "the provider refused the key or the model (401, 403, 404): check the providers config",
    "connection": "the connection failed or was reset before an answer",
    "timeout": "no answer (or no first token, or no next chunk) within the deployment's timeout",
    "malformed": "the provider sent a body or chunk that does not parse",
    "truncated": "the answer ended before the provider's end marker",
    "stream_broken": "a stream failed after tokens were already given to the caller (no fallback possible)",
    "cooling_down": "every candidate deployment is cooling down after repeated failures",
    "no_deployment": "no candidate model has a configured deployment",
    "over_budget": "the caller's guard refused every candidate left (e.g. the tenant's budget cannot cover it)",
}


@dataclass(frozen=True)
class Deployment:
    """How to call one model as the router names it.

    Attributes:
        model: the router's model name (e.g. ``"gpt-4-1106-preview"``).
        protocol: ``"openai"`` (any OpenAI-compatible endpoint), ``"anthropic"``, ``"gemini"``, ``"ollama"``,
            or ``"litellm"`` (``provider_model`` is then any litellm model string, e.g. ``"mistral/mistral-large-latest"``).
        api_base: base URL. For ``openai`` it is what the OpenAI SDK takes (``https://api.openai.com/v1``); a
            bare ``http://host:port`` gets ``/v1`` added (``/v1beta`` for Gemini). May be empty for ``litellm``.
        provider_model: the name sent to the provider (default: ``model``).
        api_key_env / api_key_file: where the key is read from (once, when the pool is built); never logged.
        timeout_s: limit of one attempt, whole answer included.
        first_token_timeout_s: streams: limit until the first token.
        idle_timeout_s: streams: limit between two chunks after the first token.
        max_retries: retries on the same deployment after retryable errors (then the next candidate).
        input_cost_per_token / output_cost_per_token: USD; default from litellm's price map (offline).
    """

    model: str
    protocol: str
    api_base: str
    provider_model: str | None = None
    api_key_env: str | None = None
    api_key_file: str | None = None
    timeout_s: float = 30.0
    first_token_timeout_s: float = 10.0
    max_retries: int = 2
    input_cost_per_token: float | None = None
    output_cost_per_token: float | None = None
    idle_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        where = f"deployment {self.model!r}"
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError(f"a deployment needs a non-empty 'model' name, got {self.model!r}.")
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"{where}: unknown protocol {self.protocol!r}; choose one of {', '.join(PROTOCOLS)}.")
        if not isinstance(self.api_base, str) or (not self.api_base and self.protocol != "litellm"):
            raise ConfigError(f"{where}: 'api_base' must be a URL like http://127.0.0.1:9000 (only protocol "
                              "'litellm' may leave it empty for litellm's default).")
        if self.api_base and not self.api_base.startswith(("http://", "https://")):
            raise ConfigError(f"{where}: api_base {self.api_base!r} must start with http:// or https://.")
        if self.api_key_env is not None and self.api_key_file is not None:
            raise ConfigError(f"{where}: give api_key_env or api_key_file, not both.")
        for name in ("timeout_s", "first_token_timeout_s", "idle_timeout_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
                raise ConfigError(f"{where}: {name} must be a number of seconds > 0, got {v!r}.")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ConfigError(f"{where}: max_retries must be an integer >= 0, got {self.max_retries!r}.")
        for name in ("input_cost_per_token", "output_cost_per_token"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)
                                  or v < 0):
                raise ConfigError(f"{where}: {name} must be a number >= 0 (USD per token), got {v!r}.")

    @property
    def wire_model(self) -> str:
        """The model name sent to the provider."""
        return self.provider_model or self.model


@dataclass
class Attempt:
    """One call to one deployment (or a candidate skipped because it was cooling down)."""

    model: str
    ok: bool
    status: int | None
    error: str | None
    latency_s: float
    kind: str | None = None            # ERROR_KINDS key: why it failed, or why it was skipped (cooling_down,
                                       # no_deployment, over_budget)
    retry_after_s: float | None = None


@dataclass
class Completion:
    """A complete answer, with the model that gave it and every attempt on the way."""

    text: str
    model: str
    finish_reason: str
    input_tokens: int
    output_tokens: int
    latency_s: float
    cost_usd: float | None
    attempts: list[Attempt] = field(default_factory=list)
    tool_calls: list[dict] | None = None  # OpenAI-format tool calls, when the model called tools


@dataclass
class Chunk:
    """A piece of a streamed answer.

    Every chunk carries ``model`` (the model answering). Text chunks have ``text``; the last chunk has
    ``finish_reason`` (``"stop"``, ``"length"``, ...) and the usage, cost and attempts. A stream that breaks
    raises :class:`ProviderError` instead of giving a last chunk, so a ``finish_reason`` always means the
    provider's own end marker arrived.
    """

    text: str = ""
    model: str = ""
    finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    latency_s: float | None = None
    attempts: list[Attempt] | None = None


class ProviderError(RoutingError):
    """No complete answer from any candidate (or a stream broke after its first token).

    Attributes:
        status: HTTP status for the client: 400 (bad request), 429 (rate limited everywhere),
            502 (provider failed), 503 (all candidates cooling down / none configured), 504 (timeout).
        retryable: whether the client may retry the same request later.
        kind: what went wrong (a key of :data:`ERROR_KINDS`).
        attempts: every attempt made, in order.
        retry_after_s: suggested wait before retrying, when known.
    """

    def __init__(self, message: str, *, status: int = 502, retryable: bool = True, kind: str = "server_error",
                 attempts: list[Attempt] | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retryable = retryable
        self.kind = kind
        self.attempts = list(attempts or [])
        self.retry_after_s = retry_after_s

    def __repr__(self) -> str:
        return f"ProviderError(status={self.status}, kind={self.kind!r}, message={self.message!r})"
