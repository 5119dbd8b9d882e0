"""Redis Stack backend: entries as hashes, HNSW vector search with ``FT.CREATE``/``FT.SEARCH``.

Many application processes and machines share one cache this way; TTL is Redis' own ``EXPIRE``.
Uses redis-py directly (no redisvl dependency): the index is one ``FT.CREATE`` and a lookup one
``FT.SEARCH`` with a KNN clause restricted to the scope namespace tag.

The HNSW search width goes with every query (``EF_RUNTIME`` in the KNN clause), so it also applies
to an index created earlier with another default. The index's own ``EF_RUNTIME`` is too narrow
to keep finding the nearest entry of a large index; by default the width grows with the index:
``_EF_FACTOR`` times the embedded one (``auto_ef_search`` of the indexed documents, re-read at most
every ``size_interval`` seconds), capped at ``_EF_MAX``. The namespace tag filter is not
what loses recall: RediSearch answers a filter matching most of the index in ``BATCHES`` from the
same HNSW search (same recall as no filter), and a small namespace by brute force (exact).

A cache must never make the application slower or break it: sockets time out quickly
(``socket_timeout``), redis-py's retries are off, and after a failure the backend stays "open
circuit" for ``retry_interval`` seconds (every call fails fast with ``CacheBackendError`` without
touching the network, and ``SemanticCache`` turns that into a logged pass-through). The first call
after the interval tries again, so the cache comes back by itself when Redis does; the search index
is re-created if the server came back empty.

The entry cap is kept with a sorted set of last access times. Redis expires an entry's hash by
itself but cannot take its member out of that set, so every write also sweeps a slice of the set
(``prune_batch`` members, resumed where the previous write stopped) and drops members whose entry
is gone: the set stays about as large as the live entries without a full scan on any one call.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import Any

import numpy as np

from tokenlean.cache.index import auto_ef_search
from tokenlean.cache.store import CacheEntry, dump_json
from tokenlean.errors import CacheBackendError, ConfigError, MissingDependencyError

__all__ = ["RedisBackend"]

logger = logging.getLogger("tokenlean.cache.redis")

#: The scaled width is this many times the embedded one: RediSearch builds a sparser graph by
#: default than the faiss shards, so the same recall needs a wider search (the recall runs of
#: ``benchmarks/semantic_cache.py`` measure it on clustered and unstructured vectors).
_EF_FACTOR = 3
_EF_MAX = 1024

#: Count a hit only on an entry that still exists: a plain HINCRBY on an expired hash would
#: re-create it as a stub without payload or TTL that nothing ever removes.
_TOUCH = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'hits', 1)
  redis.call('HSET', KEYS[1], 'last_access', ARGV[1])
  redis.call('ZADD', KEYS[2], 'XX', ARGV[1], ARGV[2])
end
return 0
"""

_FIELDS = (
    "ns",
    "key",
    "query",
    "payload",
    "chunks",
    "vec",
    "created_at",
    "expires_at",
    "hits",
    "last_access",
    "min_score",
)


def _search_rows(raw: Any) -> list[tuple[str, dict[bytes, bytes]]]:
    """``(key, fields)`` rows of an ``FT.SEARCH`` reply, in RESP2 (flat list) or RESP3 (map) shape."""
    rows: list[tuple[str, dict[bytes, bytes]]] = []
    if isinstance(raw, dict):
        for item in raw.get(b"results", raw.get("results")) or []:
            attrs = item.get(b"extra_attributes") or item.get("extra_attributes") or {}
            key = item.get(b"id") or item.get("id")
            rows.append((key.decode() if isinstance(key, bytes) else str(key), dict(attrs)))
        return rows
    for i in range(1, len(raw), 2):
        fields = raw[i + 1]
        rows.append((raw[i].decode(), {fields[j]: fields[j + 1] for j in range(0, len(fields), 2)}))
    return rows


