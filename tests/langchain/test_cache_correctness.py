"""Issue 13 (LangChain): the cache never serves an answer that belongs to a different request.

Each test reproduces a report against the public API with real LangChain objects: ``create_agent``
with ``ChatOpenAI`` on the session's llama.cpp server where the point is real generation
parameters, LangChain's own fake chat model where the point is the key.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.caches import BaseCache
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration

from langchain_tokenlean import TokenleanCacheMiddleware
from langchain_tokenlean.cache import TokenleanCache, parse_llm_string
from tokenlean.cache import SemanticCache

pytest.importorskip("langchain.agents")
from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware, ModelRequest, dynamic_prompt

Q = "Name the largest planet of the solar system."


def _ask(agent: Any, text: str = Q, **kw: Any) -> AIMessage:
    out = agent.invoke({"messages": [HumanMessage(text)]}, **kw)
    msg = out["messages"][-1]
    assert isinstance(msg, AIMessage)
    return msg


def _served(msg: AIMessage) -> bool:
    return bool(msg.response_metadata.get("tokenlean_cache", {}).get("hit"))


# -- 2. the key holds the model's identity and every output-changing setting ----------------------
@pytest.mark.integration
def test_middleware_keys_on_max_tokens_stop_and_endpoint(local_llm_pair: Any, local_chat_model: Any) -> None:
    one, two = local_llm_pair
    cache = SemanticCache(semantic=False)
    system = "Answer with one word."

    def agent(**model_options: Any) -> Any:
        model = local_chat_model(**model_options)
        return create_agent(
            model, tools=[], middleware=[TokenleanCacheMiddleware(cache)], system_prompt=system
        )

    short = agent(extra_body={"max_tokens": 5})
    cut = _ask(short, "Write a long story about the planet Jupiter.")
    assert cut.response_metadata.get("finish_reason") == "length"
    full_agent = agent(extra_body={"max_tokens": 256})
    full = _ask(full_agent, "Write a long story about the planet Jupiter.")
    assert not _served(full), "a 256-token agent must not get the 5-token agent's truncated answer"
    assert len(str(full.content)) > len(str(cut.content))

    plain = agent(extra_body={"max_tokens": 64})
    first = _ask(plain)
    assert first.response_metadata.get("finish_reason") == "stop" and not _served(first)
    assert _served(_ask(plain)), "the same agent's repeat is served"
    assert not _served(_ask(agent(extra_body={"max_tokens": 64}, stop=["."]))), "stop words change answers"
    assert not _served(_ask(agent(extra_body={"max_tokens": 64}, base_url=two.base_url))), "server 2"
    assert not _served(_ask(agent(extra_body={"max_tokens": 64}, model=one.model + "-other"))), "model"


@pytest.mark.integration
def test_set_llm_cache_keys_on_max_tokens_stop_and_endpoint(
    local_llm_pair: Any, local_chat_model: Any
) -> None:
    _, two = local_llm_pair
    lc_cache = TokenleanCache(SemanticCache(semantic=False))
    cut_model = local_chat_model(cache=lc_cache, extra_body={"max_tokens": 5})
    cut = cut_model.invoke("Write a long story about the planet Jupiter.")
    assert cut.response_metadata.get("finish_reason") == "length"
    assert lc_cache.cache.stats()["stores"] == 0, "a truncated answer is never stored"
    full = local_chat_model(cache=lc_cache, extra_body={"max_tokens": 256}).invoke(
        "Write a long story about the planet Jupiter."
    )
    assert not lc_cache.last_result.hit and len(str(full.content)) > len(str(cut.content))

    model = local_chat_model(cache=lc_cache, extra_body={"max_tokens": 64})
    model.invoke(Q)
    model.invoke(Q)
    assert lc_cache.last_result is not None and lc_cache.last_result.hit
    local_chat_model(cache=lc_cache, extra_body={"max_tokens": 64}, stop=["."]).invoke(Q)
    assert not lc_cache.last_result.hit
    local_chat_model(cache=lc_cache, extra_body={"max_tokens": 64}, base_url=two.base_url).invoke(Q)
    assert not lc_cache.last_result.hit
    model.invoke(Q, max_tokens=3)  # a call-time argument is part of the key too
    assert not lc_cache.last_result.hit


def test_unkeyable_settings_mean_no_caching(caplog: pytest.LogCaptureFixture) -> None:
    """A setting LangChain could only ``repr`` is not understood: the call is not cached, logged once."""
    odd = (
        '{"lc": 1, "type": "constructor", "id": ["x", "Chat"], "kwargs": {"model": "m", "temperature": 0, '
        '"sampler": {"lc": 1, "type": "not_implemented", "id": ["x", "Sampler"], "repr": "<Sampler>"}}}'
        "---[('stop', None)]"
    )
    info = parse_llm_string(odd)
    assert info.unknown == ("sampler",) and info.model == "m" and info.temperature == 0
    cache = TokenleanCache(SemanticCache(semantic=False))
    gen = [ChatGeneration(message=AIMessage("hi", response_metadata={"finish_reason": "stop"}))]
    with caplog.at_level("WARNING", logger="tokenlean.langchain.cache"):
        cache.update("prompt", odd, gen)
        cache.update("prompt", odd, gen)
        assert cache.lookup("prompt", odd) is None
    assert cache.cache.stats()["stores"] == 0
    assert sum("cannot key on" in r.getMessage() for r in caplog.records) == 1
    # an opaque label is keyed exactly as given; its model is declared deterministic by the user
    labelled = TokenleanCache(SemanticCache(semantic=False, assume_deterministic=True))
    labelled.update("prompt", "my-llm-v1", gen)
    assert labelled.lookup("prompt", "my-llm-v1") is not None
    assert labelled.lookup("prompt", "my-llm-v2") is None


# -- 3. never store what must not be replayed ------------------------------------------------------
class _CutFirst(FakeListChatModel):
    """LangChain's fake chat model whose first answer reports ``reason``, as a provider would."""

    reason: str = "length"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
        result = super()._generate(messages, stop, run_manager, **kwargs)
        finish = self.reason if self.i == 1 else "stop"
        for g in result.generations:
            g.message.response_metadata = {**g.message.response_metadata, "finish_reason": finish}
        return result


