"""Outbound calls to LLM providers: one small interface with retries, fallback and circuit breakers.

The service builds one :class:`ProviderPool` (``ProviderPool.from_config(section, provider_url, models)``)
and calls ``await pool.complete(candidates, messages, params)`` or iterates ``pool.stream(...)``, with the
candidates in the router's preference order. OpenAI-compatible endpoints (OpenAI, xAI, Mistral, Together,
Abacus, vLLM, the local provider, ...) and text conversations on Anthropic, Gemini and Ollama go over plain
keep-alive HTTP (whole answers on the small ``http1`` client, streams on aiohttp); litellm (imported on first use) translates the rest: protocol ``litellm`` and
requests with tools or non-text content on the non-OpenAI protocols.

Rooms: ``types`` (records and :class:`ProviderError`), ``config`` (the providers config file), ``pool``
(retries, fallback, breakers, timeouts), ``native`` (the four protocols' codecs), ``http1`` (the client of whole answers), ``via_litellm`` (litellm adapter),
``calls`` (what one attempt returns or raises).
"""

from serve.providers.config import load_config_file, parse_config
from serve.providers.pool import SUPPORTED_PARAMS, ProviderPool
from serve.providers.types import (
           ERROR_KINDS,
           PROTOCOLS,
           Attempt,
           Chunk,
           Completion,
           Deployment,
           ProviderError,
)

__all__ = ["ERROR_KINDS", "PROTOCOLS", "SUPPORTED_PARAMS", "Attempt", "Chunk", "Completion", "Deployment",
           "ProviderError", "ProviderPool", "load_config_file", "parse_config"]
