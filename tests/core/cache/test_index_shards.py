"""The embedded index keeps a bounded LRU of namespace shards; the store keeps everything.

Under ``context="prefix"`` every conversation turn is its own namespace. These tests use random or
hashed unit vectors (no model) and check that the shard count stays at the cap, evictions are
counted in the stats, and an evicted namespace is reloaded whole when it is searched again, also
when another process wrote to it meanwhile.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from tokenlean.cache import ScopeConfig, SemanticCache
from tokenlean.cache.backends import EmbeddedBackend
from tokenlean.cache.index import FaissIndex
from tokenlean.cache.store import CacheEntry, SQLiteStore
from tokenlean.errors import ConfigError


def _unit(seed: int, dim: int = 8) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def _entry(ns: str, key: str, vec: np.ndarray) -> CacheEntry:
    return CacheEntry(namespace=ns, key=key, query=key, payload=key, embedding=vec)


def test_faiss_index_drops_least_recently_used_shards() -> None:
    index = FaissIndex(8, max_shards=3)
    for n in range(5):
        index.add(f"ns{n}", [n], _unit(n).reshape(1, -1))
    assert index.shards == 3 and index.evictions == 2
    assert not index.has("ns0") and not index.has("ns1") and index.has("ns4")
    assert index.search("ns2", _unit(2), 1)[0][0] == 2  # ns2 is now the most recently used
    index.add("ns5", [5], _unit(5).reshape(1, -1))
    assert index.has("ns2") and not index.has("ns3") and index.evictions == 3
    assert len(index) == 3 and index.ids("ns2") == {2} and index.ids("ns3") == set()


def test_unbounded_and_bad_caps() -> None:
    index = FaissIndex(4, max_shards=None)
    for n in range(50):
        index.add(f"ns{n}", [n], np.ones((1, 4), np.float32))
    assert index.shards == 50 and index.evictions == 0
    for bad in (0, -3, 1.5, True):
        with pytest.raises(ConfigError):
            FaissIndex(4, max_shards=bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigError):
            EmbeddedBackend(max_shards=bad)  # type: ignore[arg-type]


def test_evicted_namespace_is_reloaded_whole_from_the_store(tmp_path: Path) -> None:
    path = tmp_path / "shards.db"
    backend = EmbeddedBackend(path, max_shards=2)
    other = EmbeddedBackend(path)  # another process writing to the same file
    for n in range(4):
        backend.put(_entry(f"ns{n}", f"a{n}", _unit(n)), None)
    stats = backend.stats()
    assert stats["shards"] == 2 and stats["shard_evictions"] == 2 and stats["entries"] == 4
    # ns0 is out of memory; another process adds to it; searching it brings back all of it
    other.put(_entry("ns0", "b0", _unit(100)), None)
    assert [e.key for e, _ in backend.search("ns0", _unit(0), 1)] == ["a0"]
    assert [e.key for e, _ in backend.search("ns0", _unit(100), 1)] == ["b0"]
    assert backend.index is not None and backend.index.ids("ns0") == {1, 5}  # type: ignore[attr-defined]
    # a sync does not start a partial shard for a namespace that is not in memory
    other.put(_entry("ns1", "b1", _unit(101)), None)
    backend.search("ns0", _unit(0), 1)
    assert not backend.index.has("ns1")  # type: ignore[attr-defined]
    assert {e.key for e, _ in backend.search("ns1", _unit(1), 2)} == {"a1", "b1"}
    # deleting from a namespace that is out of memory reaches it when it is loaded again
    other.delete(other.get_exact("ns2", "a2"))  # type: ignore[arg-type]
    assert backend.search("ns2", _unit(2), 1) == []
    assert backend.stats()["shards"] == 2


class _HashEmbedder:
    """Texts equal up to case, punctuation and a "please" get the same unit vector; others not."""

    dim = 32

    def embed(self, texts: list[str]) -> np.ndarray:
        keys = [
            " ".join(w for w in t.lower().strip("?.!").replace(",", "").split() if w != "please")
            for t in texts
        ]
        return np.stack([_unit(int(hashlib.sha256(k.encode()).hexdigest()[:8], 16), self.dim) for k in keys])


def test_one_shard_per_conversation_is_bounded_and_counted(tmp_path: Path) -> None:
    backend = EmbeddedBackend(tmp_path / "conv.db", max_shards=3)
    cache = SemanticCache(backend, embedder=_HashEmbedder(), scope=ScopeConfig(context="prefix"))

    def conversation(n: int) -> list[dict[str, str]]:
        return [
            {"role": "user", "content": f"Tell me about topic {n}."},
            {"role": "assistant", "content": f"Topic {n} is interesting."},
            {"role": "user", "content": "What are its types?"},
        ]

    for n in range(10):
        assert cache.store(conversation(n), f"types of topic {n}").stored
    stats = cache.stats()["backend"]
    assert stats["shards"] == 3 and stats["shard_evictions"] == 7 and stats["entries"] == 10
    # the oldest conversation's answer is still served (semantic tier, its shard reloaded)
    hit = cache.lookup([*conversation(0)[:2], {"role": "user", "content": "What are its types, please?"}])
    assert hit.hit and hit.tier == "semantic" and hit.text == "types of topic 0"
    assert cache.stats()["backend"]["shards"] == 3


class _PlainStore:
    """Only the ``CacheStore`` protocol: it cannot read one namespace on its own."""

    def __init__(self) -> None:
        self._inner = SQLiteStore()
        for name in ("put", "get", "get_by_key", "touch", "set_min_score", "delete", "evict", "expire"):
            setattr(self, name, getattr(self._inner, name))
        self.count, self.all_vectors, self.close = (
            self._inner.count,
            self._inner.all_vectors,
            self._inner.close,
        )


def test_a_store_that_cannot_reload_a_namespace_keeps_every_shard() -> None:
    backend = EmbeddedBackend(store=_PlainStore(), max_shards=2)  # type: ignore[arg-type]
    for n in range(4):
        backend.put(_entry(f"ns{n}", f"a{n}", _unit(n)), None)
    assert all(backend.search(f"ns{n}", _unit(n), 1)[0][0].key == f"a{n}" for n in range(4))
    stats = backend.stats()
    assert stats["shards"] == 4 and stats["shard_evictions"] == 0
