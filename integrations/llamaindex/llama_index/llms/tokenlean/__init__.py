"""tokenlean LLM wrappers for LlamaIndex: a semantic response cache and a cost-aware router."""

from llama_index.llms.tokenlean.cache import CachedLLM
from llama_index.llms.tokenlean.router import TokenleanRouterLLM, TokenleanRoutingEvent

__all__ = ["CachedLLM", "TokenleanRouterLLM", "TokenleanRoutingEvent"]
