"""Vector indexes for the semantic tier: the ``VectorIndex`` protocol and its faiss implementation.

One index shard per scope namespace: a lookup only ever searches the entries of its own scope
(model, parameters, system prompt, conversation, tenant), so a hit across tenants is impossible by
construction rather than by a filter someone might forget.

A shard starts as an exact inner-product index (``IndexFlatIP``: vectors are L2-normalised, so
inner product is cosine) and turns into HNSW once it passes ``hnsw_threshold`` entries: a flat scan
reads every vector of the shard on every query, while HNSW visits a small part of the graph
(``benchmarks/semantic_cache.py`` measures both). HNSW cannot delete, so removed ids become
tombstones, and the shard is rebuilt when a fifth of it is dead. Tombstones are kept as a bitmap
that faiss skips *during* the search (an ``IDSelector``), so expired entries cost a search nothing:
asking for ``k`` plus the number of dead ones instead would make a shard full of expired entries
search for as many results as it has dead ones.

How wide the HNSW search is (``efSearch``) grows with the shard by default: a fixed width finds the
nearest entry of a small shard almost always but misses it more and more as the shard grows (the
benchmark's recall runs show by how much). ``ef_search=None`` keeps ``_EF_BASE`` up to
``_EF_REF`` entries and then grows it as ``_EF_BASE * (live / _EF_REF) ** 0.6``, capped at
``_EF_MAX``; an int fixes it.

Vectors are held as 8-bit codes by default (``vectors="sq8"``: a quarter of float32's memory, so
a process can hold many entries); the index then only proposes candidates, and the embedded
backend rescores them against the exact float32 embeddings it reads from the store with each
candidate anyway, so every similarity a guard or threshold sees is exact. ``"fp16"`` halves
memory instead, ``"float32"`` keeps exact vectors in memory (the index's own scores are final).

Shards are held in memory as an LRU of at most ``max_shards``: under ``context="prefix"`` every
conversation turn is its own namespace, so without a bound a long-running process would keep a
shard for every conversation it ever saw. A dropped shard is only a cache of the store: the
embedded backend reloads it from the store when its namespace is searched again.
"""

from __future__ import annotations

import threading
from array import array
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from tokenlean.errors import ConfigError, MissingDependencyError

__all__ = ["FaissIndex", "VectorIndex", "auto_ef_search"]


@runtime_checkable
class VectorIndex(Protocol):
    """Nearest neighbours by inner product, partitioned by namespace; ids are the store's ids."""

    def add(self, namespace: str, ids: Sequence[int], vectors: np.ndarray) -> None: ...

    def remove(self, namespace: str, ids: Sequence[int]) -> None: ...

    def search(self, namespace: str, vector: np.ndarray, k: int) -> list[tuple[int, float]]: ...

    def __len__(self) -> int: ...

    def clear(self) -> None: ...


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise MissingDependencyError("faiss-cpu", extra="embeddings") from exc
    return faiss


# name -> faiss ScalarQuantizer type (None: IndexFlatIP / IndexHNSWFlat, float32) and bytes per dim
_CODECS: dict[str, tuple[str | None, float]] = {
    "sq8": ("QT_8bit_uniform", 1.0),
    "fp16": ("QT_fp16", 2.0),
    "float32": (None, 4.0),
}


# vectors decoded at once when a shard is rebuilt (bounds the float32 copy in memory)
_REBUILD_BLOCK = 4096

# efSearch scaling (``ef_search=None``): _EF_BASE up to _EF_REF live entries, then growing as n**0.6
_EF_BASE = 64
_EF_REF = 100_000
_EF_MAX = 512


def auto_ef_search(live: int) -> int:
    """The HNSW search width for a shard of ``live`` entries when none is fixed.

    Graph search on sentence embeddings needs a wider beam as the graph grows to keep finding the
    true nearest entry, and each lookup costs about linearly in the width: so the width stays at
    its base while a base-width search still finds the planted paraphrases, and grows sublinearly
    beyond. The constants come from the recall runs of ``benchmarks/semantic_cache.py`` (planted
    paraphrases in clustered and unstructured vectors, the latter reported as the worst case).
    """
    if live <= _EF_REF:
        return _EF_BASE
    return int(min(_EF_MAX, round(_EF_BASE * (live / _EF_REF) ** 0.6)))


