"""Verbatim context compaction: drop low-information units, never rewrite a byte.

``Compactor`` is the engine (segmenting, scoring, message-level policies, budgeted selection,
incremental mode); ``Compacted`` is its result with ``verify()``; an ``OmissionStore`` (durable
SQLite by default, Redis, or in-memory) keeps what was dropped so an agent can
``expand_omitted(handle)`` it back, in this process or a later one.
"""

from tokenlean.compaction.compactor import (
    DEFAULT_MARKER,
    DEFAULT_MASK_MARKER,
    Compacted,
    Compactor,
    Omission,
    compact_text,
)
from tokenlean.compaction.omissions import (
    MemoryOmissionStore,
    OmissionStore,
    RedisOmissionStore,
    SQLiteOmissionStore,
    default_omission_path,
)
from tokenlean.compaction.protect import DEFAULT_PATTERNS, ProtectedPatterns
from tokenlean.compaction.scoring import BM25, Scorer
from tokenlean.compaction.segment import Unit, detect_kind, segment

__all__ = [
    "BM25",
    "DEFAULT_MARKER",
    "DEFAULT_MASK_MARKER",
    "DEFAULT_PATTERNS",
    "Compacted",
    "Compactor",
    "MemoryOmissionStore",
    "Omission",
    "OmissionStore",
    "ProtectedPatterns",
    "RedisOmissionStore",
    "SQLiteOmissionStore",
    "Scorer",
    "Unit",
    "compact_text",
    "default_omission_path",
    "detect_kind",
    "segment",
]
