"""LangChain adapter: langchain-tests' standard cache suites, a real ChatOpenAI on the local
llama.cpp server served from the cache, and the agent middleware serving invoke and stream calls."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.caches import BaseCache
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.outputs import Generation
from langchain_tests.integration_tests import AsyncCacheTestSuite, SyncCacheTestSuite

from langchain_tokenlean.cache import TokenleanCache, request_from_prompt
from langchain_tokenlean.cache_middleware import TokenleanCacheMiddleware
from tokenlean.cache import SemanticCache


# The suites' llm_string ("Sample LLM string configuration.") names no temperature, so the
# cache cannot tell a greedy model from a sampling one; the caller vouches with
# ``assume_deterministic`` (without it nothing is stored: see test_cache_correctness.py).
class TestTokenleanCacheSync(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self, embedder: object) -> BaseCache:
        return TokenleanCache(SemanticCache(embedder=embedder, assume_deterministic=True))


class TestTokenleanCacheAsync(AsyncCacheTestSuite):
    @pytest.fixture
    async def cache(self, embedder: object) -> BaseCache:
        return TokenleanCache(SemanticCache(embedder=embedder, assume_deterministic=True))


def test_chat_prompt_is_parsed_and_scoped(embedder: object) -> None:
    from langchain_core.load import dumps

    system = SystemMessage("You are a support bot for ACME. " * 20)
    prompt_a = dumps([system, HumanMessage("How do I reset my password?")])
    prompt_b = dumps([system, HumanMessage("What are your opening hours?")])
    req = request_from_prompt(prompt_a, "llm-1")
    assert req.last_user is not None and req.last_user.text == "How do I reset my password?"
    cache = TokenleanCache(SemanticCache(embedder=embedder, assume_deterministic=True))
    gen = [Generation(text="Use the link.")]
    cache.update(prompt_a, "llm-1", gen)
    # same long system prompt, different question: embedding the raw dump would call this a hit
    assert cache.lookup(prompt_b, "llm-1") is None
    assert cache.last_result is not None and cache.last_result.rejected_by in ("no_candidate", "threshold")
    para = dumps([system, HumanMessage("How can I reset my password?")])
    assert cache.lookup(para, "llm-1") == gen
    assert cache.lookup(para, "llm-2") is None  # partitioned by llm_string
    cache.update(dumps([HumanMessage("Tell a story")]), "[('temperature', 0.9)]", gen)
    assert cache.lookup(dumps([HumanMessage("Tell a story")]), "[('temperature', 0.9)]") is None


@pytest.mark.integration
def test_real_chat_model_second_call_from_cache(embedder: object, local_chat_model: Any) -> None:
    cache = TokenleanCache(SemanticCache(embedder=embedder))
    # room for the whole answer: a reply cut at max_tokens is never stored
    model = local_chat_model(cache=cache, extra_body={"max_tokens": 64})
    first = model.invoke("What is the capital of France?")
    assert cache.last_result is not None and not cache.last_result.hit
    second = model.invoke("what is the capital of France")
    assert cache.last_result.hit and cache.last_result.tier == "exact"
    assert second.content == first.content
    third = model.invoke("What's the capital city of France?")
    assert cache.last_result.hit or cache.last_result.rejected_by is not None
    assert isinstance(third, AIMessage)


@pytest.mark.integration
async def test_middleware_serves_agent_invoke_and_stream(embedder: object, local_chat_model: Any) -> None:
    from langchain.agents import create_agent

    model = local_chat_model(extra_body={"max_tokens": 64})
    mw = TokenleanCacheMiddleware(SemanticCache(embedder=embedder))
    agent = create_agent(model, tools=[], middleware=[mw], system_prompt="Answer briefly.")
    first = agent.invoke({"messages": [HumanMessage("Name a fruit.")]})
    assert mw.last_result is not None and not mw.last_result.hit
    answer = first["messages"][-1].content
    second = agent.invoke({"messages": [HumanMessage("name a fruit")]})
    assert mw.last_result.hit and second["messages"][-1].content == answer
    assert second["messages"][-1].response_metadata["tokenlean_cache"]["tier"] == "exact"
    streamed = [
        chunk
        async for chunk, _meta in agent.astream(
            {"messages": [HumanMessage("Name a fruit.")]}, stream_mode="messages"
        )
    ]
    assert mw.last_result.hit
    assert "".join(str(c.content) for c in streamed if isinstance(c, AIMessage)) == answer


def test_error_bound_audits_settle_through_the_adapter(embedder: object) -> None:
    """An audited lookup is answered by the model; LangChain's update() settles it by the answer text."""
    from langchain_core.load import dumps

    from tokenlean.cache import ErrorBound

    bound = ErrorBound(0.05, explore=1.0, seed=0)
    for s in range(80):  # certified: every earlier wrong candidate scored <= 0.5
        bound.observe(s / 160, False)
    cache = TokenleanCache(
        SemanticCache(embedder=embedder, assume_deterministic=True, max_false_hit_rate=bound)
    )
    gen = [Generation(text="Use the reset link on the login page.")]
    cache.update(dumps([HumanMessage("How do I reset my password?")]), "llm-1", gen)
    para = dumps([HumanMessage("How can I reset my password?")])
    assert cache.lookup(para, "llm-1") is None  # explore=1: the would-be hit is audited
    assert cache.last_result is not None and cache.last_result.audited
    cache.update(para, "llm-1", [Generation(text="Use the reset link on the login page.")])
    report = bound.report()
    assert report["audits"] == 81 and report["audited_right_candidates"] == 1 and report["model_calls"] == 1
