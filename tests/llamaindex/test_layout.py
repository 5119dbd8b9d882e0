"""LlamaIndex: deterministic context layout, on a real query engine against the local server."""

from __future__ import annotations

import time

import pytest
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode

from llama_index.postprocessor.tokenlean.layout import TokenleanPromptLayoutPostprocessor
from tokenlean.layout import read_llamacpp_prefix_reuse

DOCS = {
    "returns": "Returns are accepted within 30 days for unused items in their original packaging. "
    "Refunds go back to the original payment method within five working days.",
    "shipping": "Standard shipping costs 4.90 EUR and is free above 50 EUR. Express shipping "
    "arrives the next working day when ordered before 14:00.",
    "damage": "For damaged items, customers send a photo; support then offers a replacement or a "
    "refund, whichever the customer prefers.",
}


def _nodes(accessed: str) -> list[TextNode]:
    return [
        TextNode(
            id_=f"{doc}-0",
            text=text,
            metadata={
                "title": doc,
                "last_accessed": accessed,
                "fetch_trace": f"req_{doc}{accessed[-2:]}9f3a",
            },
            start_char_idx=0,
            end_char_idx=len(text),
        )
        for doc, text in DOCS.items()
    ]


def test_same_node_set_renders_the_same_context_whatever_the_retrieval_order() -> None:
    pp = TokenleanPromptLayoutPostprocessor()
    first = [
        NodeWithScore(node=n, score=s)
        for n, s in zip(_nodes("2026-11-23T10:00:01Z"), (0.9, 0.5, 0.7), strict=True)
    ]
    second = [
        NodeWithScore(node=n, score=s)
        for n, s in zip(_nodes("2026-11-23T10:05:42Z"), (0.4, 0.8, 0.6), strict=True)
    ]
    second = [second[2], second[0], second[1]]
    a = pp.postprocess_nodes(first, query_str="q1")
    b = pp.postprocess_nodes(second, query_str="q2")

    def render(ns: list[NodeWithScore]) -> str:
        return "\n\n".join(n.node.get_content(metadata_mode=MetadataMode.LLM) for n in ns)

    assert render(a) == render(b)
    assert (
        "last_accessed" not in render(a) and "fetch_trace" not in render(a) and "title: damage" in render(a)
    )
    assert [n.node.node_id for n in a] == ["damage-0", "returns-0", "shipping-0"]
    assert {n.node.node_id: n.score for n in b} == {"damage-0": 0.6, "returns-0": 0.4, "shipping-0": 0.8}
    # the retriever's own nodes were not mutated
    assert first[0].node.excluded_llm_metadata_keys == [] and "last_accessed" in first[0].node.get_content(
        metadata_mode=MetadataMode.LLM
    )
    assert TokenleanPromptLayoutPostprocessor.class_name() == "TokenleanPromptLayoutPostprocessor"


class _ScoreOrderRetriever(BaseRetriever):
    """Returns the same documents each time, in a different score order per query (as real ones do)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        self.calls += 1
        nodes = _nodes(f"2026-11-23T10:0{self.calls}:00Z")
        k = self.calls % len(nodes)
        rotated = nodes[k:] + nodes[:k]
        return [NodeWithScore(node=n, score=1.0 - 0.1 * i) for i, n in enumerate(rotated)]


@pytest.mark.integration
def test_query_engine_reuses_the_context_prefix_with_the_postprocessor(local_llm) -> None:
    from llama_index.core.query_engine import RetrieverQueryEngine
    from llama_index.llms.openai_like import OpenAILike

    if getattr(local_llm, "log_file", None) is None:
        pytest.skip("the local server was started without a log file")
    llm = OpenAILike(
        model=local_llm.model, api_base=local_llm.base_url, api_key="local", is_chat_model=True,
        max_tokens=8, temperature=0.0,
    )  # fmt: skip
    reused: dict[str, int] = {}
    for name, post in (("baseline", []), ("layout", [TokenleanPromptLayoutPostprocessor()])):
        engine = RetrieverQueryEngine.from_args(_ScoreOrderRetriever(), llm=llm, node_postprocessors=post)
        engine.query("Can I return shoes I wore once?")
        _, offset = read_llamacpp_prefix_reuse(local_llm.log_file)
        engine.query("How much is shipping?")
        for _ in range(50):
            calls, _ = read_llamacpp_prefix_reuse(local_llm.log_file, offset=offset)
            if calls:
                break
            time.sleep(0.1)
        assert len(calls) == 1
        reused[name] = calls[0].reused_tokens
    # baseline: the context starts with another document each time; with the layout it is identical
    assert reused["layout"] > reused["baseline"] + 60, reused
