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

import ast
import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.load import dumpd, load, loads
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, Generation, GenerationChunk

from langchain_tokenlean.chat_models import request_from_langchain
from tokenlean.cache import CacheResult, SemanticCache
from tokenlean.cache.identity import NOT_OUTPUT_FIELDS, ModelIdentity, find_temperature, unkeyable
from tokenlean.errors import TokenleanError
from tokenlean.types import Message, Request, Response, ToolCall

__all__ = ["LLMString", "TokenleanCache", "parse_llm_string", "request_from_prompt"]

log = logging.getLogger("tokenlean.langchain.cache")

#: ``response_metadata`` key of a message served from the cache.
CACHE_KEY = "tokenlean_cache"

#: What a cached value may revive: generations and messages, nothing configurable (no models, no URLs).
_GENERATION_TYPES: list[Any] = [
    Generation,
    ChatGeneration,
    AIMessage,
    AIMessageChunk,
    ChatGenerationChunk,
    GenerationChunk,
]

_NOT_IMPLEMENTED = "not_implemented"


@dataclass(frozen=True, slots=True)
class LLMString:
    """What LangChain's ``llm_string`` says about the model: name, temperature, unkeyable settings.

    LangChain writes it as ``dumps(model) + "---" + str(sorted(call_kwargs))`` for serialisable
    models and as ``str(sorted(invocation_params))`` for the others; anything else is taken as an
    opaque label (keyed exactly, nothing read from it).
    """

    model: str | None = None
    temperature: Any = None
    unknown: tuple[str, ...] = ()


def _not_implemented(node: Any, path: str, out: list[str]) -> None:
    """Paths of settings LangChain could not serialise (their value is only a ``repr``)."""
    if isinstance(node, dict):
        if node.get("type") == _NOT_IMPLEMENTED and node.get("lc") == 1:
            name = path.rsplit(".", 1)[-1]
            if name not in NOT_OUTPUT_FIELDS:
                out.append(path)
            return
        for k, v in node.items():
            _not_implemented(v, f"{path}.{k}" if path else str(k), out)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _not_implemented(v, f"{path}[{i}]", out)


def _literal(text: str) -> dict[str, Any] | None:
    try:
        items = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if isinstance(items, list) and all(isinstance(i, tuple) and len(i) == 2 for i in items):
        return {str(k): v for k, v in items}
    return None


def parse_llm_string(llm_string: str) -> LLMString:
    """Read model name and temperature out of ``llm_string``; name settings it cannot key on."""
    head, sep, tail = llm_string.partition("---")
    kwargs: dict[str, Any] = {}
    unknown: list[str] = []
    call: dict[str, Any] | None = None
    if sep and head.lstrip().startswith("{"):
        try:
            dumped = json.loads(head)
        except ValueError:
            dumped = None
        if isinstance(dumped, dict):
            raw = dumped.get("kwargs")
            kwargs = raw if isinstance(raw, dict) else {}
            _not_implemented(kwargs, "", unknown)
            call = _literal(tail)
            if call is None:
                unknown.append("call arguments")
        else:
            call = _literal(llm_string)
    else:
        call = _literal(llm_string)
        if call is None and " object at 0x" in llm_string:
            unknown.append("invocation params")
    if call is not None:
        unknown.extend(
            k for k, v in call.items() if " object at 0x" in repr(v) and k not in NOT_OUTPUT_FIELDS
        )
    settings = {**kwargs, **(call or {})}
    model = next(
        (str(settings[k]) for k in ("model", "model_name", "model_id", "ls_model_name") if settings.get(k)),
        None,
    )
    return LLMString(model, find_temperature(kwargs, call), tuple(sorted(set(unknown))))


def request_from_prompt(prompt: str, llm_string: str, identity: ModelIdentity | None = None) -> Request:
    """LangChain's cache key pair → a tokenlean ``Request``.

    The whole ``llm_string`` is key material (it holds the serialised model and every call
    argument); ``identity`` adds what a model adapter knows beyond it (its endpoint).
    """
    messages: list[BaseMessage] | None = None
    if prompt.lstrip().startswith("["):
        try:
            parsed = loads(prompt, allowed_objects="messages")
        except Exception:  # not a dumped message list: treat as plain text
            parsed = None
        if isinstance(parsed, list) and parsed and all(isinstance(m, BaseMessage) for m in parsed):
            messages = parsed
    info = parse_llm_string(llm_string)
    params: dict[str, Any] = {"llm_string": llm_string}
    temperature = info.temperature
    model = info.model
    if identity is not None:
        params["model_identity"] = dict(identity.config)
        model = identity.model or model
        if temperature is None:
            temperature = identity.temperature
    if temperature is not None:
        params["temperature"] = temperature
    if messages is None:
        return Request(messages=(Message(role="user", content=prompt),), model=model, params=params)
    req = request_from_langchain(messages)
    return Request(messages=req.messages, model=model, params=params, tools=req.tools)


