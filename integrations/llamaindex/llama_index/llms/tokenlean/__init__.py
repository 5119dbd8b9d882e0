"""tokenlean LLM wrappers for LlamaIndex: a semantic response cache and a cost-aware router."""

from llama_index.llms.tokenlean.cache import TokenleanCachedLLM
from llama_index.llms.tokenlean.router import TokenleanRouterLLM, TokenleanRoutingEvent
from tokenlean._lazy import renamed

__all__ = ["TokenleanCachedLLM", "TokenleanRouterLLM", "TokenleanRoutingEvent"]

#: The previous release's name (LlamaIndex classes carry the ``Tokenlean`` prefix), one release.
__getattr__ = renamed(__name__, {"CachedLLM": "TokenleanCachedLLM"}, globals())
