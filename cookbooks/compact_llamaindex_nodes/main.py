"""Compact retrieved nodes in LlamaIndex: the LLM reads only the sentences that bear on the query.

Run: ``python cookbooks/compact_llamaindex_nodes/main.py`` (starts the local llama.cpp server) or
point it at any OpenAI-compatible server with ``TOKENLEAN_BASE_URL`` / ``TOKENLEAN_MODEL``.
"""

from __future__ import annotations

from llama_index.core import Document, VectorStoreIndex
from llama_index.core.node_parser import SentenceSplitter
from llama_index.llms.openai_like import OpenAILike

from llama_index.postprocessor.tokenlean.compaction import (
    TokenleanCompactionPostprocessor,
    TokenleanEmbedding,
)

DOCS = [
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named "
    "after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889. "
    "Locally nicknamed 'La dame de fer', it was constructed as the centrepiece of the 1889 World's Fair. "
    "Although initially criticised by some of France's leading artists, it has become a global icon. "
    "The tower is 330 metres tall, about the same height as an 81-storey building.",
    "The Statue of Liberty is a colossal neoclassical sculpture on Liberty Island in New York Harbor. "
    "The copper statue, a gift from the people of France, was designed by Frédéric Auguste Bartholdi and "
    "its metal framework was built by Gustave Eiffel. The statue was dedicated on October 28, 1886.",
    "Big Ben is the nickname for the Great Bell of the Great Clock of Westminster in London. The tower "
    "was completed in 1859 and the clock is known for its reliability. The tower is 96 metres tall.",
]


def run(base_url: str, model: str) -> None:
    embed_model = TokenleanEmbedding()  # all-MiniLM-L6-v2, shared with every tokenlean lever
    splitter = SentenceSplitter(chunk_size=64, chunk_overlap=16)  # overlapping chunks, as usual
    index = VectorStoreIndex.from_documents(
        [Document(text=d) for d in DOCS], embed_model=embed_model, transformations=[splitter]
    )
    llm = OpenAILike(
        model=model,
        api_base=base_url,
        api_key="local",
        is_chat_model=True,
        max_tokens=32,
        timeout=120,
        max_retries=0,
    )
    compaction = TokenleanCompactionPostprocessor(ratio=0.6)  # drop 60% of the retrieved tokens
    engine = index.as_query_engine(llm=llm, similarity_top_k=4, node_postprocessors=[compaction])
    question = "How tall is the Eiffel Tower and when was it built?"
    response = engine.query(question)
    r = compaction.last_result
    assert r is not None
    r.verify()
    print(f"retrieved context tokens: {r.tokens_before} -> {r.tokens_after} ({r.reduction:.0%} fewer)")
    for n in response.source_nodes:
        print(f"- node {n.node.node_id[:8]} score={n.score:.3f}: {n.node.get_content()!r}")
    print(f"answer: {response.response!r}")


def main() -> None:
    from tokenlean.server import model_endpoint  # $TOKENLEAN_BASE_URL, or a local llama.cpp server

    with model_endpoint() as (base_url, model):
        run(base_url, model)


if __name__ == "__main__":
    main()