@pytest.mark.parametrize("reason", ["length", "content_filter", "max_tokens", "error"])
def test_truncated_filtered_and_errored_answers_are_not_stored(reason: str) -> None:
    mw = TokenleanCacheMiddleware(SemanticCache(semantic=False, assume_deterministic=True))
    agent = create_agent(
        _CutFirst(responses=["partial", "whole", "never"], reason=reason), tools=[], middleware=[mw]
    )
    assert str(_ask(agent).content) == "partial"
    second = _ask(agent)
    assert str(second.content) == "whole" and not _served(second)  # the cut answer was never served
    third = _ask(agent)
    assert str(third.content) == "whole" and _served(third)  # the complete one is
    lc_cache = TokenleanCache(SemanticCache(semantic=False, assume_deterministic=True))
    llm = _CutFirst(responses=["partial", "whole"], reason=reason, cache=lc_cache)
    assert str(llm.invoke(Q).content) == "partial"
    assert str(llm.invoke(Q).content) == "whole" and not lc_cache.last_result.hit


# -- 4. sampling is explicit -------------------------------------------------------------------------
@pytest.mark.integration
def test_unset_temperature_is_not_cached_unless_declared(local_chat_model: Any) -> None:
    shared = SemanticCache(semantic=False)
    for options in ({"temperature": None}, {"temperature": 1.0}):
        agent = create_agent(
            local_chat_model(extra_body={"max_tokens": 64}, **options),
            tools=[],
            middleware=[TokenleanCacheMiddleware(shared)],
        )
        _ask(agent)
        assert not _served(_ask(agent)), f"sampled ({options}) must not be replayed"
    assert shared.stats()["stores"] == 0
    declared = TokenleanCacheMiddleware(SemanticCache(semantic=False, assume_deterministic=True))
    agent = create_agent(
        local_chat_model(extra_body={"max_tokens": 256}, temperature=None), tools=[], middleware=[declared]
    )
    # the server samples, so an answer may still run into max_tokens (never stored): a few tries
    replies = [_ask(agent) for _ in range(3)]
    assert any(_served(r) for r in replies[1:])
    assert all(_served(r) for r in replies[replies.index(next(r for r in replies if _served(r))) :])


