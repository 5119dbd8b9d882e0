"""OTLP JSON GenAI spans as traces: one call per inference span, attributes decoded, hand-counted totals.

``fixtures/otlp`` holds an export in the OTLP/HTTP JSON encoding (``intValue`` as strings, times in
nanosecond strings) and a JSONL file as the Collector's file exporter writes it; both were written
by hand. The last test round-trips spans tokenlean's own OpenTelemetry exporter made through the
OTLP protobuf encoder, and compares the calls read back with the ledger that recorded them.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from tokenlean.errors import TraceFormatError
from tokenlean.profile import detect_format, read_trace
from tokenlean.profile.trace import Call
from tokenlean.types import Usage

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "otlp"
SPANS = FIXTURES / "genai_spans.json"
COLLECTOR = FIXTURES / "collector_file_exporter.jsonl"
T0 = 1760432400.0  # the fixtures' clock origin, 2025-10-14T09:00:00Z


def total(calls: list[Call]) -> Usage:
    return sum((c.usage for c in calls), Usage())


def test_one_call_per_inference_span_with_hand_counted_totals() -> None:
    assert detect_format(SPANS) == "otlp"
    trace = read_trace(SPANS)
    # six spans: two tokenlean chat spans, an agent span and a tool span (not calls), a chat span
    # from the OpenAI instrumentation and one from an Anthropic instrumentation without an operation
    assert len(trace.calls) == 4
    tasks = trace.tasks()
    assert set(tasks) == {"ticket-4711", "conv-88", "7f4e1c2a9b3d5e6f8a0b1c2d3e4f5a6b"}
    # ticket-4711: 1520 in (1024 cached) / 212 out, then a cache hit replaying 1534 / 198
    assert [c.usage for c in tasks["ticket-4711"]] == [Usage(1520, 212, 1024), Usage(1534, 198)]
    assert total(tasks["ticket-4711"]) == Usage(3054, 410, 1024)
    assert total(tasks["conv-88"]) == Usage(845, 64)
    # the agent span's usage (3054 / 410) is the sum of its children: not counted again
    assert total(trace.calls) == Usage(3054 + 845 + 3462, 410 + 64 + 230, 1024 + 3000, 450)


def test_attributes_are_decoded() -> None:
    first, hit = read_trace(SPANS).tasks()["ticket-4711"]
    assert first.model == "gpt-4o-mini-2024-07-18"  # the response model wins
    assert first.cost == Decimal("0.000482")
    assert first.started_at == pytest.approx(T0 + 1.0) and first.ended_at == pytest.approx(T0 + 2.8)
    assert first.ttft == pytest.approx(0.42)
    assert first.endpoint == "api.openai.com:443"
    assert first.extra["usage_from"] == "tokenlean" and first.extra["service_name"] == "checkout-agent"
    assert first.extra["operation"] == "chat" and first.extra["provider"] == "openai"
    assert not first.cache_hit
    # a tokenlean cache hit: gen_ai.usage.* are zero (nothing billed), the replayed usage is kept
    assert hit.cache_hit and hit.usage == Usage(1534, 198) and hit.cost == Decimal("0.0")


def test_an_int_value_sent_as_a_json_number_or_a_string_reads_the_same() -> None:
    raw = json.loads(SPANS.read_text())
    span = raw["resourceSpans"][0]["scopeSpans"][2]["spans"][0]
    values = {a["key"]: a["value"] for a in span["attributes"]}
    assert values["gen_ai.usage.input_tokens"] == {"intValue": 845}  # a number in the fixture
    assert values["gen_ai.usage.output_tokens"] == {"intValue": "64"}  # the spec's string
    (call,) = read_trace(SPANS).tasks()["conv-88"]
    assert call.usage == Usage(845, 64)


def test_recorded_content_becomes_the_request_and_the_answer() -> None:
    (call,) = read_trace(SPANS).tasks()["conv-88"]
    assert call.request is not None and call.response is not None
    assert [m.role for m in call.request.messages] == ["system", "user", "assistant", "tool"]
    assert call.request.messages[2].tool_calls[0].name == "get_cart"
    assert json.loads(call.request.messages[2].tool_calls[0].arguments) == {"user": "u-19"}
    assert call.request.messages[3].tool_call_id == "call_7xK2"
    assert call.response.message.text == "Three of A-1."
    assert call.response.finish_reason == "tool_calls" and call.response.id == "chatcmpl-CQ2x8Zr"


def test_anthropic_input_tokens_without_the_cache_are_made_inclusive() -> None:
    (call,) = read_trace(SPANS).tasks()["7f4e1c2a9b3d5e6f8a0b1c2d3e4f5a6b"]
    # 12 uncached + 3000 read + 450 written, the instrumentation's older attribute names
    assert call.usage == Usage(3462, 230, 3000, 450)
    assert call.extra["input_tokens_excluded_cache"] is True
    assert call.extra["provider"] == "Anthropic" and call.model == "claude-sonnet-4-5-20250929"


def test_collector_file_exporter_jsonl() -> None:
    assert detect_format(COLLECTOR) == "otlp"
    trace = read_trace(COLLECTOR)
    (task,) = trace.tasks()
    assert task == "run-1"
    calls = trace.tasks()[task]
    # 900/120, then 2000/300 (1536 cached; the OpenInference span with tokenlean's child span
    # folded into it), then 1100/80; the retried export repeats the first span: counted once
    assert [c.usage for c in calls] == [Usage(900, 120), Usage(2000, 300, 1536), Usage(1100, 80)]
    assert total(calls) == Usage(4000, 500, 1536)
    folded = calls[1]
    assert folded.model == "gpt-4.1" and folded.cost == Decimal("0.00312")
    assert folded.extra["span_name"] == "ChatCompletion" and folded.extra["usage_from"] == "tokenlean"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "chat", "attributes": '
         '[{"key": "gen_ai.usage.input_tokens", "value": {"intValue": "12a"}}]}]}]}]}\n', "not an integer"),
        ('{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "chat", "attributes": {"k": 1}}]}]}]}\n', "attributes"),
        ('{"resourceSpans": {"spans": []}}\n', "must be a list"),
        ('{"resourceSpans": []}\n{"resourceSpans": [\n', r"t.jsonl:2: not valid JSON"),
        ('{"resourceSpans": []}\n{"traces": []}\n', r"t.jsonl:2: not an OTLP JSON export"),
    ],
)  # fmt: skip
def test_malformed_exports_are_trace_format_errors(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(text)
    with pytest.raises(TraceFormatError, match=match):
        read_trace(path, fmt="otlp")


def test_an_export_without_inference_spans_has_no_calls(tmp_path: Path) -> None:
    doc = json.loads(SPANS.read_text())
    doc["resourceSpans"] = doc["resourceSpans"][:1]
    doc["resourceSpans"][0]["scopeSpans"] = doc["resourceSpans"][0]["scopeSpans"][1:2]  # agent and tool spans
    path = tmp_path / "agents.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(TraceFormatError, match="no calls"):
        read_trace(path)


def test_spans_from_tokenlean_otel_read_back_as_the_ledger_recorded_them(tmp_path: Path) -> None:
    pytest.importorskip("opentelemetry.sdk")
    pytest.importorskip("opentelemetry.semconv")
    pytest.importorskip("opentelemetry.exporter.otlp.proto.common")
    from google.protobuf import json_format
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tokenlean.metering import Meter
    from tokenlean.metering.otel import disable_otel, enable_otel

    spans = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(spans))
    meter = Meter()
    enable_otel(meter, tracer_provider=tp)
    try:
        t0 = 1_760_000_000.0
        meter.record(
            model="gpt-4o-mini", usage=Usage(1200, 80, 1024), task_id="t-a", started_at=t0, ended_at=t0 + 1.5
        )
        meter.record(
            model="gpt-4o-mini",
            usage=Usage(1210, 75),
            task_id="t-a",
            cache_hit=True,
            started_at=t0 + 2,
            ended_at=t0 + 2.01,
        )
        meter.record(
            model="claude-sonnet-4-5", usage={"input_tokens": 7, "cache_read_input_tokens": 5000, "cache_creation_input_tokens": 300, "output_tokens": 120},
            task_id="t-b", started_at=t0 + 3, first_token_at=t0 + 3.4, ended_at=t0 + 5,
        )  # fmt: skip
    finally:
        disable_otel(meter)
        tp.shutdown()
    body = json_format.MessageToDict(encode_spans(spans.get_finished_spans()))
    path = tmp_path / "export.json"
    path.write_text(json.dumps(body))
    assert detect_format(path) == "otlp"
    calls = read_trace(path).calls
    recs = meter.ledger.records()
    assert len(calls) == len(recs) == 3
    by_id = {c.extra["span_id"]: c for c in calls}
    assert len(by_id) == 3
    got = sorted(calls, key=lambda c: c.started_at or 0.0)
    for call, rec in zip(got, recs, strict=True):
        assert call.task_id == rec.task_id
        assert call.usage == rec.usage
        assert call.cache_hit == rec.cache_hit
        assert call.model == rec.model
        assert call.cost == (rec.cost if rec.cost is None else Decimal(str(float(rec.cost))))
        assert call.started_at == pytest.approx(rec.started_at, abs=1e-6)
        assert call.ended_at == pytest.approx(rec.ended_at, abs=1e-6)
    assert got[2].ttft == pytest.approx(0.4, abs=1e-6)