def _finish_reason(meta: Any) -> Any:
    if not isinstance(meta, dict):
        return None
    return meta.get("finish_reason") or meta.get("stop_reason")


def _as_response(generations: Sequence[Generation]) -> Response:
    """The first generation as a core ``Response``, so the cache's store policy can judge it."""
    first = generations[0]
    calls: tuple[ToolCall, ...] = ()
    finish = _finish_reason(first.generation_info)
    if isinstance(first, ChatGeneration):
        msg = first.message
        raw_calls = [
            *(getattr(msg, "tool_calls", None) or []),
            *(getattr(msg, "invalid_tool_calls", None) or []),
        ]
        calls = tuple(
            ToolCall(
                id=str(tc.get("id") or i),
                name=str(tc.get("name") or ""),
                arguments=json.dumps(tc.get("args", {}), default=str),
            )
            for i, tc in enumerate(raw_calls)
        )
        finish = _finish_reason(getattr(msg, "response_metadata", None)) or finish
    return Response(
        message=Message(role="assistant", content=first.text or (None if calls else ""), tool_calls=calls),
        finish_reason=finish,
    )


def _mark_hit(generation: Any, result: CacheResult) -> Any:
    """A served generation whose message says it came from the cache (``response_metadata``)."""
    msg = getattr(generation, "message", None)
    if not isinstance(msg, BaseMessage):
        return generation
    info = {
        "hit": True,
        "tier": result.tier,
        "similarity": result.similarity,
        "cached_query": result.cached_query,
    }
    meta = {**msg.response_metadata, CACHE_KEY: info}
    return generation.model_copy(update={"message": msg.model_copy(update={"response_metadata": meta})})


class TokenleanCache(BaseCache):
    """A LangChain cache backed by :class:`tokenlean.cache.SemanticCache`.

    Pass a ready ``cache`` or keyword arguments for a new ``SemanticCache`` (``backend`` path or
    ``redis://`` URL, ``ttl``, ``max_entries``, ``scope``, ``assume_deterministic``, ...).
    ``tenant`` isolates users. ``last_result`` holds the latest ``CacheResult`` (hit or miss,
    similarity, rejecting guard). Only deterministic calls are cached: ``temperature=0`` on the
    model, or ``assume_deterministic`` on the cache; a setting LangChain could not serialise
    means the call is not cached (logged once). A served message carries
    ``response_metadata["tokenlean_cache"]``.
    """

    def __init__(
        self,
        cache: SemanticCache | None = None,
        *,
        tenant: str | None = None,
        identity: ModelIdentity | None = None,
        **kwargs: Any,
    ) -> None:
        self.cache = cache if cache is not None else SemanticCache(**kwargs)
        self.tenant = tenant
        self.identity = identity
        self.last_result: CacheResult | None = None

    def _request(self, prompt: str, llm_string: str) -> Request | None:
        """The core request, or None when a setting cannot be keyed (the call is not cached)."""
        unknown = parse_llm_string(llm_string).unknown
        if self.identity is not None:
            unknown = (*unknown, *self.identity.unknown)
        if unkeyable(unknown, adapter="TokenleanCache", logger=log):
            return None
        return request_from_prompt(prompt, llm_string, self.identity)

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """Cached generations for ``prompt`` under ``llm_string``, or None (always a list on a hit)."""
        try:
            request = self._request(prompt, llm_string)
            if request is None:
                self.last_result = CacheResult(
                    hit=False, rejected_by="uncacheable", reason="unkeyable settings"
                )
                return None
            result = self.cache.lookup(request, tenant=self.tenant)
        except TokenleanError as exc:
            log.warning("uncacheable prompt (%s); passing through", exc)
            return None
        self.last_result = result
        if not result.hit:
            return None
        value = result.value
        if not isinstance(value, dict) or "generations" not in value:
            return None
        try:
            gens = [load(g, allowed_objects=_GENERATION_TYPES) for g in value["generations"]]
        except Exception as exc:  # a stored value from another version: treat as a miss
            log.warning("cached generations could not be loaded (%s); ignoring the entry", exc)
            return None
        return [_mark_hit(g, result) for g in gens]

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Store ``return_val`` unless it must not be replayed (see ``SemanticCache.cacheable``)."""
        if not return_val:
            return
        try:
            request = self._request(prompt, llm_string)
            if request is None:
                return
            why = self.cache.cacheable(request, _as_response(return_val))
            if why is not None:
                log.debug("not caching: %s", why)
                return
            value = {"generations": [dumpd(_unmark(g)) for g in return_val]}
            text = "".join(str(getattr(g, "text", "") or "") for g in return_val)
            self.cache.store(request, value, tenant=self.tenant, force=True, answer_text=text)
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


def _unmark(generation: Any) -> Any:
    msg = getattr(generation, "message", None)
    if isinstance(msg, BaseMessage) and CACHE_KEY in msg.response_metadata:
        meta = {k: v for k, v in msg.response_metadata.items() if k != CACHE_KEY}
        return generation.model_copy(update={"message": msg.model_copy(update={"response_metadata": meta})})
    return generation
