"""The ``providers`` section of the service config: which model is called where, how, with which key.

Format (YAML shown; JSON with the same structure works too)::

    providers:
      unlisted: error            # a router model missing below: "error" (default) or "default"
                                 #   ("default" = call it at --provider-url with protocol openai)
      defaults:                  # applied to every model (each model may override)
        timeout_s: 30
        first_token_timeout_s: 10
        idle_timeout_s: 10
        max_retries: 2
      circuit_breaker: {failure_threshold: 3, cooldown_s: 30}
      retry: {backoff_s: 0.1, max_backoff_s: 2, max_retry_after_s: 5}
      endpoints:                 # connection settings shared by several models
        openai:    {protocol: openai,    api_base: https://api.openai.com/v1, api_key_env: OPENAI_API_KEY}
        anthropic: {protocol: anthropic, api_base: https://api.anthropic.com, api_key_env: ANTHROPIC_API_KEY}
        gemini:    {protocol: gemini,    api_base: https://generativelanguage.googleapis.com,
                    api_key_env: GEMINI_API_KEY}
        xai:       {protocol: openai,    api_base: https://api.x.ai/v1, api_key_env: XAI_API_KEY}
        mistral:   {protocol: openai,    api_base: https://api.mistral.ai/v1, api_key_env: MISTRAL_API_KEY}
        together:  {protocol: openai,    api_base: https://api.together.xyz/v1, api_key_env: TOGETHER_API_KEY}
        abacus:    {protocol: openai,    api_base: https://routellm.abacus.ai/v1,
                    api_key_file: /run/secrets/abacus_key}
        ollama:    {protocol: ollama,    api_base: http://127.0.0.1:11434}
        bedrock:   {protocol: litellm}   # any litellm model string, credentials as litellm reads them
      models:                    # the router's model name -> endpoint (+ overrides)
        gpt-4-1106-preview: openai                       # shorthand: just the endpoint
        claude-v2: {endpoint: anthropic, provider_model: claude-2.1}
        gemini-2.0-flash-001: {endpoint: gemini, provider_model: gemini-2.0-flash}
        grok-2: {endpoint: xai, provider_model: grok-2-latest}
        mistralai/mistral-7b-chat: {endpoint: mistral, provider_model: open-mistral-7b}
        mistralai/mixtral-8x7b-chat: {endpoint: together, provider_model: mistralai/Mixtral-8x7B-Instruct-v0.1,
                                      timeout_s: 60}
        route-llm: {endpoint: abacus, provider_model: route-llm}
        llama3: {endpoint: ollama, provider_model: "llama3.1:8b", input_cost_per_token: 0,
                 output_cost_per_token: 0}
        claude-on-bedrock: {endpoint: bedrock, provider_model: bedrock/anthropic.claude-3-haiku-20240307-v1:0}

A model entry is an endpoint name, or a mapping with ``endpoint`` and/or the :class:`Deployment` fields
(``protocol``, ``api_base``, ``provider_model``, ``api_key_env``, ``api_key_file``, ``timeout_s``,
``first_token_timeout_s``, ``idle_timeout_s``, ``max_retries``, ``input_cost_per_token``,
``output_cost_per_token``). Keys are read once, when the pool is built, from the named environment variable or
file; a key written into the config itself is refused, and keys never appear in logs, errors or ``health()``.

Example:
    >>> p = parse_config({"endpoints": {"local": {"protocol": "openai", "api_base": "http://127.0.0.1:9000"}},
    ...                   "models": {"small": "local", "big": {"endpoint": "local", "timeout_s": 5}}},
    ...                  "http://127.0.0.1:9000", ["small", "big"])
    >>> [(d.model, d.protocol, d.timeout_s) for d in p.deployments]
    [('small', 'openai', 30.0), ('big', 'openai', 5)]
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from router.errors import ConfigError
from serve.providers.types import Deployment

__all__ = ["ParsedConfig", "load_config_file", "parse_config"]

_DEP_FIELDS = {f.name for f in fields(Deployment)} - {"model"}
_TOP = {"unlisted", "defaults", "circuit_breaker", "retry", "endpoints", "models"}
_BREAKER = {"failure_threshold", "cooldown_s"}
_RETRY = {"backoff_s", "max_backoff_s", "max_retry_after_s"}


@dataclass
class ParsedConfig:
    """Deployments, their keys (private), and the pool's settings."""

    deployments: list[Deployment]
    keys: dict[str, str | None]
    pool: dict[str, Any]
    default_base_url: str | None

    def __repr__(self) -> str:  # never show keys
        return f"ParsedConfig({len(self.deployments)} deployments, pool={self.pool})"


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"providers config: {where} must be a mapping, got {type(value).__name__}.")
    return value


