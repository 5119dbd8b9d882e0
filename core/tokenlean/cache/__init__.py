"""Semantic response cache: exact tier, guarded semantic tier, embedded (faiss + SQLite) and Redis backends.

Heavy dependencies (faiss, redis, the embedding model) load only when a cache is built or used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tokenlean._lazy import lazy_exports

_LAZY: dict[str, str] = {
    "SemanticCache": "tokenlean.cache.semantic",
    "ErrorBound": "tokenlean.cache.bound",
    "CacheResult": "tokenlean.cache.results",
    "StoreResult": "tokenlean.cache.results",
    "ScopeConfig": "tokenlean.cache.scope",
    "scope_of": "tokenlean.cache.scope",
    "LabelledPair": "tokenlean.cache.scoring",
    "PairScorer": "tokenlean.cache.scoring",
    "CacheEntry": "tokenlean.cache.store",
    "CacheStore": "tokenlean.cache.store",
    "SQLiteStore": "tokenlean.cache.store",
    "VectorIndex": "tokenlean.cache.index",
    "FaissIndex": "tokenlean.cache.index",
    "CacheBackend": "tokenlean.cache.backends",
    "EmbeddedBackend": "tokenlean.cache.backends",
    "RedisBackend": "tokenlean.cache.redis_backend",
    "RedisStackServer": "tokenlean.cache.redis_server",
    "normalize_text": "tokenlean.cache.scope",
}

__all__ = [
    "CacheBackend",
    "CacheEntry",
    "CacheResult",
    "CacheStore",
    "EmbeddedBackend",
    "ErrorBound",
    "FaissIndex",
    "LabelledPair",
    "PairScorer",
    "RedisBackend",
    "RedisStackServer",
    "SQLiteStore",
    "ScopeConfig",
    "SemanticCache",
    "StoreResult",
    "VectorIndex",
    "normalize_text",
    "scope_of",
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals(), __all__)


if TYPE_CHECKING:
    from tokenlean.cache.backends import CacheBackend, EmbeddedBackend
    from tokenlean.cache.bound import ErrorBound
    from tokenlean.cache.index import FaissIndex, VectorIndex
    from tokenlean.cache.redis_backend import RedisBackend
    from tokenlean.cache.redis_server import RedisStackServer
    from tokenlean.cache.results import CacheResult, StoreResult
    from tokenlean.cache.scope import ScopeConfig, normalize_text, scope_of
    from tokenlean.cache.scoring import LabelledPair, PairScorer
    from tokenlean.cache.semantic import SemanticCache
    from tokenlean.cache.store import CacheEntry, CacheStore, SQLiteStore
