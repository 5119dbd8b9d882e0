"""Metering for LangChain: a callback handler that records every chat-model call in a ledger.

The handler only turns LangChain callback events into ``tokenlean.metering.Meter.record``
calls; prices, aggregation and export live in the core. Design points:

* ``run_inline = True``: LangChain then calls it directly (also from async runs) instead of in
  a thread pool, so it sees ``on_llm_new_token`` at the moment the token arrives (TTFT) and
  adds no executor hop. Its shared state is two dicts keyed by run id, touched only with single
  (atomic) get / set / pop operations, so it is safe without a lock on the hot path when a
  graph runs tool and model calls in parallel threads (the ledger has its own lock).
* Tokens come from ``AIMessage.usage_metadata`` (whose ``input_tokens`` already includes cache
  reads and writes), falling back to ``llm_output["token_usage"]``; both go through the core's
  ``normalize_usage``, so every provider shape ends up in one ``Usage``.
* Calls are grouped into a task by the *root run*: the outermost chain/graph run the handler saw
  start. ``track_task("name")`` (or ``metadata={"tokenlean_task_id": ...}``) names the task
  explicitly instead.
* A LangChain cache hit replays ``on_llm_end`` with the *original* call's usage. langchain-core
  1.x marks such replayed messages with ``usage_metadata["total_cost"] == 0``; the handler
  records them as ``cache_hit=True`` with cost zero, so the tokens are visible but not charged.
* Nothing here may break the user's chain: every callback catches its own exceptions and logs
  them on ``tokenlean.langchain`` (LangChain would only log a terse warning otherwise).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult
from langchain_core.tracers.context import register_configure_hook

from tokenlean.metering import Meter, TaskSummary, UsageRecord, current_task_id, get_default_meter, task_scope
from tokenlean.metering.calls import CACHE_HIT_FLAG, MissingUsageWarner, PendingCall, record_call

__all__ = ["TokenleanCallbackHandler", "TrackedTask", "track_task"]

log = logging.getLogger("tokenlean.langchain.callbacks")

#: Metadata keys (``config={"metadata": {...}}``) that name the task of a run explicitly.
TASK_METADATA_KEYS = ("tokenlean_task_id", "task_id")


@dataclass(slots=True)
class _RunInfo:
    root_id: UUID
    root_name: str


def _run_name(serialized: Mapping[str, Any] | None, kwargs: Mapping[str, Any]) -> str:
    name = kwargs.get("name")
    if isinstance(name, str) and name:
        return name
    if isinstance(serialized, Mapping):
        if isinstance(serialized.get("name"), str):
            return str(serialized["name"])
        ident = serialized.get("id")
        if isinstance(ident, list) and ident:
            return str(ident[-1])
    return "run"


def _model_from_start(kwargs: Mapping[str, Any]) -> str | None:
    """The model a start event's invocation params (or LangSmith metadata) ask for."""
    params = kwargs.get("invocation_params") or {}
    for key in ("model", "model_name", "model_id", "deployment_name"):
        value = params.get(key) if isinstance(params, Mapping) else None
        if isinstance(value, str) and value:
            return value
    meta = kwargs.get("metadata") or {}
    value = meta.get("ls_model_name") if isinstance(meta, Mapping) else None
    return value if isinstance(value, str) and value else None


def _endpoint_from_start(serialized: Mapping[str, Any] | None, kwargs: Mapping[str, Any]) -> str | None:
    """The server URL when the model's constructor arguments show it, else the provider name."""
    ctor = serialized.get("kwargs") if isinstance(serialized, Mapping) else None
    params = kwargs.get("invocation_params") or {}
    meta = kwargs.get("metadata") or {}
    for source, key in (
        (ctor, "openai_api_base"),
        (ctor, "base_url"),
        (params, "base_url"),
        (meta, "ls_provider"),
    ):
        value = source.get(key) if isinstance(source, Mapping) else None
        if isinstance(value, str) and value:
            return value
    return None