class _Shard:
    """One namespace: a flat or HNSW faiss index plus the id mapping and tombstones."""

    def __init__(
        self,
        dim: int,
        hnsw_threshold: int,
        m: int,
        ef_construction: int,
        ef_search: int | None,
        codec: str,
    ) -> None:
        self.dim = dim
        self.codec = codec
        self.hnsw_threshold = hnsw_threshold
        self.m = m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.hnsw = False
        self.labels = array("q")  # faiss label -> store id (8 bytes each, not a list of int objects)
        self.dead: set[int] = set()  # faiss labels removed
        # the same labels as a bitmap (bit ``label`` set), which faiss skips during a search
        self.dead_bits = np.zeros(0, np.uint8)
        # store id -> faiss label: None while ids arrived in increasing order (the store hands them
        # out so), when a binary search of ``labels`` is the map at no memory cost; the first id
        # out of order turns it into a dict
        self.where: dict[int, int] | None = None
        self.live = 0
        self.index = self._new(False)

    def _new(self, hnsw: bool) -> Any:
        faiss = _faiss()
        qtype = _CODECS[self.codec][0]
        ip = faiss.METRIC_INNER_PRODUCT
        if qtype is None:
            idx = faiss.IndexHNSWFlat(self.dim, self.m, ip) if hnsw else faiss.IndexFlatIP(self.dim)
        else:
            qt = getattr(faiss.ScalarQuantizer, qtype)
            idx = (
                faiss.IndexHNSWSQ(self.dim, qt, self.m, ip)
                if hnsw
                else faiss.IndexScalarQuantizer(self.dim, qt, ip)
            )
            # unit vectors: every component lies in [-1, 1], so one fixed range needs no data to
            # train on and never changes (codes stay comparable across rebuilds)
            idx.train(np.stack([np.full(self.dim, -1.0, np.float32), np.ones(self.dim, np.float32)]))
        if hnsw:
            idx.hnsw.efConstruction = self.ef_construction
            idx.hnsw.efSearch = self.ef()
        return idx

    def ef(self) -> int:
        """The HNSW search width now: fixed, or scaled with the live entries (``auto_ef_search``)."""
        return self.ef_search if self.ef_search is not None else auto_ef_search(self.live)

    def _mark_dead(self, label: int) -> None:
        self.dead.add(label)
        byte = label >> 3
        if byte >= len(self.dead_bits):
            grown = np.zeros(max(byte + 1, 2 * len(self.dead_bits)), np.uint8)
            grown[: len(self.dead_bits)] = self.dead_bits
            self.dead_bits = grown
        self.dead_bits[byte] |= np.uint8(1 << (label & 7))

    def __len__(self) -> int:
        return self.live

    def label_of(self, i: int) -> int | None:
        """The faiss label of live store id ``i``, or None."""
        if self.where is not None:
            return self.where.get(i)
        j = bisect_left(self.labels, i)
        if j < len(self.labels) and self.labels[j] == i and j not in self.dead:
            return j
        return None

    def ids(self) -> set[int]:
        return {int(i) for label, i in enumerate(self.labels) if label not in self.dead}

    def _append(self, i: int) -> None:
        if self.where is None and self.labels and i <= self.labels[-1]:
            self.where = {int(v): n for n, v in enumerate(self.labels) if n not in self.dead}
        if self.where is not None:
            self.where[i] = len(self.labels)
        self.labels.append(i)
        self.live += 1

    def add(self, ids: Sequence[int], vectors: np.ndarray) -> None:
        seen: set[int] = set()
        fresh = []
        for i, v in zip(ids, vectors, strict=True):
            if i not in seen and self.label_of(i) is None:
                seen.add(i)
                fresh.append((int(i), v))
        if not fresh:
            return
        block = np.ascontiguousarray(np.stack([v for _, v in fresh]), dtype=np.float32)
        for i, _ in fresh:
            self._append(i)
        self.index.add(block)
        if not self.hnsw and self.live > self.hnsw_threshold:
            self._rebuild(hnsw=True)

    def remove(self, ids: Sequence[int]) -> None:
        for i in ids:
            label = self.label_of(i)
            if label is not None:
                self._mark_dead(label)
                self.live -= 1
                if self.where is not None:
                    del self.where[i]
        if self.dead and len(self.dead) * 5 > len(self.labels):
            self._rebuild(hnsw=self.hnsw and self.live > self.hnsw_threshold // 2)

    def _rebuild(self, hnsw: bool) -> None:
        """Move the live vectors into a fresh index, a block at a time.

        Decoding the whole shard at once would allocate it as float32 (four times its codes) for a
        moment, and the allocator keeps such a peak resident long after it is freed.
        """
        old, old_labels, dead = self.index, self.labels, self.dead
        self.hnsw = hnsw
        self.index = self._new(hnsw)
        self.labels, self.dead, self.where, self.live = array("q"), set(), None, 0
        self.dead_bits = np.zeros(0, np.uint8)
        for start in range(0, int(old.ntotal), _REBUILD_BLOCK):
            n = min(_REBUILD_BLOCK, int(old.ntotal) - start)
            keep = [j for j in range(n) if start + j not in dead]
            if not keep:
                continue
            vecs = old.reconstruct_n(start, n)[keep]
            for j in keep:
                self._append(old_labels[start + j])
            self.index.add(np.ascontiguousarray(vecs, dtype=np.float32))

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        if not self.live:
            return []
        faiss = _faiss()
        params = faiss.SearchParametersHNSW() if self.hnsw else faiss.SearchParameters()
        if self.hnsw:
            params.efSearch = self.ef()
        bits = self.dead_bits  # referenced until the search returns (faiss holds a raw pointer)
        if self.dead:
            params.sel = faiss.IDSelectorNot(faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits)))
        want = min(self.live, k)
        sims, labels = self.index.search(vector.reshape(1, -1), want, params=params)
        out: list[tuple[int, float]] = []
        for s, label in zip(sims[0], labels[0], strict=True):
            if label < 0 or label in self.dead:
                continue
            out.append((int(self.labels[label]), float(s)))
            if len(out) == k:
                break
        return out

    def memory_bytes(self) -> int:
        base = int(len(self.labels) * self.dim * _CODECS[self.codec][1])
        if self.hnsw:
            base += len(self.labels) * self.m * 2 * 4  # level-0 links (upper levels are tiny)
        return base + len(self.labels) * 8 + (len(self.where) * 100 if self.where is not None else 0)


