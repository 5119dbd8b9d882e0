"""``TokenleanRouterLLM``: a LlamaIndex ``FunctionCallingLLM`` that hands each call to the chosen LLM.

The router's policies (rules, semantic routes, learned router) pick a target per call; the
*whole* call — chat, completion, streaming, ``chat_with_tools`` / ``predict_and_call`` — is then
handed to that target's own LlamaIndex LLM, which formats tools its own way and fires its own
instrumentation. This class is deliberately *not* decorated with ``llm_chat_callback`` /
``llm_completion_callback``: the inner LLM already emits the LLM events, and a second set from
the wrapper would double-count every token in any handler (tokenlean's included).

The decision is emitted as a custom instrumentation event, ``TokenleanRoutingEvent``, and put
into ``ChatResponse.additional_kwargs["tokenlean_routing"]``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
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
)
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import LLM, ToolSelection
from pydantic import ConfigDict, Field, PrivateAttr

from llama_index.llms.tokenlean.convert import messages_to_core
from tokenlean.errors import NoRouteError
from tokenlean.routing import ROUTING_KEY, Decision, Router
from tokenlean.types import Request

__all__ = ["TokenleanRouterLLM", "TokenleanRoutingEvent"]

log = logging.getLogger("tokenlean.llamaindex.router")
dispatcher = get_dispatcher(__name__)


class TokenleanRoutingEvent(BaseEvent):
    """One routing decision: which target answers this call, and why."""

    target: str
    reason: str
    policy: str
    score: float | None = None
    model: str | None = None

    @classmethod
    def class_name(cls) -> str:
        return "TokenleanRoutingEvent"


def _core(messages: Sequence[ChatMessage], tools: Sequence[Any] = ()) -> Request:
    specs = tuple(
        {"type": "function", "function": {"name": t.metadata.name}} for t in tools if hasattr(t, "metadata")
    )
    return Request(tuple(messages_to_core(messages)), tools=specs)


class TokenleanRouterLLM(FunctionCallingLLM):
    """Route LlamaIndex calls with a tokenlean ``Router``; ``llms`` maps target names to LLMs."""

    router: Any = Field(description="a tokenlean.routing.Router (its policies decide)")
    llms: dict[str, Any] = Field(description="LlamaIndex LLMs by router target name")

    model_config = ConfigDict(arbitrary_types_allowed=True)
    _last: dict[str, Any] = PrivateAttr(default_factory=dict)

    @classmethod
    def class_name(cls) -> str:
        return "TokenleanRouterLLM"

    @property
    def metadata(self) -> LLMMetadata:
        default = self._llm(self.router.default)
        meta = default.metadata
        return LLMMetadata(
            context_window=min(llm.metadata.context_window for llm in self.llms.values()),
            num_output=meta.num_output,
            is_chat_model=True,
            is_function_calling_model=all(
                getattr(llm.metadata, "is_function_calling_model", False) for llm in self.llms.values()
            ),
            model_name=f"tokenlean-router({','.join(sorted(self.llms))})",
        )

    # -- deciding ---------------------------------------------------------------------------------
    def _llm(self, target: str) -> LLM:
        llm = self.llms.get(target)
        if llm is None:
            raise NoRouteError(f"no LlamaIndex LLM for target {target!r}; have {sorted(self.llms)}")
        return llm

    def _route(self, messages: Sequence[ChatMessage], tools: Sequence[Any] = ()) -> tuple[LLM, Decision]:
        r: Router = self.router
        decision = r.route(_core(messages, tools))
        llm = self._llm(decision.target)
        dispatcher.event(
            TokenleanRoutingEvent(
                target=decision.target,
                reason=decision.reason,
                policy=decision.policy,
                score=decision.score,
                model=getattr(llm.metadata, "model_name", None),
            )
        )
        return llm, decision

    @staticmethod
    def _tag(resp: ChatResponse, decision: Decision) -> ChatResponse:
        resp.additional_kwargs[ROUTING_KEY] = decision.to_dict()
        return resp

    @staticmethod
    def _history(
        user_msg: str | ChatMessage | None, chat_history: list[ChatMessage] | None
    ) -> list[ChatMessage]:
        msgs = list(chat_history or [])
        if user_msg is not None:
            msgs.append(ChatMessage(role="user", content=user_msg) if isinstance(user_msg, str) else user_msg)
        return msgs

    # -- chat -----------------------------------------------------------------------------------
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        llm, d = self._route(messages)
        return self._tag(llm.chat(messages, **kwargs), d)

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        llm, d = self._route(messages)
        return self._tag(await llm.achat(messages, **kwargs), d)

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        llm, d = self._route(messages)
        for r in llm.stream_chat(messages, **kwargs):
            yield self._tag(r, d)

    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        llm, d = self._route(messages)
        gen = await llm.astream_chat(messages, **kwargs)

        async def wrap() -> ChatResponseAsyncGen:
            async for r in gen:
                yield self._tag(r, d)

        return wrap()

    # -- completion -----------------------------------------------------------------------------
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        llm, _ = self._route([ChatMessage(role="user", content=prompt)])
        return llm.complete(prompt, formatted=formatted, **kwargs)

    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        llm, _ = self._route([ChatMessage(role="user", content=prompt)])
        return await llm.acomplete(prompt, formatted=formatted, **kwargs)

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        llm, _ = self._route([ChatMessage(role="user", content=prompt)])
        yield from llm.stream_complete(prompt, formatted=formatted, **kwargs)

    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        llm, _ = self._route([ChatMessage(role="user", content=prompt)])
        return await llm.astream_complete(prompt, formatted=formatted, **kwargs)

    # -- tools: the whole call goes to the chosen LLM (its own tool format) -----------------------
    def _route_tools(
        self,
        tools: Sequence[Any],
        user_msg: str | ChatMessage | None,
        chat_history: list[ChatMessage] | None,
        verbose: bool,
        allow_parallel_tool_calls: bool,
        tool_required: bool,
        kwargs: dict[str, Any],
    ) -> tuple[LLM, Decision, dict[str, Any]]:
        """Route on the conversation plus tools; return the LLM, the decision, and the keyword
        arguments the ``*_chat_with_tools`` twins forward to that LLM unchanged."""
        llm, d = self._route(self._history(user_msg, chat_history), tools)
        call = {
            "user_msg": user_msg,
            "chat_history": chat_history,
            "verbose": verbose,
            "allow_parallel_tool_calls": allow_parallel_tool_calls,
            "tool_required": tool_required,
            **kwargs,
        }
        return llm, d, call

    def chat_with_tools(
        self,
        tools: Sequence[Any],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        llm, d, call = self._route_tools(
            tools, user_msg, chat_history, verbose, allow_parallel_tool_calls, tool_required, kwargs
        )
        resp = llm.chat_with_tools(tools, **call)  # type: ignore[attr-defined]
        return self._tag(resp, d)

    async def achat_with_tools(
        self,
        tools: Sequence[Any],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        llm, d, call = self._route_tools(
            tools, user_msg, chat_history, verbose, allow_parallel_tool_calls, tool_required, kwargs
        )
        resp = await llm.achat_with_tools(tools, **call)  # type: ignore[attr-defined]
        return self._tag(resp, d)

    def stream_chat_with_tools(
        self,
        tools: Sequence[Any],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> ChatResponseGen:
        llm, d, call = self._route_tools(
            tools, user_msg, chat_history, verbose, allow_parallel_tool_calls, tool_required, kwargs
        )
        for r in llm.stream_chat_with_tools(tools, **call):  # type: ignore[attr-defined]
            yield self._tag(r, d)

    def _prepare_chat_with_tools(
        self, tools: Sequence[Any], user_msg: Any = None, chat_history: Any = None, **kwargs: Any
    ) -> dict[str, Any]:
        llm, _ = self._route(self._history(user_msg, chat_history), tools)
        return llm._prepare_chat_with_tools(tools, user_msg=user_msg, chat_history=chat_history, **kwargs)  # type: ignore[attr-defined]

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        """Parsed by the LLM that produced ``response`` (tool-call formats differ per provider)."""
        routed = response.additional_kwargs.get(ROUTING_KEY) or {}
        llm = self._llm(routed.get("target") or self.router.default)
        return llm.get_tool_calls_from_response(
            response, error_on_no_tool_call=error_on_no_tool_call, **kwargs
        )  # type: ignore[attr-defined]
