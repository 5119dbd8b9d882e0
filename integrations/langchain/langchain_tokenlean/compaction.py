"""Verbatim compaction for LangChain: agent middleware, a ``trim_messages``-style function, a tool.

* ``TokenleanCompactionMiddleware`` is an ``AgentMiddleware``: with
  ``create_agent(model, tools, middleware=[TokenleanCompactionMiddleware(ratio=0.6)])`` every model call sees
  a compacted view of the history (``wrap_model_call`` / ``awrap_model_call`` hand
  ``request.override(messages=...)`` to the handler) while the graph state keeps the full history.
  ``rewrite_history=True`` instead rewrites the stored history in ``before_model`` (smaller
  checkpoints; the originals are then only reachable through ``expand_omitted``, so this needs a
  durable omission store: the default SQLite file or Redis, which any later process reads).
  ``expose_expand_tool=True`` registers the ``expand_omitted`` tool with the agent.
* ``compact_messages(messages, ratio=..., query=...)`` is dual-mode like ``trim_messages``:
  messages in, messages out; called with options only it returns a ``Runnable``.
* ``expand_omitted_tool(compactor)`` is a LangChain tool that returns omitted text by handle.
* ``TokenleanCompactionEdit`` is a LangChain ``ContextEdit``: one more step for LangChain's own
  ``ContextEditingMiddleware(edits=[ClearToolUsesEdit(...), TokenleanCompactionEdit(ratio=0.5)])``,
  for users who already compose their context edits there.

The adapter holds no logic of its own: messages are converted to tokenlean ``Message`` objects
through the OpenAI shape, the core ``Compactor`` decides, and the changed texts are written back
onto copies of the original LangChain messages (ids, metadata and tool calls untouched). Any
tokenlean error degrades to pass-through with a log line: compaction must never break a chain.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from langchain.agents.middleware.types import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.messages import BaseMessage, RemoveMessage, convert_to_messages
from langchain_core.messages.utils import _runnable_support
from langchain_core.tools import BaseTool, StructuredTool
from langgraph.graph.message import REMOVE_ALL_MESSAGES

from langchain_tokenlean._convert import messages_to_core
from tokenlean._lazy import renamed
from tokenlean.compaction import Compacted, Compactor
from tokenlean.compaction.steps import UNSET, _Unset
from tokenlean.compaction.tools import expand_omitted_function
from tokenlean.errors import ConfigError, TokenleanError

__all__ = [
    "TokenleanCompactionEdit",
    "TokenleanCompactionMiddleware",
    "compact_messages",
    "expand_omitted_tool",
]

#: Names of the previous release, kept one release as deprecated aliases (they warn once).
__getattr__ = renamed(__name__, {"TokenleanCompaction": "TokenleanCompactionMiddleware"}, globals())

log = logging.getLogger("tokenlean.langchain.compaction")


def _apply(messages: Sequence[BaseMessage], result: Compacted) -> list[BaseMessage]:
    """Copies of ``messages`` with the compacted texts; untouched messages are the same objects."""
    out: list[BaseMessage] = []
    for lc, old, new in zip(messages, result.original, result.messages, strict=True):
        if new.content == old.content or not isinstance(lc.content, str):
            out.append(lc)
        else:
            meta = (
                {**lc.response_metadata, "tokenlean_compacted": True}
                if hasattr(lc, "response_metadata")
                else {}
            )
            out.append(lc.model_copy(update={"content": new.text, "response_metadata": meta}))
    return out


def _compact(
    compactor: Compactor, messages: Sequence[BaseMessage], query: str | None, session: str = "default"
) -> tuple[list[BaseMessage], Compacted | None]:
    try:
        result = compactor.compact(messages_to_core(messages), query=query, session=session)
    except TokenleanError as exc:
        log.warning("compaction skipped (%s); passing messages through", exc)
        return list(messages), None
    return _apply(messages, result), result


@_runnable_support
def compact_messages(
    messages: Sequence[Any],
    *,
    ratio: float | _Unset | None = UNSET,
    keep: float | None = None,
    target_tokens: int | None = None,
    query: str | None = None,
    compactor: Compactor | None = None,
    **options: Any,
) -> list[BaseMessage]:
    """Compact a message list verbatim (the ``trim_messages`` of deletion, not truncation).

    Pass a ``compactor`` to reuse caches, frozen decisions and the omission store between calls;
    otherwise one is built from ``ratio`` (the share of tokens to *remove*, 0.5 when neither is
    given) or ``keep`` (the share to *keep*, LLMLingua's ``rate``; give one), ``target_tokens`` and
    ``options`` (``Compactor`` keywords).
    Called without messages it returns a ``Runnable`` with these options bound.
    """
    msgs = convert_to_messages(messages)
    comp = compactor or Compactor(ratio=ratio, keep=keep, target_tokens=target_tokens, **options)
    out, _ = _compact(comp, msgs, query)
    return out


def expand_omitted_tool(compactor: Compactor, *, name: str = "expand_omitted") -> BaseTool:
    """A tool an agent can call with a marker's handle (``om-…``) to read the omitted text back."""

    return StructuredTool.from_function(expand_omitted_function(compactor), name=name)


class TokenleanCompactionMiddleware(AgentMiddleware):
    """Compact every model call of a LangChain agent, verbatim.

    Keyword arguments go to :class:`tokenlean.compaction.Compactor` (``ratio``, the share of
    tokens to *remove*, or ``keep``, the share to *keep*; ``target_tokens``, ``keep_last_turns``, ``mask_observations_after``, ``exclude_tools``,
    ``protect``, ``marker``, ``mode``, ...). Incremental mode is on by default, so decisions about
    old turns are frozen and the compacted prefix stays byte-stable for provider prompt caches.
    ``last_result`` holds the latest ``Compacted`` (tokens before/after, omissions) for inspection.
    """

    def __init__(
        self,
        *,
        compactor: Compactor | None = None,
        rewrite_history: bool = False,
        expose_expand_tool: bool = False,
        query: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        options.setdefault("incremental", True)
        self.compactor = compactor or Compactor(**options)
        if rewrite_history and not getattr(self.compactor.store, "durable", False):
            raise ConfigError(
                "rewrite_history=True replaces the stored history by markers, so the omitted text must "
                "outlive this process: use a durable omission store (the default SQLite one, or "
                "RedisOmissionStore), not a volatile one"
            )
        self.rewrite_history = rewrite_history
        self.query = query
        self.last_result: Compacted | None = None
        self.tools = [expand_omitted_tool(self.compactor)] if expose_expand_tool else []

    def _session(self, request: ModelRequest | None = None) -> str:
        runtime = getattr(request, "runtime", None)
        cfg = getattr(runtime, "config", None) or {}
        thread = (cfg.get("configurable") or {}).get("thread_id") if isinstance(cfg, dict) else None
        return str(thread) if thread is not None else "default"

    def _compacted(self, request: ModelRequest) -> ModelRequest:
        msgs = list(request.messages)
        if not msgs:
            return request
        system = [request.system_message] if request.system_message is not None else []
        out, result = _compact(self.compactor, system + msgs, self.query, self._session(request))
        if result is None:
            return request
        self.last_result = result
        return request.override(messages=out[len(system) :])

    def wrap_model_call(
        self,
        request: ModelRequest,
        handler: Callable[[ModelRequest], ModelResponse],
    ) -> Any:
        """Hand the model a compacted view; the agent state keeps every message."""
        if self.rewrite_history:
            return handler(request)
        return handler(self._compacted(request))

    async def awrap_model_call(
        self,
        request: ModelRequest,
        handler: Callable[[ModelRequest], Awaitable[ModelResponse]],
    ) -> Any:
        """Async twin of :meth:`wrap_model_call` (compaction runs in a worker thread)."""
        if self.rewrite_history:
            return await handler(request)
        import asyncio

        new = await asyncio.to_thread(self._compacted, request)
        return await handler(new)

    def before_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        """With ``rewrite_history=True``: replace the stored history by its compacted version."""
        if not self.rewrite_history:
            return None
        msgs = list(state["messages"] if isinstance(state, dict) else state.messages)
        out, result = _compact(self.compactor, msgs, self.query)
        if result is None or result.tokens_after >= result.tokens_before:
            return None
        self.last_result = result
        return {"messages": [RemoveMessage(id=REMOVE_ALL_MESSAGES), *out]}

    async def abefore_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        import asyncio

        return await asyncio.to_thread(self.before_model, state, runtime)


class TokenleanCompactionEdit:
    """Verbatim compaction as a LangChain ``ContextEdit`` for ``ContextEditingMiddleware``.

    LangChain's ``ContextEditingMiddleware(edits=[...])`` runs its edits in order on a copy of the
    messages each model call sees (the graph state keeps the originals), the same contract as
    :class:`TokenleanCompactionMiddleware`. This edit lets compaction be one step in that list,
    e.g. after ``ClearToolUsesEdit`` has cleared old tool results. ``trigger`` (tokens, counted by
    the middleware's own counter) skips compaction while the messages are shorter, like
    ``ClearToolUsesEdit(trigger=...)``. Keyword arguments go to
    :class:`tokenlean.compaction.Compactor`: ``ratio`` is the share of tokens to remove, ``keep``
    the share to keep (LLMLingua's ``rate``); give one. A tokenlean error leaves the messages as they
    are (logged): an edit must never break the call.

    The middleware hands edits the messages without the system prompt, and no thread id; the
    compactor's incremental state is keyed by the conversation's first message id instead, so
    different threads never share frozen decisions.
    """

    def __init__(
        self,
        *,
        compactor: Compactor | None = None,
        trigger: int | None = None,
        query: str | None = None,
        **options: Any,
    ) -> None:
        if trigger is not None and (isinstance(trigger, bool) or not isinstance(trigger, int) or trigger < 0):
            raise ConfigError(f"trigger must be a token count >= 0 or None, got {trigger!r}")
        options.setdefault("incremental", True)
        self.compactor = compactor or Compactor(**options)
        self.trigger = trigger
        self.query = query
        self.last_result: Compacted | None = None

    def apply(self, messages: list[Any], *, count_tokens: Callable[[Sequence[BaseMessage]], int]) -> None:
        """Replace ``messages`` in place by their compacted copies (the ``ContextEdit`` protocol)."""
        if not messages or (self.trigger is not None and count_tokens(messages) <= self.trigger):
            return
        first_id = getattr(messages[0], "id", None)
        out, result = _compact(self.compactor, messages, self.query, str(first_id or "default"))
        if result is not None:
            self.last_result = result
            messages[:] = out
