"""Check metering against the wire: the usage an OpenAI-compatible server actually sent.

An adapter test that compares the ledger with what the adapter itself read proves nothing;
``ServerUsage`` reads the ``usage`` block of every non-streamed ``/chat/completions`` response
off the HTTP client (an httpx response hook), independently of any framework, so "the ledger
equals what the server reported" can be asserted. Used by the LangChain and LlamaIndex adapter
tests; equally useful to verify metering of your own client setup.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

__all__ = ["InMemoryOtel", "ServerUsage"]


class ServerUsage:
    """Collects the ``usage`` block of every non-streamed response the server sends.

    Pass ``hook`` / ``ahook`` as httpx ``event_hooks={"response": [...]}`` of the sync / async
    client the framework's model uses.
    """

    def __init__(self) -> None:
        self.usages: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def _keep(self, response: httpx.Response) -> None:
        if response.request.url.path.endswith("/chat/completions") and "json" in response.headers.get(
            "content-type", ""
        ):
            with self._lock:
                self.usages.append(response.json()["usage"])

    def hook(self, response: httpx.Response) -> None:
        response.read()
        self._keep(response)

    async def ahook(self, response: httpx.Response) -> None:
        await response.aread()
        self._keep(response)

    def total(self) -> tuple[int, int]:
        """(prompt tokens, completion tokens) summed over every response seen."""
        return (
            sum(u["prompt_tokens"] for u in self.usages),
            sum(u["completion_tokens"] for u in self.usages),
        )


class InMemoryOtel:
    """``meter``'s OpenTelemetry export into in-memory SDK exporters, to assert on what a run sends.

    Private providers (never the global ones), attached with ``enable_otel`` so that an adapter's
    ``otel=True`` reuses this exporter. ``spans`` holds the finished spans, ``reader`` collects the
    metrics; ``close()`` detaches and shuts the providers down. Needs ``tokenlean[otel]``.
    """

    def __init__(self, meter: Any) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        from tokenlean.metering.otel import enable_otel

        self.meter = meter
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.exporter = enable_otel(
            meter, tracer_provider=self.tracer_provider, meter_provider=self.meter_provider
        )

    def close(self) -> None:
        from tokenlean.metering.otel import disable_otel

        disable_otel(self.meter)
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
