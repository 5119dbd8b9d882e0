"""OpenTelemetry for the LangChain handler: the GenAI fields LangChain knows, and OpenInference's span.

Imported only when a handler is built with ``otel=True``. OpenInference's LangChain tracer makes
an LLM span per model run, keyed by run id, without making it current; it ends the span in its
own ``on_llm_end``, which LangChain may call before or after ours (handler order). So the span is
looked up at our start event too: whichever order the handlers run in, we find it, and tokenlean's
fields go onto it (or onto a ``tokenlean`` child if it has already ended): never a second LLM span.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from tokenlean.metering import Meter, UsageRecord
from tokenlean.metering.otel import enable_otel, register_span_finder

__all__ = ["COMPLETION_KEY", "call_extra", "enable", "forget", "on_start"]

#: Marks the start kwargs of a completion (not chat) model call, set by the handler's ``on_llm_start``.
COMPLETION_KEY = "_tokenlean_completion"

_OPENINFERENCE = "openinference.instrumentation.langchain"
# Spans found at a run's start, for runs whose end we have not recorded yet (bounded).
_seen: dict[str, Any] = {}
_seen_lock = threading.Lock()
_MAX_SEEN = 10_000


def _openinference_span(run_id: UUID) -> Any:
    module = sys.modules.get(_OPENINFERENCE)
    if module is None:
        return None
    instrumentor = module.LangChainInstrumentor()
    if getattr(instrumentor, "_tracer", None) is None:  # installed, not instrumented
        return None
    return instrumentor.get_span(run_id)


def on_start(run_id: UUID) -> None:
    """Remember OpenInference's span for ``run_id`` if its tracer already started one."""
    span = _openinference_span(run_id)
    if span is not None:
        with _seen_lock:
            _seen[str(run_id)] = span
            while len(_seen) > _MAX_SEEN:
                _seen.pop(next(iter(_seen)))


def forget(run_id: UUID) -> None:
    """Drop what ``on_start`` kept for a run that failed (no record will claim it)."""
    with _seen_lock:
        _seen.pop(str(run_id), None)


def _find(rec: UsageRecord) -> Any:
    with _seen_lock:
        seen = _seen.pop(rec.id, None)
    try:
        run_id = UUID(rec.id)
    except ValueError:
        return seen
    live = _openinference_span(run_id)
    return live if live is not None else seen


def call_extra(start_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The GenAI fields of a call that only the start event shows: provider, requested model."""
    extra: dict[str, Any] = {}
    if not isinstance(start_kwargs, Mapping):
        return extra
    meta = start_kwargs.get("metadata") or {}
    provider = meta.get("ls_provider") if isinstance(meta, Mapping) else None
    if isinstance(provider, str) and provider:
        extra["provider"] = provider
    params = start_kwargs.get("invocation_params") or {}
    for key in ("model", "model_name", "model_id"):
        value = params.get(key) if isinstance(params, Mapping) else None
        if isinstance(value, str) and value:
            extra["request_model"] = value
            break
    if start_kwargs.get(COMPLETION_KEY):
        extra["operation"] = "text_completion"  # ``on_llm_start``: a completion model, not a chat model
    return extra


def enable(meter: Meter) -> None:
    """Export ``meter``'s calls to OpenTelemetry, looking for OpenInference's span of each call."""
    register_span_finder(_find)
    enable_otel(meter)
