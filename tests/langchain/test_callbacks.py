"""TokenleanCallbackHandler / track_task against a real llama.cpp server and real LangChain objects.

The server's own usage numbers are captured independently with an httpx response hook on the
client, so "the ledger equals what the server reported" is checked against the wire, not
against what the handler read.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Any

import httpx
import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_openai")

from langchain_core.caches import InMemoryCache
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool

from langchain_tokenlean.callbacks import TokenleanCallbackHandler, track_task
from tokenlean.metering import Meter, ModelPrice, PriceTable, task_scope
from tokenlean.metering.testing import ServerUsage
from tokenlean.types import Usage


def _chat(local_chat_model: Any, wire: ServerUsage, **kwargs: Any) -> Any:
    """The local chat model with ``wire`` on its HTTP clients (the server's own usage numbers)."""
    return local_chat_model(
        extra_body={"max_tokens": 24},
        http_client=httpx.Client(event_hooks={"response": [wire.hook]}),
        http_async_client=httpx.AsyncClient(event_hooks={"response": [wire.ahook]}),
        **kwargs,
    )


@tool
def get_weather(city: str) -> str:
    """Return the current weather for a city."""
    return f"It is sunny in {city}."


QUESTION = {"messages": [{"role": "user", "content": "What is the weather in Paris? Use the tool."}]}


@pytest.mark.integration
def test_agent_ledger_equals_server_usage(local_llm: Any, local_chat_model: Any) -> None:
    from langchain.agents import create_agent

    wire = ServerUsage()
    agent = create_agent(_chat(local_chat_model, wire), tools=[get_weather])
    meter = Meter()
    handler = TokenleanCallbackHandler(meter)

    agent.invoke(QUESTION, config={"callbacks": [handler]})

    tasks = meter.ledger.tasks()
    assert len(tasks) == 1, tasks  # every model call of the run lands in the root run's task
    (summary,) = tasks.values()
    assert summary.calls == len(wire.usages) >= 1
    assert (summary.input_tokens, summary.output_tokens) == wire.total()
    rec = meter.ledger.records()[0]
    assert rec.model == local_llm.model and rec.endpoint == local_llm.base_url
    assert rec.duration_s is not None and rec.duration_s > 0
    assert rec.cost is None  # the local model has no list price: unpriced, not free


@pytest.mark.integration
def test_track_task_needs_no_callback_argument(local_chat_model: Any) -> None:
    from langchain.agents import create_agent

    wire = ServerUsage()
    agent = create_agent(_chat(local_chat_model, wire), tools=[get_weather])
    meter = Meter()
    explicit = TokenleanCallbackHandler(meter)  # also attached: must not double count
    with track_task("weather-question", meter=meter) as task:
        agent.invoke(QUESTION, config={"callbacks": [explicit]})
    after = len(wire.usages)
    agent.invoke(QUESTION)  # outside the block: not tracked
    s = task.summary()
    assert s.task_id == "weather-question"
    assert s.calls == after and len(meter.ledger) == after
    assert (s.input_tokens, s.output_tokens) == ServerUsage.total(_sliced(wire, after))


def _sliced(wire: ServerUsage, n: int) -> ServerUsage:
    out = ServerUsage()
    out.usages = wire.usages[:n]
    return out


@pytest.mark.integration
async def test_async_runs_keep_their_tasks_apart(local_chat_model: Any) -> None:
    wire = ServerUsage()
    llm = _chat(local_chat_model, wire)
    meter = Meter()

    async def ask(name: str, question: str) -> None:
        with track_task(name, meter=meter):
            await llm.ainvoke(question)

    await asyncio.gather(ask("a", "Name a colour."), ask("b", "Name a fruit."))
    tasks = meter.ledger.tasks()
    assert sorted(tasks) == ["a", "b"] and all(s.calls == 1 for s in tasks.values())
    assert sum(s.input_tokens for s in tasks.values()) == wire.total()[0]
    assert sum(s.output_tokens for s in tasks.values()) == wire.total()[1]


@pytest.mark.integration
def test_streaming_measures_time_to_first_token(
    caplog: pytest.LogCaptureFixture, local_chat_model: Any
) -> None:
    wire = ServerUsage()
    llm = _chat(local_chat_model, wire)
    meter = Meter()
    with caplog.at_level(logging.WARNING, logger="tokenlean.langchain.callbacks"):
        chunks = list(llm.stream("Say hello.", config={"callbacks": [TokenleanCallbackHandler(meter)]}))
    assert chunks
    (rec,) = meter.ledger.records()
    assert rec.ttft_s is not None and rec.duration_s is not None
    assert 0 < rec.ttft_s <= rec.duration_s
    if rec.extra.get("usage_missing"):  # llama.cpp sends no usage chunk when streaming
        assert rec.cost is None and "stream_usage" in caplog.text
    else:
        assert rec.usage.output_tokens > 0


@pytest.mark.integration
def test_langchain_cache_hit_is_recorded_as_free_hit(local_llm: Any, local_chat_model: Any) -> None:
    wire = ServerUsage()
    llm = _chat(local_chat_model, wire, cache=InMemoryCache())
    # The local model priced as self-hosted GPU time, so a hit has something to save.
    prices = PriceTable.default().with_price(local_llm.model, ModelPrice.self_hosted("2.00", tokens_per_s=20))
    meter = Meter(prices=prices)
    handler = TokenleanCallbackHandler(meter)
    with task_scope("cached"):
        llm.invoke("Name a planet.", config={"callbacks": [handler]})
        llm.invoke("Name a planet.", config={"callbacks": [handler]})
    assert len(wire.usages) == 1  # the second answer never reached the server
    first, second = meter.ledger.records("cached")
    assert not first.cache_hit and first.cost is not None and first.cost > 0
    assert second.cache_hit and second.cost == Decimal(0)
    assert second.usage == first.usage  # the replayed usage is visible ...
    s = meter.ledger.task("cached")
    assert s.cost == first.cost and s.cache_hits == 1  # ... but charged once


# -- fault cases: a tiny in-process chat model (no server needed) --------------------------------


class ScriptedChatModel(BaseChatModel):
    """Answers with a fixed message and whatever ``llm_output`` the test wants to inject."""

    usage_metadata: dict[str, Any] | None = None
    llm_output: dict[str, Any] | None = None

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        msg = AIMessage(
            content="ok", usage_metadata=self.usage_metadata, response_metadata={"model_name": "gpt-4o"}
        )
        return ChatResult(generations=[ChatGeneration(message=msg)], llm_output=self.llm_output)


def test_bad_usage_is_logged_and_recorded_unpriced_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    meter = Meter()
    handler = TokenleanCallbackHandler(meter)
    broken = ScriptedChatModel(llm_output={"token_usage": {"prompt_tokens": -5, "completion_tokens": "many"}})
    silent = ScriptedChatModel()
    with caplog.at_level(logging.WARNING, logger="tokenlean.langchain.callbacks"):
        assert broken.invoke("hi", config={"callbacks": [handler]}).content == "ok"
        assert silent.invoke("hi", config={"callbacks": [handler]}).content == "ok"
    bad, missing = meter.ledger.records()
    assert bad.cost is None and "usage_error" in bad.extra and bad.usage == Usage()
    assert missing.cost is None and missing.extra.get("usage_missing")
    assert "unreadable usage" in caplog.text and "no token usage" in caplog.text


def test_llm_output_token_usage_is_the_fallback() -> None:
    meter = Meter()
    model = ScriptedChatModel(llm_output={"token_usage": {"prompt_tokens": 12, "completion_tokens": 3}})
    model.invoke("hi", config={"callbacks": [TokenleanCallbackHandler(meter)]})
    (rec,) = meter.ledger.records()
    assert rec.usage == Usage(12, 3) and rec.model == "gpt-4o"
    assert rec.cost == PriceTable.default().cost("gpt-4o", Usage(12, 3))


def test_parallel_batch_groups_each_root_run_and_loses_nothing() -> None:
    meter = Meter()
    model = ScriptedChatModel(usage_metadata={"input_tokens": 7, "output_tokens": 2, "total_tokens": 9})
    chain = RunnableLambda(lambda q: q) | model
    chain.batch(
        [f"q{i}" for i in range(40)],
        config={"callbacks": [TokenleanCallbackHandler(meter)], "max_concurrency": 8},
    )
    tasks = meter.ledger.tasks()
    assert len(tasks) == 40 and all(s.calls == 1 for s in tasks.values())
    assert meter.ledger.summary().input_tokens == 280
    assert all(name.startswith("RunnableSequence#") for name in tasks)


def test_metadata_names_the_task() -> None:
    meter = Meter()
    model = ScriptedChatModel(usage_metadata={"input_tokens": 1, "output_tokens": 1, "total_tokens": 2})
    model.invoke(
        "hi", config={"callbacks": [TokenleanCallbackHandler(meter)], "metadata": {"tokenlean_task_id": "m"}}
    )
    assert list(meter.ledger.tasks()) == ["m"]
