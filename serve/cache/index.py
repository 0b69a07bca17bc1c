"""One FAISS inner-product index per scope: exact while small, inverted lists once large.

Vectors are unit-norm, so inner product is cosine similarity. Each scope (tenant + exact digest)
has its own index: a search only ever reads that scope's vectors, so an answer cannot cross
tenants or parameters whatever the similarities are.

* Below ``ivf_from`` live vectors a scope uses ``IndexIDMap2(IndexFlatIP)``: exact search, whose
  cost grows with the scope (a 100k x 256 float32 scope is a 100 MB scan per lookup). The default
  2,048 is where inverted lists start to pay: a lone query's exact scan of 3,000 vectors costs ~0.3 ms
  (memory-bound), and the service searches many lone queries when it is not busy.
* From ``ivf_from`` on it uses ``IndexIVFFlat`` (``nlist ~ 2 * sqrt(n)`` k-means cells, ``nprobe``
  of them read per lookup): approximate, a few percent of the scan. With the shipped static
  threshold (0.979) on Quora duplicates, 4 cells find every one of the exact scan's hits at 4,096
  and 20,000 cached questions (170 of 170, 201 of 201), as 8 do, at about half the cost (47 against
  90 us per query at 20,000); 2 find 98%. (``sqrt(n)`` cells train four times faster but, on real
  questions, leave some cells so large that a lookup at 100,000 entries took 2.7 ms.) A missed
  neighbour can only lose a hit, never add a false one (a hit still needs similarity >= the
  threshold).
* The cells are trained on the scope's own vectors and retrained each time the scope grows
  ``regrow`` times (default 4: with cells trained at 1,024 vectors, growing the scope 2, 4 and 8
  times cost 37, 71 and 142 us per query on random vectors, so a retraining every fourfold growth
  keeps lookups within about twice the fresh cost). With 39 training vectors per cell and 4 k-means
  rounds a retraining costs ~160k multiply-adds per vector of the scope (88 ms at 4,096 vectors
  here, 0.55 s at 20,000). Training runs in a background thread, outside the cache's lock
  (:meth:`ScopeIndex.plan_rebuild` takes a snapshot, :func:`build_ivf` trains,
  :meth:`ScopeIndex.install` replays what changed meanwhile in one FAISS call); lookups use the old
  index until then. (Running that thread at the lowest CPU priority was tried: on a core busy with
  the event loop k-means then hardly ran, the flat index kept growing and the service fell behind --
  334 against 666 requests/s achieved at 700/s.)

Removal is deferred: ``remove_ids`` compacts the whole index (O(n) per call, costlier than a
search at 100k), so a removed label is remembered as dead and skipped by :meth:`ScopeIndex.search`,
and the dead are dropped in one ``remove_ids`` once they are a quarter of the index (amortised
O(1) per removal; ``bench/bench_cache.py`` measures both).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

__all__ = ["ScopeIndex", "build_ivf"]

#: compact when dead labels exceed this share of the index (and at least _MIN_DEAD of them).
_DEAD_SHARE = 0.25
_MIN_DEAD = 64
#: vectors added without a search in between that are sent to FAISS together (see ScopeIndex.add)
_PENDING_MAX = 64


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
    if previous == 1:  # already one thread (``python -m serve`` sets OMP_NUM_THREADS=1): nothing to change
        yield
        return
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def _add_all(index: Any, pairs: list[tuple[int, np.ndarray]]) -> None:
    """Add ``(label, vector)`` pairs to a FAISS index in one call."""
    with _one_thread():
        index.add_with_ids(np.stack([v for _, v in pairs]).astype(np.float32, copy=False),
                           np.fromiter((lab for lab, _ in pairs), dtype=np.int64, count=len(pairs)))


def build_ivf(vectors: np.ndarray, labels: np.ndarray, nprobe: int, seed: int = 0) -> Any:
    """An ``IndexIVFFlat`` (inner product) with ~``2 * sqrt(n)`` cells trained on ``vectors`` (n, d).

    Slow part of a rebuild (k-means); call it without holding the cache's lock.
    """
    faiss = _faiss()
    n, dim = vectors.shape
    nlist = int(max(1, min(1024, 2 * np.sqrt(n), n // 39)))  # faiss wants >= 39 training points per cell
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    # cells need not be optimal, only balanced enough: k-means on 39 sampled vectors per cell, 4 rounds,
    # so a (re)training costs ~160k multiply-adds per vector of the scope
    index.cp.niter = 4
    index.cp.max_points_per_centroid = 39
    with _one_thread():
        index.train(vectors)
        index.add_with_ids(vectors, labels)
    index.nprobe = min(nprobe, nlist)
    return index  # faiss's wrapper keeps the quantizer alive with the index


class ScopeIndex:
    """Nearest live vector of one scope (int64 labels); see the module docstring.

    Args:
        dim: vector width.
        ivf_from: live vectors at which the scope moves from exact to inverted-list search.
        nprobe: cells read per lookup once inverted lists are used.
        regrow: retrain the cells each time the scope has grown this many times.

    Example:
        >>> idx = ScopeIndex(2)
        >>> idx.add(7, np.array([1.0, 0.0], dtype=np.float32)); idx.add(8, np.array([0.0, 1.0], dtype=np.float32))
        >>> idx.search(np.array([0.6, 0.8], dtype=np.float32))
        (8, 0.8...)
        >>> idx.remove(8); idx.search(np.array([0.6, 0.8], dtype=np.float32))
        (7, 0.6...)
    """

    def __init__(self, dim: int, *, ivf_from: int = 2048, nprobe: int = 4, regrow: float = 4.0) -> None:
        faiss = _faiss()
        self.dim = dim
        self.ivf_from = ivf_from
        self.nprobe = nprobe
        self.regrow = regrow
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._dead: set[int] = set()
        self._next_rebuild = ivf_from
        self._ivf = False
        self._journal: list[tuple[int, np.ndarray | None]] | None = None  # changes during a rebuild
        self._pending: list[tuple[int, np.ndarray]] = []  # added, not yet in the FAISS index (see add)

    @property
    def kind(self) -> str:
        """``"flat"`` or ``"ivf"``."""
        return "ivf" if self._ivf else "flat"

    def __len__(self) -> int:
        """Live vectors."""
        return int(self._index.ntotal) + len(self._pending) - len(self._dead)

    def add(self, label: int, vector: np.ndarray) -> None:
        """Add one vector. It reaches the FAISS index with the others added since, in one call, before
        the next search, removal or rebuild, or once ``_PENDING_MAX`` wait (one FAISS call per vector
        costs ~9 us, in a batch ~3 us)."""
        self._pending.append((label, vector.reshape(-1)))
        if self._journal is not None:
            self._journal.append((label, vector))
        if len(self._pending) >= _PENDING_MAX:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, []
            _add_all(self._index, pending)

    def remove(self, label: int) -> None:
        self._flush()
        self._dead.add(label)
        if self._journal is not None:
            self._journal.append((label, None))
        if len(self._dead) >= max(_MIN_DEAD, _DEAD_SHARE * self._index.ntotal):
            self.compact()

    def compact(self) -> None:
        """Drop every dead label from the FAISS index now (one O(n) pass)."""
        self._flush()
        if self._dead:
            with _one_thread():
                self._index.remove_ids(np.fromiter(self._dead, dtype=np.int64, count=len(self._dead)))
            self._dead.clear()

    def search(self, vector: np.ndarray) -> tuple[int, float] | None:
        """(label, similarity) of the nearest live vector found, or None."""
        self._flush()
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
            if k >= total or labels[0][-1] < 0:  # everything reachable was dead
                return None
            k = min(total, k * 8)

    def search_many(self, vectors: np.ndarray) -> list[tuple[int, float] | None]:
        """:meth:`search` for each row of ``vectors`` (b, d), sharing one pass over the scope.

        An exact scope is scanned once for the whole batch (one float32 matrix product, memory-bound
        like a single query's scan); inverted lists are searched as one FAISS batch.
        """
        self._flush()
        total = int(self._index.ntotal)
        if total == len(self._dead):
            return [None] * len(vectors)
        if len(vectors) == 1:
            return [self.search(vectors[0])]
        if self._ivf:
            return self._ivf_many(vectors, total)
        faiss = _faiss()
        flat = faiss.downcast_index(self._index.index)
        xb = faiss.rev_swig_ptr(flat.get_xb(), total * self.dim).reshape(total, self.dim)
        sims = xb @ np.ascontiguousarray(vectors, dtype=np.float32).T  # (n, b); the view is read under the caller's lock
        labels = faiss.rev_swig_ptr(self._index.id_map.data(), total)
        if self._dead:
            sims[np.isin(labels, np.fromiter(self._dead, dtype=np.int64, count=len(self._dead)))] = -np.inf
        best = sims.argmax(axis=0)
        return [(int(labels[r]), float(sims[r, j])) for j, r in enumerate(best)]

    def _ivf_many(self, vectors: np.ndarray, total: int) -> list[tuple[int, float] | None]:
        k = min(total, 1 + min(len(self._dead), 7))
        with _one_thread():
            sims, labels = self._index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)
        out: list[tuple[int, float] | None] = []
        for j, vector in enumerate(vectors):
            found = next(((int(lab), float(sim)) for sim, lab in zip(sims[j], labels[j])
                          if lab >= 0 and int(lab) not in self._dead), None)
            if found is None and k < total and labels[j][-1] >= 0:  # everything it saw was dead: look further
                found = self.search(vector)
            out.append(found)
        return out

    # ------------------------------------------------------------------ rebuilding (inverted lists)
    def plan_rebuild(self) -> tuple[np.ndarray, np.ndarray] | None:
        """When the scope is due a (re)training: a snapshot (vectors (n, d), labels (n,)); else None.

        Starts journaling changes; pass the built index to :meth:`install`.
        """
        if self._journal is not None or len(self) < self._next_rebuild:
            return None
        self.compact()
        faiss = _faiss()
        n = int(self._index.ntotal)
        if not self._ivf:
            flat = faiss.downcast_index(self._index.index)
            vectors = faiss.rev_swig_ptr(flat.get_xb(), n * self.dim).reshape(n, self.dim).copy()
            labels = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        else:  # an IVF index: read its lists back
            invlists = self._index.invlists
            vecs, labs = [], []
            for i in range(self._index.nlist):
                size = invlists.list_size(i)
                if size:
                    codes = faiss.rev_swig_ptr(invlists.get_codes(i), size * self.dim * 4)
                    vecs.append(np.frombuffer(codes, dtype=np.float32).reshape(size, self.dim).copy())
                    labs.append(faiss.rev_swig_ptr(invlists.get_ids(i), size).copy())
            vectors, labels = np.concatenate(vecs), np.concatenate(labs).astype(np.int64)
        self._journal = []
        return vectors, labels

    def install(self, index: Any) -> None:
        """Switch to ``index`` (built from the snapshot), replaying the changes journaled since."""
        assert self._journal is not None, "install() without plan_rebuild()"
        journal, self._journal = self._journal, None
        self._pending = []  # every add since plan_rebuild() is in the journal, replayed below
        removed: set[int] = set()
        added: list[tuple[int, np.ndarray]] = []
        for label, vector in journal:
            if vector is None:
                removed.add(label)
            else:
                removed.discard(label)
                added.append((label, vector.reshape(-1)))
        if added:  # one FAISS call for everything added meanwhile (labels are never reused)
            _add_all(index, added)
        self._index = index
        self._ivf = True
        self._dead = removed
        self.compact()
        self._next_rebuild = int(max(self.ivf_from + 1, self.regrow * index.ntotal))

    def abandon_rebuild(self) -> None:
        """Forget a planned rebuild (its snapshot is no longer wanted)."""
        self._journal = None
