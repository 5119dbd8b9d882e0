"""OpenTelemetry export of the ledger: GenAI spans, metric points and lever events, read back from
the SDK's in-memory exporters.

Every test uses private ``TracerProvider`` / ``MeterProvider`` objects handed to ``enable_otel``;
the global providers are never touched here (``test_otel_otlp.py`` does that in a subprocess).
Expected values are computed from the inputs (usage, prices, times) or read from the ledger,
never copied from the exporter's output.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import re
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("opentelemetry.semconv")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Tracer

from tokenlean import events
from tokenlean.cache import SemanticCache
from tokenlean.compaction import Compactor
from tokenlean.layout import reorder
from tokenlean.metering import Meter, ModelPrice, PriceTable, to_prometheus
from tokenlean.metering import otel as otel_mod
from tokenlean.metering.exporters import _METRICS
from tokenlean.metering.otel import (
    PROMETHEUS_TO_OTEL,
    SEMCONV_VERSION,
    OtelExporter,
    disable_otel,
    enable_otel,
    register_span_finder,
)
from tokenlean.routing import OpenAICompatibleEndpoint, Router, Rule, RulesPolicy
from tokenlean.types import Message, Request, Usage

ROOT = Path(__file__).resolve().parents[3]

#: A priced model whose name says which provider serves it ("claude" -> anthropic).
MODEL = "claude-otel-test"
PROVIDER = "anthropic"
PRICE = ModelPrice(Decimal("3"), Decimal("15"), cached_input=Decimal("0.30"), cache_write=Decimal("3.75"))
PRICES = PriceTable.default().with_price(MODEL, PRICE)
#: No price anywhere: recorded as unpriced (cost None).
UNPRICED = "acme-house-model-7"
ENDPOINT = "https://llm.example.test:8443/v1"

GEN_AI_USAGE = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_creation.input_tokens",
)


def _price(usage: Usage) -> Decimal:
    """USD cost of ``usage`` on ``MODEL``, computed here from the per-million prices above."""
    return (
        Decimal("3") * (usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens)
        + Decimal("0.30") * usage.cached_input_tokens
        + Decimal("3.75") * usage.cache_write_tokens
        + Decimal("15") * usage.output_tokens
    ) / Decimal(1_000_000)


@dataclass
class Otel:
    meter: Meter
    exporter: OtelExporter
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader
    tp: TracerProvider
    mp: MeterProvider

    @property
    def tracer(self) -> Tracer:
        """A tracer of the same provider, for the application's own spans."""
        return self.tp.get_tracer("tests.user")

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def llm_spans(self) -> list[ReadableSpan]:
        return [s for s in self.finished() if s.attributes and "gen_ai.operation.name" in s.attributes]

    def metrics(self) -> dict[str, list[Any]]:
        """Instrument name -> its data points (cumulative), from one collection."""
        out: dict[str, list[Any]] = {}
        data = self.reader.get_metrics_data()
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    out.setdefault(metric.name, []).extend(metric.data.data_points)
        return out


def _total(points: list[Any], **attrs: Any) -> float:
    """Sum of counter values / histogram sums over the points whose attributes match ``attrs``."""
    total = 0.0
    for p in points:
        if all(p.attributes.get(k.replace("__", ".")) == v for k, v in attrs.items()):
            total += p.sum if hasattr(p, "bucket_counts") else p.value
    return total


def _count(points: list[Any]) -> int:
    return sum(p.count for p in points)


def _ns(seconds: float) -> float:
    return seconds * 1e9


def _make(meter: Meter, extra_processor: SpanProcessor | None = None) -> Otel:
    spans = InMemorySpanExporter()
    tp = TracerProvider()
    if extra_processor is not None:
        tp.add_span_processor(extra_processor)
    tp.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    exporter = enable_otel(meter, tracer_provider=tp, meter_provider=mp)
    return Otel(meter, exporter, spans, reader, tp, mp)