class TokenleanCallbackHandler(BaseCallbackHandler):
    """Records each chat-model (and LLM) call as a ``UsageRecord`` in ``meter``'s ledger.

    Pass it in ``config={"callbacks": [handler]}`` (or let ``track_task`` install one).
    ``otel=True`` also exports every call as an OpenTelemetry GenAI span and metric points
    (``tokenlean.metering.otel``; needs ``tokenlean[otel]``), adding tokenlean's fields to
    OpenInference's LLM span instead of a second one when that instrumentation is on.
    ``task_id`` fixes the task of every call this handler sees; otherwise the task is taken from
    run metadata (``tokenlean_task_id``), the current ``task_scope`` / ``Meter.task``, or the
    root run (``"<root run name>#<last 8 hex digits of its id>"``; LangChain run ids are
    time-ordered UUIDv7, so the first digits would repeat), in that order.
    """

    run_inline = True
    raise_error = False

    def __init__(
        self,
        meter: Meter | None = None,
        *,
        task_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        otel: bool = False,
    ) -> None:
        super().__init__()
        self.meter = meter if meter is not None else get_default_meter()
        self.task_id = task_id
        self.tags = dict(tags or {})
        self.otel = bool(otel)
        if self.otel:
            from langchain_tokenlean._otel import enable

            enable(self.meter)
        self._runs: dict[UUID, _RunInfo] = {}
        self._pending: dict[UUID, PendingCall] = {}
        self._warn_no_usage = MissingUsageWarner(log, "streaming without stream_usage=True?")
        self._endpoint_cache: tuple[Any, str | None] | None = None

    def __repr__(self) -> str:
        return f"TokenleanCallbackHandler(task_id={self.task_id!r}, records={len(self.meter.ledger)})"

    # -- run tree ------------------------------------------------------------------------------
    # Single dict operations (get / set / pop on distinct run ids) are atomic, so the hot path
    # takes no lock; the lock only guards the read-modify-write of the warn-once set.
    def _root_of(self, run_id: UUID, parent_run_id: UUID | None, serialized: Any, kwargs: Any) -> _RunInfo:
        if parent_run_id is None:
            return _RunInfo(run_id, _run_name(serialized, kwargs))
        parent = self._runs.get(parent_run_id)
        if parent is not None:
            return parent
        return _RunInfo(parent_run_id, "run")  # attached below the root: the parent is our root

    def _enter(
        self, event: str, run_id: UUID, parent_run_id: UUID | None, serialized: Any, kwargs: Any
    ) -> None:
        # Called from every ``on_*_start`` of a non-model run: a failure here must never break the
        # user's chain, so it is logged (naming the event) and ignored.
        try:
            self._runs[run_id] = self._root_of(run_id, parent_run_id, serialized, kwargs)
        except Exception:
            log.exception("tokenlean: %s failed (ignored)", event)

    def _exit(self, run_id: UUID) -> None:
        self._runs.pop(run_id, None)

    def _task_for(self, info: _RunInfo, metadata: Mapping[str, Any] | None) -> str:
        if self.task_id is not None:
            return self.task_id
        if metadata and isinstance(metadata, Mapping):  # a callback may be handed anything
            for key in TASK_METADATA_KEYS:
                value = metadata.get(key)
                if value:
                    return str(value)
        scoped = current_task_id()
        if scoped is not None:
            return scoped
        return f"{info.root_name}#{info.root_id.hex[-8:]}"

    def _endpoint(self, serialized: Any, kwargs: Mapping[str, Any]) -> str | None:
        # ``serialized`` is a cached dict per model instance: remember the last one's endpoint.
        cached = self._endpoint_cache
        if cached is not None and cached[0] is serialized:
            return cached[1]
        endpoint = _endpoint_from_start(serialized, kwargs)
        if isinstance(serialized, dict):
            self._endpoint_cache = (serialized, endpoint)
        return endpoint

    # -- chains, tools, retrievers: only tracked to find the root run --------------------------
    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self._enter("on_chain_start", run_id, parent_run_id, serialized, kwargs)

    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self._enter("on_tool_start", run_id, parent_run_id, serialized, kwargs)

    def on_retriever_start(
        self,
        serialized: dict[str, Any] | None,
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self._enter("on_retriever_start", run_id, parent_run_id, serialized, kwargs)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._exit(run_id)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._exit(run_id)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._exit(run_id)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._exit(run_id)

    def on_retriever_end(self, documents: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._exit(run_id)

    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._exit(run_id)

    # -- model calls ---------------------------------------------------------------------------
    def _start_call(
        self,
        serialized: Mapping[str, Any] | None,
        run_id: UUID,
        parent_run_id: UUID | None,
        kwargs: Mapping[str, Any],
    ) -> None:
        now = time.time()
        try:
            task = self.task_id
            if task is None:
                task = self._task_for(
                    self._root_of(run_id, parent_run_id, serialized, kwargs), kwargs.get("metadata")
                )
            # The requested model is looked up only if the response does not name the one that
            # served it (``_record``): most responses do, and this runs on every call.
            self._pending[run_id] = PendingCall(
                now, task, None, self._endpoint(serialized, kwargs), context=kwargs
            )
            if self.otel:
                from langchain_tokenlean._otel import on_start

                on_start(run_id)
        except Exception:
            log.exception("tokenlean: could not start metering a model call (ignored)")

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[Any]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self._start_call(serialized, run_id, parent_run_id, kwargs)

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        if self.otel:
            from langchain_tokenlean._otel import COMPLETION_KEY

            kwargs[COMPLETION_KEY] = True
        self._start_call(serialized, run_id, parent_run_id, kwargs)

    def on_llm_new_token(self, token: str, *, run_id: UUID, chunk: Any = None, **kwargs: Any) -> None:
        # The first chunk of an OpenAI stream is often an empty role-only delta; TTFT is the
        # first chunk that carries content or a tool call.
        if not token:
            msg = getattr(chunk, "message", None)
            if not getattr(msg, "tool_call_chunks", None):
                return
        pending = self._pending.get(run_id)  # dict.get is atomic; no lock on the hot path
        if pending is not None and pending.first_token_at is None:
            pending.first_token_at = time.time()

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        ended = time.time()
        pending = self._pending.pop(run_id, None)
        try:
            self._record(response, run_id, pending, ended, kwargs.get("parent_run_id"))
        except Exception:
            log.exception("tokenlean: could not meter a model call (ignored; the chain goes on)")

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._pending.pop(run_id, None)
        if self.otel:
            from langchain_tokenlean._otel import forget

            forget(run_id)

    def _record(
        self,
        response: LLMResult,
        run_id: UUID,
        pending: PendingCall | None,
        ended: float,
        parent_run_id: UUID | None,
    ) -> UsageRecord | None:
        raw_usage, model, cache_hit = _read_result(response)
        if pending is None:  # handler attached mid-run: we missed the start event
            info = _RunInfo(parent_run_id or run_id, "run")
            pending = PendingCall(ended, self._task_for(info, None), None, None)
        elif model is None and pending.context is not None:
            model = _model_from_start(pending.context)
        extra = None
        if self.otel:
            from langchain_tokenlean._otel import call_extra

            extra = call_extra(pending.context)
        return record_call(
            self.meter,
            pending,
            raw_usage=raw_usage,
            model=model,
            tags=self.tags,
            extra=extra,
            ended_at=ended,
            cache_hit=cache_hit,
            record_id=run_id,
            warn_missing=self._warn_no_usage,
            logger=log,
        )


def _read_result(response: LLMResult) -> tuple[Any, str | None, bool]:
    """(raw usage block, served model name, cache hit) of one model call's result."""
    usage: Any = None
    model: str | None = None
    cache_hit = False
    for generations in response.generations:
        for gen in generations:
            info = getattr(gen, "generation_info", None) or {}
            if info.get(CACHE_HIT_FLAG):
                cache_hit = True
            msg = getattr(gen, "message", None)
            if msg is None:
                continue
            meta = getattr(msg, "response_metadata", None) or {}
            if meta.get(CACHE_HIT_FLAG):
                cache_hit = True
            if model is None:
                name = meta.get("model_name") or meta.get("model")
                model = name if isinstance(name, str) and name else None
            um = getattr(msg, "usage_metadata", None)
            if usage is None and um:
                usage = um  # normalize_usage judges it (and names what is wrong) at record time
                # langchain-core zeroes ``total_cost`` on messages replayed from its cache.
                if isinstance(um, Mapping) and "total_cost" in um and not um["total_cost"]:
                    cache_hit = True
        break  # one model call = one prompt; n>1 choices share one usage block
    llm_output = response.llm_output or {}
    if usage is None:
        usage = llm_output.get("token_usage") or llm_output.get("usage")
    if model is None:
        name = llm_output.get("model_name") or llm_output.get("model")
        model = name if isinstance(name, str) and name else None
    return usage, model, cache_hit


# -- track_task ------------------------------------------------------------------------------

_TRACKER: ContextVar[TokenleanCallbackHandler | None] = ContextVar(
    "tokenlean_langchain_tracker", default=None
)
_HOOK_LOCK = threading.Lock()
_HOOK_REGISTERED = False


def _ensure_hook() -> None:
    # Registered once per process (get_usage_metadata_callback registers one per call, which
    # grows LangChain's hook list forever).
    global _HOOK_REGISTERED
    with _HOOK_LOCK:
        if not _HOOK_REGISTERED:
            register_configure_hook(_TRACKER, inheritable=True)
            _HOOK_REGISTERED = True


@dataclass(frozen=True, slots=True)
class TrackedTask:
    """What ``track_task`` yields: the task id, its handler, and live views of its records."""

    task_id: str
    handler: TokenleanCallbackHandler = field(repr=False)

    @property
    def meter(self) -> Meter:
        return self.handler.meter

    def summary(self) -> TaskSummary:
        return self.handler.meter.ledger.task(self.task_id)

    def records(self) -> list[UsageRecord]:
        return self.handler.meter.ledger.records(self.task_id)


@contextmanager
def track_task(
    name: str,
    *,
    meter: Meter | None = None,
    tags: Mapping[str, str] | Sequence[str] | None = None,
    otel: bool = False,
) -> Iterator[TrackedTask]:
    """Meter every LangChain model call inside the block as task ``name``.

    No callback needs to be passed: like ``get_usage_metadata_callback``, a handler is
    installed for every run configured inside the block (threads and asyncio tasks started
    inside inherit it). Calls land in ``meter`` (default: ``get_default_meter()``); ``otel=True``
    exports them to OpenTelemetry too (see ``TokenleanCallbackHandler``).
    """
    _ensure_hook()
    tag_map = dict(tags) if isinstance(tags, Mapping) else {t: "" for t in (tags or ())}
    handler = TokenleanCallbackHandler(meter, task_id=name, tags=tag_map, otel=otel)
    token = _TRACKER.set(handler)
    try:
        with task_scope(name) as task_id:
            yield TrackedTask(task_id, handler)
    finally:
        _TRACKER.reset(token)
