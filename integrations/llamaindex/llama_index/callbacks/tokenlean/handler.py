"""Metering for LlamaIndex: an instrumentation event handler that records every LLM call.

LlamaIndex emits ``LLMChatStartEvent`` / ``LLMChatInProgressEvent`` / ``LLMChatEndEvent`` (and
the ``Completion`` equivalents) on its instrumentation dispatcher for every LLM call, whatever
the engine or agent on top. One ``TokenleanEventHandler`` on the *root* dispatcher therefore
sees them all; ``instrument()`` registers it once (registering twice would count each call
twice). Start and end of one call share the event's ``span_id``; the first in-progress event
of a streamed call gives the time to first token.

Tokens are read from ``response.raw["usage"]`` (the provider's own numbers), then from
``response.additional_kwargs`` (where the OpenAI integrations copy them), through the core's
``normalize_usage``. The dispatcher silently swallows handler exceptions, so this handler
catches and logs its own on ``tokenlean.llamaindex``: a metering bug is visible, never fatal.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from llama_index.core.instrumentation import root_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatInProgressEvent,
    LLMChatStartEvent,
    LLMCompletionEndEvent,
    LLMCompletionInProgressEvent,
    LLMCompletionStartEvent,
)
from pydantic import ConfigDict, Field

from tokenlean.metering import Meter, UsageRecord, current_task_id, get_default_meter
from tokenlean.metering.calls import CACHE_HIT_FLAG, MissingUsageWarner, PendingCall, record_call

__all__ = ["TokenleanEventHandler", "instrument", "uninstrument"]

log = logging.getLogger("tokenlean.llamaindex.callbacks")

#: Event tags (``llama_index.core.instrumentation`` ``instrument_tags``) naming the task.
TASK_TAG_KEYS = ("tokenlean_task_id", "task_id")

_START = (LLMChatStartEvent, LLMCompletionStartEvent)
_PROGRESS = (LLMChatInProgressEvent, LLMCompletionInProgressEvent)
_END = (LLMChatEndEvent, LLMCompletionEndEvent)


@dataclass(slots=True)
class _PendingCall(PendingCall):
    """A pending call that may wrap another (a chat over ``complete``): only one is recorded."""

    parent: str | None = None
    has_inner: bool = False


def _get(obj: Any, key: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


# The LLM call in flight in this context. Many LLM classes implement one entry point with another
# (CustomLLM.chat calls complete, achat calls chat), and each emits its own start/end events:
# only the innermost call, the one that talked to the model, is recorded.
_IN_CALL: ContextVar[str | None] = ContextVar("tokenlean_llamaindex_call", default=None)


def _call_key(event: BaseEvent) -> str:
    # Start/progress/end of one call share span_id; without an active span, calls on one
    # thread cannot overlap, so the thread identifies the call.
    return event.span_id or f"thread-{threading.get_ident()}"


class TokenleanEventHandler(BaseEventHandler):
    """Turns LlamaIndex LLM events into ``UsageRecord`` s in ``meter``'s ledger.

    ``task_id`` fixes the task of every call; otherwise it comes from the event tags
    (``instrument_tags({"tokenlean_task_id": ...})``) or the current ``task_scope`` /
    ``Meter.task`` when the call starts. Use ``instrument()`` rather than adding it yourself.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    meter: Meter = Field(default_factory=get_default_meter, exclude=True)
    task_id: str | None = None
    #: Also export each call to OpenTelemetry (``instrument(otel=True)``).
    otel: bool = False
    # Plain (excluded) fields rather than PrivateAttr: private attributes go through pydantic's
    # __getattr__, which costs microseconds on every LLM event.
    pending: dict[str, _PendingCall] = Field(default_factory=dict, exclude=True, repr=False)
    lock: Any = Field(default_factory=threading.Lock, exclude=True, repr=False)
    usage_warner: MissingUsageWarner = Field(
        default_factory=lambda: MissingUsageWarner(log, "streamed without a usage chunk?"),
        exclude=True,
        repr=False,
    )

    @classmethod
    def class_name(cls) -> str:
        return "TokenleanEventHandler"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        try:
            if isinstance(event, _PROGRESS):
                pending = self.pending.get(_call_key(event))  # atomic get: no lock per chunk
                if pending is not None and pending.first_token_at is None:
                    pending.first_token_at = time.time()
            elif isinstance(event, _START):
                self._start(event)
            elif isinstance(event, _END):
                self._end(event)
        except Exception:
            log.exception("tokenlean: metering a LlamaIndex event failed (ignored)")

    def _task_for(self, event: BaseEvent) -> str | None:
        if self.task_id is not None:
            return self.task_id
        for key in TASK_TAG_KEYS:
            value = event.tags.get(key) if event.tags else None
            if value:
                return str(value)
        return current_task_id()

    def _start(self, event: LLMChatStartEvent | LLMCompletionStartEvent) -> None:
        model_dict = event.model_dict or {}
        model = model_dict.get("model") or model_dict.get("model_name")
        # to_payload() leaves out api_base; the integration's class name is the next best label.
        endpoint = model_dict.get("api_base") or model_dict.get("base_url") or model_dict.get("class_name")
        pending = _PendingCall(
            started_at=time.time(),
            task_id=self._task_for(event),
            model=model if isinstance(model, str) else None,
            endpoint=endpoint if isinstance(endpoint, str) else None,
        )
        if self.otel:
            pending.context = _otel_extra(event, model_dict)
        key = _call_key(event)
        outer = _IN_CALL.get()
        with self.lock:
            outer_call = self.pending.get(outer) if outer is not None else None
            if outer_call is not None:  # nested in a call still in flight: the outer is a wrapper
                outer_call.has_inner = True
                pending.parent = outer
            self.pending[key] = pending
        _IN_CALL.set(key)

    def _end(self, event: LLMChatEndEvent | LLMCompletionEndEvent) -> UsageRecord | None:
        ended = time.time()
        key = _call_key(event)
        with self.lock:
            pending = self.pending.pop(key, None)
        if pending is None:
            pending = _PendingCall(ended, self._task_for(event), None, None)
        if _IN_CALL.get() == key:
            _IN_CALL.set(pending.parent)
        if pending.has_inner:  # the inner call was recorded; this one only wrapped it
            return None
        response = event.response
        if response is None:  # the call failed; LlamaIndex sends an end event with no response
            return None
        raw = response.raw
        extra_kwargs = response.additional_kwargs or {}
        served = _get(raw, "model")
        cache_hit = bool(extra_kwargs.get(CACHE_HIT_FLAG) or _get(raw, CACHE_HIT_FLAG))
        raw_usage = _get(raw, "usage")
        if raw_usage is None and ("prompt_tokens" in extra_kwargs or "completion_tokens" in extra_kwargs):
            raw_usage = extra_kwargs
        return record_call(
            self.meter,
            pending,
            raw_usage=raw_usage,
            model=served if isinstance(served, str) and served else None,
            ended_at=ended,
            cache_hit=cache_hit,
            record_id=event.id_,
            extra={"span_id": event.span_id, **(pending.context or {})},
            warn_missing=self.usage_warner,
            logger=log,
            call_label=f"LLM call {event.span_id}",
        )


