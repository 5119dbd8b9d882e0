"""LangChain integration for tokenlean: callbacks, caches, middleware, runnables and a router model.

Names are resolved lazily: the agent middleware needs the ``langchain`` package (extra ``agents``),
while the callback handler, cache, runnables and chat model need only ``langchain-core``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tokenlean._lazy import lazy_exports

_LAZY: dict[str, str] = {
    # measure
    "TokenleanCallbackHandler": "langchain_tokenlean.callbacks",
    "TrackedTask": "langchain_tokenlean.callbacks",
    "track_task": "langchain_tokenlean.callbacks",
    # compaction
    "TokenleanCompactionEdit": "langchain_tokenlean.compaction",
    "TokenleanCompactionMiddleware": "langchain_tokenlean.compaction",
    "compact_messages": "langchain_tokenlean.compaction",
    "expand_omitted_tool": "langchain_tokenlean.compaction",
    # semantic cache
    "TokenleanCache": "langchain_tokenlean.cache",
    "TokenleanCacheMiddleware": "langchain_tokenlean.cache_middleware",
    # prompt layout
    "TokenleanPromptLayoutMiddleware": "langchain_tokenlean.layout",
    "layout_messages": "langchain_tokenlean.layout",
    "prompt_layout": "langchain_tokenlean.layout",
    # routing
    "ChatTokenleanRouter": "langchain_tokenlean.chat_models",
    "TokenleanRoutingMiddleware": "langchain_tokenlean.routing_middleware",
}

__all__ = [
    "ChatTokenleanRouter",
    "TokenleanCache",
    "TokenleanCacheMiddleware",
    "TokenleanCallbackHandler",
    "TokenleanCompactionEdit",
    "TokenleanCompactionMiddleware",
    "TokenleanPromptLayoutMiddleware",
    "TokenleanRoutingMiddleware",
    "TrackedTask",
    "compact_messages",
    "expand_omitted_tool",
    "layout_messages",
    "prompt_layout",
    "track_task",
]

#: Names of the previous release (a LangChain middleware's name ends in ``Middleware``), kept one
#: release as deprecated aliases that warn once.
_RENAMED: dict[str, tuple[str, str]] = {
    "TokenleanCompaction": ("langchain_tokenlean.compaction", "TokenleanCompactionMiddleware"),
    "TokenleanPromptLayout": ("langchain_tokenlean.layout", "TokenleanPromptLayoutMiddleware"),
    "TokenleanRouting": ("langchain_tokenlean.routing_middleware", "TokenleanRoutingMiddleware"),
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals(), __all__, _RENAMED)

if TYPE_CHECKING:
    from langchain_tokenlean.cache import TokenleanCache
    from langchain_tokenlean.cache_middleware import TokenleanCacheMiddleware
    from langchain_tokenlean.callbacks import TokenleanCallbackHandler, TrackedTask, track_task
    from langchain_tokenlean.chat_models import ChatTokenleanRouter
    from langchain_tokenlean.compaction import (
        TokenleanCompactionEdit,
        TokenleanCompactionMiddleware,
        compact_messages,
        expand_omitted_tool,
    )
    from langchain_tokenlean.layout import TokenleanPromptLayoutMiddleware, layout_messages, prompt_layout
    from langchain_tokenlean.routing_middleware import TokenleanRoutingMiddleware
