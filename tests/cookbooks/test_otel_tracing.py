"""cookbooks/otel_tracing runs end to end against the local model and exports real GenAI spans.

The script's own in-memory export (``--spans``) is checked for the span tree, the GenAI and
tokenlean attributes, the cache hit and where the lever events landed; and the same run sends its
spans and metrics over OTLP/HTTP to a collector stood up here on loopback (the standard
``OTEL_EXPORTER_OTLP_ENDPOINT`` path), whose requests are decoded with the OTLP protobufs.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest


class _Collector(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def bodies(self, path: str) -> list[bytes]:
        with self.lock:
            return [body for p, body in self.received if p == path]


class _Handler(BaseHTTPRequestHandler):
    server: _Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        with self.server.lock:
            self.server.received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def collector() -> Iterator[_Collector]:
    server = _Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _otlp_spans(bodies: list[bytes]) -> list[tuple[str, dict[str, Any]]]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    out = []
    for body in bodies:
        req = ExportTraceServiceRequest.FromString(body)
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    attrs = {}
                    for kv in span.attributes:
                        v = kv.value
                        attrs[kv.key] = getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None
                    out.append((span.name, attrs))
    return out


def _otlp_metric_names(bodies: list[bytes]) -> set[str]:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    return {
        m.name
        for body in bodies
        for rm in ExportMetricsServiceRequest.FromString(body).resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }


@pytest.mark.integration
def test_otel_tracing(run_cookbook: Any, collector: _Collector, tmp_path: Path) -> None:
    pytest.importorskip("langchain_openai")
    pytest.importorskip("opentelemetry.sdk")
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    out = tmp_path / "spans.json"
    proc = run_cookbook(
        "otel_tracing",
        "--spans",
        str(out),
        cwd=tmp_path,
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "OTEL_SERVICE_NAME": "cookbook-test"},
    )
    data = json.loads(out.read_text())
    spans = data["spans"]
    app = [s for s in spans if s["name"] == "handle-ticket"]
    chats = [s for s in spans if s["kind"] == "CLIENT"]
    assert len(app) == 1 and len(chats) == 3, [s["name"] for s in spans]
    miss, hit, later = sorted(
        chats, key=lambda s: (s["attributes"]["tokenlean.task.id"], s["attributes"]["tokenlean.cache.hit"])
    )

    # The first two calls are children of the application's span, in its trace; the third is a root.
    for s in (miss, hit):
        assert s["parent"] == "handle-ticket" and s["trace_id"] == app[0]["trace_id"]
        assert s["attributes"]["tokenlean.task.id"] == "ticket-42"
    assert later["parent"] is None and later["attributes"]["tokenlean.task.id"] == "ticket-43"

    # GenAI attributes of a real call, with tokenlean's cost next to them.
    a = miss["attributes"]
    assert miss["name"] == f"chat {a['gen_ai.response.model']}"
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    assert a["tokenlean.cache.hit"] is False and a["tokenlean.cost"] > 0
    assert a["server.address"] == "127.0.0.1" and a["tokenlean.source"] == "tokenlean"

    # The repeated question: a cache hit, billed nothing, the replayed tokens under tokenlean.*.
    h = hit["attributes"]
    assert h["tokenlean.cache.hit"] is True
    assert h["gen_ai.usage.input_tokens"] == 0 and h["gen_ai.usage.output_tokens"] == 0
    assert h["tokenlean.cache.replayed.input_tokens"] == a["gen_ai.usage.input_tokens"]
    assert h["tokenlean.cache.replayed.output_tokens"] == a["gen_ai.usage.output_tokens"]
    assert h["tokenlean.cost"] == 0

    # Lever events: on the application's span while it was current; else on the next LLM span.
    events = {e["name"]: e["attributes"] for e in app[0]["events"]}
    assert set(events) == {"tokenlean.compaction", "tokenlean.layout"}
    c = events["tokenlean.compaction"]
    assert c["tokenlean.compaction.tokens_after"] < c["tokenlean.compaction.tokens_before"]
    assert c["tokenlean.compaction.budget_met"] is True
    assert events["tokenlean.layout"]["tokenlean.layout.breakers"] >= 1  # the request id moved
    assert [e["name"] for e in later["events"]] == ["tokenlean.compaction"]
    assert not miss["events"] and not hit["events"]

    # Metrics: the conventions' histograms and tokenlean's counters, with the real totals.
    m = data["metrics"]
    billed_and_replayed = 2 * (a["gen_ai.usage.input_tokens"] + a["gen_ai.usage.output_tokens"])
    assert m["gen_ai.client.token.usage"] == billed_and_replayed + sum(
        later["attributes"][f"gen_ai.usage.{k}_tokens"] for k in ("input", "output")
    )
    assert m["tokenlean.llm.calls"] == 3
    assert m["tokenlean.cost"] == pytest.approx(a["tokenlean.cost"] + later["attributes"]["tokenlean.cost"])
    assert "gen_ai.client.operation.duration" in m

    # The printed tree shows the same.
    assert "handle-ticket  [INTERNAL" in proc.stdout
    assert "tokenlean.cache.replayed.input_tokens = " in proc.stdout
    assert "event tokenlean.compaction: tokens_before=" in proc.stdout

    # And the standard OTLP path delivered the same spans and metrics to the collector.
    exported = _otlp_spans(collector.bodies("/v1/traces"))
    names = sorted(name for name, _ in exported)
    assert names == sorted(s["name"] for s in spans)
    otlp_hit = [attrs for _, attrs in exported if attrs.get("tokenlean.cache.hit") is True]
    assert len(otlp_hit) == 1 and otlp_hit[0]["gen_ai.usage.input_tokens"] == 0
    metric_names = _otlp_metric_names(collector.bodies("/v1/metrics"))
    assert {"gen_ai.client.token.usage", "gen_ai.client.operation.duration", "tokenlean.cost"} <= metric_names
