"""Encoders: text -> (n, dim) float32 vectors, L2-normalised rows.

Importing this package loads no model and imports neither torch, sentence-transformers nor
model2vec; each encoder imports its backend on first use.

=============================  ==========================================================
kind                           class
=============================  ==========================================================
``"sentence_transformer"``     :class:`SentenceTransformerEncoder` (MiniLM by default)
``"static"``                   :class:`StaticEncoder` (model2vec, distilled from MiniLM)
``"hashing"``                  :class:`HashingEncoder` (pure numpy, no model files)
``"cached"``                   :class:`EmbeddingCache` (wraps any of the above)
=============================  ==========================================================

Encoders are saved by reference plus configuration, never by weights: ``encoder_config(enc)``
gives ``{"kind": ..., **constructor arguments}`` and :func:`encoder_from_config` rebuilds it.

Example:
    >>> enc = encoder_from_config({"kind": "hashing", "dim": 32})
    >>> encoder_from_config(encoder_config(enc)).encode(["hi"]).shape
    (1, 32)
"""

from __future__ import annotations

from typing import Any

from router.base import Encoder
from router.encoders.cache import EmbeddingCache
from router.encoders.conversation import render_conversation
from router.encoders.hashing import HashingEncoder
from router.encoders.prefix import PrefixStripper
from router.encoders.sentence_transformer import SentenceTransformerEncoder
from router.encoders.static import StaticEncoder, default_cache_dir
from router.errors import ConfigError

__all__ = [
    "ENCODERS",
    "EmbeddingCache",
    "HashingEncoder",
    "PrefixStripper",
    "SentenceTransformerEncoder",
    "StaticEncoder",
    "default_cache_dir",
    "encoder_config",
    "encoder_from_config",
    "render_conversation",
]

#: kind -> encoder class, used for loading.
ENCODERS: dict[str, type[Encoder]] = {
    cls.kind: cls
    for cls in (SentenceTransformerEncoder, StaticEncoder, HashingEncoder, EmbeddingCache)
}


def encoder_config(encoder: Encoder) -> dict[str, Any]:
    """``{"kind": ..., **encoder.get_config()}``: a JSON-able reference that rebuilds ``encoder``."""
    return {"kind": encoder.kind, **encoder.get_config()}


def encoder_from_config(config: dict[str, Any]) -> Encoder:
    """Build an encoder from ``{"kind": ..., **constructor arguments}`` (see :func:`encoder_config`)."""
    if "kind" not in config:
        raise ConfigError(f"Encoder config needs a 'kind' key, one of {sorted(ENCODERS)}; got keys {sorted(config)}.")
    args = {k: v for k, v in config.items() if k != "kind"}
    kind = config["kind"]
    if kind not in ENCODERS:
        raise ConfigError(f"Unknown encoder kind {kind!r}; known kinds: {sorted(ENCODERS)}.")
    cls = ENCODERS[kind]
    if cls is EmbeddingCache and isinstance(args.get("encoder"), dict):
        args["encoder"] = encoder_from_config(args["encoder"])
    try:
        return cls(**args)
    except TypeError as exc:
        raise ConfigError(f"Bad arguments for encoder kind {kind!r}: {exc}.") from exc