@pytest.fixture
def otel() -> Iterator[Otel]:
    # Lever events queued for "the next LLM span of this context" must not leak between tests.
    token = otel_mod._PENDING.set(None)
    o = _make(Meter(prices=PRICES))
    try:
        yield o
    finally:
        disable_otel(o.meter)
        o.tp.shutdown()
        o.mp.shutdown()
        otel_mod._PENDING.reset(token)


# -- spans ---------------------------------------------------------------------------------------


def test_plain_call_is_one_client_span_with_genai_and_tokenlean_attributes(otel: Otel) -> None:
    usage = Usage(120, 30)
    t0 = time.time() - 5
    with otel.tracer.start_as_current_span("user-request") as parent:
        rec = otel.meter.record(
            model=MODEL, usage=usage, endpoint=ENDPOINT, task_id="t1", started_at=t0, ended_at=t0 + 1.25
        )
    (span,) = otel.llm_spans()
    assert span.name == f"chat {MODEL}" and span.kind is SpanKind.CLIENT
    assert rec.cost == _price(usage)  # the ledger's cost is the price of the usage
    assert dict(span.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": PROVIDER,
        "gen_ai.request.model": MODEL,
        "gen_ai.response.model": MODEL,
        "server.address": "llm.example.test",
        "server.port": 8443,
        "gen_ai.usage.input_tokens": usage.input_tokens,
        "gen_ai.usage.output_tokens": usage.output_tokens,
        "gen_ai.usage.cache_read.input_tokens": 0,
        "gen_ai.usage.cache_creation.input_tokens": 0,
        "tokenlean.source": "tokenlean",
        "tokenlean.record.id": rec.id,
        "tokenlean.cache.hit": False,
        "tokenlean.usage.input_tokens": usage.input_tokens,
        "tokenlean.usage.output_tokens": usage.output_tokens,
        "tokenlean.usage.cache_read.input_tokens": 0,
        "tokenlean.usage.cache_creation.input_tokens": 0,
        "tokenlean.currency": "USD",
        "tokenlean.task.id": "t1",
        "tokenlean.endpoint": ENDPOINT,
        "tokenlean.cost": float(rec.cost),
    }
    # the span lasts exactly as long as the call (to the ns rounding of float epoch seconds)
    assert span.start_time is not None and span.end_time is not None
    assert abs(span.start_time - _ns(rec.started_at)) < 1_000
    assert abs(span.end_time - _ns(t0 + 1.25)) < 1_000
    assert rec.ended_at == t0 + 1.25
    # parented to the span current when the call was recorded
    ctx = parent.get_span_context()
    assert span.parent is not None and span.parent.span_id == ctx.span_id
    assert span.context.trace_id == ctx.trace_id
    (user,) = [s for s in otel.finished() if s.name == "user-request"]
    assert user.context.span_id == ctx.span_id


def test_cached_and_cache_write_tokens_and_reasoning(otel: Otel) -> None:
    usage = Usage(1000, 50, cached_input_tokens=600, cache_write_tokens=200, reasoning_tokens=20)
    rec = otel.meter.record(model=MODEL, usage=usage)
    (span,) = otel.llm_spans()
    a = span.attributes or {}
    assert a["gen_ai.usage.input_tokens"] == 1000  # all prompt tokens, cache reads and writes included
    assert a["gen_ai.usage.cache_read.input_tokens"] == usage.cached_input_tokens
    assert a["gen_ai.usage.cache_creation.input_tokens"] == usage.cache_write_tokens
    assert a["gen_ai.usage.reasoning.output_tokens"] == usage.reasoning_tokens
    assert a["gen_ai.usage.output_tokens"] == usage.output_tokens
    assert a["tokenlean.usage.cache_read.input_tokens"] == usage.cached_input_tokens
    assert a["tokenlean.usage.cache_creation.input_tokens"] == usage.cache_write_tokens
    assert rec.cost == _price(usage) and a["tokenlean.cost"] == float(rec.cost)
    m = otel.metrics()
    assert _total(m["tokenlean.usage.cache_read.input_tokens"]) == usage.cached_input_tokens
    assert _total(m["tokenlean.usage.cache_creation.input_tokens"]) == usage.cache_write_tokens
    assert _total(m["gen_ai.client.token.usage"], gen_ai__token__type="input") == usage.input_tokens


