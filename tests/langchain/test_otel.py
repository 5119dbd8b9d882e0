"""OpenTelemetry export through the LangChain handler, against the real llama.cpp server.

The spans are read from the SDK's in-memory exporter of a private ``TracerProvider``; the server's
own usage numbers come off the wire (``ServerUsage``), so "span = ledger = server" is checked
against what the server sent. With OpenInference's LangChain instrumentation on as well, there
must still be one LLM span per model call (OpenInference's), carrying tokenlean's fields.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_openai")
pytest.importorskip("opentelemetry.sdk")

from langchain_core.tools import tool
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer

from langchain_tokenlean.callbacks import TokenleanCallbackHandler, track_task
from tokenlean.metering import Meter, ModelPrice, PriceTable
from tokenlean.metering.testing import InMemoryOtel, ServerUsage


@dataclass
class Traced:
    meter: Meter
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader
    tp: TracerProvider

    @property
    def tracer(self) -> Tracer:
        return self.tp.get_tracer("tests.app")

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def tokenlean_spans(self) -> list[ReadableSpan]:
        return [s for s in self.finished() if (s.attributes or {}).get("tokenlean.source") == "tokenlean"]


@pytest.fixture
def traced(local_llm: Any) -> Iterator[Traced]:
    # The local model priced as self-hosted GPU time, so its calls have a cost to export.
    prices = PriceTable.default().with_price(local_llm.model, ModelPrice.self_hosted("2.00", tokens_per_s=20))
    meter = Meter(prices=prices)
    # Private providers first: the handler's ``otel=True`` then finds this exporter (idempotent)
    # instead of configuring the global providers.
    otel = InMemoryOtel(meter)
    try:
        yield Traced(meter, otel.spans, otel.reader, otel.tracer_provider)
    finally:
        otel.close()


def _chat(local_chat_model: Any, wire: ServerUsage, **kwargs: Any) -> Any:
    return local_chat_model(
        extra_body={"max_tokens": 12},
        http_client=httpx.Client(event_hooks={"response": [wire.hook]}),
        http_async_client=httpx.AsyncClient(event_hooks={"response": [wire.ahook]}),
        **kwargs,
    )


def _llm_spans(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    """Spans that claim to be an LLM call, by either convention."""
    return [
        s
        for s in spans
        if (s.attributes or {}).get("openinference.span.kind") == "LLM"
        or "gen_ai.operation.name" in (s.attributes or {})
    ]


@pytest.mark.integration
def test_span_tokens_equal_ledger_and_server(local_llm: Any, local_chat_model: Any, traced: Traced) -> None:
    wire = ServerUsage()
    llm = _chat(local_chat_model, wire)
    handler = TokenleanCallbackHandler(traced.meter, otel=True)
    with traced.tracer.start_as_current_span("user-question") as parent:
        msg = llm.invoke("Name a colour.", config={"callbacks": [handler]})
    (server,) = wire.usages
    (rec,) = traced.meter.ledger.records()
    (span,) = traced.tokenlean_spans()
    a = span.attributes or {}
    # span = ledger = what the server sent (and what LangChain read from it)
    assert a["gen_ai.usage.input_tokens"] == rec.usage.input_tokens == server["prompt_tokens"]
    assert a["gen_ai.usage.output_tokens"] == rec.usage.output_tokens == server["completion_tokens"]
    assert msg.usage_metadata is not None
    assert (msg.usage_metadata["input_tokens"], msg.usage_metadata["output_tokens"]) == (
        server["prompt_tokens"],
        server["completion_tokens"],
    )
    assert a["tokenlean.record.id"] == rec.id
    # priced: the span's cost is the ledger's, exactly
    assert rec.cost is not None and rec.cost > 0 and a["tokenlean.cost"] == float(rec.cost)
    # the GenAI fields of the request
    assert span.name == f"chat {rec.model}" and a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == local_llm.model and a["gen_ai.response.model"] == rec.model
    assert a["gen_ai.provider.name"] == llm._get_ls_params()["ls_provider"]
    url = urlsplit(local_llm.base_url)
    assert (a["server.address"], a["server.port"]) == (url.hostname, url.port)
    # nested under the application's span, lasting as long as the call
    assert span.parent is not None and span.parent.span_id == parent.get_span_context().span_id
    assert span.start_time is not None and span.end_time is not None
    assert abs(span.start_time - rec.started_at * 1e9) < 1_000
    assert rec.ended_at is not None and abs(span.end_time - rec.ended_at * 1e9) < 1_000
    # metric points agree with the ledger
    data = traced.reader.get_metrics_data()
    assert data is not None
    points = [
        p
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "gen_ai.client.token.usage"
        for p in m.data.data_points
    ]
    by_type = {(p.attributes or {})["gen_ai.token.type"]: getattr(p, "sum", None) for p in points}
    assert by_type == {"input": server["prompt_tokens"], "output": server["completion_tokens"]}


@tool
def get_weather(city: str) -> str:
    """Return the current weather for a city."""
    return f"It is sunny in {city}."


QUESTION = {"messages": [{"role": "user", "content": "What is the weather in Paris? Use the tool."}]}


@pytest.mark.integration
def test_agent_run_one_span_per_model_call(local_chat_model: Any, traced: Traced) -> None:
    from langchain.agents import create_agent

    wire = ServerUsage()
    agent = create_agent(_chat(local_chat_model, wire), tools=[get_weather])
    with (
        traced.tracer.start_as_current_span("agent-run") as parent,
        track_task("weather", meter=traced.meter, otel=True) as task,
    ):
        agent.invoke(QUESTION)  # type: ignore[call-overload]
    records = task.records()
    spans = traced.tokenlean_spans()
    assert len(spans) == len(records) == len(wire.usages) >= 1
    by_id = {r.id: r for r in records}
    assert {s.attributes["tokenlean.record.id"] for s in spans if s.attributes} == set(by_id)
    for span in spans:
        a = span.attributes or {}
        rec = by_id[str(a["tokenlean.record.id"])]
        assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (
            rec.usage.input_tokens,
            rec.usage.output_tokens,
        )
        assert a["tokenlean.task.id"] == "weather" and a["tokenlean.cost"] == float(rec.cost or 0)
        assert span.parent is not None and span.parent.span_id == parent.get_span_context().span_id
    tokens: list[tuple[int, int]] = [
        (cast(int, a["gen_ai.usage.input_tokens"]), cast(int, a["gen_ai.usage.output_tokens"]))
        for a in (s.attributes or {} for s in spans)
    ]
    assert (sum(t[0] for t in tokens), sum(t[1] for t in tokens)) == wire.total()


@pytest.mark.integration
def test_streamed_call_exports_time_to_first_chunk(local_chat_model: Any, traced: Traced) -> None:
    wire = ServerUsage()
    llm = _chat(local_chat_model, wire, stream_usage=True)
    handler = TokenleanCallbackHandler(traced.meter, otel=True)
    chunks = list(llm.stream("Say hello.", config={"callbacks": [handler]}))
    assert chunks
    (rec,) = traced.meter.ledger.records()
    (span,) = traced.tokenlean_spans()
    a = span.attributes or {}
    assert rec.ttft_s is not None and rec.duration_s is not None and 0 < rec.ttft_s <= rec.duration_s
    assert a["gen_ai.response.time_to_first_chunk"] == rec.ttft_s
    assert a["gen_ai.usage.input_tokens"] == rec.usage.input_tokens
    assert a["gen_ai.usage.output_tokens"] == rec.usage.output_tokens
    if rec.extra.get("usage_missing"):  # the server sent no usage chunk
        assert a["tokenlean.unpriced"] is True and "tokenlean.cost" not in a
    else:
        assert rec.usage.output_tokens > 0 and a["tokenlean.cost"] == float(rec.cost or 0)


# -- with OpenInference's LangChain instrumentation on ---------------------------------------------


@pytest.fixture
def openinference(traced: Traced) -> Iterator[None]:
    instrumentation = pytest.importorskip("openinference.instrumentation.langchain")
    instrumentor = instrumentation.LangChainInstrumentor()
    instrumentor.instrument(tracer_provider=traced.tp)
    try:
        yield
    finally:
        instrumentor.uninstrument()


@pytest.mark.integration
@pytest.mark.parametrize("attach", ["config_callbacks", "track_task"])
def test_openinference_span_carries_tokenlean_fields_no_second_llm_span(
    attach: str, local_chat_model: Any, traced: Traced, openinference: None
) -> None:
    wire = ServerUsage()
    llm = _chat(local_chat_model, wire)
    with traced.tracer.start_as_current_span("user-question"):
        if attach == "config_callbacks":
            llm.invoke(
                "Name a fruit.", config={"callbacks": [TokenleanCallbackHandler(traced.meter, otel=True)]}
            )
        else:
            with track_task("oi", meter=traced.meter, otel=True):
                llm.invoke("Name a fruit.")
    (server,) = wire.usages
    (rec,) = traced.meter.ledger.records()
    spans = traced.finished()
    (oi,) = _llm_spans(spans)  # one LLM span for the one model call: OpenInference's
    oa = oi.attributes or {}
    assert oa["openinference.span.kind"] == "LLM" and "gen_ai.operation.name" not in oa
    assert oa["llm.token_count.prompt"] == server["prompt_tokens"]  # its own reading of the call
    # tokenlean's fields on that span, or on a non-LLM "tokenlean" child of it if it had ended
    carriers = [s for s in spans if "tokenlean.usage.input_tokens" in (s.attributes or {})]
    (carrier,) = carriers
    if attach == "config_callbacks":
        # our handler comes before OpenInference's tracer: its span is still open at our on_llm_end
        assert carrier is oi
    else:
        # the hook-installed handler comes after it: the span has ended, a child carries the fields
        assert carrier.name == "tokenlean" and "openinference.span.kind" not in (carrier.attributes or {})
        assert carrier.parent is not None and carrier.parent.span_id == oi.context.span_id
    ca = carrier.attributes or {}
    assert ca["tokenlean.usage.input_tokens"] == rec.usage.input_tokens == server["prompt_tokens"]
    assert ca["tokenlean.usage.output_tokens"] == rec.usage.output_tokens == server["completion_tokens"]
    assert ca["tokenlean.record.id"] == rec.id and ca["tokenlean.cost"] == float(rec.cost or 0)
