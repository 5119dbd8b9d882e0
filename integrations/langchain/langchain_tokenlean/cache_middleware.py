"""``TokenleanCacheMiddleware``: serve agent model calls from the semantic cache, whatever the order.

Where the lookup happens decides what the key can see. A lookup at the middleware's own place in
the list sees the request *before* the middleware after it (a ``@dynamic_prompt`` persona, a
summariser, tokenlean's layout or compaction) have changed it, so two requests that differ only in
what those middleware add would share an answer. This middleware therefore does not look up at
its place: it hands the call on with the cache attached to the model (a copy of it with
``cache=`` set), and LangChain's own cache check inside the model call does the lookup on exactly
what the model is sent — final messages, system prompt, tools, tool choice, structured-output
format, every bound setting and the model's serialised configuration (endpoint included). Its
position in the middleware list therefore changes nothing about correctness.

Consequences, on purpose:

* tokenlean's layout and compaction run before the lookup on every call (a hit still saves the
  model call; their work is milliseconds). The layout moves clock and date lines into the new
  turn; the cache matches those lines exactly and the question semantically (``ScopeConfig``), so a
  date line lets repeats hit all day and a per-second clock makes every request distinct.
* a middleware after this one that replaces the model (fallbacks, routing to another model)
  bypasses the cache for that call: a miss, never a wrong answer.
* only deterministic calls are cached (``temperature=0``, or ``assume_deterministic``), and
  truncated, filtered, errored, refused and tool-call answers are never stored.

A served message carries ``response_metadata["tokenlean_cache"]``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.language_models import BaseChatModel

from langchain_tokenlean._identity import model_identity
from langchain_tokenlean.cache import CACHE_KEY, TokenleanCache
from tokenlean.cache import CacheResult, SemanticCache
from tokenlean.cache.identity import warn_once

__all__ = ["CACHE_KEY", "TokenleanCacheMiddleware"]

log = logging.getLogger("tokenlean.langchain.cache")

_MAX_MODELS = 32


class TokenleanCacheMiddleware(AgentMiddleware):  # type: ignore[type-arg]
    """Answer repeated agent questions from a :class:`~tokenlean.cache.SemanticCache`.

    Pass a ready ``cache`` or its keyword options (``assume_deterministic=True`` for a model you
    run greedy without setting a temperature). ``tenant`` isolates users; ``last_result`` is the
    latest ``CacheResult``.
    """

    def __init__(
        self, cache: SemanticCache | None = None, *, tenant: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__()
        self.cache = cache if cache is not None else SemanticCache(**kwargs)
        self.tenant = tenant
        self._slots: dict[int, tuple[BaseChatModel, BaseChatModel, TokenleanCache]] = {}

    @property
    def last_result(self) -> CacheResult | None:
        """The latest lookup of any model this middleware served."""
        latest = [slot[2] for slot in self._slots.values() if slot[2].last_result is not None]
        if not latest:
            return None
        return max(latest, key=lambda c: c._seq).last_result

    def _attach(self, model: Any) -> Any:
        """A copy of ``model`` whose LangChain cache slot is this cache (made once per model)."""
        if not isinstance(model, BaseChatModel):
            warn_once(
                f"lc-mw-model:{type(model).__name__}",
                "TokenleanCacheMiddleware: %s is not a BaseChatModel; its calls are not cached",
                type(model).__name__,
                logger=log,
            )
            return model
        slot = self._slots.get(id(model))
        if slot is not None and slot[0] is model:
            return slot[1]
        lc_cache = _SequencedCache(self.cache, tenant=self.tenant, identity=model_identity(model))
        copy = model.model_copy(update={"cache": lc_cache})
        if len(self._slots) >= _MAX_MODELS:  # models made per call: keep the newest few
            self._slots.pop(next(iter(self._slots)))
        self._slots[id(model)] = (model, copy, lc_cache)
        return copy

    def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]) -> Any:
        """Hand the call on with the cache attached to the model; the model call looks it up."""
        return handler(request.override(model=self._attach(request.model)))

    async def awrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[ModelResponse]]
    ) -> Any:
        return await handler(request.override(model=self._attach(request.model)))


class _SequencedCache(TokenleanCache):
    """A ``TokenleanCache`` that numbers its lookups, so the middleware can report the latest."""

    _counter = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._seq = 0

    def lookup(self, prompt: str, llm_string: str) -> Any:
        out = super().lookup(prompt, llm_string)
        _SequencedCache._counter += 1
        self._seq = _SequencedCache._counter
        return out
