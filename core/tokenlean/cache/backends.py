"""The embedded backend: a ``CacheStore`` (SQLite) plus a ``VectorIndex`` (faiss) kept in step.

``SemanticCache`` talks to a backend through the few methods of :class:`CacheBackend`; the
embedded one composes the two protocols, the Redis one (:mod:`tokenlean.cache.redis_backend`) does
both in Redis. The index is rebuilt from the stored embeddings on start, and before every search it
catches up with entries and deletions committed by other processes (a cheap ``data_version`` check
when nothing changed).

The index holds a bounded number of namespace shards (``max_shards``); the store holds everything.
A shard that is in memory is always whole (every entry of its namespace up to the sync marks), so
catching up only feeds shards already in memory, and a namespace whose shard is not (never
searched here, evicted, or emptied) is loaded whole from the store when it is searched or written.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from tokenlean.cache.index import FaissIndex, VectorIndex
from tokenlean.cache.store import CacheEntry, CacheStore, SQLiteStore
from tokenlean.errors import ConfigError

__all__ = ["CacheBackend", "EmbeddedBackend"]

# candidates fetched beyond ``k`` from an approximate index, for the exact rescoring to rank
_RESCORE_EXTRA = 8


@runtime_checkable
class CacheBackend(Protocol):
    """What ``SemanticCache`` needs from storage; failures raise ``CacheBackendError``."""

    def get_exact(self, namespace: str, key: str) -> CacheEntry | None: ...

    def search(self, namespace: str, vector: np.ndarray, k: int) -> list[tuple[CacheEntry, float]]: ...

    def put(self, entry: CacheEntry, ttl: float | None) -> CacheEntry: ...

    def touch(self, entry: CacheEntry) -> None: ...

    def set_min_score(self, entry: CacheEntry, value: float) -> None: ...

    def delete(self, entry: CacheEntry) -> None: ...

    def enforce(self, max_entries: int | None, policy: str) -> int: ...

    def stats(self) -> dict[str, Any]: ...

    def clear(self) -> None: ...

    def close(self) -> None: ...


class EmbeddedBackend:
    """faiss + SQLite in this process; the file may be shared with other processes.

    ``path`` is the SQLite file (``":memory:"`` for a throw-away cache). ``index`` defaults to a
    :class:`FaissIndex` of the embedder's dimension, created on the first vector, holding at most
    ``max_shards`` namespaces in memory (None: no cap), its vectors held as ``vectors`` (``"sq8"``
    by default, see :mod:`tokenlean.cache.index`). A ``store`` that cannot read one namespace (no
    ``namespace_vectors``) could not bring a dropped shard back, so then the cap is off.

    An index whose scores are not exact (``exact`` False) only proposes candidates: the search
    asks it for a few more than ``k`` and ranks them by the inner product with each entry's stored
    float32 embedding, so thresholds and guards always see exact similarities.
    """

    def __init__(
        self,
        path: str | Path = ":memory:",
        *,
        store: CacheStore | None = None,
        index: VectorIndex | None = None,
        hnsw_threshold: int = 20_000,
        synchronous: str = "NORMAL",
        max_shards: int | None = 4096,
        vectors: str = "sq8",
    ) -> None:
        if max_shards is not None and (
            isinstance(max_shards, bool) or not isinstance(max_shards, int) or max_shards < 1
        ):
            raise ConfigError(f"max_shards must be a positive integer or None, got {max_shards!r}")
        if vectors not in ("sq8", "fp16", "float32"):
            raise ConfigError(f"vectors must be 'sq8', 'fp16' or 'float32', got {vectors!r}")
        self.store: Any = store if store is not None else SQLiteStore(path, synchronous=synchronous)
        self.index: VectorIndex | None = index
        self.hnsw_threshold = hnsw_threshold
        self.max_shards = max_shards
        self.vectors = vectors
        self._lock = threading.RLock()
        self._marks = (0, 0)
        self._version = -1
        self._loaded = False

    # -- index upkeep --------------------------------------------------------------------------
    def _ensure_index(self, dim: int) -> VectorIndex:
        if self.index is None:
            cap = self.max_shards if self._reloads else None
            self.index = FaissIndex(
                dim, hnsw_threshold=self.hnsw_threshold, max_shards=cap, vectors=self.vectors
            )
        return self.index

    @property
    def _reloads(self) -> bool:
        """Whether a namespace's shard can be (re)loaded alone from the store."""
        return hasattr(self.store, "namespace_vectors")

    def _resident(self, namespace: str) -> bool:
        """Whether the index holds ``namespace`` whole (an index that cannot tell holds everything)."""
        if not self._reloads:
            return True
        if self.index is None:
            return False
        has = getattr(self.index, "has", None)
        return True if has is None else bool(has(namespace))

    def _load(self, namespace: str) -> None:
        """Bring ``namespace``'s shard into memory from the store unless it is there already."""
        if self._resident(namespace):
            return
        rows = self.store.namespace_vectors(namespace)
        if rows:
            self._ensure_index(len(rows[0][1])).add(
                namespace, [r[0] for r in rows], np.stack([r[1] for r in rows])
            )

    def _sync(self) -> None:
        """Load everything on first use, then apply other processes' writes since last time."""
        store = self.store
        if not hasattr(store, "changes_since"):
            if not self._loaded:
                for i, ns, vec in store.all_vectors():
                    self._ensure_index(len(vec)).add(ns, [i], vec.reshape(1, -1))
                self._loaded = True
            return
        version = store.data_version()
        if self._loaded and version == self._version:
            return
        changes = store.changes_since(*self._marks)
        if changes.reset and self.index is not None:
            self.index.clear()
        by_ns: dict[str, list[tuple[int, np.ndarray]]] = {}
        for i, ns, vec in changes.added:
            by_ns.setdefault(ns, []).append((i, vec))
        for ns, rows in by_ns.items():
            if changes.reset or self._resident(ns):  # other shards load whole when needed
                idx = self._ensure_index(len(rows[0][1]))
                idx.add(ns, [r[0] for r in rows], np.stack([r[1] for r in rows]))
        if self.index is not None:
            for i, ns in changes.deleted:
                self.index.remove(ns, [i])
        self._marks = (changes.last_id, changes.last_seq)
        self._version = version
        self._loaded = True

    # -- CacheBackend --------------------------------------------------------------------------
    def get_exact(self, namespace: str, key: str) -> CacheEntry | None:
        entry = self.store.get_by_key(namespace, key)
        if entry is not None and entry.expired():
            self.delete(entry)
            return None
        return entry

    def search(self, namespace: str, vector: np.ndarray, k: int) -> list[tuple[CacheEntry, float]]:
        with self._lock:
            self._sync()
            self._load(namespace)
            if self.index is None:
                return []
            exact = bool(getattr(self.index, "exact", True))
            found = self.index.search(namespace, vector, k if exact else k + max(k, _RESCORE_EXTRA))
        if not found:
            return []
        getter = getattr(self.store, "get_many", None)
        entries = getter([i for i, _ in found]) if getter else {i: self.store.get(i) for i, _ in found}
        query = np.asarray(vector, np.float32).reshape(-1)
        out: list[tuple[CacheEntry, float]] = []
        now = time.time()
        for i, sim in found:
            entry = entries.get(i)
            if entry is None or entry.namespace != namespace:
                continue  # deleted meanwhile (or never ours): not a hit
            if entry.expired(now):
                self.delete(entry)
                continue
            if not exact and entry.embedding is not None:
                sim = float(np.dot(np.asarray(entry.embedding, np.float32), query))
            out.append((entry, sim))
        if not exact:
            out.sort(key=lambda pair: -pair[1])
        return out[:k]

    def put(self, entry: CacheEntry, ttl: float | None) -> CacheEntry:
        if ttl is not None:
            entry.expires_at = entry.created_at + ttl
        with self._lock:
            self._sync()  # catch up first so our marks never skip another process's rows
            self.store.put(entry)
            assert entry.id is not None
            if entry.embedding is not None:
                if self._resident(entry.namespace):
                    vec = np.asarray(entry.embedding, np.float32).reshape(1, -1)
                    self._ensure_index(vec.shape[1]).add(entry.namespace, [int(entry.id)], vec)
                else:
                    self._load(entry.namespace)  # the store already has the new entry
        return entry

    def touch(self, entry: CacheEntry) -> None:
        if entry.id is not None:
            self.store.touch(int(entry.id))

    def set_min_score(self, entry: CacheEntry, value: float) -> None:
        if entry.id is not None:
            self.store.set_min_score(int(entry.id), value)
            entry.min_score = value

    def delete(self, entry: CacheEntry) -> None:
        if entry.id is None:
            return
        self.store.delete([int(entry.id)])
        with self._lock:
            if self.index is not None:
                self.index.remove(entry.namespace, [int(entry.id)])

    def enforce(self, max_entries: int | None, policy: str) -> int:
        gone = list(self.store.expire())
        if max_entries is not None:
            gone += self.store.evict(max_entries, policy)
        with self._lock:
            if self.index is not None:
                for i, ns in gone:
                    self.index.remove(ns, [i])
        return len(gone)

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": "embedded", "path": getattr(self.store, "path", None)}
        if hasattr(self.store, "stats"):
            out.update(self.store.stats())
        else:
            out["entries"] = self.store.count()
        if self.index is not None:
            out["indexed"] = len(self.index)
            mem = getattr(self.index, "memory_bytes", None)
            if mem is not None:
                out["index_bytes"] = mem()
            for name, attr in (("shards", "shards"), ("shard_evictions", "evictions")):
                value = getattr(self.index, attr, None)
                if value is not None:
                    out[name] = int(value)
        return out

    def clear(self) -> None:
        self.store.clear()
        with self._lock:
            if self.index is not None:
                self.index.clear()
            self._marks, self._loaded = (0, 0), False

    def close(self) -> None:
        self.store.close()

    def bulk_load(self, entries: Sequence[CacheEntry]) -> None:
        """Insert many entries at once (imports, benchmarks): one transaction, one index add."""
        if not entries:
            return
        with self._lock:
            self._sync()
            if hasattr(self.store, "bulk_put"):
                self.store.bulk_put(entries)
            else:
                for e in entries:
                    self.store.put(e)
            by_ns: dict[str, list[CacheEntry]] = {}
            for e in entries:
                if e.embedding is not None:
                    by_ns.setdefault(e.namespace, []).append(e)
            for ns, rows in by_ns.items():
                if not self._resident(ns):
                    self._load(ns)  # the store already has the new entries
                    continue
                vecs = np.stack([np.asarray(e.embedding, np.float32) for e in rows])
                self._ensure_index(vecs.shape[1]).add(ns, [int(e.id or 0) for e in rows], vecs)
