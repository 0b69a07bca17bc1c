"""The semantic cache: exact fast path, then nearest neighbour in the request's own scope.

See :mod:`serve.cache.keys` for what a scope and a text are, :mod:`serve.cache.index` for the
per-scope FAISS indexes and :mod:`serve.cache.store` for where entries live.
"""

from __future__ import annotations

import itertools
import json
import math
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from router.base import Encoder
from router.encoders._common import check_texts, l2_normalize
from router.errors import ConfigError
from serve.cache.index import ScopeIndex, build_ivf
from serve.cache.keys import normalise, parse_scope, request_scope, request_text
from serve.cache.store import CacheStore, Entry, MemoryStore
from serve.cache.thresholds import encoder_identity, load_threshold_file, shipped_threshold

__all__ = ["CacheHit", "SemanticCache", "default_encoder"]


def default_encoder() -> Encoder:
    """The cache's default encoder: the static model2vec encoder distilled from MiniLM.

    Chosen on the calibration data (``bench/results/cache.md``): at a 1% false-hit rate on Quora
    question pairs MiniLM answers 2.4x as many duplicate questions (12.6% vs 5.2%), but costs ~20 ms
    of CPU per question here against ~0.2 ms, which alone is over the service's 1 ms CPU budget per
    request. Pass ``SentenceTransformerEncoder()`` (its threshold ships too) when the service
    computes MiniLM embeddings anyway.
    """
    from router.encoders import StaticEncoder

    return StaticEncoder()


@dataclass(frozen=True)
class CacheHit:
    """A cached answer.

    Attributes:
        entry_id: the entry's id (for invalidation).
        value: the cached response (a fresh copy; changing it does not change the cache).
        similarity: cosine similarity of the query text and the cached text (1.0 for an exact hit).
        exact: True when the normalised texts were identical.
        age_s: seconds since the entry was stored.
    """

    entry_id: str
    value: dict
    similarity: float
    exact: bool
    age_s: float


