"""One typed, frozen :class:`Settings` for the service, read once at start.

Sources, later ones win: the defaults below, a configuration file (``--config``, YAML or JSON), the
environment (``ROUTER_SERVE_<KEY>``, nested keys joined by ``__``, e.g. ``ROUTER_SERVE_CACHE__TTL_S``;
lists and mappings as JSON), then the command-line flags. Every error names the bad key and says what
to do; unknown keys are errors, never ignored.

Example::

    # serve.yaml
    model: models:/demo-router@champion
    port: 8000
    provider_url: http://127.0.0.1:9000
    registry_poll_s: 10
    cache: {enabled: true, ttl_s: 3600, max_entries: 100000}
    profiles:
      cheap: {lam: 500, allowed_models: [small-7b, medium-70b]}
    providers: {}          # see serve/providers: per-model endpoints and keys; empty = all to provider_url

>>> s = Settings.load(overrides={"model": "out/r", "port": 8123}, environ={"ROUTER_SERVE_CACHE__TTL_S": "60"})
>>> s.port, s.cache.ttl_s, s.model
(8123, 60.0, 'out/r')
>>> Settings.load(overrides={"model": "x"}, environ={"ROUTER_SERVE_PORTT": "1"})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
serve.settings.SettingsError: ROUTER_SERVE_PORTT: unknown setting 'portt' (did you mean 'port'?); known settings: ...
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from router.errors import ConfigError
from serve.tenants.limits import Limits

__all__ = ["AuditSettings", "AuthSettings", "CacheSettings", "ENV_PREFIX", "ExperimentSettings", "LogbookSettings",
           "OIDCSettings", "OnlineSettings", "Profile", "Settings", "SettingsError"]

ENV_PREFIX = "ROUTER_SERVE_"


class SettingsError(ConfigError):
    """A setting is missing, unknown or has a bad value (the message names it)."""


@dataclass(frozen=True)
class Profile:
    """A named routing profile: request it with ``model: "router-<name>"`` or ``routing.profile``.

    Any field left unset keeps the router's saved operating point (its decision rule).
    """

    name: str = ""
    lam: float | None = None
    mu: float | None = None
    allowed_models: tuple[str, ...] | None = None
    max_cost: float | None = None
    max_latency: float | None = None


@dataclass(frozen=True)
class CacheSettings:
    """The semantic cache: ``threshold`` None keeps the cache's calibrated default."""

    enabled: bool = True
    threshold: float | None = None
    ttl_s: float = 3600.0
    max_entries: int = 100_000
    encoder: dict[str, Any] | None = None


@dataclass(frozen=True)
class LogbookSettings:
    """Where decision records go.

    ``dir``: the traffic log (training schema, with feedback; see :mod:`serve.trafficlog`), written
    with group commit every ``commit_ms`` (the most a ``kill -9`` can lose) and rotated after
    ``rotate_mb`` MiB or ``rotate_s`` seconds. ``answer_after_commit``: an answer leaves only once
    its record is on disk (a kill then loses no answered request; answers wait up to one window).
    ``path``: a plain JSON-lines file of the raw decision records (debugging). Neither: nothing is
    logged and ``/v1/feedback`` is off.
    """

    path: str | None = None
    dir: str | None = None
    commit_ms: float = 50.0
    rotate_mb: float = 64.0
    rotate_s: float = 3600.0
    answer_after_commit: bool = False


@dataclass(frozen=True)
class OnlineSettings:
    """Online learning (see :mod:`serve.online`); needs ``logbook.dir`` (feedback arrives through it)."""

    enabled: bool = False
    policy: str = "egreedy"
    lam: float | None = None
    epsilon: float = 0.1
    alpha: float = 0.5
    warm_prompts: int = 100
    warm_weight: float = 0.1
    max_explore_share: float = 1.0
    snapshot_dir: str | None = None
    snapshot_s: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class OIDCSettings:
    """An OpenID Connect issuer whose JWTs are accepted as bearer tokens (``issuer`` None: off).

    The tenant is the ``tenant_claim`` of the token and the role its ``role_claim`` (one of admin,
    member, read-only; ``default_role`` when absent).
    """

    issuer: str | None = None
    audience: str | None = None
    jwks_url: str | None = None  # default: <issuer>/.well-known/jwks.json ... via the discovery document
    tenant_claim: str = "tenant"
    role_claim: str = "role"
    default_role: str = "member"
    leeway_s: float = 30.0
    jwks_ttl_s: float = 600.0
    algorithms: tuple[str, ...] = ("RS256", "ES256")


@dataclass(frozen=True)
class AuthSettings:
    """Credentials: ``store`` is the SQLite tenant store (keys and limits); None and no OIDC issuer = auth off."""

    store: str | None = None
    reload_s: float = 2.0
    oidc: OIDCSettings = field(default_factory=OIDCSettings)


