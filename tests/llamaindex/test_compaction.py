"""LlamaIndex adapters: node postprocessor (on copies), memory block, expand tool, and a real query
engine (VectorStoreIndex + our MiniLM embedder + OpenAILike on the local llama.cpp server)."""

from __future__ import annotations

import time

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from llama_index.memory.tokenlean.block import TokenleanCompactedHistoryBlock
from llama_index.postprocessor.tokenlean.compaction import (
    TokenleanCompactionPostprocessor,
    expand_omitted_tool,
)
from tokenlean.compaction import Compactor, SQLiteOmissionStore
from tokenlean.compaction.omissions import HANDLE_PATTERN

PASSAGES = [
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris. It was named after "
    "the engineer Gustave Eiffel, whose company designed and built the tower. Construction was completed "
    "in 1889 as the entrance arch to the World's Fair. It is 330 metres tall.",
    "Bananas are elongated, edible fruits produced by several kinds of large herbaceous flowering plants. "
    "In some countries, bananas used for cooking may be called plantains. The fruit is variable in size, "
    "color and firmness, but is usually elongated and curved.",
    "Tea is an aromatic beverage prepared by pouring hot water over cured leaves of Camellia sinensis. "
    "After plain water, tea is the most widely consumed drink in the world. It originated in southwest China.",
]


def _nodes() -> list[NodeWithScore]:
    nodes = [
        NodeWithScore(node=TextNode(text=t, id_=f"n{i}", metadata={"src": i}), score=1.0 - i / 10)
        for i, t in enumerate(PASSAGES)
    ]
    # an overlapping chunk: the tail of passage 0 again (sliding-window chunking)
    overlap = (
        "Construction was completed in 1889 as the entrance arch to the World's Fair. It is 330 metres tall."
    )
    nodes.append(NodeWithScore(node=TextNode(text=overlap, id_="n0b", metadata={"src": 0}), score=0.5))
    return nodes


def test_postprocessor_compacts_copies_and_keeps_ids() -> None:
    nodes = _nodes()
    pp = TokenleanCompactionPostprocessor(ratio=0.6, mode="lexical")
    out = pp.postprocess_nodes(nodes, query_bundle=QueryBundle("When was the Eiffel Tower completed?"))
    assert out and out[0].node.id_ == "n0" and out[0].score == nodes[0].score
    assert out[0].node.metadata == {"src": 0}
    assert "1889" in out[0].node.get_content()
    assert nodes[0].node.get_content() == PASSAGES[0]  # the retriever's nodes are untouched
    total_in = sum(len(n.node.get_content()) for n in nodes)
    total_out = sum(len(n.node.get_content()) for n in out)
    assert total_out < 0.6 * total_in
    texts = " ".join(n.node.get_content() for n in out)
    assert texts.count("Construction was completed in 1889") == 1  # the overlapping chunk's copy went
    assert pp.last_result is not None and pp.last_result.reduction > 0.3
    pp.last_result.verify()
    # no query: pass-through
    assert pp.postprocess_nodes(nodes) == nodes


def test_keep_is_the_explicit_alternative_to_ratio() -> None:
    from tokenlean.errors import ConfigError

    query = QueryBundle("When was the Eiffel Tower completed?")
    by_ratio = TokenleanCompactionPostprocessor(ratio=0.6, mode="lexical").postprocess_nodes(
        _nodes(), query_bundle=query
    )
    by_keep = TokenleanCompactionPostprocessor(keep=0.4, mode="lexical").postprocess_nodes(
        _nodes(), query_bundle=query
    )
    assert [n.node.get_content() for n in by_keep] == [n.node.get_content() for n in by_ratio]
    with pytest.raises(ConfigError):
        TokenleanCompactionPostprocessor(ratio=0.6, keep=0.4)
    assert TokenleanCompactedHistoryBlock(keep=0.4).compactor is not None
    with pytest.raises(ConfigError):
        TokenleanCompactedHistoryBlock(ratio=0.6, keep=0.4)