def test_cache_hit_bills_nothing_and_shows_replayed_tokens(otel: Otel) -> None:
    usage = Usage(400, 90, cached_input_tokens=100)
    rec = otel.meter.record(model=MODEL, usage=usage, cache_hit=True, started_at=time.time() - 0.01)
    assert rec.cache_hit and rec.cost == Decimal(0)
    (span,) = otel.llm_spans()
    a = span.attributes or {}
    assert {k: a[k] for k in GEN_AI_USAGE} == dict.fromkeys(GEN_AI_USAGE, 0)  # nobody billed them
    assert a["tokenlean.cache.hit"] is True
    assert a["tokenlean.cache.replayed.input_tokens"] == usage.input_tokens
    assert a["tokenlean.cache.replayed.output_tokens"] == usage.output_tokens
    assert a["tokenlean.usage.input_tokens"] == usage.input_tokens
    assert a["tokenlean.cost"] == 0.0 and "tokenlean.unpriced" not in a
    m = otel.metrics()
    assert _total(m["tokenlean.llm.calls"], tokenlean__cache__hit=True) == 1
    assert _total(m["tokenlean.llm.calls"], tokenlean__cache__hit=False) == 0
    assert all(p.attributes["tokenlean.cache.hit"] is True for pts in m.values() for p in pts)
    # a replayed answer says nothing about the model's latency: no duration point
    assert _count(m.get("gen_ai.client.operation.duration", [])) == 0
    assert _total(m["gen_ai.client.token.usage"], gen_ai__token__type="output") == usage.output_tokens


def test_unpriced_model_is_marked_and_counted_never_zero_cost(otel: Otel) -> None:
    usage = Usage(10, 5)
    rec = otel.meter.record(model=UNPRICED, usage=usage)
    assert rec.cost is None
    (span,) = otel.llm_spans()
    a = span.attributes or {}
    assert a["tokenlean.unpriced"] is True and "tokenlean.cost" not in a
    assert a["gen_ai.provider.name"] == "unknown" and a["gen_ai.response.model"] == UNPRICED
    m = otel.metrics()
    assert _total(m["tokenlean.llm.unpriced_calls"]) == 1
    assert _total(m.get("tokenlean.cost", [])) == 0


def test_streamed_call_has_time_to_first_chunk(otel: Otel) -> None:
    usage = Usage(64, 40)
    t0 = time.time() - 10
    rec = otel.meter.record(
        model=MODEL, usage=usage, started_at=t0, first_token_at=t0 + 0.4, ended_at=t0 + 1.4
    )
    assert rec.ttft_s == pytest.approx(0.4) and rec.duration_s == pytest.approx(1.4)
    (span,) = otel.llm_spans()
    assert (span.attributes or {})["gen_ai.response.time_to_first_chunk"] == rec.ttft_s
    m = otel.metrics()
    (ttfc,) = m["gen_ai.client.operation.time_to_first_chunk"]
    assert ttfc.count == 1 and ttfc.sum == rec.ttft_s
    (dur,) = m["gen_ai.client.operation.duration"]
    assert dur.count == 1 and dur.sum == rec.duration_s
    assert _total(m["tokenlean.generation.output_tokens"]) == usage.output_tokens
    assert _total(m["tokenlean.generation.duration"]) == pytest.approx(rec.generation_s)
    assert rec.generation_s == pytest.approx(1.0)


