"""LlamaIndex ``TokenleanCachedLLM`` around a real OpenAILike LLM on the local llama.cpp server."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core.llms import ChatMessage

from llama_index.llms.tokenlean.cache import TokenleanCachedLLM
from tokenlean.cache import SemanticCache

pytestmark = pytest.mark.integration


@pytest.fixture
def llm(local_openai_like: Any, embedder: object) -> TokenleanCachedLLM:
    # room for whole answers: a reply cut at max_tokens is never stored
    inner = local_openai_like(timeout=120, max_retries=0, max_tokens=64)
    return TokenleanCachedLLM(inner, SemanticCache(embedder=embedder))


def test_chat_and_stream_chat_served_from_cache(llm: TokenleanCachedLLM) -> None:
    msgs = [
        ChatMessage(role="system", content="Answer briefly."),
        ChatMessage(role="user", content="Name a fruit."),
    ]
    first = llm.chat(msgs)
    assert first.additional_kwargs["tokenlean_cache"]["hit"] is False
    second = llm.chat([msgs[0], ChatMessage(role="user", content="name a fruit")])
    assert second.additional_kwargs["tokenlean_cache"]["hit"] is True
    assert second.message.content == first.message.content
    other_system = llm.chat([ChatMessage(role="system", content="Be verbose."), msgs[1]])
    assert other_system.additional_kwargs["tokenlean_cache"]["hit"] is False
    # streaming: a miss streams from the model and is stored with its chunks; a hit replays them
    q = [ChatMessage(role="user", content="Name a color.")]
    live = list(llm.stream_chat(q))
    replay = list(llm.stream_chat(q))
    assert llm.last_result is not None and llm.last_result.hit
    assert [r.delta for r in replay] == [r.delta for r in live]
    assert replay[-1].message.content == "".join(r.delta or "" for r in live)


def test_complete_and_stream_complete(llm: TokenleanCachedLLM) -> None:
    first = llm.complete("Complete the sentence: The capital of France is")
    second = llm.complete("Complete the sentence: The capital of France is")
    assert second.additional_kwargs["tokenlean_cache"]["tier"] == "exact" and second.text == first.text
    streamed = "".join(
        r.delta or "" for r in llm.stream_complete("Complete the sentence: The capital of France is")
    )
    assert streamed == first.text


async def test_async_chat_and_stream(llm: TokenleanCachedLLM) -> None:
    q = [ChatMessage(role="user", content="Name an animal.")]
    first = await llm.achat(q)
    second = await llm.achat(q)
    assert (
        second.additional_kwargs["tokenlean_cache"]["hit"] and second.message.content == first.message.content
    )
    chunks = [r.delta async for r in await llm.astream_chat(q)]
    assert "".join(c or "" for c in chunks) == first.message.content
    done = await llm.acomplete("One plus one is")
    again = [r async for r in await llm.astream_complete("One plus one is")]
    assert again[-1].text == done.text