def _otel_extra(event: BaseEvent, model_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The GenAI fields only the start event shows: operation, provider, requested model."""
    extra: dict[str, Any] = {}
    if isinstance(event, LLMCompletionStartEvent):
        extra["operation"] = "text_completion"
    requested = model_dict.get("model") or model_dict.get("model_name")
    if isinstance(requested, str) and requested:
        extra["request_model"] = requested
    cls = str(model_dict.get("class_name") or "").lower()
    for needle, provider in (("openai", "openai"), ("anthropic", "anthropic"), ("gemini", "gcp.gemini")):
        if needle in cls:  # the client protocol, as the OpenAI / Anthropic SDK instrumentations name it
            extra["provider"] = provider
            break
    return extra


_INSTRUMENT_LOCK = threading.Lock()


def instrument(
    meter: Meter | None = None, *, task_id: str | None = None, otel: bool = False
) -> TokenleanEventHandler:
    """Meter every LlamaIndex LLM call of this process into ``meter`` (default meter if None).

    ``otel=True`` also exports each call as an OpenTelemetry GenAI span and metric points, and the
    levers' events as span events (``tokenlean.metering.otel``; needs ``tokenlean[otel]``).
    Idempotent: a handler for the same meter (and task) already on the root dispatcher is
    returned instead of adding a second one that would double-count (``otel=True`` on a second
    call switches export on for it).
    """
    meter = meter if meter is not None else get_default_meter()
    if otel:
        from tokenlean.metering.otel import enable_otel

        enable_otel(meter)
    root = root_dispatcher
    with _INSTRUMENT_LOCK:
        for h in root.event_handlers:
            if isinstance(h, TokenleanEventHandler) and h.meter is meter and h.task_id == task_id:
                h.otel = h.otel or otel
                return h
        handler = TokenleanEventHandler(meter=meter, task_id=task_id, otel=otel)
        root.add_event_handler(handler)
        return handler


def uninstrument(handler: TokenleanEventHandler) -> None:
    """Remove a handler added by ``instrument`` (no-op if it is not registered)."""
    root = root_dispatcher
    with _INSTRUMENT_LOCK:
        root.event_handlers = [h for h in root.event_handlers if h is not handler]