def test_unstreamed_call_has_no_time_to_first_chunk(otel: Otel) -> None:
    otel.meter.record(model=MODEL, usage=Usage(3, 2), started_at=time.time() - 1)
    (span,) = otel.llm_spans()
    assert "gen_ai.response.time_to_first_chunk" not in (span.attributes or {})
    assert _count(otel.metrics().get("gen_ai.client.operation.time_to_first_chunk", [])) == 0


def test_operation_provider_and_requested_model_come_from_extra(otel: Otel) -> None:
    rec = otel.meter.record(
        model="served-model-2",
        usage=Usage(7, 1),
        extra={"operation": "text_completion", "provider": "openai", "request_model": "asked-model"},
    )
    (span,) = otel.llm_spans()
    a = span.attributes or {}
    assert span.name == f"text_completion {rec.model}"
    assert a["gen_ai.operation.name"] == "text_completion" and a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "asked-model" and a["gen_ai.response.model"] == "served-model-2"


# -- metrics against the ledger and the Prometheus exposition -------------------------------------


def _workload(meter: Meter) -> None:
    """One call of every kind: plain, prompt-cached, cache hit, unpriced, streamed."""
    t0 = time.time() - 30
    meter.record(model=MODEL, usage=Usage(120, 30), started_at=t0, ended_at=t0 + 1)
    meter.record(
        model=MODEL,
        usage=Usage(1000, 50, cached_input_tokens=600, cache_write_tokens=200),
        started_at=t0 + 2,
        ended_at=t0 + 3.5,
    )
    meter.record(model=MODEL, usage=Usage(120, 30), cache_hit=True, started_at=t0 + 4, ended_at=t0 + 4.01)
    meter.record(model=UNPRICED, usage=Usage(33, 7), started_at=t0 + 5, ended_at=t0 + 5.5)
    meter.record(
        model=MODEL, usage=Usage(64, 40), started_at=t0 + 6, first_token_at=t0 + 6.3, ended_at=t0 + 7.3
    )


def test_metric_totals_equal_the_ledger_summary(otel: Otel) -> None:
    _workload(otel.meter)
    s = otel.meter.ledger.summary()
    m = otel.metrics()
    usage = m["gen_ai.client.token.usage"]
    assert _total(usage, gen_ai__token__type="input") == s.input_tokens
    assert _total(usage, gen_ai__token__type="output") == s.output_tokens
    assert _total(m["tokenlean.llm.calls"]) == s.calls == 5
    assert _total(m["tokenlean.llm.calls"], tokenlean__cache__hit=True) == s.cache_hits == 1
    assert _total(m["tokenlean.llm.unpriced_calls"]) == s.unpriced_calls == 1
    assert _total(m["tokenlean.usage.cache_read.input_tokens"]) == s.cached_input_tokens
    assert _total(m["tokenlean.usage.cache_creation.input_tokens"]) == s.cache_write_tokens
    assert s.cost is not None and s.cost == sum(r.cost for r in otel.meter.ledger.records() if r.cost)
    assert _total(m["tokenlean.cost"], tokenlean__currency="USD") == pytest.approx(float(s.cost), rel=1e-12)
    # every point carries the cache-hit attribute
    assert all("tokenlean.cache.hit" in p.attributes for pts in m.values() for p in pts)
    # and the span's cost is each record's cost, exactly (the float of the Decimal)
    by_id = {r.id: r for r in otel.meter.ledger.records()}
    spans = otel.llm_spans()
    assert len(spans) == 5
    for span in spans:
        a = span.attributes or {}
        rec = by_id[str(a["tokenlean.record.id"])]
        if rec.cost is None:
            assert a["tokenlean.unpriced"] is True
        else:
            assert a["tokenlean.cost"] == float(rec.cost)


def _prometheus_values(text: str) -> dict[tuple[str, str], float]:
    """(series name, model label) -> value, from a ``by_task=False`` exposition."""
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, model, value = re.match(r'^(\w+)\{model="([^"]*)"\} (\S+)$', line).groups()  # type: ignore[union-attr]
            out[name, model] = float(value)
    return out


