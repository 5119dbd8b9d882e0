"""``TokenleanCache``: tokenlean's guarded semantic cache as a LangChain ``BaseCache``.

Use it with ``set_llm_cache(TokenleanCache())`` or ``ChatOpenAI(cache=TokenleanCache())``.

LangChain hands a cache two strings. For chat models ``prompt`` is the JSON dump of the *whole*
message list; embedding that string is why other semantic caches answer every question alike
(the shared system prompt and serialisation boilerplate dominate the vector). This cache parses it
back into messages and scopes it like any tokenlean request: the last user turn is what gets
embedded, the system prompt and earlier turns go into the namespace. ``llm_string`` (model name and
parameters) partitions the cache, so a hit never crosses models or settings.

LangChain skips its cache for ``.stream()``; :class:`~langchain_tokenlean.cache_middleware.TokenleanCacheMiddleware`
serves hits for agents and streaming calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Sequence
from typing import Any

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.load import dumpd, load, loads
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, Generation, GenerationChunk

from langchain_tokenlean.chat_models import request_from_langchain
from tokenlean.cache import CacheResult, SemanticCache
from tokenlean.errors import InputError, TokenleanError
from tokenlean.types import Message, Request, Response, ToolCall

__all__ = ["TokenleanCache", "request_from_prompt"]

log = logging.getLogger("tokenlean.langchain.cache")

#: What a cached value may revive: generations and messages, nothing configurable (no models, no URLs).
_GENERATION_TYPES: list[Any] = [
    Generation,
    ChatGeneration,
    AIMessage,
    AIMessageChunk,
    ChatGenerationChunk,
    GenerationChunk,
]

_TEMPERATURE = re.compile(r"""['"]temperature['"]\s*[,:]\s*([0-9.]+)""")


def request_from_prompt(prompt: str, llm_string: str) -> Request:
    """LangChain's cache key pair → a tokenlean ``Request`` (model = ``llm_string``)."""
    messages: list[BaseMessage] | None = None
    if prompt.lstrip().startswith("["):
        try:
            parsed = loads(prompt, allowed_objects="messages")
        except Exception:  # not a dumped message list: treat as plain text
            parsed = None
        if isinstance(parsed, list) and parsed and all(isinstance(m, BaseMessage) for m in parsed):
            messages = parsed
    params: dict[str, Any] = {}
    temp = _TEMPERATURE.search(llm_string)
    if temp is not None:
        with contextlib.suppress(ValueError):
            params["temperature"] = float(temp.group(1))
    if messages is None:
        return Request(messages=(Message(role="user", content=prompt),), model=llm_string, params=params)
    req = request_from_langchain(messages)
    return Request(messages=req.messages, model=llm_string, params=params, tools=req.tools)


def _as_response(generations: Sequence[Generation]) -> Response:
    """The first generation as a core ``Response``, so the cache's store policy can judge it."""
    first = generations[0]
    calls: tuple[ToolCall, ...] = ()
    if isinstance(first, ChatGeneration):
        calls = tuple(
            ToolCall(id=str(tc.get("id") or i), name=tc["name"], arguments=json.dumps(tc.get("args", {})))
            for i, tc in enumerate(getattr(first.message, "tool_calls", []) or [])
        )
        meta = getattr(first.message, "response_metadata", {}) or {}
        finish = meta.get("finish_reason")
    else:
        finish = (first.generation_info or {}).get("finish_reason")
    return Response(
        message=Message(role="assistant", content=first.text or (None if calls else ""), tool_calls=calls),
        finish_reason=finish,
    )


class TokenleanCache(BaseCache):
    """A LangChain cache backed by :class:`tokenlean.cache.SemanticCache`.

    Pass a ready ``cache`` or keyword arguments for a new ``SemanticCache`` (``backend`` path or
    ``redis://`` URL, ``ttl``, ``max_entries``, ``scope``, ...). ``tenant`` isolates users.
    ``last_result`` holds the latest ``CacheResult`` (hit or miss, similarity, rejecting guard).
    """

    def __init__(
        self, cache: SemanticCache | None = None, *, tenant: str | None = None, **kwargs: Any
    ) -> None:
        self.cache = cache if cache is not None else SemanticCache(**kwargs)
        self.tenant = tenant
        self.last_result: CacheResult | None = None

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """Cached generations for ``prompt`` under ``llm_string``, or None (always a list on a hit)."""
        try:
            request = request_from_prompt(prompt, llm_string)
            result = self.cache.lookup(request, tenant=self.tenant)
        except InputError as exc:
            log.warning("uncacheable prompt (%s); passing through", exc)
            return None
        self.last_result = result
        if not result.hit:
            return None
        value = result.value
        if not isinstance(value, dict) or "generations" not in value:
            return None
        try:
            return [load(g, allowed_objects=_GENERATION_TYPES) for g in value["generations"]]
        except Exception as exc:  # a stored value from another version: treat as a miss
            log.warning("cached generations could not be loaded (%s); ignoring the entry", exc)
            return None

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Store ``return_val`` unless it is an error, refusal, tool call or sampled (temperature > 0)."""
        if not return_val:
            return
        try:
            request = request_from_prompt(prompt, llm_string)
            why = self.cache.cacheable(request, _as_response(return_val))
            if why is not None:
                log.debug("not caching: %s", why)
                return
            value = {"generations": [dumpd(g) for g in return_val]}
            self.cache.store(request, value, tenant=self.tenant, force=True)
        except TokenleanError as exc:
            log.warning("could not cache generations (%s)", exc)

    def clear(self, **kwargs: Any) -> None:
        self.cache.clear()

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        return await asyncio.to_thread(self.lookup, prompt, llm_string)

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        await asyncio.to_thread(self.update, prompt, llm_string, return_val)

    async def aclear(self, **kwargs: Any) -> None:
        await asyncio.to_thread(self.clear)
