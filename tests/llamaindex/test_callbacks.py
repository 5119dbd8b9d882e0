"""TokenleanEventHandler against a real llama.cpp server through LlamaIndex's OpenAILike.

As for LangChain, the server's usage is captured on the wire (httpx response hook) and compared
with what the ledger recorded for the task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.base.llms.types import CompletionResponse, CompletionResponseGen, LLMMetadata
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.instrumentation import root_dispatcher
from llama_index.core.llms import ChatMessage
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM

from llama_index.callbacks.tokenlean.handler import TokenleanEventHandler, instrument, uninstrument
from tokenlean.metering import Meter
from tokenlean.metering.testing import ServerUsage
from tokenlean.types import Usage


@pytest.fixture
def meter() -> Iterator[Meter]:
    meter = Meter()
    handler = instrument(meter)
    yield meter
    uninstrument(handler)


def _llm(local_openai_like: Any, wire: ServerUsage) -> Any:
    """The local LLM with ``wire`` on its HTTP clients (the server's own usage numbers)."""
    return local_openai_like(
        max_tokens=24,
        http_client=httpx.Client(event_hooks={"response": [wire.hook]}),
        async_http_client=httpx.AsyncClient(event_hooks={"response": [wire.ahook]}),
    )


@pytest.mark.integration
def test_chat_engine_ledger_equals_server_usage(local_llm: Any, local_openai_like: Any, meter: Meter) -> None:
    wire = ServerUsage()
    engine = SimpleChatEngine.from_defaults(llm=_llm(local_openai_like, wire))
    with meter.task("chat-session") as task:
        engine.chat("Hello! Who are you?")
        engine.chat("Name one colour.")
    s = task.summary()
    assert s.calls == len(wire.usages) == 2
    assert (s.input_tokens, s.output_tokens) == wire.total()
    assert all(r.model == local_llm.model and r.duration_s for r in task.records())
    assert s.cost is None  # local model: unpriced, not free


@pytest.mark.integration
async def test_async_chat_is_recorded_once_per_call(local_openai_like: Any, meter: Meter) -> None:
    wire = ServerUsage()
    llm = _llm(local_openai_like, wire)

    async def ask(name: str, text: str) -> None:
        with meter.task(name):
            await llm.achat([ChatMessage(role="user", content=text)])

    await asyncio.gather(ask("a", "Name a fruit."), ask("b", "Name a tree."))
    tasks = meter.ledger.tasks()
    assert {k: v.calls for k, v in tasks.items()} == {"a": 1, "b": 1}
    assert (
        sum(v.input_tokens for v in tasks.values()),
        sum(v.output_tokens for v in tasks.values()),
    ) == wire.total()


@pytest.mark.integration
def test_streaming_records_time_to_first_token(local_openai_like: Any, meter: Meter) -> None:
    wire = ServerUsage()
    llm = _llm(local_openai_like, wire)
    with meter.task("stream"):
        text = "".join(r.delta or "" for r in llm.stream_chat([ChatMessage(role="user", content="Say hi.")]))
    assert text
    (rec,) = meter.ledger.records("stream")
    assert rec.ttft_s is not None and rec.duration_s is not None and 0 < rec.ttft_s <= rec.duration_s


def test_instrument_registers_once() -> None:
    meter = Meter()
    first = instrument(meter)
    try:
        assert instrument(meter) is first
        assert sum(h is first for h in root_dispatcher.event_handlers) == 1
    finally:
        uninstrument(first)
    assert first not in root_dispatcher.event_handlers


# -- fault cases and nesting, with a small in-process LLM ----------------------------------------


class ScriptedLLM(CustomLLM):
    """A LlamaIndex CustomLLM whose responses carry whatever ``raw`` the test injects.

    CustomLLM.chat is implemented by calling complete: both emit events, so it also checks that
    one model call is recorded once.
    """

    raw: dict[str, Any] | None = None

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="gpt-4o-mini", is_chat_model=False)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text="ok", raw=self.raw)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        yield CompletionResponse(text="ok", delta="ok", raw=self.raw)


