"""Encoders: text -> (n, dim) float32 vectors, L2-normalised rows.

Importing this package loads no model and imports neither torch, sentence-transformers nor
model2vec; each encoder imports its backend on first use.

=============================  ==========================================================
kind (command-line alias)      class
=============================  ==========================================================
``"sentence_transformer"``     :class:`SentenceTransformerEncoder` (MiniLM by default)
(``"minilm"``)
``"static"``                   :class:`StaticEncoder` (model2vec, distilled from MiniLM)
``"hashing"``                  :class:`HashingEncoder` (pure numpy, no model files)
``"cached"``                   :class:`EmbeddingCache` (wraps any of the above)
=============================  ==========================================================

Encoders register by ``kind`` in :mod:`router.registry` (``ENCODERS`` is a live view): a new
encoder is one module in this package. :func:`build_encoder` is the one way the command lines
build an encoder by name (``--encoder minilm``), with its own defaults unless options are given.

Encoders are saved by reference plus configuration, never by weights: ``encoder_config(enc)``
gives ``{"kind": ..., **constructor arguments}`` and :func:`encoder_from_config` rebuilds it.

Example:
    >>> enc = encoder_from_config({"kind": "hashing", "dim": 32})
    >>> encoder_from_config(encoder_config(enc)).encode(["hi"]).shape
    (1, 32)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from router import registry
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
    "build_encoder",
    "default_cache_dir",
    "encoder_config",
    "encoder_from_config",
    "render_conversation",
]

#: kind -> encoder class: a live view of the encoder registry.
ENCODERS: Mapping[str, type[Encoder]] = registry.table("encoder")


def build_encoder(name: str, **options: Any) -> Encoder:
    """The encoder registered as ``name`` (a kind or alias such as ``"minilm"``), built with ``options``.

    Example:
        >>> build_encoder("hashing", dim=16).dim
        16
    """
    enc: Encoder = registry.create("encoder", name, **options)
    return enc


def encoder_config(encoder: Encoder) -> dict[str, Any]:
    """``{"kind": ..., **encoder.get_config()}``: a JSON-able reference that rebuilds ``encoder``."""
    return {"kind": encoder.kind, **encoder.get_config()}


def encoder_from_config(config: dict[str, Any]) -> Encoder:
    """Build an encoder from ``{"kind": ..., **constructor arguments}`` (see :func:`encoder_config`)."""
    if "kind" not in config:
        raise ConfigError(f"Encoder config needs a 'kind' key, one of {sorted(ENCODERS)}; got keys {sorted(config)}.")
    args = {k: v for k, v in config.items() if k != "kind"}
    kind = config["kind"]
    if kind not in registry.names("encoder") and kind not in registry.kinds("encoder"):
        raise ConfigError(f"Unknown encoder kind {kind!r}; known kinds: {registry.kinds('encoder')}.")
    if registry.get("encoder", kind) is EmbeddingCache and isinstance(args.get("encoder"), dict):
        args["encoder"] = encoder_from_config(args["encoder"])
    return build_encoder(kind, **args)
