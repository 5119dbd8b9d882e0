"""Verbatim context compaction: drop low-information units, never rewrite a byte.

``Compactor`` is the engine (segmenting, scoring, message-level policies, budgeted selection,
incremental mode); ``Compacted`` is its result with ``verify()``; ``OmissionStore`` keeps what
was dropped so an agent can ``expand_omitted(handle)`` it back.
"""

from tokenlean.compaction.compactor import (
    DEFAULT_MARKER,
    DEFAULT_MASK_MARKER,
    Compacted,
    Compactor,
    Omission,
    OmissionStore,
    compact_text,
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
    "Omission",
    "OmissionStore",
    "ProtectedPatterns",
    "Scorer",
    "Unit",
    "compact_text",
    "detect_kind",
    "segment",
]
