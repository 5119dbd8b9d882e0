"""Verbatim compaction of retrieved nodes for LlamaIndex query engines.

``TokenleanCompactionPostprocessor`` cuts the retrieved context to the query: every node is
segmented into sentences (or lines / code blocks), all units compete for one token budget across
the nodes (an off-topic node can lose everything while the node that answers keeps its
neighbourhood), and sentences repeated by overlapping chunks are kept once. It works on *copies*:
node ids, scores and metadata are untouched, and the retriever's own nodes are never mutated
(LlamaIndex's ``SentenceEmbeddingOptimizer`` rewrites the nodes in place).

``TokenleanEmbedding`` wraps a tokenlean ``Embedder`` (the shared all-MiniLM-L6-v2 by default) as a
LlamaIndex ``BaseEmbedding``, so an index, this postprocessor and the semantic cache embed with one
model and one cache. ``expand_omitted_tool`` exposes ``expand_omitted`` as a ``FunctionTool``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode
from llama_index.core.tools import FunctionTool

from tokenlean.compaction import Compacted, Compactor
from tokenlean.compaction.tools import expand_omitted_function
from tokenlean.errors import TokenleanError

if TYPE_CHECKING:
    from tokenlean.embeddings import Embedder

__all__ = ["TokenleanCompactionPostprocessor", "TokenleanEmbedding", "expand_omitted_tool"]

log = logging.getLogger("tokenlean.llamaindex.compaction")


class TokenleanEmbedding(BaseEmbedding):
    """A tokenlean ``Embedder`` as a LlamaIndex embedding model (one model, one LRU for all levers)."""

    model_name: str = Field(default="all-MiniLM-L6-v2", description="name of the wrapped embedder")
    _embedder: Any = PrivateAttr(default=None)

    def __init__(self, embedder: Embedder | None = None, **kwargs: Any) -> None:
        if embedder is None:
            from tokenlean.embeddings import get_default_embedder

            embedder = get_default_embedder()
        kwargs.setdefault("model_name", getattr(embedder, "name", "tokenlean"))
        kwargs.setdefault("embed_batch_size", 64)
        super().__init__(**kwargs)
        self._embedder = embedder

    @classmethod
    def class_name(cls) -> str:
        return "TokenleanEmbedding"

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._embedder.embed([query])[0].tolist()

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._embedder.embed([text])[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return [row.tolist() for row in self._embedder.embed(list(texts))]


class TokenleanCompactionPostprocessor(BaseNodePostprocessor):
    """Compact retrieved nodes to the query, verbatim, on copies of the nodes.

    ``ratio`` is the share of the nodes' tokens to *remove*; ``keep`` is the share to *keep*
    (LLMLingua's ``rate``), the explicit alternative: give one (``target_tokens``, an absolute
    budget, wins when set). Nodes left with nothing are dropped unless ``keep_empty`` is set.
    Without a query the nodes pass through unchanged.
    """

    ratio: float | None = Field(
        default=0.5, description="share of tokens to remove (0.9 removes nine tenths)"
    )
    keep: float | None = Field(default=None, description="share of tokens to keep, instead of ratio")
    target_tokens: int | None = Field(default=None, description="absolute token budget over all nodes")
    mode: str = Field(default="auto", description="auto | lexical | embedding")
    marker: str | None = Field(default=None, description="omission marker template, None = omit silently")
    keep_empty: bool = Field(default=False, description="keep nodes whose every unit was dropped")
    _compactor: Compactor = PrivateAttr()
    last_result: Compacted | None = None

    def __init__(
        self, *, compactor: Compactor | None = None, embedder: Embedder | None = None, **data: Any
    ) -> None:
        super().__init__(**data)
        self._compactor = compactor or Compactor(
            ratio=self.ratio if self.keep is None or "ratio" in self.model_fields_set else None,
            keep=self.keep,
            target_tokens=self.target_tokens,
            mode=self.mode,  # type: ignore[arg-type]
            embedder=embedder,
            marker=self.marker,
        )

    @classmethod
    def class_name(cls) -> str:
        return "TokenleanCompactionPostprocessor"

    @property
    def compactor(self) -> Compactor:
        return self._compactor

    def _postprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        if not nodes or query_bundle is None or not query_bundle.query_str:
            return nodes
        texts = [n.node.get_content(metadata_mode=MetadataMode.NONE) for n in nodes]
        try:
            result = self._compactor.compact_documents(texts, query=query_bundle.query_str)
        except TokenleanError as exc:
            log.warning("node compaction skipped (%s); passing nodes through", exc)
            return nodes
        self.last_result = result
        out: list[NodeWithScore] = []
        for nws, old, new in zip(nodes, texts, result.messages, strict=True):
            text = new.text
            if text == old:
                out.append(NodeWithScore(node=nws.node.model_copy(), score=nws.score))
                continue
            if not text.strip() and not self.keep_empty:
                continue
            node = nws.node.model_copy(deep=True)
            if isinstance(node, TextNode):
                node.set_content(text)
            else:  # pragma: no cover - non-text nodes have no text to compact
                out.append(nws)
                continue
            node.metadata = {**node.metadata}
            out.append(NodeWithScore(node=node, score=nws.score))
        return out


def expand_omitted_tool(compactor: Compactor, *, name: str = "expand_omitted") -> FunctionTool:
    """A LlamaIndex tool returning the exact text behind an omission marker's handle."""

    return FunctionTool.from_defaults(fn=expand_omitted_function(compactor), name=name)
