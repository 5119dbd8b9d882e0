"""docs/observability.md's one table says what the OpenTelemetry export really emits.

The table is parsed from the markdown (no site build needed) and checked against the code, not
against a copy of it: every ``PROMETHEUS_TO_OTEL`` pair is one row (Prometheus series in one cell,
the OTel instrument exactly as the mapping spells it in another); every span attribute
``OtelExporter`` sets on a priced, an unpriced and a cache-hit record; every metric instrument it
creates (read back from an in-memory reader); and every lever event with every attribute the
levers emit, caught by subscribing to ``tokenlean.events`` while the levers really run (layout,
compaction in lexical mode, a routing decision: all offline) or, for the cache lookup, read from
``CacheResult.event_attributes`` with every optional field set.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("opentelemetry.semconv")

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "observability.md"


def _rows() -> list[list[str]]:
    """The cells (backticks stripped) of every body row of the table in "What is exported"."""
    text = PAGE.read_text(encoding="utf-8")
    section = text.split("\n## What is exported\n", 1)[-1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        line = line.strip()
        if not (line.startswith("|") and line.endswith("|")):
            continue
        cells = [c.strip() for c in line[1:-1].split("|")]
        if all(re.fullmatch(r":?-+:?", c) for c in cells):  # the header separator
            continue
        rows.append([c[1:-1] if len(c) > 1 and c[0] == c[-1] == "`" else c for c in cells])
    return rows[1:] if rows else rows  # the first is the header


@pytest.fixture(scope="module")
def rows() -> list[list[str]]:
    rows = _rows()
    assert len(rows) > 20, "docs/observability.md: the table was not found"
    widths = {len(r) for r in rows}
    assert len(widths) == 1, f"docs/observability.md: one table expected, rows of widths {widths}"
    return rows


def _named(rows: list[list[str]], kind: str) -> set[str]:
    """The ``name`` cells of the rows of one kind (first column)."""
    return {r[1] for r in rows if r[0] == kind}


def test_the_page_pins_the_semconv_version() -> None:
    from tokenlean.metering.otel import SCHEMA_URL, SEMCONV_VERSION

    text = PAGE.read_text(encoding="utf-8")
    assert f"opentelemetry-semantic-conventions=={SEMCONV_VERSION}" in text
    assert SCHEMA_URL in text


def test_every_prometheus_series_maps_as_the_code_says(rows: list[list[str]]) -> None:
    from tokenlean.metering.exporters import to_prometheus
    from tokenlean.metering.otel import PROMETHEUS_TO_OTEL

    for series, otel in PROMETHEUS_TO_OTEL.items():
        hits = [r for r in rows if series in r]
        assert hits, f"{series}: no row"
        assert any(otel in r for r in hits), f"{series}: no row pairs it with {otel!r}"
    listed = {c for r in rows for c in r if c.startswith("tokenlean_")}
    assert listed == set(PROMETHEUS_TO_OTEL), "a Prometheus series in the table that the mapping lacks"
    # ... and the mapping covers the whole exposition (one to one).
    from tokenlean.metering import Meter

    meter = Meter()
    meter.record(model="gpt-4o-mini", usage={"prompt_tokens": 10, "completion_tokens": 2})
    exposed = set(re.findall(r"^(tokenlean_\w+)", to_prometheus(meter.ledger), re.M))
    assert exposed <= set(PROMETHEUS_TO_OTEL), exposed - set(PROMETHEUS_TO_OTEL)


def _records() -> Iterator[Any]:
    from tokenlean.metering import Meter

    meter = Meter()
    with meter.task("t-1"):
        meter.record(
            model="gpt-4o-mini",
            usage={
                "prompt_tokens": 100,
                "completion_tokens": 20,
                "prompt_tokens_details": {"cached_tokens": 40},
                "completion_tokens_details": {"reasoning_tokens": 5},
            },
            endpoint="http://127.0.0.1:8080/v1",
            started_at=1000.0,
            first_token_at=1000.2,
            ended_at=1001.0,
        )
        meter.record(model="my-local-model", usage={"prompt_tokens": 7, "completion_tokens": 3})
        meter.record(
            model="gpt-4o-mini", usage={"prompt_tokens": 100, "completion_tokens": 20}, cache_hit=True
        )
    records = list(meter.ledger)
    assert [r.cache_hit for r in records] == [False, False, True]
    assert records[0].ttft_s is not None and records[0].usage.reasoning_tokens == 5
    assert records[1].cost is None  # unpriced
    yield from records


@pytest.fixture(scope="module")
def sdk() -> Iterator[tuple[Any, Any, Any]]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tokenlean.metering.otel import OtelExporter

    spans = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    yield OtelExporter(tracer_provider=tp, meter_provider=mp), spans, reader
    tp.shutdown()
    mp.shutdown()


def test_every_span_attribute_is_in_the_table(rows: list[list[str]], sdk: tuple[Any, Any, Any]) -> None:
    exporter, spans, _ = sdk
    emitted: set[str] = set()
    for rec in _records():
        exporter(rec)
        emitted |= set(exporter.span_attributes(rec))
    finished = spans.get_finished_spans()
    assert len(finished) == 3
    for span in finished:
        emitted |= set(span.attributes or {})
    assert {"gen_ai.usage.reasoning.output_tokens", "tokenlean.cache.replayed.input_tokens"} <= emitted
    documented = _named(rows, "span attribute")
    assert emitted <= documented, f"span attributes missing from the table: {sorted(emitted - documented)}"
    assert documented <= emitted, f"table rows for attributes never set: {sorted(documented - emitted)}"


def test_every_metric_instrument_is_in_the_table(rows: list[list[str]], sdk: tuple[Any, Any, Any]) -> None:
    exporter, _, reader = sdk
    for rec in _records():
        exporter.export_metrics(rec)
    names = {
        m.name
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    assert {"gen_ai.client.token.usage", "gen_ai.client.operation.duration", "tokenlean.cost"} <= names
    metric_names = " ".join(r[1] for r in rows if r[0] == "metric")
    missing = {n for n in names if not re.search(rf"(?<![\w.]){re.escape(n)}(?![\w])", metric_names)}
    assert not missing, f"metric instruments missing from the table: {sorted(missing)}"


def _lever_events(tmp_path: Path) -> dict[str, set[str]]:
    """Event name -> every attribute key, from the levers themselves (and CacheResult)."""
    from tokenlean import events
    from tokenlean.cache.results import CacheResult
    from tokenlean.compaction import Compactor
    from tokenlean.layout import reorder
    from tokenlean.routing import OpenAICompatibleEndpoint, Router
    from tokenlean.types import Request

    seen: dict[str, set[str]] = {}

    def listen(name: str, attributes: Mapping[str, Any]) -> None:
        seen.setdefault(name, set()).update(attributes)

    unsubscribe = events.subscribe(listen)
    try:
        reorder(
            {
                "messages": [
                    {"role": "system", "content": "Request id: req_9f3a1c\nYou answer in one line."},
                    {"role": "user", "content": "hi"},
                ]
            }
        )
        text = " ".join(f"Line {i}: the build step {i} passed without warnings." for i in range(40))
        Compactor(mode="lexical", ratio=0.5, store=str(tmp_path / "om.sqlite3")).compact(
            text + " Error E1234 in module foo.", query="error"
        )
        endpoint = OpenAICompatibleEndpoint("http://127.0.0.1:9/v1", "m", name="local")
        Router({"local": endpoint}, meter=False).route(
            Request.from_openai({"messages": [{"role": "user", "content": "hi"}]})
        )
    finally:
        unsubscribe()
    full = CacheResult(hit=False, tier="semantic", similarity=0.91, rejected_by="threshold", total_ms=1.5)
    seen.setdefault(events.CACHE_LOOKUP, set()).update(full.event_attributes())
    assert set(seen) == {events.CACHE_LOOKUP, events.COMPACTION, events.LAYOUT, events.ROUTE}, seen
    return seen


def test_every_lever_event_and_attribute_is_in_the_table(rows: list[list[str]], tmp_path: Path) -> None:
    seen = _lever_events(tmp_path)
    documented_events = _named(rows, "span event")
    assert set(seen) == documented_events
    documented = _named(rows, "event attribute")
    emitted = set().union(*seen.values())
    assert emitted <= documented, f"event attributes missing from the table: {sorted(emitted - documented)}"
    assert documented <= emitted, (
        f"table rows for event attributes never emitted: {sorted(documented - emitted)}"
    )
    # Each attribute row sits under (after) the row of the event that carries it.
    current = None
    for r in rows:
        if r[0] == "span event":
            current = r[1]
        elif r[0] == "event attribute":
            assert current is not None and r[1] in seen[current], f"{r[1]} is not an attribute of {current}"
