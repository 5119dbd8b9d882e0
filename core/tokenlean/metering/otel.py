"""OpenTelemetry: every metered call as a GenAI span and metric points, lever events as span events.

Teams read LLM figures in the tracing tool they already run (Langfuse, Phoenix, Datadog, Grafana
Tempo), and those tools read OpenTelemetry's GenAI semantic conventions. ``enable_otel(meter)``
makes a ledger speak them, with no glue code:

* **Spans.** Each ``UsageRecord`` the ledger stores becomes one ``CLIENT`` span named
  ``"{gen_ai.operation.name} {model}"``, with the record's own start and end times, parented to the
  span current where the call ended (the adapters record inline, in the caller's context). The
  attribute names come from the pinned ``opentelemetry-semantic-conventions`` (``SEMCONV_VERSION``);
  tokenlean's own figures (cost, task, cache hit) are ``tokenlean.*`` attributes.
* **No second LLM span.** When another instrumentation (OpenInference, OpenLLMetry) already made an
  LLM span for the call, our fields go onto *that* span under ``tokenlean.*``. Span finders
  (``register_span_finder``) locate it; the LangChain adapter registers one for OpenInference's
  tracer. If the foreign span has already ended (instrumentations end theirs in the same callback
  as ours, in handler order), a non-LLM ``tokenlean`` child span carries the fields instead.
* **Metrics.** The conventions' ``gen_ai.client.token.usage`` and
  ``gen_ai.client.operation.duration`` histograms (plus ``time_to_first_chunk``), and counters that
  match the Prometheus exposition one to one (``PROMETHEUS_TO_OTEL`` is the table the docs print).
* **Lever events.** ``tokenlean.events`` (cache lookups, compactions, layouts, routing decisions)
  become span events: on the span current where the lever ran, or, when none is, on the span of
  the next LLM call recorded in the same context (a lever acts just before the call it shapes).

Cache hits are spans too (the call happened, from the user's point of view), with
``gen_ai.usage.*`` zero (no provider billed them: a tracing tool that prices usage must not
charge them) and the replayed tokens under ``tokenlean.cache.replayed.*``.

Nothing here may break the call being metered: an exporter error is logged by the ledger's sink
guard, and the record stays in the ledger.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from tokenlean import __version__, events
from tokenlean.errors import ConfigError
from tokenlean.metering.ledger import Ledger, Meter, get_default_meter
from tokenlean.metering.records import UsageRecord

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, TracerProvider

__all__ = [
    "PROMETHEUS_TO_OTEL",
    "SCHEMA_URL",
    "SEMCONV_VERSION",
    "OtelExporter",
    "disable_otel",
    "enable_otel",
    "register_span_finder",
]

log = logging.getLogger("tokenlean.metering.otel")

#: The ``opentelemetry-semantic-conventions`` release the attribute and metric names come from
#: (the ``otel`` extra pins it; a test checks the installed one).
SEMCONV_VERSION = "0.66b2"
#: The conventions' schema that release implements, stamped on tokenlean's tracer and meter.
SCHEMA_URL = "https://opentelemetry.io/schemas/1.44.0"

#: Prometheus series (``to_prometheus``) -> the OTel instrument (and attribute filter) holding the
#: same figure. ``docs/observability.md`` prints this table; a test checks both sides agree.
PROMETHEUS_TO_OTEL: dict[str, str] = {
    "tokenlean_llm_calls_total": "tokenlean.llm.calls (sum over tokenlean.cache.hit)",
    "tokenlean_llm_cache_hits_total": 'tokenlean.llm.calls{tokenlean.cache.hit="true"}',
    "tokenlean_input_tokens_total": 'gen_ai.client.token.usage{gen_ai.token.type="input"} (sum, hits included)',
    "tokenlean_cached_input_tokens_total": "tokenlean.usage.cache_read.input_tokens",
    "tokenlean_cache_write_tokens_total": "tokenlean.usage.cache_creation.input_tokens",
    "tokenlean_output_tokens_total": 'gen_ai.client.token.usage{gen_ai.token.type="output"} (sum, hits included)',
    "tokenlean_cost_usd_total": 'tokenlean.cost{tokenlean.currency="USD"}',
    "tokenlean_unpriced_calls_total": "tokenlean.llm.unpriced_calls",
    "tokenlean_ttft_p50_seconds": "gen_ai.client.operation.time_to_first_chunk (p50 of the histogram)",
    "tokenlean_ttft_p95_seconds": "gen_ai.client.operation.time_to_first_chunk (p95 of the histogram)",
    "tokenlean_output_tokens_per_second": "tokenlean.generation.output_tokens / tokenlean.generation.duration",
}

#: A span finder: the LLM span another instrumentation made for the call ``record`` describes.
SpanFinder = Callable[[UsageRecord], "Span | None"]
_finders: list[SpanFinder] = []

# Lever events that found no recording span, waiting for the next LLM span of this context.
_PENDING: ContextVar[list[tuple[str, dict[str, Any], int]] | None] = ContextVar(
    "tokenlean_otel_pending_events", default=None
)
_MAX_PENDING = 64

# Token-count and duration buckets (the conventions' advisory boundaries).
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
_SECONDS_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)

#: tokenlean's counters: (name, unit, description).
_COUNTERS = (
    ("tokenlean.llm.calls", "{call}", "LLM calls metered."),
    ("tokenlean.llm.unpriced_calls", "{call}", "Calls whose model has no price."),
    ("tokenlean.usage.cache_read.input_tokens", "{token}", "Input tokens read from a prompt cache."),
    ("tokenlean.usage.cache_creation.input_tokens", "{token}", "Input tokens written to a prompt cache."),
    ("tokenlean.cost", "{USD}", "Cost of the calls, in tokenlean.currency."),
    ("tokenlean.generation.output_tokens", "{token}", "Output tokens of timed generations."),
    ("tokenlean.generation.duration", "s", "Time spent generating those output tokens."),
)

#: Model-name prefixes -> ``gen_ai.provider.name`` well-known values, used when the adapter did not
#: say which provider served the call.
_PROVIDER_BY_PREFIX = (
    ("gpt-", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("claude", "anthropic"),
    ("gemini", "gcp.gemini"),
    ("mistral", "mistral_ai"),
    ("command", "cohere"),
    ("deepseek", "deepseek"),
)


def register_span_finder(finder: SpanFinder) -> None:
    """Let ``finder(record)`` name another instrumentation's LLM span for a call (idempotent)."""
    if finder not in _finders:
        _finders.append(finder)


