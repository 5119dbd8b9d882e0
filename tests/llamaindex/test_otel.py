"""OpenTelemetry export through the LlamaIndex handler, against the real llama.cpp server.

``instrument(meter, otel=True)`` must turn each LLM call into one GenAI span whose token counts
are the ledger's, which are the server's (read off the wire with ``ServerUsage``).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

pytest.importorskip("llama_index.core")
pytest.importorskip("opentelemetry.sdk")

from llama_index.core.instrumentation import root_dispatcher
from llama_index.core.llms import ChatMessage

from llama_index.callbacks.tokenlean.handler import instrument, uninstrument
from tokenlean.metering import Meter, ModelPrice, PriceTable
from tokenlean.metering.otel import disable_otel, enable_otel
from tokenlean.metering.testing import InMemoryOtel, ServerUsage


@pytest.mark.integration
def test_chat_span_tokens_equal_ledger_and_server(local_llm: Any, local_openai_like: Any) -> None:
    wire = ServerUsage()
    llm = local_openai_like(
        max_tokens=12,
        http_client=httpx.Client(event_hooks={"response": [wire.hook]}),
        async_http_client=httpx.AsyncClient(event_hooks={"response": [wire.ahook]}),
    )
    prices = PriceTable.default().with_price(local_llm.model, ModelPrice.self_hosted("2.00", tokens_per_s=20))
    meter = Meter(prices=prices)
    # private providers first: instrument(otel=True) then reuses this exporter (idempotent per ledger)
    otel = InMemoryOtel(meter)
    spans, reader, tp, exporter = otel.spans, otel.reader, otel.tracer_provider, otel.exporter
    handler = instrument(meter, otel=True)
    try:
        assert handler.otel and enable_otel(meter) is exporter
        with tp.get_tracer("tests.app").start_as_current_span("user-question") as parent:
            llm.chat([ChatMessage(role="user", content="Name one colour.")])
    finally:
        uninstrument(handler)
        disable_otel(meter)
    assert handler not in root_dispatcher.event_handlers
    (server,) = wire.usages
    (rec,) = meter.ledger.records()
    llm_spans = [s for s in spans.get_finished_spans() if "gen_ai.operation.name" in (s.attributes or {})]
    (span,) = llm_spans
    a = span.attributes or {}
    assert a["gen_ai.usage.input_tokens"] == rec.usage.input_tokens == server["prompt_tokens"]
    assert a["gen_ai.usage.output_tokens"] == rec.usage.output_tokens == server["completion_tokens"]
    assert a["tokenlean.record.id"] == rec.id
    assert rec.cost is not None and a["tokenlean.cost"] == float(rec.cost)
    assert a["gen_ai.operation.name"] == "chat" and span.name == f"chat {rec.model}"
    assert a["gen_ai.request.model"] == local_llm.model and a["gen_ai.response.model"] == rec.model
    assert span.parent is not None and span.parent.span_id == parent.get_span_context().span_id
    assert span.start_time is not None and abs(span.start_time - rec.started_at * 1e9) < 1_000
    data = reader.get_metrics_data()
    assert data is not None
    by_type = {
        (p.attributes or {})["gen_ai.token.type"]: getattr(p, "sum", None)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "gen_ai.client.token.usage"
        for p in m.data.data_points
    }
    assert by_type == {"input": server["prompt_tokens"], "output": server["completion_tokens"]}

    # uninstrumented and disabled: a further call is neither metered nor exported
    llm.chat([ChatMessage(role="user", content="Name one fruit.")])
    assert len(wire.usages) == 2 and len(meter.ledger) == 1
    assert len(spans.get_finished_spans()) == 2  # the LLM span and the user's span, nothing new
    otel.close()
