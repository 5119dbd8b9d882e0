"""``TokenleanCacheMiddleware``: serve agent model calls (streamed or not) from the semantic cache.

LangChain's ``BaseCache`` is bypassed by ``.stream()`` and sees only serialised prompts. An agent
middleware sits around the model call itself (``wrap_model_call``), so it serves hits for every
agent call, streaming included, and sees the real request: system message, history, tools and
model settings all become the cache scope. A hit returns the cached ``AIMessage`` without calling
the model (``response_metadata["tokenlean_cache"]`` says so); a miss calls the model and stores
the answer unless it is a tool call, a refusal or an error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.load import dumpd, load
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.utils.function_calling import convert_to_openai_tool

from langchain_tokenlean.chat_models import request_from_langchain
from tokenlean.cache import CacheResult, SemanticCache
from tokenlean.errors import InputError, TokenleanError
from tokenlean.types import Message, Request, Response, ToolCall

__all__ = ["TokenleanCacheMiddleware"]

log = logging.getLogger("tokenlean.langchain.cache")

CACHE_KEY = "tokenlean_cache"


def _model_name(model: Any) -> str:
    for attr in ("model_name", "model", "model_id"):
        value = getattr(model, attr, None)
        if isinstance(value, str):
            return value
    return type(model).__name__


def _tool_schema(tool: Any) -> dict[str, Any]:
    try:
        return convert_to_openai_tool(tool)
    except Exception:  # unusual tool objects: their name still scopes the cache
        return {"name": str(getattr(tool, "name", tool))}


class TokenleanCacheMiddleware(AgentMiddleware):  # type: ignore[type-arg]
    """Answer repeated agent questions from a :class:`~tokenlean.cache.SemanticCache`.

    ``tenant`` isolates users; ``last_result`` is the latest ``CacheResult``.
    """

    def __init__(
        self, cache: SemanticCache | None = None, *, tenant: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__()
        self.cache = cache if cache is not None else SemanticCache(**kwargs)
        self.tenant = tenant
        self.last_result: CacheResult | None = None

    # -- conversion ----------------------------------------------------------------------------
    def _request(self, request: ModelRequest) -> Request:
        msgs: list[BaseMessage] = list(request.messages)
        if request.system_message is not None:
            msgs = [request.system_message, *msgs]
        core = request_from_langchain(msgs)
        params = {k: v for k, v in (request.model_settings or {}).items() if v is not None}
        temp = getattr(request.model, "temperature", None)
        if isinstance(temp, (int, float)):
            params.setdefault("temperature", temp)
        if request.tool_choice is not None:
            params["tool_choice"] = request.tool_choice
        tools = tuple(_tool_schema(t) for t in request.tools)
        return Request(messages=core.messages, model=_model_name(request.model), params=params, tools=tools)

    def _hit(self, request: ModelRequest) -> tuple[Request | None, ModelResponse | None]:
        try:
            core = self._request(request)
            result = self.cache.lookup(core, tenant=self.tenant)
        except (InputError, TokenleanError) as exc:
            log.warning("cache lookup skipped (%s); calling the model", exc)
            return None, None
        self.last_result = result
        if not result.hit or not isinstance(result.value, dict):
            return core, None
        try:
            message = load(result.value["message"], allowed_objects=[AIMessage])
        except Exception as exc:
            log.warning("cached message could not be loaded (%s); calling the model", exc)
            return core, None
        info = {
            "hit": True,
            "tier": result.tier,
            "similarity": result.similarity,
            "cached_query": result.cached_query,
        }
        message = message.model_copy(
            update={"response_metadata": {**message.response_metadata, CACHE_KEY: info}}
        )
        return core, ModelResponse(result=[message])

    def _store(self, core: Request | None, response: ModelResponse) -> None:
        if core is None:
            return
        ai = next((m for m in reversed(response.result) if isinstance(m, AIMessage)), None)
        if ai is None or response.structured_response is not None:
            return
        calls = tuple(
            ToolCall(id=str(tc.get("id") or i), name=tc["name"]) for i, tc in enumerate(ai.tool_calls)
        )
        text = ai.text if isinstance(ai.text, str) else str(ai.content)
        probe = Response(
            message=Message(role="assistant", content=text or (None if calls else ""), tool_calls=calls),
            finish_reason=(ai.response_metadata or {}).get("finish_reason"),
        )
        if self.cache.cacheable(core, probe) is not None:
            return
        clean = ai.model_copy(
            update={"response_metadata": {k: v for k, v in ai.response_metadata.items() if k != CACHE_KEY}}
        )
        try:
            self.cache.store(core, {"message": dumpd(clean)}, tenant=self.tenant, force=True)
        except TokenleanError as exc:
            log.warning("could not cache the model answer (%s)", exc)

    # -- hooks ---------------------------------------------------------------------------------
    def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]) -> Any:
        """Serve a hit without calling the model; otherwise call it and remember the answer."""
        core, hit = self._hit(request)
        if hit is not None:
            return hit
        response = handler(request)
        if isinstance(response, ModelResponse):
            self._store(core, response)
        return response

    async def awrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[ModelResponse]]
    ) -> Any:
        core, hit = await asyncio.to_thread(self._hit, request)
        if hit is not None:
            return hit
        response = await handler(request)
        if isinstance(response, ModelResponse):
            await asyncio.to_thread(self._store, core, response)
        return response
