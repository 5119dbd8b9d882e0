"""Cache-friendly prompt layout for LangChain: agent middleware and a chain runnable.

* ``TokenleanPromptLayoutMiddleware`` is an ``AgentMiddleware``: with
  ``create_agent(model, tools, middleware=[..., TokenleanPromptLayoutMiddleware()])`` every model call is
  re-laid stable-first (``wrap_model_call`` / ``awrap_model_call`` hand
  ``request.override(...)`` to the handler) while the graph state keeps the messages as they
  were. Put it *after* middleware that writes the system prompt (``@dynamic_prompt``), so that
  it sees the final prompt: the first middleware in the list is the outermost.
  ``anthropic_cache_control=True`` also puts Anthropic ``cache_control`` breakpoints on the
  outgoing messages (at most 4, only where the prefix reaches the model's minimum).
* ``prompt_layout()`` is a ``Runnable`` for chains: ``prompt | prompt_layout() | model``.

The adapter holds no logic of its own: the messages go to ``tokenlean.layout.reorder`` through
the OpenAI shape, and the changed texts are written back onto copies of the original LangChain
messages (ids, metadata and tool calls untouched). A tokenlean error degrades to pass-through
with a log line: the layout must never break a chain.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from langchain.agents.middleware.types import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.messages import BaseMessage, SystemMessage, convert_to_messages
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.tools import BaseTool

from langchain_tokenlean._convert import messages_to_core
from tokenlean._lazy import renamed
from tokenlean.errors import TokenleanError
from tokenlean.layout import CachePlan, PromptLayout, Reordered, canonical_tools, plan_cache_markers, reorder
from tokenlean.types import Message, Request

__all__ = ["LaidOutMessages", "TokenleanPromptLayoutMiddleware", "layout_messages", "prompt_layout"]

#: Names of the previous release, kept one release as deprecated aliases (they warn once).
__getattr__ = renamed(__name__, {"TokenleanPromptLayout": "TokenleanPromptLayoutMiddleware"}, globals())

log = logging.getLogger("tokenlean.langchain.layout")

_EPHEMERAL = {"type": "ephemeral"}


class LaidOutMessages(list):  # type: ignore[type-arg]
    """The re-laid messages (a plain list for LangChain), with the core result attached."""

    result: Reordered | None = None
    plan: CachePlan | None = None


def _write_back(lc: BaseMessage, old: Message, new: Message) -> BaseMessage:
    """A copy of ``lc`` carrying ``new``'s text; only text ever changes in a layout."""
    if new.content == old.content:
        return lc
    if isinstance(lc.content, str):
        return lc.model_copy(update={"content": new.text})
    # Multimodal: reorder only ever prepends one text part; keep LangChain's own blocks as they are.
    if (
        isinstance(new.content, tuple)
        and isinstance(old.content, tuple)
        and len(new.content) == len(old.content) + 1
    ):
        return lc.model_copy(update={"content": [dict(new.content[0]), *lc.content]})
    return lc


def _mark(lc: BaseMessage) -> BaseMessage:
    """``lc`` with an Anthropic ``cache_control`` breakpoint on its last content block."""
    if isinstance(lc.content, str):
        if not lc.content:
            return lc
        blocks: list[Any] = [{"type": "text", "text": lc.content, "cache_control": dict(_EPHEMERAL)}]
    elif lc.content:
        last = lc.content[-1]
        last = {"type": "text", "text": last} if isinstance(last, str) else {**last}
        blocks = [*lc.content[:-1], {**last, "cache_control": dict(_EPHEMERAL)}]
    else:
        return lc
    return lc.model_copy(update={"content": blocks})


def _tool_name(tool: BaseTool | Mapping[str, Any]) -> str:
    if isinstance(tool, BaseTool):
        return tool.name
    fn = tool.get("function")
    if isinstance(fn, Mapping):
        return str(fn.get("name", ""))
    return str(tool.get("name", ""))


def _stable_tools(tools: Sequence[BaseTool | dict[str, Any]]) -> list[BaseTool | dict[str, Any]]:
    """Tools in name order; dict tools with sorted keys (``BaseTool`` schemas are already stable)."""
    ordered = sorted(tools, key=_tool_name)
    dicts = iter(canonical_tools([t for t in ordered if not isinstance(t, BaseTool)], sort_tools=False))
    return [t if isinstance(t, BaseTool) else next(dicts) for t in ordered]