_DOTTED = re.compile(r"[a-z_]+(?:\.[a-z_]+)+")


def _otel_figure(spec: str, m: dict[str, list[Any]], model: str) -> float | None:
    """The number a ``PROMETHEUS_TO_OTEL`` entry describes for ``model``, computed from the OTel
    points (``None`` for a percentile, which an OTel histogram holds only as buckets)."""
    if " / " in spec:
        num, den = (_otel_figure(part.strip(), m, model) for part in spec.split(" / "))
        return None if num is None or den is None else num / den
    if "(p" in spec:
        return None
    match = re.match(r'^([\w.]+)(?:\{([\w.]+)="([^"]*)"\})?', spec)
    assert match is not None, spec
    name, key, want = match.groups()
    total = 0.0
    for p in m.get(name, []):
        if p.attributes.get("gen_ai.response.model") != model:
            continue
        value = p.attributes.get(key) if key is not None else None
        text = str(value).lower() if isinstance(value, bool) else str(value)  # Prometheus: "true"
        if key is None or text == want:
            total += p.sum if hasattr(p, "bucket_counts") else p.value
    return total


def test_prometheus_table_matches_both_exporters(otel: Otel) -> None:
    prom_names = {name for name, _, _ in _METRICS}
    assert set(PROMETHEUS_TO_OTEL) == prom_names
    _workload(otel.meter)
    m = otel.metrics()
    created = set(otel.exporter.instruments)
    assert {v.name for v in otel.exporter.instruments.values()} == created
    assert created == set(m)  # the workload exercised every instrument the exporter creates
    for series, spec in PROMETHEUS_TO_OTEL.items():
        outside = re.sub(r"\{[^}]*\}|\([^)]*\)", " ", spec)
        instruments = _DOTTED.findall(outside)
        assert instruments and set(instruments) <= created, (series, spec)
        # attribute names the entry filters or sums over are on that instrument's points
        for attr in _DOTTED.findall(" ".join(re.findall(r"\{[^}]*\}|\([^)]*\)", spec))):
            for inst in instruments:
                assert all(attr in p.attributes for p in m[inst]), (series, attr)
    # and the numbers agree: the OTel figure of each series equals the Prometheus value
    prom = _prometheus_values(to_prometheus(otel.meter.ledger, by_task=False))
    assert {series for series, _ in prom} == prom_names
    compared = set()
    for (series, model), value in prom.items():
        figure = _otel_figure(PROMETHEUS_TO_OTEL[series], m, model)
        if figure is not None:
            assert figure == pytest.approx(value, rel=1e-9), (series, model)
            compared.add(series)
    # the percentiles: one streamed call per model here, so p50 = p95 = the histogram's one sample
    for (series, model), value in prom.items():
        if series.startswith("tokenlean_ttft_"):
            ttfc = [
                p
                for p in m["gen_ai.client.operation.time_to_first_chunk"]
                if p.attributes["gen_ai.response.model"] == model
            ]
            assert _count(ttfc) == 1 and _total(ttfc) == pytest.approx(value, rel=1e-9), (series, model)
            compared.add(series)
    assert compared == prom_names


def test_semconv_version_is_the_installed_and_pinned_one() -> None:
    assert importlib.metadata.version("opentelemetry-semantic-conventions") == SEMCONV_VERSION
    extra = tomllib.loads((ROOT / "core" / "pyproject.toml").read_text())["project"]["optional-dependencies"][
        "otel"
    ]
    assert f"opentelemetry-semantic-conventions=={SEMCONV_VERSION}" in [d.replace(" ", "") for d in extra]


# -- lever events ----------------------------------------------------------------------------------