class RedisBackend:
    """``CacheBackend`` on Redis Stack (RediSearch vector index, HNSW, cosine).

    ``prune_batch``: how many members of the LRU set each write checks for entries that expired.
    ``ef_runtime``: the HNSW search width sent with every query; None (default) scales it with the
    indexed documents (``3 * auto_ef_search``, their count re-read at most every ``size_interval``
    seconds), an int fixes it. ``hnsw_m``/``ef_construction`` only apply when the index is created.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379",
        *,
        prefix: str = "tokenlean:cache:",
        socket_timeout: float = 0.25,
        retry_interval: float = 1.0,
        hnsw_m: int = 16,
        ef_construction: int = 200,
        ef_runtime: int | None = None,
        client: Any = None,
        prune_batch: int = 100,
        size_interval: float = 10.0,
    ) -> None:
        if not prefix or any(c in prefix for c in " {}"):
            raise ConfigError("prefix must be non-empty without spaces or braces")
        if isinstance(prune_batch, bool) or not isinstance(prune_batch, int) or prune_batch < 1:
            raise ConfigError(f"prune_batch must be a positive integer, got {prune_batch!r}")
        if ef_runtime is not None and (
            isinstance(ef_runtime, bool) or not isinstance(ef_runtime, int) or ef_runtime < 1
        ):
            raise ConfigError(f"ef_runtime must be a positive integer or None, got {ef_runtime!r}")
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError as exc:
            raise MissingDependencyError("redis", extra="redis") from exc
        self._redis = redis
        self.url = url
        self.prefix = prefix
        self.index_name = f"{prefix}idx"
        self.retry_interval = retry_interval
        self.hnsw = (hnsw_m, ef_construction, 20 if ef_runtime is None else ef_runtime)
        self.ef_runtime = ef_runtime
        self.size_interval = size_interval
        self._size = 0
        self._size_at = float("-inf")
        self.client = client or redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
            health_check_interval=0,
        )
        self.prune_batch = prune_batch
        self.pruned = 0
        self._sweep_cursor = 0
        self._touch = self.client.register_script(_TOUCH)
        self._dim: int | None = None
        self._index_ready = False
        self._down_until = 0.0
        self._lock = threading.Lock()

    # -- plumbing ------------------------------------------------------------------------------
    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one Redis operation with the circuit breaker; map failures to CacheBackendError."""
        if time.monotonic() < self._down_until:
            raise CacheBackendError(f"Redis at {self.url} is unavailable (retrying after a pause)")
        try:
            return fn(*args, **kwargs)
        except (self._redis.ConnectionError, self._redis.TimeoutError, OSError) as exc:
            self._down_until = time.monotonic() + self.retry_interval
            self._index_ready = False  # the server may come back empty
            raise CacheBackendError(f"Redis at {self.url} failed: {exc}") from exc
        except self._redis.ResponseError as exc:
            if "no such index" in str(exc).lower() or "unknown index" in str(exc).lower():
                self._index_ready = False
            raise CacheBackendError(f"Redis error: {exc}") from exc

    def _ekey(self, entry_id: str) -> str:
        return f"{self.prefix}e:{entry_id}"

    def _xkey(self, namespace: str, key: str) -> str:
        return f"{self.prefix}x:{namespace}:{key}"

    @property
    def _lru(self) -> str:
        return f"{self.prefix}lru"

    def _prune(self) -> int:
        """Drop LRU members whose entry is gone (expired or removed behind our back); bounded work.

        One ``ZSCAN`` step of about ``prune_batch`` members from where the last call stopped (a
        small set comes back whole), then one pipelined existence check. A hash without a payload
        is no entry either, so such a leftover is deleted too.
        """
        cursor, items = self._call(self.client.zscan, self._lru, self._sweep_cursor, count=self.prune_batch)
        self._sweep_cursor = int(cursor)
        members = [m for m, _ in items]
        if not members:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for m in members:
            pipe.hexists(self._ekey(m.decode()), "payload")
        alive = self._call(pipe.execute)
        dead = [m for m, ok in zip(members, alive, strict=True) if not ok]
        if dead:
            pipe = self.client.pipeline(transaction=False)
            pipe.zrem(self._lru, *dead)
            pipe.delete(*(self._ekey(m.decode()) for m in dead))
            self._call(pipe.execute)
            self.pruned += len(dead)
        return len(dead)

    def _ensure_index(self, dim: int) -> None:
        if self._index_ready and self._dim == dim:
            return
        with self._lock:
            try:
                self._call(self.client.execute_command, "FT.INFO", self.index_name)
            except CacheBackendError:
                if time.monotonic() < self._down_until:
                    raise
                m, efc, efr = self.hnsw
                try:
                    self._call(
                        self.client.execute_command,
                        "FT.CREATE", self.index_name, "ON", "HASH", "PREFIX", "1", f"{self.prefix}e:",
                        "SCHEMA", "ns", "TAG", "key", "TAG",
                        "vec", "VECTOR", "HNSW", "12", "TYPE", "FLOAT32", "DIM", str(dim),
                        "DISTANCE_METRIC", "COSINE", "M", str(m), "EF_CONSTRUCTION", str(efc), "EF_RUNTIME", str(efr),
                    )  # fmt: skip
                except CacheBackendError as exc:
                    if "already exists" not in str(exc).lower():
                        raise
            self._dim = dim
            self._index_ready = True

    def _entry(self, entry_id: str, data: dict[bytes, bytes]) -> CacheEntry | None:
        if not data or b"payload" not in data:
            return None

        def s(k: str) -> str | None:
            v = data.get(k.encode())
            return None if v is None else v.decode("utf-8", "surrogatepass")

        vec = data.get(b"vec")
        chunks = s("chunks")
        exp = s("expires_at")
        return CacheEntry(
            id=entry_id,  # type: ignore[arg-type]
            namespace=s("ns") or "",
            key=s("key") or "",
            query=s("query") or "",
            payload=json.loads(s("payload") or "null"),
            chunks=json.loads(chunks) if chunks else None,
            embedding=np.frombuffer(vec, dtype=np.float32).copy() if vec else None,
            created_at=float(s("created_at") or 0),
            expires_at=float(exp) if exp else None,
            hits=int(s("hits") or 0),
            last_access=float(s("last_access") or 0),
            min_score=float(s("min_score") or 0),
        )

    # -- CacheBackend --------------------------------------------------------------------------
    def get_exact(self, namespace: str, key: str) -> CacheEntry | None:
        entry_id = self._call(self.client.get, self._xkey(namespace, key))
        if entry_id is None:
            return None
        eid = entry_id.decode()
        entry = self._entry(eid, self._call(self.client.hgetall, self._ekey(eid)))
        if entry is None or entry.namespace != namespace:
            return None
        return entry

    def _indexed(self) -> int:
        """Documents in the index, from ``FT.INFO`` at most every ``size_interval`` seconds."""
        now = time.monotonic()
        if now - self._size_at >= self.size_interval:
            info = self._call(self.client.execute_command, "FT.INFO", self.index_name)
            pairs: dict[Any, Any] = (
                info if isinstance(info, dict) else dict(zip(info[0::2], info[1::2], strict=False))
            )
            self._size = int(pairs.get(b"num_docs") or pairs.get("num_docs") or 0)
            self._size_at = now
        return self._size

    def ef(self) -> int:
        """The ``EF_RUNTIME`` sent with the next query: fixed, or scaled with the index."""
        if self.ef_runtime is not None:
            return self.ef_runtime
        return min(_EF_MAX, _EF_FACTOR * auto_ef_search(self._indexed()))

    def search(self, namespace: str, vector: np.ndarray, k: int) -> list[tuple[CacheEntry, float]]:
        vec = np.asarray(vector, dtype=np.float32).reshape(-1)
        self._ensure_index(len(vec))
        query = f"(@ns:{{{namespace}}})=>[KNN {int(k)} @vec $v EF_RUNTIME $ef AS dist]"
        raw = self._call(
            self.client.execute_command,
            "FT.SEARCH", self.index_name, query, "PARAMS", "4", "v", vec.tobytes(), "ef", str(self.ef()),
            "SORTBY", "dist", "LIMIT", "0", str(int(k)), "DIALECT", "2",
        )  # fmt: skip
        out: list[tuple[CacheEntry, float]] = []
        for key, data in _search_rows(raw):
            dist = float(data.pop(b"dist", b"1"))
            entry = self._entry(key[len(self.prefix) + 2 :], data)
            if entry is None or entry.namespace != namespace:
                continue  # defence in depth: never serve another scope's entry
            out.append((entry, 1.0 - dist))
        return out

    def put(self, entry: CacheEntry, ttl: float | None) -> CacheEntry:
        entry_id = uuid.uuid4().hex
        if ttl is not None:
            entry.expires_at = entry.created_at + ttl
        mapping: dict[str, Any] = {
            "ns": entry.namespace,
            "key": entry.key,
            "query": entry.query,
            "payload": dump_json(entry.payload),
            "created_at": entry.created_at,
            "last_access": entry.last_access,
            "hits": entry.hits,
            "min_score": entry.min_score,
        }
        if entry.chunks is not None:
            mapping["chunks"] = dump_json(entry.chunks)
        if entry.expires_at is not None:
            mapping["expires_at"] = entry.expires_at
        if entry.embedding is not None:
            vec = np.asarray(entry.embedding, dtype=np.float32).reshape(-1)
            self._ensure_index(len(vec))
            mapping["vec"] = vec.tobytes()
        ms = None if ttl is None else max(1, int(ttl * 1000))

        def write() -> None:
            pipe = self.client.pipeline(transaction=True)
            old = self._xkey(entry.namespace, entry.key)
            pipe.hset(self._ekey(entry_id), mapping=mapping)  # type: ignore[arg-type]
            if ms is not None:
                pipe.pexpire(self._ekey(entry_id), ms)
            pipe.set(old, entry_id, px=ms)
            pipe.zadd(self._lru, {entry_id: entry.last_access})
            pipe.execute()

        previous = self._call(self.client.get, self._xkey(entry.namespace, entry.key))
        self._call(write)
        if previous is not None and previous.decode() != entry_id:
            self._call(self.client.delete, self._ekey(previous.decode()))
            self._call(self.client.zrem, self._lru, previous)
        entry.id = entry_id  # type: ignore[assignment]
        try:
            self._prune()
        except CacheBackendError:  # housekeeping: the entry is stored, the next write sweeps again
            logger.debug("LRU sweep failed", exc_info=True)
        return entry

    def touch(self, entry: CacheEntry) -> None:
        if entry.id is None:
            return
        self._call(
            self._touch, keys=[self._ekey(str(entry.id)), self._lru], args=[time.time(), str(entry.id)]
        )

    def set_min_score(self, entry: CacheEntry, value: float) -> None:
        if entry.id is not None:
            self._call(self.client.hset, self._ekey(str(entry.id)), "min_score", float(value))
            entry.min_score = value

    def delete(self, entry: CacheEntry) -> None:
        if entry.id is None:
            return
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self._ekey(str(entry.id)))
        pipe.zrem(self._lru, str(entry.id))
        self._call(pipe.execute)
        current = self._call(self.client.get, self._xkey(entry.namespace, entry.key))
        if current is not None and current.decode() == str(entry.id):
            self._call(self.client.delete, self._xkey(entry.namespace, entry.key))

    def enforce(self, max_entries: int | None, policy: str) -> int:
        """TTL is native; the entry cap is kept with a sorted set of last access times (LRU).

        LFU is approximated by LRU on Redis (Redis' own ``maxmemory-policy allkeys-lfu`` is the
        better tool for memory-bounded LFU). Members of expired entries that the write sweep has
        not reached yet still count towards the cap; popping one is clean-up, not an eviction, so
        the loop pops again until the set is within the cap. Returns the live entries evicted.
        """
        if max_entries is None:
            return 0
        evicted = 0
        while (over := int(self._call(self.client.zcard, self._lru)) - max_entries) > 0:
            victims = self._call(self.client.zpopmin, self._lru, over)
            if not victims:
                break
            for member, _ in victims:
                eid = member.decode()
                ns, key = self._call(self.client.hmget, self._ekey(eid), "ns", "key")
                self._call(self.client.delete, self._ekey(eid))
                if ns is None or key is None:
                    continue  # its entry had expired already
                evicted += 1
                xkey = self._xkey(ns.decode(), key.decode())
                if self._call(self.client.get, xkey) == member:
                    self._call(self.client.delete, xkey)
        return evicted

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "backend": "redis",
            "url": self.url,
            "entries": int(self._call(self.client.zcard, self._lru)),
            "pruned": self.pruned,
        }
        try:
            info = self._call(self.client.execute_command, "FT.INFO", self.index_name)
            pairs = info if isinstance(info, dict) else dict(zip(info[0::2], info[1::2], strict=False))
            out["indexed"] = int(pairs.get(b"num_docs", 0))
        except CacheBackendError:
            out["indexed"] = 0
        out["used_memory"] = int(self._call(self.client.info, "memory").get("used_memory", 0))
        return out

    def clear(self) -> None:
        """Delete this prefix's entries and index (other prefixes on the server are untouched)."""
        try:
            self._call(self.client.execute_command, "FT.DROPINDEX", self.index_name, "DD")
        except CacheBackendError as exc:
            if "unknown index" not in str(exc).lower() and "no such index" not in str(exc).lower():
                raise
        for key in self._call(lambda: list(self.client.scan_iter(match=f"{self.prefix}*", count=1000))):
            self._call(self.client.delete, key)
        self._index_ready = False
        self._sweep_cursor = 0
        self._size_at = float("-inf")

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # closing a dead connection must not raise
            logger.debug("error closing Redis client", exc_info=True)

    def ping(self) -> bool:
        try:
            return bool(self._call(self.client.ping))
        except CacheBackendError:
            return False