class SemanticCache:
    """Answers a request from an earlier one with the same scope and a question of the same meaning.

    ``get`` tries the exact key (scope, normalised text) first, which needs no embedding, then the
    nearest stored text of the same scope by cosine similarity, a hit when it is >= the threshold.
    Entries expire ``ttl_s`` after they were stored (a hit does not extend that) and the least
    recently used are evicted beyond ``max_entries``. ``get`` and ``put`` are thread-safe; the
    embedding is computed outside the lock (or passed in, batched by the caller via :meth:`embed`).

    Args:
        encoder: embeds texts; default :func:`default_encoder` (the static encoder).
        threshold: similarity threshold; None takes the shipped calibrated value for the encoder.
        threshold_file: a threshold file from ``python -m serve.cache calibrate`` (refused when it was
            calibrated for another encoder); give it or ``threshold``, not both.
        ttl_s: time-to-live of an entry in seconds (``math.inf`` for none).
        max_entries: entries kept; the least recently used are evicted beyond it.
        clock: monotonic time in seconds (inject one in tests).
        store: where entries live (default :class:`MemoryStore`).
        ivf_from: entries at which a scope's index moves from exact search to FAISS inverted lists
            (see :mod:`serve.cache.index`).
        nprobe: inverted lists read per lookup in such a scope.
        background_rebuild: train a large scope's inverted lists in a background thread (True), or in
            the ``put`` that triggers it (False: deterministic, for tests and benchmarks).

    Example:
        >>> from router.encoders import HashingEncoder
        >>> cache = SemanticCache(HashingEncoder(dim=64), threshold=0.9)
        >>> body = {"model": "router", "messages": [{"role": "user", "content": "What is 2+2?"}]}
        >>> scope, text = SemanticCache.scope("acme", body), SemanticCache.text(body["messages"])
        >>> entry_id = cache.put(scope, text, {"answer": "4"})
        >>> hit = cache.get(scope, "What is 2+2?  ")
        >>> hit.value, hit.exact
        ({'answer': '4'}, True)
        >>> cache.get(SemanticCache.scope("other-tenant", body), text) is None
        True
    """

    def __init__(
        self,
        encoder: Encoder | None = None,
        *,
        threshold: float | None = None,
        threshold_file: str | Path | None = None,
        ttl_s: float = 3600.0,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        store: CacheStore | None = None,
        ivf_from: int = 2048,
        nprobe: int = 4,
        background_rebuild: bool = True,
    ) -> None:
        self.encoder = encoder
        self.threshold = threshold
        self.threshold_file = threshold_file
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self.store = store
        self.ivf_from = ivf_from
        self.nprobe = nprobe
        self.background_rebuild = background_rebuild
        if encoder is not None and not isinstance(encoder, Encoder):
            raise ConfigError(f"encoder must be a router Encoder (see router.encoders), got {type(encoder).__name__}.")
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float) or math.isnan(ttl_s) or ttl_s <= 0:
            raise ConfigError(f"ttl_s must be a positive number of seconds (math.inf for no expiry), got {ttl_s!r}.")
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ConfigError(f"max_entries must be an int >= 1, got {max_entries!r}.")
        if not callable(clock):
            raise ConfigError(f"clock must be a callable returning seconds, got {clock!r}.")
        for name, v in (("ivf_from", ivf_from), ("nprobe", nprobe)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be an int >= 1, got {v!r}.")
        if store is not None and not isinstance(store, CacheStore):
            raise ConfigError(f"store must be a serve.cache.CacheStore, got {type(store).__name__}.")
        self.encoder_: Encoder = encoder if encoder is not None else default_encoder()
        self.calibration_: dict[str, Any] | None = None
        if threshold is not None and threshold_file is not None:
            raise ConfigError("give threshold or threshold_file, not both.")
        if threshold is not None:
            if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not -1.0 <= threshold <= 1.0:
                raise ConfigError(f"threshold must be a cosine similarity in [-1, 1], got {threshold!r}.")
            self.threshold_ = float(threshold)
        else:
            # a small packaged JSON: read here so a missing calibration fails at start, not on a request
            doc = (load_threshold_file(threshold_file, self.encoder_) if threshold_file is not None
                   else shipped_threshold(self.encoder_))
            self.calibration_ = doc
            self.threshold_ = float(doc["threshold"])
        self.store_: CacheStore = store if store is not None else MemoryStore()
        self._lock = threading.Lock()
        self._dim: int | None = None
        self._indexes: dict[str, ScopeIndex] = {}
        self._scope_ids: dict[str, set[str]] = {}
        self._labels: dict[str, int] = {}  # entry id -> FAISS label
        self._ids: dict[int, str] = {}  # FAISS label -> entry id
        self._next_label = 0
        self._threads: set[threading.Thread] = set()
        self._counts = dict.fromkeys(
            ("hits_exact", "hits_semantic", "misses", "exact_lookups", "evictions", "expirations", "invalidations",
             "rebuilds"), 0
        )

    # ------------------------------------------------------------------ keys
    @staticmethod
    def scope(tenant: str, request: dict) -> str:
        """The partition for ``request`` (OpenAI chat body plus routing options) of ``tenant``.

        See :mod:`serve.cache.keys`: tenant + a digest of everything but the last user turn's text.
        """
        return request_scope(tenant, request)

    @staticmethod
    def text(messages: list[dict]) -> str:
        """The text matched semantically: the last user turn's text parts."""
        return request_text(messages)

    # ------------------------------------------------------------------ embeddings
    def embed(self, texts: list[str]) -> np.ndarray:
        """(n,) texts -> (n, dim) float32 unit-norm rows (one batched encoder call)."""
        items = check_texts(texts)
        vecs = l2_normalize(np.asarray(self.encoder_.encode(items), dtype=np.float32))
        if vecs.ndim != 2 or vecs.shape[0] != len(items):
            raise ConfigError(f"the encoder returned shape {vecs.shape} for {len(items)} texts; expected (n, dim).")
        return vecs

    def _encoder_dim(self) -> int:
        if self._dim is None:  # benign race: every thread computes the same value
            self._dim = int(self.encoder_.dim)
        return self._dim

    def _vector(self, text: str, embedding: Any) -> np.ndarray | None:
        """Unit-norm (dim,) vector of ``text``; None when it has no direction (exact matching only)."""
        vec = self.embed([text])[0] if embedding is None else np.asarray(embedding, dtype=np.float32)
        if vec.ndim == 2 and vec.shape[0] == 1:
            vec = vec[0]
        if vec.ndim != 1:
            raise ConfigError(f"embedding must be one vector of shape (dim,) or (1, dim), got shape {vec.shape}.")
        dim = self._encoder_dim()
        if vec.shape[0] != dim:
            raise ConfigError(
                f"embedding has width {vec.shape[0]} but this cache's encoder gives {dim}; "
                "embed with cache.embed(...) so the vectors come from the same encoder."
            )
        if not np.isfinite(vec).all():
            raise ConfigError("embedding contains NaN or infinite values; pass the row cache.embed([text])[0].")
        norm = float(np.linalg.norm(vec))
        return None if norm == 0.0 else vec / norm

    @staticmethod
    def _unit(embedding: np.ndarray) -> np.ndarray | None:
        """A row of :meth:`embed` as it is; None for the all-zero row of a text with no direction."""
        return embedding if embedding.any() else None

    # ------------------------------------------------------------------ lookups
    @staticmethod
    def _check(scope: Any, text: Any) -> str:
        parse_scope(scope)
        if not isinstance(text, str):
            raise ConfigError(f"text must be a str (use SemanticCache.text(messages)), got {type(text).__name__}.")
        return normalise(text)

    def get_exact(self, scope: str, text: str) -> CacheHit | None:
        """The entry stored under exactly (scope, normalised text), without computing an embedding.

        A miss here is not counted as a cache miss (callers follow it with :meth:`get`).
        """
        key = self._check(scope, text)
        with self._lock:
            self._counts["exact_lookups"] += 1
            self._expire_locked()
            entry = self._exact_locked(scope, key)
        return None if entry is None else self._hit(entry, 1.0, exact=True)

    def get(self, scope: str, text: str, embedding: np.ndarray | None = None) -> CacheHit | None:
        """Exact key first, then the nearest text in ``scope`` with similarity >= the threshold.

        ``embedding``: the text's row from :meth:`embed`, (dim,) or (1, dim); computed when None (and
        only when the scope holds entries to compare with).
        """
        key = self._check(scope, text)
        vec = self._vector(text, embedding) if embedding is not None else None  # validated either way
        with self._lock:
            self._expire_locked()
            entry = self._exact_locked(scope, key)
            index = self._indexes.get(scope)
            if entry is None and (not key or index is None or len(index) == 0):
                self._counts["misses"] += 1
                return None
        if entry is not None:
            return self._hit(entry, 1.0, exact=True)
        if vec is None and embedding is None:
            vec = self._vector(text, None)  # outside the lock: encoding is the slow part
        with self._lock:
            self._expire_locked()
            index = self._indexes.get(scope)
            found = index.search(vec) if index is not None and vec is not None else None
            entry = self._semantic_locked(found)
            if entry is None:
                return None
        assert found is not None
        return self._hit(entry, min(found[1], 1.0), exact=False)

    def get_many(self, queries: list[tuple[str, str, np.ndarray]], *, unit: bool = False) -> list[CacheHit | None]:
        """:meth:`get` for a batch of ``(scope, text, embedding)``: one index pass per scope.

        Same answers as calling :meth:`get` on each (exact key first, then the nearest text of the
        scope at or above the threshold), with the queries of one scope searched together.
        ``unit=True`` says the embeddings are this cache's own rows (:meth:`embed`: the encoder's width,
        unit norm or all zero), so they are used as they are instead of being checked and normalised.
        """
        keys = [self._check(scope, text) for scope, text, _ in queries]
        vecs = [self._unit(emb) if unit else self._vector(text, emb) for _, text, emb in queries]
        entries: list[tuple[Entry, float, bool] | None] = [None] * len(queries)
        with self._lock:
            self._expire_locked()
            by_scope: dict[str, list[int]] = {}
            for i, (scope, _, _) in enumerate(queries):
                entry = self._exact_locked(scope, keys[i])
                if entry is not None:
                    entries[i] = (entry, 1.0, True)
                    continue
                index = self._indexes.get(scope)
                if keys[i] and vecs[i] is not None and index is not None and len(index) > 0:
                    by_scope.setdefault(scope, []).append(i)
                else:
                    self._counts["misses"] += 1
            for scope, rows in by_scope.items():
                found = self._indexes[scope].search_many(np.stack([vecs[i] for i in rows]))  # type: ignore[misc]
                for i, f in zip(rows, found):
                    entry = self._semantic_locked(f)
                    if entry is not None:
                        assert f is not None
                        entries[i] = (entry, min(f[1], 1.0), False)
        return [None if e is None else self._hit(e[0], e[1], exact=e[2]) for e in entries]

    def _semantic_locked(self, found: tuple[int, float] | None) -> Entry | None:
        """The entry of the nearest neighbour ``found`` when it is at or above the threshold (a semantic
        hit, counted and touched); None otherwise (a miss, counted)."""
        if found is None or found[1] < self.threshold_:
            self._counts["misses"] += 1
            return None
        entry = self.store_.get(self._ids[found[0]])
        assert entry is not None
        self.store_.touch(entry.entry_id)
        self._counts["hits_semantic"] += 1
        return entry

    def _exact_locked(self, scope: str, key: str) -> Entry | None:
        entry = self.store_.find_exact(scope, key)
        if entry is not None:
            self.store_.touch(entry.entry_id)
            self._counts["hits_exact"] += 1
        return entry

    def _hit(self, entry: Entry, similarity: float, *, exact: bool) -> CacheHit:
        """The hit for ``entry``, its value decoded outside the lock (entries are immutable)."""
        return CacheHit(entry.entry_id, orjson.loads(entry.value_json), similarity, exact,
                        max(0.0, self.clock() - entry.created))

    # ------------------------------------------------------------------ writes
    def put(self, scope: str, text: str, value: dict, embedding: np.ndarray | None = None, *,
            unit: bool = False) -> str:
        """Store ``value`` (a JSON-able dict) as the answer for (scope, text); returns the entry id.

        An entry with the same (scope, normalised text) is replaced. An empty text is stored for
        exact matching only. ``unit=True``: ``embedding`` is this cache's own row (see :meth:`get_many`).
        """
        key = self._check(scope, text)
        tenant = parse_scope(scope)
        if not isinstance(value, Mapping):
            raise ConfigError(f"value must be a dict (the response body), got {type(value).__name__}.")
        try:
            value_json = json.dumps(value, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"value must be JSON-serialisable (it is stored as JSON): {exc}.") from exc
        if not key:
            vec = None
        elif unit and embedding is not None:
            vec = self._unit(embedding)
        else:
            vec = self._vector(text, embedding)
        with self._lock:
            self._expire_locked()
            old = self.store_.find_exact(scope, key)
            if old is not None:
                self._remove_locked(old.entry_id)
            entry = Entry(_new_entry_id(), scope, tenant, key, value_json, self.clock(),
                          vec if vec is not None else np.zeros(0, dtype=np.float32))
            self.store_.add(entry)
            self._scope_ids.setdefault(scope, set()).add(entry.entry_id)
            if vec is not None:
                label = self._next_label
                self._next_label += 1
                self._labels[entry.entry_id] = label
                self._ids[label] = entry.entry_id
                index = self._indexes.get(scope)
                if index is None:
                    index = self._indexes[scope] = ScopeIndex(vec.shape[0], ivf_from=self.ivf_from, nprobe=self.nprobe)
                index.add(label, vec)
            excess = len(self.store_) - self.max_entries
            if excess > 0:
                for victim in self.store_.least_recent(excess):
                    self._remove_locked(victim)
                    self._counts["evictions"] += 1
            index = self._indexes.get(scope)
            plan = index.plan_rebuild() if index is not None else None
        if plan is not None:  # a large scope due (re)training: k-means without the lock, off the caller
            if self.background_rebuild:
                thread = threading.Thread(target=self._rebuild, args=(scope, index, plan), daemon=True,
                                          name="serve.cache-rebuild")
                with self._lock:
                    self._threads.add(thread)
                thread.start()
            else:
                self._rebuild(scope, index, plan)  # type: ignore[arg-type]
        return entry.entry_id

    def wait_for_rebuilds(self, timeout: float | None = None) -> bool:
        """Block until background index rebuilds finish; False if ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                threads = list(self._threads)
            if not threads:
                return True
            for thread in threads:
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
                if thread.is_alive():
                    return False

    def _rebuild(self, scope: str, index: ScopeIndex, plan: tuple[np.ndarray, np.ndarray]) -> None:
        try:
            built = build_ivf(*plan, nprobe=self.nprobe)
        except BaseException:
            with self._lock:
                index.abandon_rebuild()
                self._threads.discard(threading.current_thread())
            raise
        with self._lock:
            if self._indexes.get(scope) is index:
                index.install(built)
                self._counts["rebuilds"] += 1
            else:  # the scope was emptied meanwhile
                index.abandon_rebuild()
            self._threads.discard(threading.current_thread())

    def _remove_locked(self, entry_id: str) -> bool:
        entry = self.store_.remove(entry_id)
        if entry is None:
            return False
        ids = self._scope_ids.get(entry.scope)
        if ids is not None:
            ids.discard(entry_id)
            if not ids:
                del self._scope_ids[entry.scope]
        label = self._labels.pop(entry_id, None)
        if label is not None:
            del self._ids[label]
            index = self._indexes[entry.scope]
            index.remove(label)
            if len(index) == 0:
                del self._indexes[entry.scope]
        return True

    def _expire_locked(self) -> None:
        if math.isinf(self.ttl_s):
            return
        for entry_id in self.store_.expired(self.clock() - self.ttl_s):
            self._remove_locked(entry_id)
            self._counts["expirations"] += 1

    def invalidate(
        self, *, entry_id: str | None = None, scope: str | None = None, text: str | None = None,
        tenant: str | None = None,
    ) -> int:
        """Drop entries; returns how many. Give exactly one of: ``entry_id``; ``scope`` (the whole
        scope); ``scope`` and ``text`` (that exact text in the scope); ``tenant`` (all its scopes).
        """
        given = {k for k, v in {"entry_id": entry_id, "scope": scope, "text": text, "tenant": tenant}.items()
                 if v is not None}
        if given not in ({"entry_id"}, {"scope"}, {"scope", "text"}, {"tenant"}):
            raise ConfigError(
                f"invalidate takes entry_id=, scope=, scope= with text=, or tenant=; got {sorted(given) or 'nothing'}."
            )
        if entry_id is not None and not isinstance(entry_id, str):
            raise ConfigError(f"entry_id must be a str, got {type(entry_id).__name__}.")
        if tenant is not None and (not isinstance(tenant, str) or not tenant):
            raise ConfigError(f"tenant must be a non-empty str, got {tenant!r}.")
        key = self._check(scope, text) if text is not None else None
        if scope is not None:
            parse_scope(scope)
        with self._lock:
            if entry_id is not None:
                ids = [entry_id]
            elif key is not None:
                found = self.store_.find_exact(scope, key)  # type: ignore[arg-type]
                ids = [found.entry_id] if found is not None else []
            elif scope is not None:
                ids = list(self._scope_ids.get(scope, ()))
            else:
                ids = [i for s, members in self._scope_ids.items() if parse_scope(s) == tenant for i in members]
            n = sum(self._remove_locked(i) for i in ids)
            self._counts["invalidations"] += n
            return n

    def clear(self) -> int:
        """Drop every entry; returns how many."""
        with self._lock:
            ids = [e.entry_id for e in self.store_.entries()]
            n = sum(self._remove_locked(i) for i in ids)
            self._counts["invalidations"] += n
            return n

    # ------------------------------------------------------------------ reporting
    def __len__(self) -> int:
        with self._lock:
            return len(self.store_)

    def stats(self) -> dict[str, Any]:
        """Counters: entries, scopes, hits_exact, hits_semantic, misses, evictions, expirations, ..."""
        with self._lock:
            return {
                "entries": len(self.store_),
                "scopes": len(self._scope_ids),
                "ivf_scopes": sum(index.kind == "ivf" for index in self._indexes.values()),
                **self._counts,
                "threshold": self.threshold_,
                "encoder": encoder_identity(self.encoder_),
            }


_ENTRY_PREFIX = secrets.token_hex(8)  # per process: ids stay unique across a service's workers
_entry_counter = itertools.count()


def _new_entry_id() -> str:
    """A new entry id: 32 hex characters, unique in this process and, by its random prefix, across
    processes (a uuid4 per entry costs a system call for its randomness)."""
    return f"{_ENTRY_PREFIX}{next(_entry_counter):016x}"