class _HashEmbedder:
    """Equal texts (up to case and punctuation) get the same unit vector; others not. No model."""

    dim = 32

    def embed(self, texts: list[str]) -> np.ndarray:
        out = []
        for t in texts:
            key = " ".join(t.lower().strip("?.! ").split())
            seed = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
            v = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            out.append(v / np.linalg.norm(v))
        return np.stack(out)


def _events(span: ReadableSpan, name: str) -> list[dict[str, Any]]:
    return [dict(e.attributes or {}) for e in span.events if e.name == name]


def _user_span(otel: Otel, name: str) -> ReadableSpan:
    (span,) = [s for s in otel.finished() if s.name == name]
    return span


def test_cache_lookup_event_on_the_current_span(otel: Otel) -> None:
    cache = SemanticCache(embedder=_HashEmbedder())
    try:
        assert cache.store("What is the capital of France?", "Paris.").stored
        with otel.tracer.start_as_current_span("handle-question"):
            hit = cache.lookup("what is the capital of france")
            miss = cache.lookup("Who painted the Mona Lisa?")
    finally:
        cache.close()
    assert hit.hit and hit.tier == "exact" and not miss.hit
    got = _events(_user_span(otel, "handle-question"), events.CACHE_LOOKUP)
    assert got == [hit.event_attributes(), miss.event_attributes()]
    assert got[0]["tokenlean.cache.hit"] is True and got[0]["tokenlean.cache.tier"] == hit.tier
    if hit.similarity is not None:
        assert got[0]["tokenlean.cache.similarity"] == float(hit.similarity)
    assert got[1]["tokenlean.cache.hit"] is False
    assert got[1].get("tokenlean.cache.rejected_by") == miss.rejected_by
    assert otel.llm_spans() == []  # a lookup is not an LLM call


DOC = (
    "The Eiffel Tower is a wrought-iron lattice tower in Paris. It was designed by the company of "
    "Gustave Eiffel. Construction finished in 1889 for the World's Fair. Bananas are rich in potassium. "
    "The Amazon is the largest rainforest on Earth. Tea originated in China. "
) * 3


def test_event_without_a_span_lands_on_the_next_llm_span(otel: Otel) -> None:
    from opentelemetry import trace

    assert not trace.get_current_span().is_recording()
    compacted = Compactor(ratio=0.6, mode="lexical", marker=None).compact(
        DOC, query="When was the Eiffel Tower finished?"
    )
    assert otel.finished() == []  # nothing to attach to yet
    first = otel.meter.record(model=MODEL, usage=Usage(compacted.tokens_after, 12))
    second = otel.meter.record(model=MODEL, usage=Usage(5, 1))
    spans = {str((s.attributes or {})["tokenlean.record.id"]): s for s in otel.llm_spans()}
    (ev,) = _events(spans[first.id], events.COMPACTION)
    assert ev == compacted.event_attributes()
    assert ev["tokenlean.compaction.tokens_before"] == compacted.tokens_before
    assert ev["tokenlean.compaction.tokens_after"] == compacted.tokens_after
    assert compacted.tokens_after < compacted.tokens_before
    assert spans[second.id].events == ()  # claimed once, by the call the lever shaped


def test_compact_documents_event(otel: Otel) -> None:
    docs = [DOC, "Tea originated in China. " * 20]
    with otel.tracer.start_as_current_span("retrieve"):
        compacted = Compactor(ratio=0.5, mode="lexical", marker=None).compact_documents(
            docs, query="Where did tea originate?"
        )
    (ev,) = _events(_user_span(otel, "retrieve"), events.COMPACTION)
    assert ev["tokenlean.compaction.tokens_before"] == compacted.tokens_before
    assert ev["tokenlean.compaction.tokens_after"] == compacted.tokens_after
    assert ev["tokenlean.compaction.omissions"] == len(compacted.omissions)