def _check_keys(entry: dict[str, Any], allowed: set[str], where: str) -> None:
    if "api_key" in entry:
        raise ConfigError(f"providers config: {where} has 'api_key': keys never go in the config file; name an "
                          "environment variable (api_key_env) or a file (api_key_file) instead.")
    unknown = set(entry) - allowed
    if unknown:
        raise ConfigError(f"providers config: {where} has unknown field(s) {sorted(unknown)}; allowed: "
                          f"{sorted(allowed)}.")


def _read_key(dep: Deployment) -> str | None:
    if dep.api_key_env is not None:
        value = os.environ.get(dep.api_key_env)
        if not value:
            raise ConfigError(f"providers config: model {dep.model!r} reads its key from the environment variable "
                              f"{dep.api_key_env}, which is not set (export it before starting the service).")
        return value.strip()
    if dep.api_key_file is not None:
        path = Path(dep.api_key_file).expanduser()
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"providers config: model {dep.model!r}: cannot read its key file {path} "
                              f"({exc.strerror}).") from None
        if not value:
            raise ConfigError(f"providers config: model {dep.model!r}: the key file {path} is empty.")
        return value
    return None


def parse_config(config: dict[str, Any], default_base_url: str, models: Sequence[str]) -> ParsedConfig:
    """Validate the ``providers`` section and read the keys.

    Args:
        config: the parsed section (a mapping as described in the module docstring).
        default_base_url: where ``unlisted: default`` sends models missing from ``models``.
        models: the router's model names; each needs a deployment unless ``unlisted: default``.
    """
    config = _mapping(config, "the providers section")
    _check_keys(config, _TOP, "the providers section")
    unlisted = config.get("unlisted", "error")
    if unlisted not in ("error", "default"):
        raise ConfigError(f"providers config: unlisted must be 'error' or 'default', got {unlisted!r}.")
    defaults = _mapping(config.get("defaults"), "defaults")
    _check_keys(defaults, _DEP_FIELDS - {"protocol", "api_base", "provider_model"}, "defaults")
    endpoints = _mapping(config.get("endpoints"), "endpoints")
    for name, ep in endpoints.items():
        _check_keys(_mapping(ep, f"endpoints.{name}"), _DEP_FIELDS - {"provider_model"}, f"endpoints.{name}")
    pool: dict[str, Any] = {}
    for section, allowed in (("circuit_breaker", _BREAKER), ("retry", _RETRY)):
        sub = _mapping(config.get(section), section)
        _check_keys(sub, allowed, section)
        pool.update(sub)
    deployments: list[Deployment] = []
    keys: dict[str, str | None] = {}
    for model, entry in _mapping(config.get("models"), "models").items():
        where = f"models.{model}"
        if isinstance(entry, str):
            entry = {"endpoint": entry}
        entry = dict(_mapping(entry, where))
        _check_keys(entry, _DEP_FIELDS | {"endpoint"}, where)
        merged: dict[str, Any] = dict(defaults)
        ep_name = entry.pop("endpoint", None)
        if ep_name is not None:
            if ep_name not in endpoints:
                raise ConfigError(f"providers config: {where} names endpoint {ep_name!r}, which is not defined; "
                                  f"endpoints: {sorted(endpoints)}.")
            merged.update(endpoints[ep_name])
        merged.update(entry)
        if "protocol" not in merged:
            raise ConfigError(f"providers config: {where} needs a protocol (openai, anthropic, gemini, ollama, "
                              "litellm), directly or through its endpoint.")
        merged.setdefault("api_base", "")
        try:
            dep = Deployment(model=str(model), **merged)
        except TypeError as exc:
            raise ConfigError(f"providers config: {where}: {exc}") from None
        deployments.append(dep)
        keys[dep.model] = _read_key(dep)
    listed = {d.model for d in deployments}
    missing = [m for m in models if m not in listed]
    if missing and unlisted == "error":
        raise ConfigError(f"providers config: the router's model(s) {missing} have no entry under models; add "
                          "them, or set 'unlisted: default' to call them at the default provider URL.")
    if unlisted == "default":
        deployments += [Deployment(m, "openai", default_base_url) for m in missing]
    return ParsedConfig(deployments, keys, pool, default_base_url if unlisted == "default" else None)


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``providers`` section of a YAML or JSON config file (the whole file when it has no such key)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {p}: {exc.strerror}.") from None
    try:
        if p.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except ValueError as exc:  # JSONDecodeError and yaml.YAMLError's common base for us
        raise ConfigError(f"{p}: not valid {'JSON' if p.suffix == '.json' else 'YAML'} ({exc}).") from None
    except Exception as exc:  # yaml.YAMLError
        raise ConfigError(f"{p}: not valid YAML ({exc}).") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level.")
    section = data.get("providers", data)
    if not isinstance(section, dict):
        raise ConfigError(f"{p}: 'providers' must be a mapping.")
    return section
