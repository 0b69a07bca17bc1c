"""Embedding cache: re-training on the same logs does not re-encode the same texts."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from router.base import Encoder
from router.encoders._common import check_texts
from router.errors import ConfigError, PersistenceError

__all__ = ["EmbeddingCache"]


class EmbeddingCache(Encoder):
    """Wraps an encoder; caches each vector under SHA-256(encoder kind + config + text).

    Vectors are kept in memory and, when ``path`` is given, in a directory of ``.npz`` shards
    (one shard written per :meth:`encode` call that computed something new; all shards are read
    on first use). Keys include the encoder's configuration, so two encoders can share one
    directory without mixing vectors. Nothing is pickled.

    Args:
        encoder: the wrapped encoder, or its ``{"kind": ..., ...}`` config.
        path: directory for the on-disk store, or None for memory only.

    Example:
        >>> from router.encoders import HashingEncoder
        >>> enc = EmbeddingCache(HashingEncoder(dim=8))
        >>> a = enc.encode(["hi", "there"]); b = enc.encode(["there"])
        >>> bool((a[1] == b[0]).all()), enc.hits, enc.misses
        (True, 1, 2)
    """

    #: a wrapper: loadable by kind, not offered as an ``--encoder`` choice
    standalone = False

    kind: ClassVar[str] = "cached"

    def __init__(self, encoder: Encoder | dict[str, Any], path: str | None = None) -> None:
        if isinstance(encoder, dict):
            from router.encoders import encoder_from_config

            encoder = encoder_from_config(encoder)
        if not isinstance(encoder, Encoder):
            raise ConfigError(f"EmbeddingCache wraps an Encoder, got {type(encoder).__name__}.")
        self.encoder = encoder
        self.path = path
        self._mem: dict[str, np.ndarray] = {}
        self._disk_loaded = False
        self.hits = 0
        self.misses = 0
        cfg = json.dumps({"kind": encoder.kind, **encoder.get_config()}, sort_keys=True, default=str)
        self._prefix = hashlib.sha256(cfg.encode()).digest()

    def get_config(self) -> dict[str, Any]:
        """``{"encoder": {"kind": ..., ...}, "path": ...}`` -- JSON-able."""
        return {"encoder": {"kind": self.encoder.kind, **self.encoder.get_config()}, "path": self.path}

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def key(self, text: str) -> str:
        """Hex SHA-256 of (encoder config, text)."""
        return hashlib.sha256(self._prefix + text.encode("utf-8", "surrogatepass")).hexdigest()

    def _load_disk(self) -> None:
        self._disk_loaded = True
        if self.path is None or not os.path.isdir(self.path):
            return
        for shard in sorted(Path(self.path).glob("shard-*.npz")):
            try:
                with np.load(shard, allow_pickle=False) as z:
                    keys, vecs = z["keys"], z["vectors"]
            except (OSError, ValueError, KeyError) as exc:
                raise PersistenceError(f"Embedding cache shard {shard} is unreadable ({exc}); delete it.") from exc
            for k, v in zip(keys.tolist(), vecs):
                self._mem.setdefault(str(k), v)

    def _save_shard(self, keys: list[str], vecs: np.ndarray) -> None:
        assert self.path is not None
        os.makedirs(self.path, exist_ok=True)
        name = hashlib.sha256("".join(keys).encode()).hexdigest()[:16]
        final = os.path.join(self.path, f"shard-{name}.npz")
        tmp = final + f".tmp{os.getpid()}.npz"
        np.savez(tmp, keys=np.asarray(keys, dtype="U64"), vectors=vecs)
        os.replace(tmp, final)

    def encode(self, texts: list[str]) -> np.ndarray:
        """(n,) texts -> (n, dim) float32, from the cache where possible."""
        items = check_texts(texts)
        if not self._disk_loaded:
            self._load_disk()
        keys = [self.key(t) for t in items]
        todo: dict[str, str] = {}
        for k, t in zip(keys, items):
            if k not in self._mem and k not in todo:
                todo[k] = t
        self.misses += len(todo)
        self.hits += len(items) - len(todo)
        if todo:
            new = np.asarray(self.encoder.encode(list(todo.values())), dtype=np.float32)
            for k, v in zip(todo, new):
                self._mem[k] = v
            if self.path is not None:
                self._save_shard(list(todo), new)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._mem[k] for k in keys]).astype(np.float32, copy=True)