# -- 5. middleware order does not change correctness ----------------------------------------------
@pytest.mark.parametrize("cache_first", [True, False])
def test_order_with_a_dynamic_prompt_persona(cache_first: bool) -> None:
    language = {"value": "French"}

    @dynamic_prompt
    def persona(request: ModelRequest) -> str:
        return f"Answer in {language['value']}."

    model = FakeListChatModel(responses=["Bonjour !", "Hello!", "Hola"])
    mw = TokenleanCacheMiddleware(SemanticCache(semantic=False, assume_deterministic=True))
    agent = create_agent(model, tools=[], middleware=[mw, persona] if cache_first else [persona, mw])
    assert str(_ask(agent, "Greet me.").content) == "Bonjour !"
    language["value"] = "English"
    english = _ask(agent, "Greet me.")
    assert str(english.content) == "Hello!" and not _served(english)
    language["value"] = "French"
    again = _ask(agent, "Greet me.")
    assert str(again.content) == "Bonjour !" and _served(again)


def test_cache_middleware_bypassed_when_a_later_middleware_swaps_the_model() -> None:
    other = FakeListChatModel(responses=["from the other model", "again the other model"])

    class Swap(AgentMiddleware):  # type: ignore[type-arg]
        def wrap_model_call(self, request: ModelRequest, handler: Any) -> Any:
            return handler(request.override(model=other))

    mw = TokenleanCacheMiddleware(SemanticCache(semantic=False, assume_deterministic=True))
    agent = create_agent(FakeListChatModel(responses=["a", "b"]), tools=[], middleware=[mw, Swap()])
    assert str(_ask(agent).content) == "from the other model"
    assert str(_ask(agent).content) == "again the other model"  # no answer of another model served


@pytest.mark.integration
@pytest.mark.parametrize(
    ("line", "repeat_hits"), [("Today is 2026-12-05.", True), ("Current time: 10:42:13", False)]
)
def test_layout_clock_line_and_cache(
    embedder: object, local_chat_model: Any, line: str, repeat_hits: bool
) -> None:
    """README order: layout moves the clock/date line into the new turn; the cache matches it exactly.

    A date line lets a repeated question hit all day; a per-second clock (here: changed between the
    calls) makes every request distinct, and no guard is asked to judge it.
    """
    from langchain_tokenlean import TokenleanCompactionMiddleware, TokenleanPromptLayoutMiddleware

    state = {"line": line}

    @dynamic_prompt
    def system(request: ModelRequest) -> str:
        return f"You are a terse assistant.\n{state['line']}"

    mw = TokenleanCacheMiddleware(SemanticCache(embedder=embedder))
    agent = create_agent(
        local_chat_model(extra_body={"max_tokens": 64}),
        tools=[],
        middleware=[system, TokenleanPromptLayoutMiddleware(), TokenleanCompactionMiddleware(ratio=0.5), mw],
    )
    _ask(agent, "What is the capital of France?")
    if not repeat_hits:
        state["line"] = "Current time: 10:42:14"
    second = _ask(agent, "What is the capital of France?")
    assert _served(second) is repeat_hits
    result = mw.last_result
    assert result is not None
    if not repeat_hits:
        assert result.rejected_by == "no_candidate"  # another namespace, not a guard veto
        assert result.query == "What is the capital of France?"


def test_base_cache_interface_is_unchanged() -> None:
    assert issubclass(TokenleanCache, BaseCache)
