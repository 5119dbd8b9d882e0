"""``enable_otel`` with only ``OTEL_EXPORTER_OTLP_ENDPOINT`` set: spans and metrics over OTLP/HTTP.

A tiny OTLP/HTTP receiver on 127.0.0.1 decodes the protobuf bodies with ``opentelemetry.proto``.
The exporting side runs in a subprocess: configuring from the environment installs the *global*
providers, which a test must never do in the pytest process itself.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
pytest.importorskip("opentelemetry.proto")

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

SERVICE = "tokenlean-otlp-test"


class _Receiver:
    def __init__(self) -> None:
        self.traces: list[ExportTraceServiceRequest] = []
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()


def _handler(store: _Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # a stuck client cannot hold a handler thread forever

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            encoding = (self.headers.get("Content-Encoding") or "").lower()
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            with store.lock:
                store.paths.append(self.path)
            if self.path == "/v1/traces":
                req = ExportTraceServiceRequest()
                req.ParseFromString(body)
                with store.lock:
                    store.traces.append(req)
                reply = ExportTraceServiceResponse().SerializeToString()
            elif self.path == "/v1/metrics":
                req_m = ExportMetricsServiceRequest()
                req_m.ParseFromString(body)
                with store.lock:
                    store.metrics.append(req_m)
                reply = ExportMetricsServiceResponse().SerializeToString()
            else:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

    return Handler


@pytest.fixture
def receiver() -> Iterator[tuple[str, _Receiver]]:
    store = _Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(store))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", store
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


CHILD = textwrap.dedent(
    """
    import json, time
    from opentelemetry import metrics, trace
    from tokenlean.metering import Meter, ModelPrice, PriceTable
    from tokenlean.metering.otel import enable_otel

    prices = PriceTable.default().with_price("gpt-otlp-test", ModelPrice(input="2.5", output="10"))
    meter = Meter(prices=prices)
    enable_otel(meter)  # no providers: configured from OTEL_EXPORTER_OTLP_ENDPOINT
    t0 = time.time() - 3
    meter.record(model="gpt-otlp-test", usage={"prompt_tokens": 321, "completion_tokens": 45},
                 started_at=t0, ended_at=t0 + 0.75, task_id="otlp")
    meter.record(model="gpt-otlp-test", usage={"prompt_tokens": 77, "completion_tokens": 9},
                 started_at=t0 + 1, first_token_at=t0 + 1.2, ended_at=t0 + 1.5, task_id="otlp")
    print(json.dumps([r.to_dict() for r in meter.ledger.records()]))
    trace.get_tracer_provider().shutdown()   # flushes the batch span processor
    metrics.get_meter_provider().shutdown()  # the periodic reader's final collection and export
    """
)


def _value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    return None if which is None else getattr(v, str(which))


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs if isinstance(kv, KeyValue)}


def test_env_endpoint_exports_spans_and_metrics_over_otlp_http(receiver: tuple[str, _Receiver]) -> None:
    url, store = receiver
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=url,
        OTEL_SERVICE_NAME=SERVICE,
        OTEL_EXPORTER_OTLP_TIMEOUT="5",
        OTEL_METRIC_EXPORT_INTERVAL="60000",  # only the final export at shutdown
    )
    proc = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    records = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(records) == 2
    with store.lock:
        traces, metric_reqs, paths = list(store.traces), list(store.metrics), list(store.paths)
    assert set(paths) == {"/v1/traces", "/v1/metrics"}, paths

    # -- spans ------------------------------------------------------------------------------------
    spans = []
    for req in traces:
        for rs in req.resource_spans:
            assert _attrs(rs.resource.attributes)["service.name"] == SERVICE
            for ss in rs.scope_spans:
                assert ss.scope.name == "tokenlean"
                spans.extend(ss.spans)
    by_id = {_attrs(s.attributes)["tokenlean.record.id"]: s for s in spans}
    assert set(by_id) == {r["id"] for r in records} and len(spans) == 2
    for rec in records:
        span = by_id[rec["id"]]
        a = _attrs(span.attributes)
        assert span.name == f"chat {rec['model']}"
        assert span.kind == span.SPAN_KIND_CLIENT
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.provider.name"] == "openai"  # a "gpt-" model
        assert a["gen_ai.request.model"] == a["gen_ai.response.model"] == rec["model"]
        assert a["gen_ai.usage.input_tokens"] == rec["usage"]["input_tokens"]
        assert a["gen_ai.usage.output_tokens"] == rec["usage"]["output_tokens"]
        assert a["tokenlean.cost"] == float(rec["cost"])
        assert a["tokenlean.task.id"] == rec["task_id"] == "otlp"
        assert a["tokenlean.cache.hit"] is False
        assert abs(span.start_time_unix_nano - rec["started_at"] * 1e9) < 1_000
        assert abs(span.end_time_unix_nano - rec["ended_at"] * 1e9) < 1_000
        if rec["first_token_at"] is not None:
            ttft = rec["first_token_at"] - rec["started_at"]
            assert a["gen_ai.response.time_to_first_chunk"] == pytest.approx(ttft, abs=1e-9)
        else:
            assert "gen_ai.response.time_to_first_chunk" not in a

    # -- metrics ----------------------------------------------------------------------------------
    sums: dict[tuple[str, str], float] = {}
    counts: dict[str, int] = {}
    for mreq in metric_reqs:
        for rm in mreq.resource_metrics:
            assert _attrs(rm.resource.attributes)["service.name"] == SERVICE
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    kind = metric.WhichOneof("data")
                    points = getattr(metric, kind).data_points
                    for p in points:
                        pa = _attrs(p.attributes)
                        if kind == "histogram":
                            key = (metric.name, str(pa.get("gen_ai.token.type", "")))
                            sums[key] = sums.get(key, 0) + p.sum
                            counts[metric.name] = counts.get(metric.name, 0) + p.count
                        elif kind == "sum":
                            value = p.as_double if p.WhichOneof("value") == "as_double" else p.as_int
                            sums[metric.name, ""] = sums.get((metric.name, ""), 0) + value
    assert sums["gen_ai.client.token.usage", "input"] == sum(r["usage"]["input_tokens"] for r in records)
    assert sums["gen_ai.client.token.usage", "output"] == sum(r["usage"]["output_tokens"] for r in records)
    assert sums["tokenlean.llm.calls", ""] == len(records)
    assert sums["tokenlean.cost", ""] == pytest.approx(sum(float(r["cost"]) for r in records), rel=1e-12)
    assert counts["gen_ai.client.operation.duration"] == 2
    assert counts["gen_ai.client.operation.time_to_first_chunk"] == 1
