"""tokenlean memory blocks: chat history compacted verbatim to a token budget."""

from llama_index.memory.tokenlean.block import TokenleanCompactedHistoryBlock

__all__ = ["TokenleanCompactedHistoryBlock"]
