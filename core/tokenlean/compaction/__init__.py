"""Verbatim context compaction: drop low-information units, never rewrite a byte.

``Compactor`` is the engine: it runs a pipeline of steps (``steps.py``: ``KeepSystem``,
``KeepLastTurns``, ``Dedupe``, ``MaskObservations``, ``SelectUnits``, ... or your own; the keyword
options build ``default_steps``) in plain or incremental mode; ``compact_text`` is the one-line
entry. ``Compacted`` is its result with ``verify()``; an ``OmissionStore`` (durable SQLite by
default, Redis, or in-memory) keeps what was dropped so an agent can ``expand_omitted(handle)``
it back, in this process or a later one.
"""

from tokenlean.compaction.compacted import DEFAULT_MARKER, DEFAULT_MASK_MARKER, Compacted, Omission
from tokenlean.compaction.compactor import Compactor, compact_text
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
from tokenlean.compaction.state import State, Step
from tokenlean.compaction.steps import (
    Dedupe,
    ExcludeTools,
    KeepLastTurns,
    KeepLastUser,
    KeepShort,
    KeepSystem,
    MaskObservations,
    SelectUnits,
    default_steps,
)

__all__ = [
    "BM25",
    "DEFAULT_MARKER",
    "DEFAULT_MASK_MARKER",
    "DEFAULT_PATTERNS",
    "Compacted",
    "Compactor",
    "Dedupe",
    "ExcludeTools",
    "KeepLastTurns",
    "KeepLastUser",
    "KeepShort",
    "KeepSystem",
    "MaskObservations",
    "MemoryOmissionStore",
    "Omission",
    "OmissionStore",
    "ProtectedPatterns",
    "RedisOmissionStore",
    "SQLiteOmissionStore",
    "Scorer",
    "SelectUnits",
    "State",
    "Step",
    "Unit",
    "compact_text",
    "default_omission_path",
    "default_steps",
    "detect_kind",
    "segment",
]