def test_expand_tool() -> None:
    pp = TokenleanCompactionPostprocessor(
        ratio=0.7, mode="lexical", marker="[… {tokens} tokens omitted · {handle} …]"
    )
    out = pp.postprocess_nodes(_nodes(), query_bundle=QueryBundle("Eiffel Tower height"))
    text = " ".join(n.node.get_content() for n in out)
    handle = HANDLE_PATTERN.search(text).group()
    tool = expand_omitted_tool(pp.compactor)
    restored = tool.call(handle=handle).content
    assert restored and any(restored.strip() in p for p in PASSAGES)


class _SlowStore(SQLiteOmissionStore):
    def put_many(self, texts):  # type: ignore[no-untyped-def]
        time.sleep(0.5)  # a busy disk
        return super().put_many(texts)


async def test_memory_block_compacts_off_the_event_loop(loop_watch, tmp_path) -> None:
    comp = Compactor(
        ratio=0.6, keep_last_turns=0, keep_last_user=False, min_tokens=16, store=_SlowStore(tmp_path / "om")
    )
    block = TokenleanCompactedHistoryBlock(ratio=0.6, compactor=comp)
    await block.aput([ChatMessage(role=MessageRole.USER, content=p) for p in PASSAGES])
    async with loop_watch(0.4) as blocked:
        got = await block.aget(
            messages=[ChatMessage(role=MessageRole.USER, content="How tall is the Eiffel Tower?")]
        )
    assert sum(len(str(m.content)) for m in got) < sum(len(p) for p in PASSAGES)
    assert len(comp.store) > 0  # the slow store was written to
    assert blocked == []


async def test_memory_block_returns_compacted_history() -> None:
    block = TokenleanCompactedHistoryBlock(ratio=0.6, compactor=None)
    history = [ChatMessage(role=MessageRole.USER, content=p) for p in PASSAGES]
    history.append(ChatMessage(role=MessageRole.ASSISTANT, content="Noted all three passages."))
    await block.aput(history)
    got = await block.aget(
        messages=[ChatMessage(role=MessageRole.USER, content="How tall is the Eiffel Tower?")]
    )
    assert len(got) == len(history)
    joined = " ".join(str(m.content) for m in got)
    assert "330 metres" in joined
    assert sum(len(str(m.content)) for m in got) < sum(len(p) for p in PASSAGES)
    # frozen decisions: the same call gives byte-identical output (prompt-cache friendly)
    again = await block.aget(
        messages=[ChatMessage(role=MessageRole.USER, content="How tall is the Eiffel Tower?")]
    )
    assert [m.content for m in again] == [m.content for m in got]


@pytest.mark.integration
def test_real_query_engine_with_compaction(embedder, local_openai_like) -> None:
    from llama_index.core import Document, VectorStoreIndex

    from llama_index.postprocessor.tokenlean.compaction import TokenleanEmbedding

    embed_model = TokenleanEmbedding(embedder)
    index = VectorStoreIndex.from_documents([Document(text=p) for p in PASSAGES], embed_model=embed_model)
    llm = local_openai_like(timeout=120, max_retries=0)
    pp = TokenleanCompactionPostprocessor(ratio=0.5, mode="embedding", embedder=embedder)
    engine = index.as_query_engine(llm=llm, similarity_top_k=3, node_postprocessors=[pp])
    response = engine.query("When was the Eiffel Tower completed?")
    assert isinstance(response.response, str) and response.response
    assert pp.last_result is not None and pp.last_result.tokens_after < pp.last_result.tokens_before
    assert any("1889" in n.node.get_content() for n in response.source_nodes)
    stored = {n.node_id: n.get_content() for n in index.docstore.docs.values()}
    assert set(stored.values()) == set(PASSAGES)  # the index itself is untouched
