"""tokenlean: the cheapest, fastest token is the one you never send or generate.

Public names are re-exported lazily: ``import tokenlean`` loads only the light core (types,
errors) and never torch, faiss, redis, langchain or llama_index; a name such as
``tokenlean.SemanticCache`` imports its module on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tokenlean import errors
from tokenlean._lazy import lazy_exports
from tokenlean.errors import TokenleanError
from tokenlean.types import Message, Request, Response, ToolCall, Usage, normalize_usage

__version__ = "0.2.0"

# name -> module that defines it; imported on first attribute access (PEP 562).
_LAZY: dict[str, str] = {
    "TokenCounter": "tokenlean.tokens",
    "count_messages": "tokenlean.tokens",
    "count_tokens": "tokenlean.tokens",
    "get_counter": "tokenlean.tokens",
    "LocalModelServer": "tokenlean.server",
    "Embedder": "tokenlean.embeddings",
    "SentenceTransformerEmbedder": "tokenlean.embeddings",
    "get_default_embedder": "tokenlean.embeddings",
    "StaticEmbedder": "tokenlean.embeddings",
    "get_static_embedder": "tokenlean.embeddings",
    "Meter": "tokenlean.metering",
    "Ledger": "tokenlean.metering",
    "UsageRecord": "tokenlean.metering",
    "PriceTable": "tokenlean.metering",
    "ModelPrice": "tokenlean.metering",
    "TaskSummary": "tokenlean.metering",
    "JsonlSink": "tokenlean.metering",
    "read_jsonl": "tokenlean.metering",
    "to_prometheus": "tokenlean.metering",
    "task_scope": "tokenlean.metering",
    "get_default_meter": "tokenlean.metering",
    "Compactor": "tokenlean.compaction",
    "Compacted": "tokenlean.compaction",
    "ProtectedPatterns": "tokenlean.compaction",
    "Omission": "tokenlean.compaction",
    "OmissionStore": "tokenlean.compaction",
    "compact_text": "tokenlean.compaction",
    "SemanticCache": "tokenlean.cache",
    "CacheResult": "tokenlean.cache",
    "ScopeConfig": "tokenlean.cache",
    "RedisStackServer": "tokenlean.cache",
    "PromptLayout": "tokenlean.layout",
    "LayoutReport": "tokenlean.layout",
    "CachePlan": "tokenlean.layout",
    "HitRate": "tokenlean.layout",
    "plan_cache_markers": "tokenlean.layout",
    "realised_hit_rate": "tokenlean.layout",
    "Router": "tokenlean.routing",
    "Decision": "tokenlean.routing",
    "OpenAICompatibleEndpoint": "tokenlean.routing",
    "VLLMEndpoint": "tokenlean.routing",
    "ReplicaGroup": "tokenlean.routing",
    "RulesPolicy": "tokenlean.routing",
    "SemanticRouter": "tokenlean.routing",
    "LearnedRouter": "tokenlean.routing",
    "Cascade": "tokenlean.routing",
    "Profiler": "tokenlean.profile",
    "ProfileReport": "tokenlean.profile",
    "read_trace": "tokenlean.profile",
    "read_traces": "tokenlean.profile",
    "LeverEstimate": "tokenlean.profile",
}

__all__ = [
    "CachePlan",
    "CacheResult",
    "Cascade",
    "Compacted",
    "Compactor",
    "Decision",
    "Embedder",
    "HitRate",
    "JsonlSink",
    "LayoutReport",
    "LearnedRouter",
    "Ledger",
    "LeverEstimate",
    "LocalModelServer",
    "Message",
    "Meter",
    "ModelPrice",
    "Omission",
    "OmissionStore",
    "OpenAICompatibleEndpoint",
    "PriceTable",
    "ProfileReport",
    "Profiler",
    "PromptLayout",
    "ProtectedPatterns",
    "RedisStackServer",
    "ReplicaGroup",
    "Request",
    "Response",
    "Router",
    "RulesPolicy",
    "ScopeConfig",
    "SemanticCache",
    "SemanticRouter",
    "SentenceTransformerEmbedder",
    "StaticEmbedder",
    "TaskSummary",
    "TokenCounter",
    "TokenleanError",
    "ToolCall",
    "Usage",
    "UsageRecord",
    "VLLMEndpoint",
    "__version__",
    "compact_text",
    "count_messages",
    "count_tokens",
    "errors",
    "get_counter",
    "get_default_embedder",
    "get_default_meter",
    "get_static_embedder",
    "normalize_usage",
    "plan_cache_markers",
    "read_jsonl",
    "read_trace",
    "read_traces",
    "realised_hit_rate",
    "task_scope",
    "to_prometheus",
]


#: Generic names that used to be exported at the top level live under their module now
#: (``tokenlean.profile.Call``, ``tokenlean.layout.Breaker``): at the top level they said nothing
#: about which lever they belong to. They stay one release as deprecated aliases that warn once.
_RENAMED: dict[str, tuple[str, str]] = {
    "Breaker": ("tokenlean.layout", "Breaker"),
    "Call": ("tokenlean.profile", "Call"),
    "Trace": ("tokenlean.profile", "Trace"),
}

_getattr, __dir__ = lazy_exports(__name__, _LAZY, globals(), __all__, _RENAMED)


def __getattr__(name: str) -> Any:
    # ``tokenlean.profile`` is the profiler package (the old top-level ``profile()`` function is
    # that package called, which still works and warns once: see tokenlean/profile/__init__.py).
    if name == "profile":
        return importlib.import_module("tokenlean.profile")
    return _getattr(name)


if TYPE_CHECKING:
    from tokenlean.cache import CacheResult, RedisStackServer, ScopeConfig, SemanticCache
    from tokenlean.compaction import (
        Compacted,
        Compactor,
        Omission,
        OmissionStore,
        ProtectedPatterns,
        compact_text,
    )
    from tokenlean.embeddings import (
        Embedder,
        SentenceTransformerEmbedder,
        StaticEmbedder,
        get_default_embedder,
        get_static_embedder,
    )
    from tokenlean.layout import (
        CachePlan,
        HitRate,
        LayoutReport,
        PromptLayout,
        plan_cache_markers,
        realised_hit_rate,
    )
    from tokenlean.metering import (
        JsonlSink,
        Ledger,
        Meter,
        ModelPrice,
        PriceTable,
        TaskSummary,
        UsageRecord,
        get_default_meter,
        read_jsonl,
        task_scope,
        to_prometheus,
    )
    from tokenlean.profile import (
        LeverEstimate,
        Profiler,
        ProfileReport,
        read_trace,
        read_traces,
    )
    from tokenlean.routing import (
        Cascade,
        Decision,
        LearnedRouter,
        OpenAICompatibleEndpoint,
        ReplicaGroup,
        Router,
        RulesPolicy,
        SemanticRouter,
        VLLMEndpoint,
    )
    from tokenlean.server import LocalModelServer
    from tokenlean.tokens import TokenCounter, count_messages, count_tokens, get_counter