def layout_messages(
    messages: Sequence[Any],
    layout: PromptLayout | None = None,
    *,
    anthropic_cache_control: bool = False,
    model: str | None = None,
) -> LaidOutMessages:
    """Re-lay a LangChain message list stable-first (and mark it for Anthropic if asked).

    Returns copies where something changed, the original objects elsewhere; ``.result`` holds
    the core ``Reordered`` (what moved, stable prefix before/after), ``.plan`` the cache plan.
    """
    msgs = convert_to_messages(list(messages))
    out = LaidOutMessages(msgs)
    try:
        core = messages_to_core(msgs)
        result = reorder(Request(tuple(core), model=model), layout, model=model)
    except TokenleanError as exc:
        log.warning("prompt layout skipped (%s); passing messages through", exc)
        return out
    laid = [
        _write_back(msgs[src], core[src], new)
        for src, new in zip(result.source_index, result.request.messages, strict=True)
    ]
    out = LaidOutMessages(laid)
    out.result = result
    if anthropic_cache_control:
        try:
            plan = plan_cache_markers(result.request, "anthropic", model=model, layout=layout)
        except TokenleanError as exc:
            log.warning("cache markers skipped (%s)", exc)
        else:
            for bp in plan.breakpoints:
                if bp.message_index is not None:
                    out[bp.message_index] = _mark(out[bp.message_index])
            out.plan = plan
    return out


def prompt_layout(
    layout: PromptLayout | None = None, *, anthropic_cache_control: bool = False, model: str | None = None
) -> Runnable[Any, list[BaseMessage]]:
    """A ``Runnable`` that re-lays a prompt value or message list: ``prompt | prompt_layout() | llm``."""

    def _run(value: Any) -> list[BaseMessage]:
        if hasattr(value, "to_messages"):
            value = value.to_messages()
        elif isinstance(value, str):
            value = [("human", value)]
        return layout_messages(value, layout, anthropic_cache_control=anthropic_cache_control, model=model)

    return RunnableLambda(_run, name="tokenlean_prompt_layout")


class TokenleanPromptLayoutMiddleware(AgentMiddleware):  # type: ignore[type-arg]
    """Lay every model call of an agent out stable-first, for provider prompt caches.

    ``layout``: a ``PromptLayout`` (e.g. ``PromptLayout.fit(sample_requests)`` to learn per-user
    lines and shuffled examples from traffic); the default moves clock values, ids and "today"
    dates out of the system prompt to the new turn and sorts tools. ``anthropic_cache_control``:
    add Anthropic ``cache_control`` breakpoints to the outgoing messages; ``model`` names the
    model for its minimum cacheable length (default: the request model's ``model_name``/``model``).
    ``last_result`` holds the latest core ``Reordered``; ``stats`` counts calls and changes.
    """

    def __init__(
        self,
        layout: PromptLayout | None = None,
        *,
        anthropic_cache_control: bool = False,
        model: str | None = None,
        sort_tools: bool = True,
    ) -> None:
        super().__init__()
        self.layout = layout or PromptLayout()
        self.anthropic_cache_control = anthropic_cache_control
        self.model = model
        self.sort_tools = sort_tools
        self.last_result: Reordered | None = None
        self.last_plan: CachePlan | None = None
        self.stats: dict[str, int] = {"calls": 0, "changed": 0, "stable_prefix_gain_tokens": 0}

    def _model_name(self, request: ModelRequest) -> str | None:
        if self.model:
            return self.model
        for attr in ("model_name", "model", "model_id"):
            value = getattr(request.model, attr, None)
            if isinstance(value, str):
                return value
        return None

    def _rewrite(self, request: ModelRequest) -> ModelRequest:
        self.stats["calls"] += 1
        system = [request.system_message] if request.system_message is not None else []
        laid = layout_messages(
            [*system, *request.messages],
            self.layout,
            anthropic_cache_control=self.anthropic_cache_control,
            model=self._model_name(request),
        )
        if laid.result is None:
            return request
        self.last_result, self.last_plan = laid.result, laid.plan
        overrides: dict[str, Any] = {}
        if laid.result.changed or laid.plan is not None:
            self.stats["changed"] += 1
            self.stats["stable_prefix_gain_tokens"] += max(0, laid.result.gain_tokens)
            if system:
                new_system = laid[0]
                overrides["system_message"] = (
                    new_system
                    if isinstance(new_system, SystemMessage)
                    else SystemMessage(content=new_system.content)
                )
                overrides["messages"] = list(laid[1:])
            else:
                overrides["messages"] = list(laid)
        if self.sort_tools and request.tools:
            tools = _stable_tools(request.tools)
            if [json.dumps(t, default=str) if isinstance(t, dict) else t.name for t in tools] != [
                json.dumps(t, default=str) if isinstance(t, dict) else t.name for t in request.tools
            ]:
                overrides["tools"] = tools
        return request.override(**overrides) if overrides else request

    def wrap_model_call(
        self,
        request: ModelRequest,
        handler: Callable[[ModelRequest], ModelResponse],
    ) -> ModelResponse:
        return handler(self._rewrite(request))

    async def awrap_model_call(
        self,
        request: ModelRequest,
        handler: Callable[[ModelRequest], Awaitable[ModelResponse]],
    ) -> ModelResponse:
        return await handler(self._rewrite(request))
