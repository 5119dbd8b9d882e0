"""Cache-aware prompt layout: find what breaks the stable prefix, fix the order, plan markers.

``analyze(requests)`` -> ``LayoutReport`` (breakers with their locations, reusable tokens
before/after); ``reorder(request, layout)`` -> ``Reordered``; ``PromptLayout.fit(stream)``
learns the stream-specific parts; ``plan_cache_markers(request, provider)`` -> ``CachePlan``;
``realised_hit_rate(usages)`` -> ``HitRate``.
"""

from __future__ import annotations

from tokenlean.layout.analysis import analyze
from tokenlean.layout.canonical import canonical_json, canonical_tools
from tokenlean.layout.hits import HitRate, PrefixReuse, read_llamacpp_prefix_reuse, realised_hit_rate
from tokenlean.layout.markers import (
    CacheBreakpoint,
    CachePlan,
    anthropic_min_cacheable_tokens,
    plan_cache_markers,
)
from tokenlean.layout.patterns import BreakerKind, VolatileSpan, find_volatile
from tokenlean.layout.reorder import (
    Move,
    PromptLayout,
    Reordered,
    reorder,
    stable_prefix_tokens,
    verify_layout,
)
from tokenlean.layout.report import Breaker, LayoutReport, RequestLayout

__all__ = [
    "Breaker",
    "BreakerKind",
    "CacheBreakpoint",
    "CachePlan",
    "HitRate",
    "LayoutReport",
    "Move",
    "PrefixReuse",
    "PromptLayout",
    "Reordered",
    "RequestLayout",
    "VolatileSpan",
    "analyze",
    "anthropic_min_cacheable_tokens",
    "canonical_json",
    "canonical_tools",
    "find_volatile",
    "plan_cache_markers",
    "read_llamacpp_prefix_reuse",
    "realised_hit_rate",
    "reorder",
    "stable_prefix_tokens",
    "verify_layout",
]
