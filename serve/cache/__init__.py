"""Semantic cache for the routing service: exact fast path, per-scope FAISS nearest neighbour.

Importing this package loads no model and does not import FAISS (the first index does).

* :class:`SemanticCache`, :class:`CacheHit` -- the cache (:mod:`serve.cache.cache`);
* :mod:`serve.cache.keys` -- what splits the cache (scope) and what is matched by meaning (text);
* :mod:`serve.cache.store` -- the storage interface (:class:`CacheStore`, :class:`MemoryStore`);
* :mod:`serve.cache.calibrate` -- the similarity threshold for a target false-hit rate, measured on
  labelled question pairs (``python -m serve.cache calibrate``);
* :mod:`serve.cache.thresholds` -- threshold files, tied to the encoder they were calibrated for.
"""

from __future__ import annotations

from serve.cache.cache import CacheHit, SemanticCache, default_encoder
from serve.cache.store import CacheStore, Entry, MemoryStore
from serve.cache.thresholds import encoder_identity, load_threshold_file, shipped_threshold

__all__ = [
    "CacheHit",
    "CacheStore",
    "Entry",
    "MemoryStore",
    "SemanticCache",
    "default_encoder",
    "encoder_identity",
    "load_threshold_file",
    "shipped_threshold",
]