def test_route_event(otel: Otel) -> None:
    router = Router(
        {
            # never called: route() only decides
            "weak": OpenAICompatibleEndpoint("http://127.0.0.1:9/v1", "small-model", name="weak"),
            "strong": OpenAICompatibleEndpoint("http://127.0.0.1:9/v1", "big-model", name="strong"),
        },
        policies=[RulesPolicy([Rule("strong", tags=("hard",))])],
        default="weak",
        meter=False,
    )
    try:
        with otel.tracer.start_as_current_span("route-it"):
            hard = router.route(
                Request(
                    (Message("user", "Prove it."),), params={"max_tokens": 8}, metadata={"tags": ["hard"]}
                )
            )
            easy = router.route(Request((Message("user", "Hi."),), params={"max_tokens": 8}))
    finally:
        router.close()
    got = _events(_user_span(otel, "route-it"), events.ROUTE)
    assert [e["tokenlean.route.target"] for e in got] == [hard.target, easy.target] == ["strong", "weak"]
    assert [e["tokenlean.route.model"] for e in got] == [router.model_of("strong"), router.model_of("weak")]
    assert [e["tokenlean.route.policy"] for e in got] == [hard.policy, easy.policy]
    assert [e["tokenlean.route.reason"] for e in got] == [hard.reason, easy.reason]


def test_layout_event(otel: Otel) -> None:
    body = {
        "messages": [
            {"role": "system", "content": "You are a helper.\nCurrent time: 2026-11-23T10:42:07Z\nBe brief."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "second question"},
        ]
    }
    with otel.tracer.start_as_current_span("lay-out"):
        out = reorder(body)
    assert out.moves  # a volatile line was moved
    (ev,) = _events(_user_span(otel, "lay-out"), events.LAYOUT)
    assert ev["tokenlean.layout.breakers"] == len(out.moves)
    assert ev["tokenlean.layout.breaker_kinds"] == tuple(sorted({m.kind for m in out.moves}))
    assert ev["tokenlean.layout.stable_prefix_tokens_before"] == out.stable_prefix_tokens_before
    assert ev["tokenlean.layout.stable_prefix_tokens_after"] == out.stable_prefix_tokens_after


# -- another instrumentation's LLM span ------------------------------------------------------------


def test_foreign_llm_span_gets_tokenlean_fields_and_no_second_span(otel: Otel) -> None:
    usage = Usage(50, 8)
    with otel.tracer.start_as_current_span(
        "ChatOpenAI", attributes={"openinference.span.kind": "LLM", "llm.token_count.prompt": 49}
    ):
        rec = otel.meter.record(model=MODEL, usage=usage)
    (span,) = otel.finished()  # only the foreign span: no tokenlean span beside it
    a = span.attributes or {}
    assert span.name == "ChatOpenAI"
    assert a["tokenlean.usage.input_tokens"] == usage.input_tokens
    assert a["tokenlean.usage.output_tokens"] == usage.output_tokens
    assert a["tokenlean.record.id"] == rec.id and a["tokenlean.cost"] == float(rec.cost or 0)
    assert a["llm.token_count.prompt"] == 49  # its own figures stay its own
    assert not any(k.startswith("gen_ai.") for k in a)


def test_genai_agent_span_is_a_parent_not_a_foreign_llm_span(otel: Otel) -> None:
    # A GenAI *agent* span (another instrumentation, or the app) current while the agent's model
    # calls are recorded: each call still gets its own chat span under it.
    with otel.tracer.start_as_current_span(
        "invoke_agent weather", attributes={"gen_ai.operation.name": "invoke_agent"}
    ) as agent:
        first = otel.meter.record(model=MODEL, usage=Usage(10, 2))
        second = otel.meter.record(model=MODEL, usage=Usage(20, 4))
    chats = [s for s in otel.llm_spans() if s.name == f"chat {MODEL}"]
    assert [(s.attributes or {})["tokenlean.record.id"] for s in chats] == [first.id, second.id]
    assert all(s.parent is not None and s.parent.span_id == agent.get_span_context().span_id for s in chats)
    assert "tokenlean.record.id" not in (_user_span(otel, "invoke_agent weather").attributes or {})