class FaissIndex:
    """The embedded ``VectorIndex``: faiss shards, one per namespace, guarded by one lock.

    ``hnsw_threshold`` is where a shard switches from a full scan to HNSW; set it very high to scan
    everywhere. ``ef_search`` is the HNSW search width: None (default) scales it with each shard
    (``auto_ef_search``), an int fixes
    it for every shard. ``max_shards`` caps the namespaces held at once (least recently
    used dropped first, counted in ``evictions``); None removes the cap. ``vectors`` is how vectors
    are held: ``"sq8"`` (default), ``"fp16"`` or ``"float32"``; unless float32, ``exact`` is False
    and the scores returned are approximate (candidates for the caller to rescore).
    """

    def __init__(
        self,
        dim: int,
        *,
        hnsw_threshold: int = 20_000,
        hnsw_m: int = 24,
        ef_construction: int = 80,
        ef_search: int | None = None,
        max_shards: int | None = 4096,
        vectors: str = "sq8",
    ) -> None:
        if vectors not in _CODECS:
            raise ConfigError(f"vectors must be one of {sorted(_CODECS)}, got {vectors!r}")
        if dim < 1 or hnsw_threshold < 1:
            raise ConfigError("dim and hnsw_threshold must be positive")
        if ef_search is not None and (
            isinstance(ef_search, bool) or not isinstance(ef_search, int) or ef_search < 1
        ):
            raise ConfigError(f"ef_search must be a positive integer or None, got {ef_search!r}")
        if max_shards is not None and (
            isinstance(max_shards, bool) or not isinstance(max_shards, int) or max_shards < 1
        ):
            raise ConfigError(f"max_shards must be a positive integer or None, got {max_shards!r}")
        _faiss()
        self.dim = dim
        self.hnsw_threshold = hnsw_threshold
        self.max_shards = max_shards
        self.evictions = 0
        self.vectors = vectors
        self._params = (hnsw_m, ef_construction, ef_search, vectors)
        self._shards: OrderedDict[str, _Shard] = OrderedDict()
        self._lock = threading.RLock()

    @property
    def exact(self) -> bool:
        """Whether search scores are exact inner products (float32 vectors held)."""
        return self.vectors == "float32"

    def _check(self, vectors: np.ndarray) -> np.ndarray:
        arr = np.asarray(vectors, dtype=np.float32)
        if arr.ndim == 1:
            arr = arr.reshape(1, -1)
        if arr.shape[1] != self.dim:
            raise ConfigError(f"vector of dim {arr.shape[1]} given to a {self.dim}-d index")
        return arr

    def add(self, namespace: str, ids: Sequence[int], vectors: np.ndarray) -> None:
        arr = self._check(vectors)
        with self._lock:
            shard = self._shards.get(namespace)
            if shard is None:
                shard = self._shards[namespace] = _Shard(self.dim, self.hnsw_threshold, *self._params)
                while self.max_shards is not None and len(self._shards) > self.max_shards:
                    self._shards.popitem(last=False)
                    self.evictions += 1
            else:
                self._shards.move_to_end(namespace)
            shard.add(list(ids), arr)

    def remove(self, namespace: str, ids: Sequence[int]) -> None:
        with self._lock:
            shard = self._shards.get(namespace)
            if shard is not None:
                shard.remove(ids)
                if not len(shard):
                    del self._shards[namespace]

    def search(self, namespace: str, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        arr = self._check(vector)
        with self._lock:
            shard = self._shards.get(namespace)
            if shard is None:
                return []
            self._shards.move_to_end(namespace)
            return shard.search(arr, k)

    def has(self, namespace: str) -> bool:
        """Whether ``namespace``'s shard is in memory (never created, emptied or evicted: not)."""
        with self._lock:
            return namespace in self._shards

    def ids(self, namespace: str) -> set[int]:
        """The store ids held for ``namespace``."""
        with self._lock:
            shard = self._shards.get(namespace)
            return shard.ids() if shard is not None else set()

    @property
    def shards(self) -> int:
        with self._lock:
            return len(self._shards)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(s) for s in self._shards.values())

    def clear(self) -> None:
        with self._lock:
            self._shards.clear()

    def memory_bytes(self) -> int:
        """An estimate of the index's resident size (vectors, links, id maps)."""
        with self._lock:
            return sum(s.memory_bytes() for s in self._shards.values())
