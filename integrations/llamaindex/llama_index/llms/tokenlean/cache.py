"""``CachedLLM``: any LlamaIndex LLM, answered from tokenlean's semantic cache when it can be.

LlamaIndex has no response cache, so this wraps the LLM itself: ``chat``/``complete`` (sync and
async) and their streaming forms look the request up first (scope = model, the wrapped LLM's
sampling settings, system prompt, conversation, tenant) and call the wrapped LLM only on a miss.
Streamed answers are stored whole with their chunks and replayed as a stream on a hit. Each
response's ``additional_kwargs["tokenlean_cache"]`` says whether it came from the cache.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Generator, Sequence
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
from llama_index.core.llms import LLM
from pydantic import ConfigDict, Field, PrivateAttr

from tokenlean.cache import CacheResult, SemanticCache
from tokenlean.errors import TokenleanError
from tokenlean.types import Message, Request, normalize_role

__all__ = ["CachedLLM"]

log = logging.getLogger("tokenlean.llamaindex.cache")

CACHE_KEY = "tokenlean_cache"
_PARAMS = ("temperature", "max_tokens", "top_p", "seed", "stop")


class CachedLLM(LLM):
    """Wrap ``llm`` with a :class:`tokenlean.cache.SemanticCache` (pass one, or its options).

    >>> llm = CachedLLM(llm=OpenAILike(...), cache=SemanticCache("cache.db"))
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
    def _params(self) -> dict[str, Any]:
        params = {k: getattr(self.llm, k) for k in _PARAMS if getattr(self.llm, k, None) is not None}
        extra = getattr(self.llm, "additional_kwargs", None)
        if isinstance(extra, dict):
            params.update({k: v for k, v in extra.items() if k in _PARAMS})
        return params

    def _chat_request(self, messages: Sequence[ChatMessage]) -> Request:
        msgs = tuple(
            Message(role=role, content=m.content or "", tool_call_id="unknown" if role == "tool" else None)
            for m in messages
            for role in (normalize_role(m.role),)
        )
        return Request(messages=msgs, model=self.metadata.model_name, params=self._params())

    def _complete_request(self, prompt: str, formatted: bool) -> Request:
        return Request(
            messages=(Message(role="user", content=prompt),),
            model=self.metadata.model_name,
            params={**self._params(), "mode": "complete", "formatted": formatted},
        )

    def _lookup(self, request: Request) -> CacheResult | None:
        try:
            result = self._cache.lookup(request, tenant=self.tenant)
        except TokenleanError as exc:
            log.warning("cache lookup skipped (%s); calling the LLM", exc)
            return None
        self._last = result
        return result if result.hit and result.text is not None else None

    def _save(self, request: Request, text: str, chunks: list[str] | None = None) -> None:
        try:
            self._cache.store(request, text, chunks=chunks, tenant=self.tenant)
        except TokenleanError as exc:
            log.warning("could not cache the answer (%s)", exc)

    @staticmethod
    def _info(hit: CacheResult | None) -> dict[str, Any]:
        if hit is None:
            return {CACHE_KEY: {"hit": False}}
        return {CACHE_KEY: {"hit": True, "tier": hit.tier, "similarity": hit.similarity}}

    def _chat_hit(self, hit: CacheResult) -> ChatResponse:
        msg = ChatMessage(role=MessageRole.ASSISTANT, content=hit.text)
        return ChatResponse(message=msg, additional_kwargs=self._info(hit))

    def _replay_chat(self, hit: CacheResult) -> Generator[ChatResponse, None, None]:
        """A cached answer as a chat stream (cumulative text + delta), for sync and async streams."""
        text = ""
        for piece in hit.stream():
            text += piece
            yield ChatResponse(
                message=ChatMessage(role=MessageRole.ASSISTANT, content=text),
                delta=piece,
                additional_kwargs=self._info(hit),
            )

    def _replay_complete(self, hit: CacheResult) -> Generator[CompletionResponse, None, None]:
        """A cached answer as a completion stream (cumulative text + delta)."""
        text = ""
        for piece in hit.stream():
            text += piece
            yield CompletionResponse(text=text, delta=piece, additional_kwargs=self._info(hit))

    # -- chat ----------------------------------------------------------------------------------
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        req = self._chat_request(messages)
        hit = self._lookup(req)
        if hit is not None:
            return self._chat_hit(hit)
        resp = self.llm.chat(messages, **kwargs)
        if not resp.message.additional_kwargs.get("tool_calls"):
            self._save(req, resp.message.content or "")
        resp.additional_kwargs = {**resp.additional_kwargs, **self._info(None)}
        return resp

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        req = self._chat_request(messages)
        hit = self._lookup(req)

        def passthrough() -> Generator[ChatResponse, None, None]:
            chunks: list[str] = []
            last: ChatResponse | None = None
            for r in self.llm.stream_chat(messages, **kwargs):
                chunks.append(r.delta or "")
                last = r
                yield r
            if last is not None and not last.message.additional_kwargs.get("tool_calls"):
                self._save(req, "".join(chunks), chunks)

        return self._replay_chat(hit) if hit is not None else passthrough()

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        req = self._chat_request(messages)
        hit = await asyncio.to_thread(self._lookup, req)
        if hit is not None:
            return self._chat_hit(hit)
        resp = await self.llm.achat(messages, **kwargs)
        if not resp.message.additional_kwargs.get("tool_calls"):
            await asyncio.to_thread(self._save, req, resp.message.content or "")
        resp.additional_kwargs = {**resp.additional_kwargs, **self._info(None)}
        return resp

    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        req = self._chat_request(messages)
        hit = await asyncio.to_thread(self._lookup, req)

        async def gen() -> AsyncGenerator[ChatResponse, None]:
            if hit is not None:
                for r in self._replay_chat(hit):
                    yield r
                return
            chunks: list[str] = []
            async for r in await self.llm.astream_chat(messages, **kwargs):
                chunks.append(r.delta or "")
                yield r
            await asyncio.to_thread(self._save, req, "".join(chunks), chunks)

        return gen()

    # -- complete ------------------------------------------------------------------------------
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        req = self._complete_request(prompt, formatted)
        hit = self._lookup(req)
        if hit is not None:
            return CompletionResponse(text=hit.text or "", additional_kwargs=self._info(hit))
        resp = self.llm.complete(prompt, formatted=formatted, **kwargs)
        self._save(req, resp.text)
        resp.additional_kwargs = {**resp.additional_kwargs, **self._info(None)}
        return resp

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        req = self._complete_request(prompt, formatted)
        hit = self._lookup(req)

        def gen() -> Generator[CompletionResponse, None, None]:
            if hit is not None:
                yield from self._replay_complete(hit)
                return
            chunks: list[str] = []
            for r in self.llm.stream_complete(prompt, formatted=formatted, **kwargs):
                chunks.append(r.delta or "")
                yield r
            self._save(req, "".join(chunks), chunks)

        return gen()

    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        req = self._complete_request(prompt, formatted)
        hit = await asyncio.to_thread(self._lookup, req)
        if hit is not None:
            return CompletionResponse(text=hit.text or "", additional_kwargs=self._info(hit))
        resp = await self.llm.acomplete(prompt, formatted=formatted, **kwargs)
        await asyncio.to_thread(self._save, req, resp.text)
        resp.additional_kwargs = {**resp.additional_kwargs, **self._info(None)}
        return resp

    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        req = self._complete_request(prompt, formatted)
        hit = await asyncio.to_thread(self._lookup, req)

        async def gen() -> AsyncGenerator[CompletionResponse, None]:
            if hit is not None:
                for r in self._replay_complete(hit):
                    yield r
                return
            chunks: list[str] = []
            async for r in await self.llm.astream_complete(prompt, formatted=formatted, **kwargs):
                chunks.append(r.delta or "")
                yield r
            await asyncio.to_thread(self._save, req, "".join(chunks), chunks)

        return gen()