def test_ended_foreign_span_gets_a_non_llm_tokenlean_child(otel: Otel) -> None:
    foreign = otel.tracer.start_span("llm", attributes={"openinference.span.kind": "LLM"})
    foreign.end()
    wanted: list[str] = []

    def finder(rec: Any) -> Any:
        return foreign if rec.id in wanted else None

    register_span_finder(finder)
    try:
        wanted.append("run-ended-foreign")
        rec = otel.meter.record(model=MODEL, usage=Usage(9, 4), record_id="run-ended-foreign")
    finally:
        otel_mod._finders.remove(finder)  # no public unregister: keep the finder list as it was
    child = _user_span(otel, "tokenlean")
    assert child.kind is SpanKind.INTERNAL
    assert child.parent is not None and child.parent.span_id == foreign.get_span_context().span_id
    assert dict(child.attributes or {}) == OtelExporter.tokenlean_attributes(rec)
    assert otel.llm_spans() == []  # never a second LLM span


# -- switching on and off --------------------------------------------------------------------------


def test_disable_stops_export(otel: Otel) -> None:
    otel.meter.record(model=MODEL, usage=Usage(4, 2))
    assert len(otel.llm_spans()) == 1 and events.enabled()
    disable_otel(otel.meter)
    assert not events.enabled()  # no exporter left: levers skip building events
    with otel.tracer.start_as_current_span("after-disable"):
        rec = otel.meter.record(model=MODEL, usage=Usage(4, 2))
        Compactor(ratio=0.5, mode="lexical", marker=None).compact(DOC, query="tea")
    assert rec in otel.meter.ledger.records() and len(otel.meter.ledger) == 2
    assert len(otel.llm_spans()) == 1
    assert _user_span(otel, "after-disable").events == ()
    assert _total(otel.metrics()["tokenlean.llm.calls"]) == 1


def test_enable_is_idempotent_per_ledger(otel: Otel) -> None:
    again = enable_otel(otel.meter, tracer_provider=otel.tp, meter_provider=otel.mp)
    assert again is otel.exporter and enable_otel(otel.meter) is otel.exporter
    same_ledger = Meter(otel.meter.ledger, prices=PRICES)
    assert enable_otel(same_ledger) is otel.exporter
    otel.meter.record(model=MODEL, usage=Usage(4, 2))
    assert len(otel.llm_spans()) == 1  # one sink, one span
    assert _total(otel.metrics()["tokenlean.llm.calls"]) == 1


class _Raising(SpanProcessor):
    def __init__(self, where: str) -> None:
        self.where = where

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if self.where == "on_start":
            raise RuntimeError("exporter down (start)")

    def on_end(self, span: Any) -> None:
        if self.where == "on_end":
            raise RuntimeError("exporter down (end)")


@pytest.mark.parametrize("where", ["on_start", "on_end"])
def test_failing_exporter_never_breaks_record(where: str, caplog: pytest.LogCaptureFixture) -> None:
    token = otel_mod._PENDING.set(None)
    o = _make(Meter(prices=PRICES), extra_processor=_Raising(where))
    try:
        with caplog.at_level(logging.ERROR, logger="tokenlean.metering.ledger"):
            rec = o.meter.record(model=MODEL, usage=Usage(11, 3))
        assert o.meter.ledger.records() == [rec]
        assert o.meter.ledger.summary().input_tokens == 11
        assert "metering sink" in caplog.text and "exporter down" in caplog.text
        # the metric points are still recorded: one failing half does not lose the other
        assert _total(o.metrics()["gen_ai.client.token.usage"], gen_ai__token__type="input") == 11
    finally:
        disable_otel(o.meter)
        o.tp.shutdown()
        o.mp.shutdown()
        otel_mod._PENDING.reset(token)
