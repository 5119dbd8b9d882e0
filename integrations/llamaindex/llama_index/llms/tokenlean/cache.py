"""``TokenleanCachedLLM``: any LlamaIndex LLM, answered from tokenlean's semantic cache when it can be.

LlamaIndex has no response cache, so this wraps the LLM itself: ``chat``/``complete`` (sync and
async) and their streaming forms look the request up first and call the wrapped LLM only on a miss.
The key is the whole call: the wrapped LLM's class and every field that can change an answer
(model, endpoint, sampling, limits, stop words), the per-call keyword arguments, and the messages
through the one lossless converter (``convert.messages_to_core``: images hashed, tool calls and
their arguments, tool ids), plus the tenant. A setting that cannot be written down means the call
is not cached (logged once). Only deterministic calls are cached: ``OpenAILike`` samples at its
default temperature (0.1), so set ``temperature=0`` or ``SemanticCache(assume_deterministic=True)``.
Truncated (``finish_reason="length"``), filtered and tool-call answers are never stored.
Streamed answers are stored whole with their chunks and replayed as a stream on a hit. Each
response's ``additional_kwargs["tokenlean_cache"]`` says whether it came from the cache.

A hit is still an LLM call to whoever meters the application: it emits the same start /
in-progress / end instrumentation events an LLM call emits, flagged as a cache hit and carrying the
tokens the call would have cost, so ``TokenleanEventHandler`` (or any other handler) records the
saving instead of missing the call. A miss emits nothing of its own: the wrapped LLM's events
describe it, once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Generator, Mapping, Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatInProgressEvent,
    LLMChatStartEvent,
    LLMCompletionEndEvent,
    LLMCompletionInProgressEvent,
    LLMCompletionStartEvent,
)
from llama_index.core.instrumentation.span import active_span_id
from llama_index.core.llms import LLM
from pydantic import ConfigDict, Field, PrivateAttr

from llama_index.llms.tokenlean.convert import llm_identity, message_to_core, messages_to_core
from tokenlean._lazy import renamed
from tokenlean.cache import CacheResult, SemanticCache
from tokenlean.cache.identity import describe_fields, find_temperature, unkeyable
from tokenlean.errors import TokenleanError
from tokenlean.metering.calls import CACHE_HIT_FLAG
from tokenlean.tokens import get_counter
from tokenlean.types import Message, Request, Response, ToolCall

__all__ = ["TokenleanCachedLLM"]

#: Names of the previous release, kept one release as deprecated aliases (they warn once).
__getattr__ = renamed(__name__, {"CachedLLM": "TokenleanCachedLLM"}, globals())

log = logging.getLogger("tokenlean.llamaindex.cache")
dispatcher = get_dispatcher(__name__)

CACHE_KEY = "tokenlean_cache"


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)


def _finish_reason(resp: Any) -> Any:
    """The finish reason a LlamaIndex response carries (``raw`` body or chunk, or kwargs), if any."""
    if resp is None:
        return None
    for holder in (
        getattr(resp, "additional_kwargs", None),
        getattr(getattr(resp, "message", None), "additional_kwargs", None),
    ):
        if isinstance(holder, Mapping) and (holder.get("finish_reason") or holder.get("stop_reason")):
            return holder.get("finish_reason") or holder.get("stop_reason")
    raw = getattr(resp, "raw", None)
    if raw is None:
        return None
    choices = _get(raw, "choices")
    if isinstance(choices, (list, tuple)) and choices:
        reason = _get(choices[0], "finish_reason")
        if reason:
            return reason
    return _get(raw, "stop_reason") or _get(raw, "finish_reason")


def _tool_calls(resp: Any) -> tuple[ToolCall, ...]:
    """Tool calls in a chat response (kwargs or blocks): such answers are not cached by default."""
    message = getattr(resp, "message", None)
    if message is None:
        return ()
    try:
        return message_to_core(message).tool_calls
    except TokenleanError:
        return (ToolCall(id="unreadable", name="unreadable"),)


class TokenleanCachedLLM(LLM):
    """Wrap ``llm`` with a :class:`tokenlean.cache.SemanticCache` (pass one, or its options).

    >>> llm = TokenleanCachedLLM(llm=OpenAILike(...), cache=SemanticCache("cache.db"))
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)
    llm: LLM = Field(description="The wrapped LLM that answers cache misses.")
    tenant: str | None = Field(default=None, description="Namespace isolating one user or customer.")
    _cache: SemanticCache = PrivateAttr()
    _last: CacheResult | None = PrivateAttr(default=None)

    def __init__(
        self, llm: LLM, cache: SemanticCache | None = None, tenant: str | None = None, **kwargs: Any
    ) -> None:
        options = {k: kwargs.pop(k) for k in list(kwargs) if k not in LLM.model_fields}
        super().__init__(llm=llm, tenant=tenant, **kwargs)
        self._cache = cache if cache is not None else SemanticCache(**options)

    @classmethod
    def class_name(cls) -> str:
        return "TokenleanCachedLLM"

    @property
    def cache(self) -> SemanticCache:
        return self._cache

    @property
    def last_result(self) -> CacheResult | None:
        return self._last

    @property
    def metadata(self) -> LLMMetadata:
        return self.llm.metadata

    # -- requests --------------------------------------------------------------------------------
    def _request(
        self, messages: tuple[Message, ...], kwargs: dict[str, Any], mode: dict[str, Any]
    ) -> Request | None:
        """The core request for a call, or None when something in it cannot be keyed (not cached)."""
        identity = llm_identity(self.llm)
        call, unknown = describe_fields(kwargs, ignore=())
        unknown = [*identity.unknown, *(f"call argument {k}" for k in unknown)]
        if unkeyable(unknown, adapter="TokenleanCachedLLM", logger=log):
            self._last = CacheResult(hit=False, rejected_by="uncacheable", reason="unkeyable settings")
            return None
        params = {**identity.params(), "call": call, **mode}
        temperature = find_temperature({"temperature": identity.temperature}, kwargs)
        if temperature is None:
            params.pop("temperature", None)
        else:
            params["temperature"] = temperature
        return Request(messages=messages, model=identity.model, params=params)

    def _chat_request(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> Request | None:
        try:
            msgs = tuple(messages_to_core(messages))
        except TokenleanError as exc:
            log.warning("cache skipped for a message it cannot read (%s)", exc)
            return None
        return self._request(msgs, kwargs, {})

    def _complete_request(self, prompt: str, formatted: bool, kwargs: dict[str, Any]) -> Request | None:
        msgs = (Message(role="user", content=prompt),)
        return self._request(msgs, kwargs, {"mode": "complete", "formatted": formatted})

    def _lookup(self, request: Request | None) -> CacheResult | None:
        if request is None:
            return None
        try:
            result = self._cache.lookup(request, tenant=self.tenant)
        except TokenleanError as exc:
            log.warning("cache lookup skipped (%s); calling the LLM", exc)
            return None
        self._last = result
        return result if result.hit and result.text is not None else None

    def _save(
        self, request: Request | None, text: str, raw: Any = None, chunks: list[str] | None = None
    ) -> None:
        """Store an answer unless it must not be replayed (truncated, filtered, a tool call, sampled)."""
        if request is None:
            return
        calls = _tool_calls(raw)
        answer = Response(
            message=Message(role="assistant", content=text or (None if calls else ""), tool_calls=calls),
            finish_reason=_finish_reason(raw),
        )
        why = self._cache.cacheable(request, answer)
        if why is not None:
            log.debug("not caching: %s", why)
            return
        try:
            self._cache.store(request, text, chunks=chunks, tenant=self.tenant, force=True)
        except TokenleanError as exc:
            log.warning("could not cache the answer (%s)", exc)

    @staticmethod
    def _info(hit: CacheResult | None) -> dict[str, Any]:
        if hit is None:
            return {CACHE_KEY: {"hit": False}}
        return {
            CACHE_KEY: {"hit": True, "tier": hit.tier, "similarity": hit.similarity},
            CACHE_HIT_FLAG: True,
        }

    def _saved_usage(self, request: Request | None, text: str) -> dict[str, Any]:
        """What the call would have cost, as a usage block: a hit's tokens are shown, not charged."""
        counter = get_counter(request.model if request is not None else None)
        prompt = counter.count_messages(list(request.messages)) if request is not None else 0
        return {"usage": {"prompt_tokens": prompt, "completion_tokens": counter.count(text)}}

    def _chat_events(
        self,
        messages: Sequence[ChatMessage],
        kwargs: dict[str, Any],
        request: Request | None,
        hit: CacheResult,
    ) -> Generator[ChatResponse, None, None]:
        """A hit as a chat call: start, one in-progress event per replayed chunk, end."""
        span = active_span_id.get()
        msgs = list(messages)
        payload = self.llm.to_payload()
        dispatcher.event(
            LLMChatStartEvent(model_dict=payload, messages=msgs, additional_kwargs=kwargs, span_id=span)
        )
        text, last = "", None
        for piece in hit.stream():
            text += piece
            last = ChatResponse(
                message=ChatMessage(role=MessageRole.ASSISTANT, content=text),
                delta=piece,
                additional_kwargs=self._info(hit),
            )
            dispatcher.event(LLMChatInProgressEvent(messages=msgs, response=last, span_id=span))
            yield last
        if last is None:
            message = ChatMessage(role=MessageRole.ASSISTANT, content=text)
            last = ChatResponse(message=message, additional_kwargs=self._info(hit))
        last.raw = self._saved_usage(request, text)
        dispatcher.event(LLMChatEndEvent(messages=msgs, response=last, span_id=span))

    def _completion_events(
        self, prompt: str, kwargs: dict[str, Any], request: Request | None, hit: CacheResult
    ) -> Generator[CompletionResponse, None, None]:
        """A hit as a completion call: start, one in-progress event per replayed chunk, end."""
        span = active_span_id.get()
        payload = self.llm.to_payload()
        dispatcher.event(
            LLMCompletionStartEvent(model_dict=payload, prompt=prompt, additional_kwargs=kwargs, span_id=span)
        )
        text, last = "", None
        for piece in hit.stream():
            text += piece
            last = CompletionResponse(text=text, delta=piece, additional_kwargs=self._info(hit))
            dispatcher.event(LLMCompletionInProgressEvent(prompt=prompt, response=last, span_id=span))
            yield last
        if last is None:
            last = CompletionResponse(text=text, additional_kwargs=self._info(hit))
        last.raw = self._saved_usage(request, text)
        dispatcher.event(LLMCompletionEndEvent(prompt=prompt, response=last, span_id=span))

    @staticmethod
    def _whole(replay: Generator[Any, None, None], hit: CacheResult, chat: bool) -> Any:
        """The last response of a replay, holding the whole answer (a non-streaming hit)."""
        last = None
        for last in replay:  # noqa: B007 - the loop runs the replay's events; the last response is kept
            pass
        if last is None:  # pragma: no cover - a replay always yields or builds a response
            raise RuntimeError("empty cache replay")
        last.delta = None
        if chat:
            last.message.content = hit.text
        else:
            last.text = hit.text or ""
        return last

    # -- chat ----------------------------------------------------------------------------------
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        req = self._chat_request(messages, kwargs)
        hit = self._lookup(req)
        if hit is not None:
            return self._whole(self._chat_events(messages, kwargs, req, hit), hit, chat=True)
        resp = self.llm.chat(messages, **kwargs)
        self._save(req, resp.message.content or "", resp)
        resp.additional_kwargs = {**resp.additional_kwargs, **self._info(None)}
        return resp

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        req = self._chat_request(messages, kwargs)
        hit = self._lookup(req)

        def passthrough() -> Generator[ChatResponse, None, None]:
            chunks: list[str] = []
            last: ChatResponse | None = None
            for r in self.llm.stream_chat(messages, **kwargs):
                chunks.append(r.delta or "")
                last = r
                yield r
            if last is not None:
                self._save(req, "".join(chunks), last, chunks)

        return self._chat_events(messages, kwargs, req, hit) if hit is not None else passthrough()

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        req = self._chat_request(messages, kwargs)
        hit = await asyncio.to_thread(self._lookup, req)
        if hit is not None:
            return self._whole(self._chat_events(messages, kwargs, req, hit), hit, chat=True)
        resp = await self.llm.achat(messages, **kwargs)
        await asyncio.to_thread(self._save, req, resp.message.content or "", resp)
        resp.additional_kwargs = {**resp.additional_kwargs, **self._info(None)}
        return resp

    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        req = self._chat_request(messages, kwargs)
        hit = await asyncio.to_thread(self._lookup, req)

        async def gen() -> AsyncGenerator[ChatResponse, None]:
            if hit is not None:
                for r in self._chat_events(messages, kwargs, req, hit):
                    yield r
                return
            chunks: list[str] = []
            last: ChatResponse | None = None
            async for r in await self.llm.astream_chat(messages, **kwargs):
                chunks.append(r.delta or "")
                last = r
                yield r
            if last is not None:
                await asyncio.to_thread(self._save, req, "".join(chunks), last, chunks)

        return gen()

    # -- complete ------------------------------------------------------------------------------
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        req = self._complete_request(prompt, formatted, kwargs)
        hit = self._lookup(req)
        if hit is not None:
            return self._whole(self._completion_events(prompt, kwargs, req, hit), hit, chat=False)
        resp = self.llm.complete(prompt, formatted=formatted, **kwargs)
        self._save(req, resp.text, resp)
        resp.additional_kwargs = {**resp.additional_kwargs, **self._info(None)}
        return resp

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        req = self._complete_request(prompt, formatted, kwargs)
        hit = self._lookup(req)

        def gen() -> Generator[CompletionResponse, None, None]:
            if hit is not None:
                yield from self._completion_events(prompt, kwargs, req, hit)
                return
            chunks: list[str] = []
            last: CompletionResponse | None = None
            for r in self.llm.stream_complete(prompt, formatted=formatted, **kwargs):
                chunks.append(r.delta or "")
                last = r
                yield r
            if last is not None:
                self._save(req, "".join(chunks), last, chunks)

        return gen()

    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        req = self._complete_request(prompt, formatted, kwargs)
        hit = await asyncio.to_thread(self._lookup, req)
        if hit is not None:
            return self._whole(self._completion_events(prompt, kwargs, req, hit), hit, chat=False)
        resp = await self.llm.acomplete(prompt, formatted=formatted, **kwargs)
        await asyncio.to_thread(self._save, req, resp.text, resp)
        resp.additional_kwargs = {**resp.additional_kwargs, **self._info(None)}
        return resp

    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        req = self._complete_request(prompt, formatted, kwargs)
        hit = await asyncio.to_thread(self._lookup, req)

        async def gen() -> AsyncGenerator[CompletionResponse, None]:
            if hit is not None:
                for r in self._completion_events(prompt, kwargs, req, hit):
                    yield r
                return
            chunks: list[str] = []
            last: CompletionResponse | None = None
            async for r in await self.llm.astream_complete(prompt, formatted=formatted, **kwargs):
                chunks.append(r.delta or "")
                last = r
                yield r
            if last is not None:
                await asyncio.to_thread(self._save, req, "".join(chunks), last, chunks)

        return gen()
