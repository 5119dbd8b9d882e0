"""Cache-friendly layout of retrieved context for LlamaIndex query and chat engines.

Why a node postprocessor (and not an LLM wrapper): in a LlamaIndex RAG prompt the big, variable
part is the context string, and its bytes are decided by two things a postprocessor controls —
the order of the retrieved nodes and the metadata rendered with each node. The same documents
retrieved for two related questions usually come back in a different score order, and readers
attach values such as access times to nodes; either makes the context differ byte for byte, so
the provider's prompt cache (or llama.cpp's / vLLM's prefix cache) misses on text it has just
seen. A postprocessor runs in every query engine, chat engine and retriever pipeline, after
retrieval and before synthesis, which is exactly where LlamaIndex users customise context; an
LLM wrapper would only see the finished prompt string and could not reorder documents without
re-parsing it.

``TokenleanPromptLayoutPostprocessor`` therefore

* puts the nodes in source order (document id, then position in the document, then node id),
  so that the same set of nodes always renders the same context; the relevance ranking is not
  lost (scores stay on the nodes) but it no longer decides the bytes;
* hides per-retrieval metadata (clock values, ids, access times) from the LLM view, on copies of
  the nodes (``excluded_llm_metadata_keys``), leaving the retriever's own nodes untouched.

Use it last in ``node_postprocessors``, after postprocessors that filter or cut nodes.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Literal

from llama_index.core.bridge.pydantic import Field
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle

from tokenlean.layout import BreakerKind, find_volatile

__all__ = ["TokenleanPromptLayoutPostprocessor"]

log = logging.getLogger("tokenlean.llamaindex.layout")

# Metadata keys that name a per-retrieval value whatever it looks like.
_VOLATILE_KEYS = re.compile(r"(?i)(accessed|retrieved|fetched|timestamp|request_?id|trace|session|nonce)")
_PER_REQUEST = frozenset({BreakerKind.TIMESTAMP, BreakerKind.UUID, BreakerKind.REQUEST_ID})


def _volatile_metadata_keys(metadata: dict[str, Any]) -> list[str]:
    keys = []
    for key, value in metadata.items():
        if _VOLATILE_KEYS.search(str(key)) or any(v.kind in _PER_REQUEST for v in find_volatile(str(value))):
            keys.append(key)
    return keys


class TokenleanPromptLayoutPostprocessor(BaseNodePostprocessor):
    """Order retrieved nodes deterministically and hide per-retrieval metadata from the LLM.

    ``order``: ``"source"`` (document, then position in it) or ``"id"`` (node id only).
    ``hide_volatile_metadata``: exclude metadata whose key or value is per-retrieval from the
    LLM's view of each node (on copies). ``extra_hidden_keys``: more keys to hide.
    """

    order: Literal["source", "id"] = Field(default="source", description="deterministic node order")
    hide_volatile_metadata: bool = Field(default=True, description="hide clock/id metadata from the LLM")
    extra_hidden_keys: list[str] = Field(default_factory=list, description="metadata keys always hidden")

    @classmethod
    def class_name(cls) -> str:
        return "TokenleanPromptLayoutPostprocessor"

    def _key(self, n: NodeWithScore) -> tuple[str, int, str]:
        node = n.node
        if self.order == "id":
            return ("", 0, node.node_id)
        start = getattr(node, "start_char_idx", None)
        return (str(node.ref_doc_id or ""), start if isinstance(start, int) else -1, node.node_id)

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        out: list[NodeWithScore] = []
        for n in sorted(nodes, key=self._key):
            hide = list(self.extra_hidden_keys)
            if self.hide_volatile_metadata:
                hide += _volatile_metadata_keys(dict(n.node.metadata))
            already = set(n.node.excluded_llm_metadata_keys)
            new = [k for k in dict.fromkeys(hide) if k in n.node.metadata and k not in already]
            if new:
                node = n.node.model_copy(
                    update={"excluded_llm_metadata_keys": [*n.node.excluded_llm_metadata_keys, *new]}
                )
                n = NodeWithScore(node=node, score=n.score)
            out.append(n)
        return out
