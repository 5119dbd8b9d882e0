"""tokenlean node postprocessors: verbatim compaction of retrieved nodes and cache-friendly ordering."""

from llama_index.postprocessor.tokenlean.compaction import (
    TokenleanCompactionPostprocessor,
    TokenleanEmbedding,
    expand_omitted_tool,
)
from llama_index.postprocessor.tokenlean.layout import TokenleanPromptLayoutPostprocessor

__all__ = [
    "TokenleanCompactionPostprocessor",
    "TokenleanEmbedding",
    "TokenleanPromptLayoutPostprocessor",
    "expand_omitted_tool",
]
