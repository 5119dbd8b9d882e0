"""tokenlean figures in your tracing tool: LangChain calls as OpenTelemetry GenAI spans.

Sets up OpenTelemetry the way an application does (an SDK tracer and meter provider), runs a
small support flow through LangChain with ``track_task(..., otel=True)``, and prints the spans
tokenlean made: the GenAI attributes, tokenlean's cost and cache fields, and the levers' events.

    python cookbooks/otel_tracing/main.py [--spans spans.json] [--console]

With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set (Phoenix, an OTel Collector, Tempo...) the same spans
and metrics also go there over OTLP/HTTP; ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` sends the spans
only (Langfuse). The model is ``TOKENLEAN_BASE_URL`` / ``TOKENLEAN_MODEL`` when set (any
OpenAI-compatible endpoint); otherwise a small local model (SmolLM2-135M on llama.cpp) is
started for the run.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from langchain_core.caches import InMemoryCache
from langchain_openai import ChatOpenAI
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from langchain_tokenlean.callbacks import track_task
from tokenlean.compaction import Compactor
from tokenlean.layout import reorder
from tokenlean.metering import Meter, ModelPrice, PriceTable

POLICY = "You are the support assistant of ACME Home. Answer in one short sentence."
TOPICS = (
    "gift cards",
    "opening hours",
    "the loyalty programme",
    "newsletters",
    "furniture assembly",
    "colour samples",
    "garden tools",
    "lighting",
    "kitchen textiles",
    "mirrors",
    "wall paint",
)
#: The retrieved context: mostly irrelevant to the question, which compaction cuts (verbatim).
MANUAL = (
    " ".join(
        f"Our help centre explains {t} in detail, and a member of staff can walk you through {t} by phone."
        for t in TOPICS
    )
    + " Returns are accepted within 30 days for unused items in their original packaging, and refunds reach your card within five working days."
)


def setup_opentelemetry(
    console: bool,
) -> tuple[TracerProvider, MeterProvider, InMemorySpanExporter, InMemoryMetricReader]:
    """What an application does once at startup (here with in-memory exporters, to print the data).

    The OTLP exporters read the standard variables: OTEL_EXPORTER_OTLP_ENDPOINT (both signals),
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / _METRICS_ENDPOINT (one), OTEL_EXPORTER_OTLP_HEADERS.
    """
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "support-bot")})
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    if console:
        tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    env = os.environ.get
    if env("OTEL_EXPORTER_OTLP_ENDPOINT") or env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    points = InMemoryMetricReader()
    readers: list[MetricReader] = [points]
    if env("OTEL_EXPORTER_OTLP_ENDPOINT") or env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    return tracer_provider, meter_provider, spans, points


def run(base_url: str, model: str) -> None:
    llm = ChatOpenAI(
        base_url=base_url,
        api_key=os.environ.get("OPENAI_API_KEY", "not-needed"),
        model=model,
        temperature=0,
        extra_body={"max_tokens": 24},  # llama.cpp reads max_tokens, not max_completion_tokens
        cache=InMemoryCache(),  # LangChain's own cache: the repeated question is a cache hit
    )
    meter = Meter()
    # A local model has no list price: price it like a small hosted one, so the spans carry a cost.
    meter.prices = PriceTable.default().with_price(model, ModelPrice(Decimal("0.15"), Decimal("0.60")))
    compactor = Compactor(mode="lexical", ratio=0.7)
    tracer = trace.get_tracer("support-bot")

    # 1. A request span of the application; tokenlean's spans and lever events nest under it.
    with track_task("ticket-42", meter=meter, otel=True), tracer.start_as_current_span("handle-ticket"):
        question = "Can I still return an unused lamp after three weeks?"
        context = compactor.compact(MANUAL, query=question).text
        laid = reorder(
            {
                "messages": [
                    {"role": "system", "content": f"Request id: req_7f3a9c\n{POLICY}\n{context}"},
                    {"role": "user", "content": question},
                ]
            }
        ).request
        messages = laid.to_openai()["messages"]  # the volatile request id moved out of the prefix
        llm.invoke(messages)
        llm.invoke(messages)  # the same question again: answered from LangChain's cache

    # 2. No span of the application: the compaction event waits for the next LLM span.
    with track_task("ticket-43", meter=meter, otel=True):
        question = "How fast does a refund reach my card?"
        context = compactor.compact(MANUAL, query=question).text
        llm.invoke(
            [{"role": "system", "content": f"{POLICY}\n{context}"}, {"role": "user", "content": question}]
        )


def show_spans(spans: Sequence[ReadableSpan]) -> list[dict[str, Any]]:
    """Print the spans as a tree (GenAI and tokenlean attributes, events); return them as dicts."""
    by_id = {s.context.span_id: s for s in spans}
    children: dict[int | None, list[ReadableSpan]] = {}
    for s in spans:
        parent = s.parent.span_id if s.parent is not None and s.parent.span_id in by_id else None
        children.setdefault(parent, []).append(s)
    out: list[dict[str, Any]] = []

    def walk(span: ReadableSpan, depth: int) -> None:
        pad = "  " * depth
        attrs = dict(span.attributes or {})
        ms = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
        print(f"{pad}{span.name}  [{span.kind.name}, {ms:.0f} ms]")
        for key in sorted(attrs):
            if key.startswith(("gen_ai.", "tokenlean.")):
                print(f"{pad}    {key} = {attrs[key]!r}")
        for ev in span.events:
            fields = ", ".join(f"{k.rsplit('.', 1)[-1]}={v!r}" for k, v in (ev.attributes or {}).items())
            print(f"{pad}    event {ev.name}: {fields}")
        parent = by_id.get(span.parent.span_id) if span.parent is not None else None
        out.append(
            {
                "name": span.name,
                "kind": span.kind.name,
                "trace_id": f"{span.context.trace_id:032x}",
                "span_id": f"{span.context.span_id:016x}",
                "parent": None if parent is None else parent.name,
                "attributes": {k: list(v) if isinstance(v, tuple) else v for k, v in attrs.items()},
                "events": [
                    {
                        "name": e.name,
                        "attributes": {
                            k: list(v) if isinstance(v, tuple) else v for k, v in (e.attributes or {}).items()
                        },
                    }
                    for e in span.events
                ],
            }
        )
        for child in sorted(children.get(span.context.span_id, []), key=lambda s: s.start_time or 0):
            walk(child, depth + 1)

    for root in sorted(children.get(None, []), key=lambda s: s.start_time or 0):
        print(f"trace {root.context.trace_id:032x}")
        walk(root, 1)
    return out


def show_metrics(reader: InMemoryMetricReader) -> dict[str, float]:
    """Print each tokenlean / GenAI instrument's total (sum over its points)."""
    data = reader.get_metrics_data()
    totals: dict[str, float] = {}
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                points = m.data.data_points
                totals[m.name] = sum(getattr(p, "sum", getattr(p, "value", 0)) for p in points)
                print(f"  {m.name} [{m.unit}]: {totals[m.name]:g} over {len(points)} series")
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=Path, help="also write the spans (and metric totals) as JSON here")
    parser.add_argument("--console", action="store_true", help="also print every span as OTel JSON")
    args = parser.parse_args()
    tracer_provider, meter_provider, spans, points = setup_opentelemetry(args.console)
    from tokenlean.server import model_endpoint  # $TOKENLEAN_BASE_URL, or a local llama.cpp server

    with model_endpoint() as (base_url, model):
        run(base_url, model)
    print("spans:")
    dumped = show_spans(spans.get_finished_spans())
    print("metrics:")
    totals = show_metrics(points)
    tracer_provider.shutdown()  # flushes the OTLP exporters, when configured
    meter_provider.shutdown()
    if args.spans:
        args.spans.write_text(json.dumps({"spans": dumped, "metrics": totals}, indent=2) + "\n")


if __name__ == "__main__":
    main()