def _provider(rec: UsageRecord) -> str:
    extra = rec.extra.get("provider")
    if isinstance(extra, str) and extra:
        return extra
    name = rec.model.lower().rsplit("/", 1)[-1]
    for prefix, provider in _PROVIDER_BY_PREFIX:
        if name.startswith(prefix):
            return provider
    return "unknown"


def _server(endpoint: str | None) -> dict[str, Any]:
    if not endpoint or "://" not in endpoint:
        return {}
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError:
        return {}
    attrs: dict[str, Any] = {}
    if parts.hostname:
        attrs["server.address"] = parts.hostname
    if port is not None:
        attrs["server.port"] = port
    return attrs


@functools.lru_cache(maxsize=256)
def _public_endpoint(endpoint: str) -> str:
    """``endpoint`` without credentials: user:password@ and the query string never leave the process."""
    if "://" not in endpoint:
        return endpoint
    try:
        parts = urlsplit(endpoint)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port is not None else host
    except ValueError:
        return "(unparsable endpoint)"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


#: ``gen_ai.operation.name`` values of a model-inference span (agent and tool spans are parents).
_INFERENCE_OPS = frozenset({"chat", "text_completion", "generate_content"})


def _foreign_llm_span(span: Span) -> bool:
    """Whether ``span`` is an LLM span another instrumentation made (read from its attributes)."""
    attrs = getattr(span, "attributes", None)
    if not attrs:
        return False
    return (
        attrs.get("openinference.span.kind") == "LLM"
        or "llm.request.type" in attrs  # OpenLLMetry
        or (
            attrs.get("gen_ai.operation.name") in _INFERENCE_OPS
            and attrs.get("tokenlean.source") != "tokenlean"
        )
    )


