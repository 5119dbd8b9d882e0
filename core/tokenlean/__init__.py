"""tokenlean: the cheapest, fastest token is the one you never send or generate.

Public names are re-exported lazily: ``import tokenlean`` loads only the light core (types,
errors) and never torch, faiss, redis, langchain or llama_index; a name such as
``tokenlean.SemanticCache`` imports its module on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tokenlean import errors
from tokenlean._lazy import lazy_exports
from tokenlean.errors import TokenleanError
from tokenlean.types import Message, Request, Response, ToolCall, Usage, normalize_usage

__version__ = "0.1.0"

# name -> module that defines it; imported on first attribute access (PEP 562).
_LAZY: dict[str, str] = {
    "TokenCounter": "tokenlean.tokens",
    "count_messages": "tokenlean.tokens",
    "count_tokens": "tokenlean.tokens",
    "get_counter": "tokenlean.tokens",
    "LocalModelServer": "tokenlean.server",
}

__all__ = [
    "LocalModelServer",
    "Message",
    "Request",
    "Response",
    "TokenCounter",
    "TokenleanError",
    "ToolCall",
    "Usage",
    "__version__",
    "count_messages",
    "count_tokens",
    "errors",
    "get_counter",
    "normalize_usage",
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals(), __all__)


if TYPE_CHECKING:
    from tokenlean.server import LocalModelServer
    from tokenlean.tokens import TokenCounter, count_messages, count_tokens, get_counter