def test_nested_chat_over_complete_counts_one_call(meter: Meter) -> None:
    llm = ScriptedLLM(raw={"model": "gpt-4o-mini", "usage": {"prompt_tokens": 20, "completion_tokens": 4}})
    with meter.task("nested"):
        llm.chat([ChatMessage(role="user", content="hi")])
        llm.complete("hi")
    recs = meter.ledger.records("nested")
    assert [r.usage for r in recs] == [Usage(20, 4), Usage(20, 4)]
    assert all(r.cost is not None and r.cost > 0 for r in recs)


def test_malformed_usage_is_logged_and_unpriced(meter: Meter, caplog: pytest.LogCaptureFixture) -> None:
    llm = ScriptedLLM(raw={"usage": {"prompt_tokens": "lots", "completion_tokens": -1}})
    with caplog.at_level(logging.WARNING, logger="tokenlean.llamaindex.callbacks"), meter.task("bad"):
        assert llm.complete("hi").text == "ok"
        assert ScriptedLLM(raw=None).complete("hi").text == "ok"
    bad, missing = meter.ledger.records("bad")
    assert bad.cost is None and "usage_error" in bad.extra
    assert missing.cost is None and missing.extra.get("usage_missing")
    assert "unreadable usage" in caplog.text and "no token usage" in caplog.text


def test_handler_bug_is_logged_not_swallowed(caplog: pytest.LogCaptureFixture) -> None:
    class Exploding(Meter):
        def record(self, **kwargs: Any) -> Any:
            raise RuntimeError("meter exploded")

    handler = instrument(Exploding())
    try:
        with caplog.at_level(logging.ERROR, logger="tokenlean.llamaindex.callbacks"):
            assert (
                ScriptedLLM(raw={"usage": {"prompt_tokens": 1, "completion_tokens": 1}}).complete("x").text
                == "ok"
            )
    finally:
        uninstrument(handler)
    assert "meter exploded" in caplog.text
    assert isinstance(handler, TokenleanEventHandler)


async def test_cache_hits_are_metered_once_as_hits(meter: Meter, embedder: object) -> None:
    """A TokenleanCachedLLM hit is a call the ledger sees (cache_hit, zero cost, its tokens); a miss
    is recorded once, by the wrapped LLM's own events."""
    from llama_index.llms.tokenlean import TokenleanCachedLLM
    from tokenlean.cache import SemanticCache

    inner = ScriptedLLM(raw={"model": "gpt-4o-mini", "usage": {"prompt_tokens": 20, "completion_tokens": 4}})
    llm = TokenleanCachedLLM(inner, SemanticCache(embedder=embedder, assume_deterministic=True))
    q = [ChatMessage(role="user", content="Say ok.")]
    with meter.task("cached"):
        llm.chat(q)  # miss
        assert llm.chat(q).additional_kwargs["tokenlean_cache"]["hit"]
        assert "".join(r.delta or "" for r in llm.stream_chat(q)) == "ok"
        assert (await llm.achat(q)).message.content == "ok"
        llm.complete("Say ok.")  # miss (another request shape)
        assert llm.complete("Say ok.").text == "ok"
        assert [r.text async for r in await llm.astream_complete("Say ok.")][-1] == "ok"
    recs = meter.ledger.records("cached")
    assert [r.cache_hit for r in recs] == [False, True, True, True, False, True, True]
    misses = [r for r in recs if not r.cache_hit]
    assert [r.usage for r in misses] == [Usage(20, 4), Usage(20, 4)]
    for hit in (r for r in recs if r.cache_hit):
        assert hit.cost == 0 and hit.usage is not None and hit.usage.output_tokens == 1
        assert hit.usage.input_tokens > 0  # the prompt the hit did not send