@dataclass(frozen=True)
class AuditSettings:
    """The tamper-evident audit log (``path`` None: off); the HMAC key signs its checkpoints."""

    path: str | None = None
    hmac_key: str | None = None
    hmac_key_file: str | None = None
    checkpoint_every: int = 100


@dataclass(frozen=True)
class ExperimentSettings:
    """A policy experiment (see :mod:`serve.experiments`); ``name`` None: none runs."""

    name: str | None = None
    challenger: str = ""
    mode: str = "ab"
    split: float = 0.1
    sticky: str = "tenant"
    lam: float | None = None  # cost weight of the reported reward quality - lam * cost; None: the champion's


@dataclass(frozen=True)
class Settings:
    """Everything the service reads at start; see the module docs for the sources."""

    model: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    provider_url: str = "http://127.0.0.1:9000"
    providers: dict[str, Any] = field(default_factory=dict)
    profiles: dict[str, Profile] = field(default_factory=dict)
    cache: CacheSettings = field(default_factory=CacheSettings)
    logbook: LogbookSettings = field(default_factory=LogbookSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    tenants: dict[str, Limits] = field(default_factory=dict)
    audit: AuditSettings = field(default_factory=AuditSettings)
    redis_url: str | None = None
    #: ``--workers N`` without ``redis_url``: True lets each worker enforce every budget and rate limit on
    #: its own (nothing divided, so a tenant can use N times them); False makes that an error at start
    per_worker_limits: bool = False
    decisions_kept: int = 10_000
    experiment: ExperimentSettings = field(default_factory=ExperimentSettings)
    online: OnlineSettings = field(default_factory=OnlineSettings)
    registry_poll_s: float = 10.0
    max_body_bytes: int = 4 * 1024 * 1024
    max_messages: int = 1000
    batch_max: int = 64
    batch_window_ms: float = 3.0
    batch_target: int = 16
    encode_in_thread: str = "auto"
    fallbacks: int = 2
    request_timeout_s: float = 120.0
    shutdown_timeout_s: float = 30.0
    log_level: str = "info"
    access_log: bool = False
    #: the HTTP/1.1 protocol class uvicorn runs: ``serve`` (:mod:`serve.api.protocol`, leaner per request) or
    #: ``uvicorn`` (uvicorn's own httptools protocol)
    http_protocol: str = "serve"

    def __post_init__(self) -> None:
        if not self.model:
            raise SettingsError("model: no router given; pass --model DIR or --model models:/NAME@ALIAS "
                                "(or set 'model' in the config file / ROUTER_SERVE_MODEL).")
        _check(self.port, 0 <= self.port <= 65535, "port", "a TCP port in 0..65535")
        _check(self.workers, self.workers >= 1, "workers", "at least 1")
        _check(self.provider_url, self.provider_url.startswith(("http://", "https://")), "provider_url",
               "an http:// or https:// URL")
        _check(self.registry_poll_s, self.registry_poll_s >= 0, "registry_poll_s", ">= 0 (0 stops following)")
        _check(self.max_body_bytes, self.max_body_bytes >= 1024, "max_body_bytes", ">= 1024")
        _check(self.max_messages, self.max_messages >= 1, "max_messages", ">= 1")
        _check(self.batch_max, self.batch_max >= 1, "batch_max", ">= 1")
        _check(self.batch_window_ms, 0 <= self.batch_window_ms <= 50, "batch_window_ms", "in [0, 50]")
        _check(self.batch_target, self.batch_target >= 1, "batch_target", ">= 1")
        _check(self.encode_in_thread, self.encode_in_thread in ("auto", "always", "never"), "encode_in_thread",
               "one of auto, always, never")
        _check(self.fallbacks, self.fallbacks >= 0, "fallbacks", ">= 0")
        _check(self.request_timeout_s, self.request_timeout_s > 0, "request_timeout_s", "> 0")
        _check(self.shutdown_timeout_s, self.shutdown_timeout_s >= 0, "shutdown_timeout_s", ">= 0")
        _check(self.http_protocol, self.http_protocol in ("serve", "uvicorn"), "http_protocol", "serve or uvicorn")
        _check(self.log_level, self.log_level in ("critical", "error", "warning", "info", "debug", "trace"),
               "log_level", "one of critical, error, warning, info, debug, trace")
        _check(self.cache.ttl_s, self.cache.ttl_s > 0, "cache.ttl_s", "> 0")
        lb = self.logbook
        _check(lb.commit_ms, 0 < lb.commit_ms <= 1000, "logbook.commit_ms", "in (0, 1000] milliseconds")
        _check(lb.rotate_mb, lb.rotate_mb > 0, "logbook.rotate_mb", "> 0")
        _check(lb.rotate_s, lb.rotate_s > 0, "logbook.rotate_s", "> 0")
        if lb.answer_after_commit and not lb.dir:
            raise SettingsError("logbook.answer_after_commit needs logbook.dir: only the traffic log commits "
                                "records to disk; set logbook.dir too.")
        on = self.online
        if on.enabled and not lb.dir:
            raise SettingsError("online.enabled needs logbook.dir: the online policy learns from feedback, which is "
                                "recorded in the traffic log; set logbook.dir too.")
        _check(on.policy, on.policy in ("egreedy", "linucb", "thompson"), "online.policy",
               "one of egreedy, linucb, thompson")
        _check(on.epsilon, 0 <= on.epsilon <= 1, "online.epsilon", "in [0, 1]")
        _check(on.max_explore_share, 0 <= on.max_explore_share <= 1, "online.max_explore_share", "in [0, 1]")
        _check(on.warm_prompts, on.warm_prompts >= 0, "online.warm_prompts", ">= 0")
        _check(on.warm_weight, on.warm_weight > 0, "online.warm_weight", "> 0")
        _check(on.snapshot_s, on.snapshot_s >= 0, "online.snapshot_s", ">= 0 seconds (0: only at shutdown)")
        if lb.path and lb.dir:
            raise SettingsError("logbook: set either 'dir' (the traffic log) or 'path' (raw decision records), not both.")
        _check(self.cache.max_entries, self.cache.max_entries >= 1, "cache.max_entries", ">= 1")
        if self.cache.threshold is not None:
            _check(self.cache.threshold, 0 < self.cache.threshold <= 1, "cache.threshold", "in (0, 1]")
        _check(self.decisions_kept, self.decisions_kept >= 0, "decisions_kept", ">= 0")
        ex = self.experiment
        if ex.name is not None:
            _check(ex.challenger, bool(ex.challenger), "experiment.challenger",
                   "the challenger policy: a router DIR or models:/NAME@ALIAS")
            _check(ex.mode, ex.mode in ("ab", "shadow"), "experiment.mode", "ab or shadow")
            _check(ex.split, 0 <= ex.split <= 1, "experiment.split", "a share in [0, 1]")
            _check(ex.sticky, ex.sticky in ("tenant", "user"), "experiment.sticky", "tenant or user")
            if ex.lam is not None:
                _check(ex.lam, ex.lam >= 0 and ex.lam != float("inf"), "experiment.lam",
                       "a finite number >= 0 (quality points per USD), or null for the champion's own")
        _check(self.auth.reload_s, self.auth.reload_s >= 0, "auth.reload_s", ">= 0 (0: never reload)")
        _check(self.audit.checkpoint_every, self.audit.checkpoint_every >= 1, "audit.checkpoint_every", ">= 1")
        if self.audit.path and not (self.audit.hmac_key or self.audit.hmac_key_file):
            raise SettingsError("audit.path is set but no HMAC key: set audit.hmac_key (ROUTER_SERVE_AUDIT__HMAC_KEY) "
                                "or audit.hmac_key_file, a secret only the service knows.")
        if self.redis_url is not None:
            _check(self.redis_url, self.redis_url.startswith(("redis://", "rediss://", "unix://")), "redis_url",
                   "a redis://host:port/db URL")
        if self.auth.oidc.issuer is not None:
            _check(self.auth.oidc.audience, bool(self.auth.oidc.audience), "auth.oidc.audience",
                   "set: the audience (client id) tokens must be issued for")
            _check(self.auth.oidc.default_role, self.auth.oidc.default_role in ("admin", "member", "read-only"),
                   "auth.oidc.default_role", "one of admin, member, read-only")
        for name, p in self.profiles.items():
            for key in ("lam", "mu"):
                v = getattr(p, key)
                if v is not None:
                    _check(v, v >= 0, f"profiles.{name}.{key}", ">= 0")
            for key in ("max_cost", "max_latency"):
                v = getattr(p, key)
                if v is not None:
                    _check(v, v > 0, f"profiles.{name}.{key}", "> 0")
            if p.allowed_models is not None and not p.allowed_models:
                raise SettingsError(f"profiles.{name}.allowed_models is empty; list at least one model or drop it.")

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        config_file: str | os.PathLike[str] | None = None,
        *,
        overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Defaults < ``config_file`` < ``ROUTER_SERVE_*`` environment < ``overrides`` (flags; None skipped)."""
        raw: dict[str, Any] = {}
        if config_file is not None:
            raw = _merge(raw, _read_file(Path(config_file)))
        raw = _merge(raw, _from_env(os.environ if environ is None else environ))
        raw = _merge(raw, {k: v for k, v in (overrides or {}).items() if v is not None})
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, where: str = "") -> Settings:
        """Settings from a plain mapping (as read from a file); errors name the key."""
        return _build(cls, raw, where)  # type: ignore[no-any-return]

    def to_json(self) -> str:
        """JSON that :meth:`from_dict` reads back (how worker processes receive the settings)."""
        return json.dumps(dataclasses.asdict(self))


def _check(value: Any, ok: bool, key: str, what: str) -> None:
    if not ok:
        raise SettingsError(f"{key} = {value!r} is invalid: it must be {what}.")


def _read_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise SettingsError(f"config file {path} does not exist; give the path of a YAML or JSON file.")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except (ValueError, ImportError, Exception) as exc:  # yaml.YAMLError has no common base with ValueError
        raise SettingsError(f"config file {path} cannot be parsed: {exc}".rstrip() + "; fix its syntax.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"config file {path} must hold a mapping of settings, not {type(data).__name__}.")
    return data


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key == ENV_PREFIX + "SETTINGS_JSON":
            continue
        path = [p.lower() for p in key[len(ENV_PREFIX):].split("__")]
        node = out
        for p in path[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise SettingsError(f"{key}: {'.'.join(path[:-1])} is set both as a value and as a section.")
        node[path[-1]] = _EnvValue(key, value)
    return out


class _EnvValue(str):
    """A raw environment string, remembered with its variable name for error messages."""

    var: str

    def __new__(cls, var: str, value: str) -> _EnvValue:
        obj = super().__new__(cls, value)
        obj.var = var
        return obj


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) and k not in ("providers",):
            out[k] = _merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def _build(cls: type, raw: Mapping[str, Any], where: str) -> Any:
    if not isinstance(raw, Mapping):
        raise SettingsError(f"{where.rstrip('.') or 'settings'} must be a mapping, got {type(raw).__name__}.")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        name = str(key)
        if name not in fields:
            near = difflib.get_close_matches(name, list(fields), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            label = value.var if isinstance(value, _EnvValue) else f"{where}{name}"
            raise SettingsError(f"{label}: unknown setting {name!r}{hint}; known settings: {', '.join(fields)}.")
        kwargs[name] = _coerce(value, hints[name], f"{where}{name}")
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field missing in a nested section
        raise SettingsError(f"{where.rstrip('.') or 'settings'}: {exc}") from None


def _coerce(value: Any, tp: Any, key: str) -> Any:
    label = value.var if isinstance(value, _EnvValue) else key
    if isinstance(value, _EnvValue) and tp is not str and not _is_optional_str(tp):
        value = _parse_env(value, tp, label)
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".")  # type: ignore[arg-type]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise SettingsError(f"{label} must be a mapping, got {type(value).__name__} {value!r}.")
        vt = get_args(tp)[1]
        if vt is Limits:
            lims = {}
            for name, spec in value.items():
                try:
                    lims[str(name)] = Limits.from_dict(dict(spec or {}))
                except SettingsError:
                    raise
                except (ConfigError, TypeError) as exc:
                    raise SettingsError(f"{key}.{name}: {exc}") from None
            return lims
        if vt is Profile:
            out = {}
            for name, spec in value.items():
                prof = _build(Profile, spec or {}, f"{key}.{name}.")
                out[str(name)] = dataclasses.replace(prof, name=str(name))
            return out
        return dict(value)
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise SettingsError(f"{label} must be a list, got {type(value).__name__} {value!r}.")
        if not all(isinstance(v, str) for v in value):
            raise SettingsError(f"{label} must be a list of strings, got {value!r}.")
        return tuple(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise SettingsError(f"{label} must be true or false, got {value!r}.")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"{label} must be an integer, got {value!r}.")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SettingsError(f"{label} must be a number, got {value!r}.")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise SettingsError(f"{label} must be a string, got {value!r}.")
        return str(value)
    return value


def _is_optional_str(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType) and str in get_args(tp)


def _parse_env(value: _EnvValue, tp: Any, label: str) -> Any:
    text = str(value).strip()
    base = tp
    if get_origin(tp) in (Union, types.UnionType):
        if text.lower() in ("", "none", "null"):
            return None
        base = [a for a in get_args(tp) if a is not type(None)][0]
    if base is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{label} must be true or false (1/0, yes/no), got {text!r}.")
    if base is int:
        try:
            return int(text)
        except ValueError:
            raise SettingsError(f"{label} must be an integer, got {text!r}.") from None
    if base is float:
        try:
            return float(text)
        except ValueError:
            raise SettingsError(f"{label} must be a number, got {text!r}.") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise SettingsError(f"{label} must be JSON (a list or mapping), got {text!r}.") from None