class OtelExporter:
    """Turns ledger records into GenAI spans and metric points (a ledger sink), and lever events
    into span events. Build it with ``enable_otel``; it holds tokenlean's tracer and instruments."""

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        try:
            from opentelemetry import metrics, trace
            from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as ga
            from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as gm
        except ImportError as exc:  # pragma: no cover - exercised without the extra
            raise ConfigError("OpenTelemetry export needs the extra: pip install 'tokenlean[otel]'") from exc
        self._trace = trace
        self._ga = ga
        self.tracer = trace.get_tracer("tokenlean", __version__, tracer_provider, schema_url=SCHEMA_URL)
        m = metrics.get_meter("tokenlean", __version__, meter_provider, schema_url=SCHEMA_URL)
        hist = {
            name: m.create_histogram(
                name, unit=unit, description=text, explicit_bucket_boundaries_advisory=list(buckets)
            )
            for name, unit, text, buckets in (
                (
                    gm.GEN_AI_CLIENT_TOKEN_USAGE,
                    "{token}",
                    "Number of input and output tokens used.",
                    _TOKEN_BUCKETS,
                ),
                (gm.GEN_AI_CLIENT_OPERATION_DURATION, "s", "GenAI operation duration.", _SECONDS_BUCKETS),
                (
                    gm.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK,
                    "s",
                    "Time to receive the first chunk of a streamed response.",
                    _SECONDS_BUCKETS,
                ),
            )
        }
        self.token_usage = hist[gm.GEN_AI_CLIENT_TOKEN_USAGE]
        self.duration = hist[gm.GEN_AI_CLIENT_OPERATION_DURATION]
        self.ttfc = hist[gm.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK]
        # Counters are observable: the exporter keeps plain running sums per attribute set and the
        # SDK reads them at collection. A synchronous SDK counter costs several microseconds per
        # ``add``, seven of them per call; a dict update costs a fraction of one.
        self._sums: dict[tuple[Any, ...], list[float]] = {}
        self._sums_lock = threading.Lock()
        counters = {
            name: m.create_observable_counter(
                name, callbacks=[self._observer(i, name)], unit=unit, description=text
            )
            for i, (name, unit, text) in enumerate(_COUNTERS)
        }
        # Attribute dicts per (operation, provider, requested model, model, hit): built once.
        self._attrs: dict[tuple[Any, ...], tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {}
        #: Every instrument this exporter records into, by name.
        self.instruments: dict[str, Any] = {**hist, **counters}

    def _observer(self, index: int, name: str) -> Callable[[Any], Any]:
        from opentelemetry.metrics import Observation

        cost = name == "tokenlean.cost"

        def observe(options: Any) -> list[Any]:
            with self._sums_lock:
                snapshot = [(key, sums[index]) for key, sums in self._sums.items()]
            return [
                Observation(
                    value,
                    {**self._attrs[key][0], "tokenlean.currency": "USD"} if cost else self._attrs[key][0],
                )
                for key, value in snapshot
                if value
            ]

        return observe

    # -- spans ---------------------------------------------------------------------------------
    def span_attributes(self, rec: UsageRecord) -> dict[str, Any]:
        """The GenAI and ``tokenlean.*`` attributes of ``rec``'s span."""
        ga = self._ga
        u = rec.usage
        operation = rec.extra.get("operation") or "chat"
        requested = rec.extra.get("request_model") or rec.model
        attrs: dict[str, Any] = {
            ga.GEN_AI_OPERATION_NAME: operation,
            ga.GEN_AI_PROVIDER_NAME: _provider(rec),
            ga.GEN_AI_REQUEST_MODEL: requested,
            ga.GEN_AI_RESPONSE_MODEL: rec.model,
            **_server(rec.endpoint),
            **self.tokenlean_attributes(rec),
        }
        billed = not rec.cache_hit
        attrs[ga.GEN_AI_USAGE_INPUT_TOKENS] = u.input_tokens if billed else 0
        attrs[ga.GEN_AI_USAGE_OUTPUT_TOKENS] = u.output_tokens if billed else 0
        attrs[ga.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = u.cached_input_tokens if billed else 0
        attrs[ga.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] = u.cache_write_tokens if billed else 0
        if billed and u.reasoning_tokens:
            attrs[ga.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = u.reasoning_tokens
        if rec.ttft_s is not None:
            attrs[ga.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = rec.ttft_s
        return attrs

    @staticmethod
    def tokenlean_attributes(rec: UsageRecord) -> dict[str, Any]:
        """tokenlean's own fields: all a foreign LLM span gets (its ``gen_ai.*`` stay its own)."""
        u = rec.usage
        attrs: dict[str, Any] = {
            "tokenlean.source": "tokenlean",
            "tokenlean.record.id": rec.id,
            "tokenlean.cache.hit": rec.cache_hit,
            "tokenlean.usage.input_tokens": u.input_tokens,
            "tokenlean.usage.output_tokens": u.output_tokens,
            "tokenlean.usage.cache_read.input_tokens": u.cached_input_tokens,
            "tokenlean.usage.cache_creation.input_tokens": u.cache_write_tokens,
            "tokenlean.currency": "USD",
        }
        if rec.task_id is not None:
            attrs["tokenlean.task.id"] = rec.task_id
        if rec.endpoint is not None:
            attrs["tokenlean.endpoint"] = _public_endpoint(rec.endpoint)
        if rec.cost is not None:
            attrs["tokenlean.cost"] = float(rec.cost)
        else:
            attrs["tokenlean.unpriced"] = True
        if rec.cache_hit:
            attrs["tokenlean.cache.replayed.input_tokens"] = u.input_tokens
            attrs["tokenlean.cache.replayed.output_tokens"] = u.output_tokens
        return attrs

    def _find_foreign(self, rec: UsageRecord) -> Span | None:
        for finder in tuple(_finders):
            try:
                span = finder(rec)
            except Exception:
                log.exception("tokenlean: span finder %r failed (ignored)", finder)
                continue
            if span is not None:
                return span
        current = self._trace.get_current_span()
        return current if current.is_recording() and _foreign_llm_span(current) else None

    def export_span(self, rec: UsageRecord) -> Span:
        """Make (or annotate) the span of ``rec``; returns the span that carries the fields."""
        trace = self._trace
        pending = _PENDING.get()
        queued = list(pending) if pending else []
        if pending:
            pending.clear()
        end = _ns(rec.ended_at if rec.ended_at is not None else time.time())
        foreign = self._find_foreign(rec)
        if foreign is not None and foreign.is_recording():
            foreign.set_attributes(self.tokenlean_attributes(rec))
            span = foreign
        else:
            if foreign is not None:  # ended already: a non-LLM child carries our fields
                name, kind = "tokenlean", trace.SpanKind.INTERNAL
                attrs = self.tokenlean_attributes(rec)
                context = trace.set_span_in_context(foreign)
            else:
                attrs = self.span_attributes(rec)
                name = f"{attrs[self._ga.GEN_AI_OPERATION_NAME]} {rec.model}"
                kind, context = trace.SpanKind.CLIENT, None
            span = self.tracer.start_span(
                name, context=context, kind=kind, attributes=attrs, start_time=_ns(rec.started_at)
            )
        for ev_name, ev_attrs, ts in queued:
            span.add_event(ev_name, ev_attrs, ts)
        if span is not foreign:
            span.end(end_time=end)
        return span

    # -- metrics -------------------------------------------------------------------------------
    def export_metrics(self, rec: UsageRecord) -> None:
        """Add ``rec`` to the GenAI histograms and tokenlean's counters."""
        key = (
            rec.extra.get("operation") or "chat",
            _provider(rec),
            rec.extra.get("request_model") or rec.model,
            rec.model,
            rec.cache_hit,
        )
        attrs = self._attrs.get(key)
        if attrs is None:
            ga = self._ga
            base = {
                ga.GEN_AI_OPERATION_NAME: key[0],
                ga.GEN_AI_PROVIDER_NAME: key[1],
                ga.GEN_AI_REQUEST_MODEL: key[2],
                ga.GEN_AI_RESPONSE_MODEL: key[3],
                "tokenlean.cache.hit": key[4],
            }
            attrs = (
                base,
                {**base, ga.GEN_AI_TOKEN_TYPE: "input"},
                {**base, ga.GEN_AI_TOKEN_TYPE: "output"},
            )
            self._attrs[key] = attrs
        base = attrs[0]
        u = rec.usage
        self.token_usage.record(u.input_tokens, attrs[1])
        self.token_usage.record(u.output_tokens, attrs[2])
        timed = not rec.cache_hit  # a replayed answer says nothing about the model's latency
        gen = rec.generation_s if timed else None
        gen_ok = gen is not None and gen > 0 and u.output_tokens > 0
        with self._sums_lock:
            sums = self._sums.get(key)
            if sums is None:
                sums = self._sums[key] = [0.0] * len(_COUNTERS)
            sums[0] += 1  # order of _COUNTERS
            if rec.cost is None:
                sums[1] += 1
            else:
                sums[4] += float(rec.cost)
            sums[2] += u.cached_input_tokens
            sums[3] += u.cache_write_tokens
            if gen_ok:
                assert gen is not None
                sums[5] += u.output_tokens
                sums[6] += gen
        if not timed:
            return
        if (d := rec.duration_s) is not None:
            self.duration.record(d, base)
        if (t := rec.ttft_s) is not None:
            self.ttfc.record(t, base)

    def __call__(self, rec: UsageRecord) -> None:
        """The ledger sink: one span (or annotation) and the metric points per stored record."""
        try:
            self.export_span(rec)
        finally:
            self.export_metrics(rec)

    # -- lever events --------------------------------------------------------------------------
    def on_event(self, name: str, attributes: Mapping[str, Any]) -> None:
        """A ``tokenlean.events`` listener: the event on the current span, else queued for the
        next LLM span recorded in this context."""
        ts = time.time_ns()
        current = self._trace.get_current_span()
        if current.is_recording():
            current.add_event(name, attributes, ts)
            return
        pending = _PENDING.get()
        if pending is None:
            pending = []
            _PENDING.set(pending)
        pending.append((name, dict(attributes), ts))
        if len(pending) > _MAX_PENDING:  # never claimed by an LLM call: keep the newest
            del pending[0]


# -- switching it on -------------------------------------------------------------------------------
_lock = threading.Lock()
_exporters: weakref.WeakKeyDictionary[Ledger, OtelExporter] = weakref.WeakKeyDictionary()
_unsubscribe: Callable[[], None] | None = None
_env_configured = False


def _configure_from_environment() -> None:
    """Install SDK providers with OTLP/HTTP exporters when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the
    traces / metrics variant) is set and the application configured no provider of its own."""
    global _env_configured
    if _env_configured:
        return
    common = bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    want_traces = common or bool(os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
    want_metrics = common or bool(os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"))
    if not (want_traces or want_metrics):
        return
    from opentelemetry import metrics, trace

    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise ConfigError("OTLP export needs the extra: pip install 'tokenlean[otel]'") from exc
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "tokenlean")})
    # A provider the application set up itself is kept: we export through it.
    if want_traces and type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider":
        tp = SdkTracerProvider(resource=resource)
        tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(tp)
    if want_metrics and type(metrics.get_meter_provider()).__name__ == "_ProxyMeterProvider":
        reader = PeriodicExportingMetricReader(OTLPMetricExporter())
        metrics.set_meter_provider(SdkMeterProvider(resource=resource, metric_readers=[reader]))
    _env_configured = True


def enable_otel(
    meter: Meter | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> OtelExporter:
    """Export every call ``meter`` records (default: the process default meter) to OpenTelemetry.

    Uses the given providers, else the global ones; with neither configured and
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, installs SDK providers exporting over OTLP/HTTP (the
    standard environment variables apply). Idempotent per ledger: a second call returns the
    exporter already attached. Lever events are exported once per process, by the first exporter.
    """
    global _unsubscribe
    meter = meter if meter is not None else get_default_meter()
    with _lock:
        existing = _exporters.get(meter.ledger)
        if existing is not None:
            return existing
        if tracer_provider is None and meter_provider is None:
            _configure_from_environment()
        exporter = OtelExporter(tracer_provider=tracer_provider, meter_provider=meter_provider)
        meter.ledger.add_sink(exporter)
        _exporters[meter.ledger] = exporter
        if _unsubscribe is None:
            _unsubscribe = events.subscribe(exporter.on_event)
        return exporter


def disable_otel(meter: Meter | None = None) -> None:
    """Stop exporting ``meter``'s calls (and lever events, once no ledger exports)."""
    global _unsubscribe
    meter = meter if meter is not None else get_default_meter()
    with _lock:
        exporter = _exporters.pop(meter.ledger, None)
        if exporter is not None:
            meter.ledger.remove_sink(exporter)
        if not _exporters and _unsubscribe is not None:
            _unsubscribe()
            _unsubscribe = None
