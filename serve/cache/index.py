"""One FAISS inner-product index per scope, with deferred removal.

Vectors are unit-norm, so inner product is cosine similarity. Each scope (tenant + exact digest)
has its own ``IndexIDMap2(IndexFlatIP)``: a search only ever reads that scope's vectors, so an
answer cannot cross tenants or parameters whatever the similarities are.

``IndexIDMap2.remove_ids`` compacts the whole array (O(n) per call), which at 100k entries costs
more than a search. Removal is therefore deferred: a removed label is remembered as dead and
skipped by :meth:`ScopeIndex.search`, and the dead are dropped in one ``remove_ids`` call once
they are a quarter of the index (amortised O(1) per removal; ``bench/bench_cache.py`` measures both).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

__all__ = ["ScopeIndex"]

#: compact when dead labels exceed this share of the index (and at least _MIN_DEAD of them).
_DEAD_SHARE = 0.25
_MIN_DEAD = 64


def _faiss() -> Any:
    import faiss

    return faiss


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run FAISS on the calling thread only, for this call.

    One query gains nothing from OpenMP's thread team, and waking it costs tens of milliseconds
    on a busy machine (measured here: 48 ms vs 5 us for a search of a one-vector index). The
    OpenMP thread count is per calling thread, so this leaves other threads' FAISS use alone.
    """
    faiss = _faiss()
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


class ScopeIndex:
    """Exact nearest-neighbour search over one scope's vectors (int64 labels).

    Args:
        dim: vector width.

    Example:
        >>> idx = ScopeIndex(2)
        >>> idx.add(7, np.array([1.0, 0.0], dtype=np.float32)); idx.add(8, np.array([0.0, 1.0], dtype=np.float32))
        >>> idx.search(np.array([0.6, 0.8], dtype=np.float32))
        (8, 0.8...)
        >>> idx.remove(8); idx.search(np.array([0.6, 0.8], dtype=np.float32))
        (7, 0.6...)
    """

    def __init__(self, dim: int) -> None:
        faiss = _faiss()
        self.dim = dim
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._dead: set[int] = set()

    def __len__(self) -> int:
        """Live vectors."""
        return int(self._index.ntotal) - len(self._dead)

    def add(self, label: int, vector: np.ndarray) -> None:
        with _one_thread():
            self._index.add_with_ids(vector.reshape(1, -1), np.array([label], dtype=np.int64))

    def remove(self, label: int) -> None:
        self._dead.add(label)
        if len(self._dead) >= max(_MIN_DEAD, _DEAD_SHARE * self._index.ntotal):
            self.compact()

    def compact(self) -> None:
        """Drop every dead label from the FAISS index now (one O(n) pass)."""
        if self._dead:
            with _one_thread():
                self._index.remove_ids(np.fromiter(self._dead, dtype=np.int64, count=len(self._dead)))
            self._dead.clear()

    def search(self, vector: np.ndarray) -> tuple[int, float] | None:
        """(label, similarity) of the nearest live vector, or None when the scope is empty."""
        total = int(self._index.ntotal)
        if total == len(self._dead):
            return None
        query = vector.reshape(1, -1)
        k = min(total, 1 + min(len(self._dead), 7))
        while True:
            with _one_thread():
                sims, labels = self._index.search(query, k)
            for sim, label in zip(sims[0], labels[0]):
                if label >= 0 and int(label) not in self._dead:
                    return int(label), float(sim)
            if k >= total:
                return None
            k = min(total, k * 8)
