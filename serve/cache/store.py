"""Where cache entries live: payloads, exact keys, expiry order and recency.

The vector index is kept apart (:mod:`serve.cache.index`) so that a shared store can be added
without touching the matching logic: a Redis-backed :class:`CacheStore` would keep entries (with
their vectors) in Redis hashes with a TTL, and each replica would rebuild its local per-scope
FAISS indexes from :meth:`CacheStore.entries`. Only :class:`MemoryStore` exists today.

A store is not thread-safe on its own; :class:`serve.cache.SemanticCache` calls it under its lock.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

__all__ = ["CacheStore", "Entry", "MemoryStore"]


@dataclass(frozen=True, eq=False)
class Entry:
    """One cached answer.

    Attributes:
        entry_id: unique id (returned by ``put``).
        scope: the partition (``"<tenant>#<digest>"``).
        tenant: the scope's tenant.
        key: the normalised text (exact-match key within the scope).
        value_json: the cached response, serialised (so a caller can never mutate the stored copy).
        created: clock time of the put.
        vector: (dim,) float32 unit-norm embedding of the text.
    """

    entry_id: str
    scope: str
    tenant: str
    key: str
    value_json: str
    created: float
    vector: np.ndarray


class CacheStore(ABC):
    """The small storage interface the cache needs (see the module docstring)."""

    @abstractmethod
    def add(self, entry: Entry) -> None:
        """Store ``entry`` as the most recently used; its (scope, key) must be free."""

    @abstractmethod
    def get(self, entry_id: str) -> Entry | None:
        """The entry, or None."""

    @abstractmethod
    def find_exact(self, scope: str, key: str) -> Entry | None:
        """The entry stored under exactly (scope, key), or None."""

    @abstractmethod
    def touch(self, entry_id: str) -> None:
        """Mark an entry as just used (for least-recently-used eviction)."""

    @abstractmethod
    def remove(self, entry_id: str) -> Entry | None:
        """Delete and return the entry, or None when absent."""

    @abstractmethod
    def expired(self, cutoff: float) -> list[str]:
        """Ids of entries created at or before ``cutoff`` (oldest first)."""

    @abstractmethod
    def least_recent(self, n: int) -> list[str]:
        """The ``n`` least recently used ids."""

    @abstractmethod
    def entries(self) -> Iterator[Entry]:
        """Every entry (to rebuild indexes or select by scope / tenant)."""

    @abstractmethod
    def __len__(self) -> int: ...


class MemoryStore(CacheStore):
    """In-process store: two ordered dicts (creation order, recency order) and an exact-key map.

    Every operation is O(1) except :meth:`expired` / :meth:`least_recent` (O(returned)) and
    :meth:`entries`. Entries expire in creation order because the TTL is the same for all.
    """

    def __init__(self) -> None:
        self._by_created: OrderedDict[str, Entry] = OrderedDict()
        self._recency: OrderedDict[str, None] = OrderedDict()
        self._exact: dict[tuple[str, str], str] = {}

    def add(self, entry: Entry) -> None:
        self._by_created[entry.entry_id] = entry
        self._recency[entry.entry_id] = None
        self._exact[(entry.scope, entry.key)] = entry.entry_id

    def get(self, entry_id: str) -> Entry | None:
        return self._by_created.get(entry_id)

    def find_exact(self, scope: str, key: str) -> Entry | None:
        entry_id = self._exact.get((scope, key))
        return None if entry_id is None else self._by_created[entry_id]

    def touch(self, entry_id: str) -> None:
        self._recency.move_to_end(entry_id)

    def remove(self, entry_id: str) -> Entry | None:
        entry = self._by_created.pop(entry_id, None)
        if entry is not None:
            del self._recency[entry_id]
            if self._exact.get((entry.scope, entry.key)) == entry_id:
                del self._exact[(entry.scope, entry.key)]
        return entry

    def expired(self, cutoff: float) -> list[str]:
        out: list[str] = []
        for entry_id, entry in self._by_created.items():
            if entry.created > cutoff:
                break
            out.append(entry_id)
        return out

    def least_recent(self, n: int) -> list[str]:
        out: list[str] = []
        for entry_id in self._recency:
            if len(out) >= n:
                break
            out.append(entry_id)
        return out

    def entries(self) -> Iterator[Entry]:
        return iter(list(self._by_created.values()))

    def __len__(self) -> int:
        return len(self._by_created)
