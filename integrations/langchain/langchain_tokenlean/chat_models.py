"""``ChatTokenleanRouter``: a LangChain chat model that routes each call to the cheapest adequate model.

Use it wherever a chat model goes (chains, ``create_agent``, ``with_structured_output``). Each
call asks a tokenlean ``Router`` for a decision (rules, semantic routes, learned router,
cascade), then calls the chosen target *directly*:

* a target with a LangChain model in ``models`` is called through its own ``_generate`` /
  ``_stream`` (not ``invoke``), with the tools formatted by that model's ``bind_tools``, so the
  provider-specific tool format is right and there is exactly one callback run per call (an
  ``invoke`` inside ``_generate`` would open a nested run and double-count the tokens);
* any other target is served by the core router's endpoints (OpenAI-compatible, vLLM), with
  replica choice, failover, cascades and metering.

The decision rides along in ``response_metadata["tokenlean_routing"]``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field

from langchain_tokenlean._convert import messages_to_core
from tokenlean.routing import ROUTING_KEY, Decision, Router
from tokenlean.routing.endpoints import StreamChunk
from tokenlean.types import Request, Response

__all__ = ["ChatTokenleanRouter", "request_from_langchain", "response_to_ai_message"]

log = logging.getLogger("tokenlean.langchain.router")

_CALL_KEYS = (
    "temperature",
    "max_tokens",
    "top_p",
    "seed",
    "response_format",
    "tool_choice",
    "parallel_tool_calls",
)


def request_from_langchain(
    messages: Sequence[BaseMessage], tools: Sequence[dict[str, Any]] = (), **params: Any
) -> Request:
    """LangChain messages → tokenlean ``Request`` (through the OpenAI shape, tool calls kept)."""
    out = messages_to_core(messages)
    metadata = params.pop("metadata", None) or {}
    return Request(
        tuple(out),
        params={k: v for k, v in params.items() if v is not None},
        tools=tuple(tools),
        metadata=metadata,
    )


def _usage_metadata(resp: Response | None, usage: Any = None) -> UsageMetadata | None:
    u = usage if usage is not None else (resp.usage if resp is not None else None)
    if u is None:
        return None
    meta = UsageMetadata(
        input_tokens=u.input_tokens, output_tokens=u.output_tokens, total_tokens=u.total_tokens
    )
    if u.cached_input_tokens:
        meta["input_token_details"] = {"cache_read": u.cached_input_tokens}
    return meta


def response_to_ai_message(resp: Response) -> AIMessage:
    """tokenlean ``Response`` → ``AIMessage`` with tool calls, usage and the routing decision."""
    tool_calls, invalid = [], []
    for tc in resp.message.tool_calls:
        try:
            args = json.loads(tc.arguments or "{}")
            if not isinstance(args, dict):
                raise ValueError("arguments are not an object")
            tool_calls.append({"name": tc.name, "args": args, "id": tc.id, "type": "tool_call"})
        except ValueError as exc:
            invalid.append(
                {
                    "name": tc.name,
                    "args": tc.arguments,
                    "id": tc.id,
                    "error": str(exc),
                    "type": "invalid_tool_call",
                }
            )
    meta: dict[str, Any] = {
        "model_name": resp.model,
        "finish_reason": resp.finish_reason,
        "model_provider": "tokenlean",
    }
    if ROUTING_KEY in resp.extra:
        meta[ROUTING_KEY] = resp.extra[ROUTING_KEY]
    return AIMessage(
        content=resp.text,
        tool_calls=tool_calls,
        invalid_tool_calls=invalid,
        usage_metadata=_usage_metadata(resp),
        response_metadata=meta,
        id=resp.id,
    )


class ChatTokenleanRouter(BaseChatModel):
    """Route every chat call with a tokenlean ``Router``; optionally to LangChain models by target name.

    Example::

        router = Router({"local": VLLMEndpoint("http://gpu:8000/v1"), "hosted": OpenAICompatibleEndpoint(...)},
                        policies=[Cascade("local", "hosted", [Validate(json_schema_validator(schema))])])
        llm = ChatTokenleanRouter(router=router)
        llm.bind_tools([get_weather]).invoke("Weather in Paris?")
    """

    router: Any = Field(description="a tokenlean.routing.Router")
    models: dict[str, Any] = Field(default_factory=dict, description="LangChain chat models by target name")
    temperature: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    timeout: float | None = None
    max_retries: int | None = None
    streaming: bool = False
    metadata_for_routing: dict[str, Any] = Field(
        default_factory=dict, description="tags / task_type for rules"
    )

    model_config = ConfigDict(arbitrary_types_allowed=True)

    # -- identity -------------------------------------------------------------------------------
    @property
    def _llm_type(self) -> str:
        return "tokenlean-router"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        r: Router = self.router
        return {
            "targets": {name: g.model for name, g in r.targets.items()},
            "default": r.default,
            "policies": [getattr(p, "name", type(p).__name__) for p in r.policies],
            "langchain_targets": sorted(self.models),
        }

    def _default_model_name(self) -> str:
        r: Router = self.router
        return r.model_of(r.default)

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="tokenlean",
            ls_model_name=str(kwargs.get("model") or self._default_model_name()),
            ls_model_type="chat",
        )
        temperature = kwargs.get("temperature", self.temperature)
        if temperature is not None:
            params["ls_temperature"] = temperature
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if max_tokens is not None:
            params["ls_max_tokens"] = max_tokens
        stop = stop or self.stop
        if stop:
            params["ls_stop"] = stop
        return params

    # -- tools ----------------------------------------------------------------------------------
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Keep the tools (as OpenAI tool dicts); each target gets them in its own format at call time."""
        formatted = [convert_to_openai_tool(t) for t in tools]
        if tool_choice is not None and tool_choice is not False:
            if tool_choice in (True, "any", "required") and len(formatted) == 1:
                # "call a tool" with one tool is "call this tool": servers that cannot do
                # "required" (llama.cpp) can force a named function with a grammar
                tool_choice = formatted[0]["function"]["name"]
            kwargs["tool_choice"] = _openai_tool_choice(tool_choice)
        return self.bind(tools=formatted, **kwargs)

    # -- request building -----------------------------------------------------------------------
    def _request(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> Request:
        params: dict[str, Any] = {"temperature": self.temperature, "max_tokens": self.max_tokens}
        params.update({k: kwargs[k] for k in _CALL_KEYS if k in kwargs})
        stop = stop or self.stop
        if stop:
            params["stop"] = list(stop)
        md = {**self.metadata_for_routing, **(kwargs.get("routing_metadata") or {})}
        return request_from_langchain(messages, kwargs.get("tools") or (), metadata=md, **params)

    def _lc_kwargs(self, target: str, request: Request, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """The LangChain model for ``target`` and its call kwargs (tools formatted by that model)."""
        model = self.models[target]
        call = {k: v for k, v in kwargs.items() if k not in ("tools", "tool_choice", "routing_metadata")}
        if request.tools:
            bound = model.bind_tools(
                list(request.tools),
                **({"tool_choice": kwargs["tool_choice"]} if kwargs.get("tool_choice") else {}),
            )
            call.update(getattr(bound, "kwargs", {}))
        return model, call

    def _decide(self, request: Request) -> Decision:
        r: Router = self.router
        return r.route(request)

    @staticmethod
    def _annotate(result: ChatResult, decision: Decision) -> ChatResult:
        for gen in result.generations:
            gen.message.response_metadata[ROUTING_KEY] = decision.to_dict()
        return result

    def _prepare(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[Request, Decision, tuple[Any, dict[str, Any]] | None]:
        """Build the request and decide; ``direct`` is the LangChain model and its call kwargs
        when the decision names a wrapped model and needs no cascade, so the twin delegates to it
        (keeping that model's own tool formatting and callbacks), else ``None`` (run the router).
        """
        request = self._request(messages, stop, kwargs)
        decision = self._decide(request)
        if decision.target in self.models and decision.cascade is None:
            return request, decision, self._lc_kwargs(decision.target, request, kwargs)
        return request, decision, None

    @staticmethod
    def _routed_result(resp: Response) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=response_to_ai_message(resp))])

    # -- sync -----------------------------------------------------------------------------------
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        request, decision, direct = self._prepare(messages, stop, kwargs)
        if direct is not None:
            model, call = direct
            return self._annotate(
                model._generate(messages, stop=stop or self.stop, run_manager=run_manager, **call), decision
            )
        r: Router = self.router
        resp, _ = r.execute(request, decision)
        return self._routed_result(resp)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        request, decision, direct = self._prepare(messages, stop, kwargs)
        if direct is not None:
            model, call = direct
            yield from model._stream(messages, stop=stop or self.stop, run_manager=run_manager, **call)
            return
        r: Router = self.router
        for sc in r.stream(request, decision):
            out = _to_generation_chunk(sc)
            if out is None:
                continue
            if run_manager is not None and isinstance(out.message.content, str):
                run_manager.on_llm_new_token(out.message.content, chunk=out)
            yield out

    # -- async ----------------------------------------------------------------------------------
    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        request, decision, direct = self._prepare(messages, stop, kwargs)
        if direct is not None:
            model, call = direct
            result = await model._agenerate(messages, stop=stop or self.stop, run_manager=run_manager, **call)
            return self._annotate(result, decision)
        r: Router = self.router
        resp, _ = await r.aexecute(request, decision)
        return self._routed_result(resp)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        request, decision, direct = self._prepare(messages, stop, kwargs)
        if direct is not None:
            model, call = direct
            async for chunk in model._astream(
                messages, stop=stop or self.stop, run_manager=run_manager, **call
            ):
                yield chunk
            return
        r: Router = self.router
        async for sc in r.astream(request, decision):
            out = _to_generation_chunk(sc)
            if out is None:
                continue
            if run_manager is not None and isinstance(out.message.content, str):
                await run_manager.on_llm_new_token(out.message.content, chunk=out)
            yield out


def _openai_tool_choice(choice: str | dict[str, Any] | bool) -> str | dict[str, Any]:
    if isinstance(choice, dict):
        return choice
    if choice is True or choice == "any":
        return "required"
    if choice in ("auto", "none", "required"):
        return str(choice)
    return {"type": "function", "function": {"name": str(choice)}}


def _to_generation_chunk(sc: StreamChunk) -> ChatGenerationChunk | None:
    if sc.response is not None:
        resp = sc.response
        meta: dict[str, Any] = {
            "model_name": resp.model,
            "finish_reason": resp.finish_reason,
            "model_provider": "tokenlean",
        }
        if ROUTING_KEY in resp.extra:
            meta[ROUTING_KEY] = resp.extra[ROUTING_KEY]
        msg = AIMessageChunk(
            content="", usage_metadata=_usage_metadata(resp), response_metadata=meta, chunk_position="last"
        )
        return ChatGenerationChunk(message=msg)
    if not sc.text and not sc.tool_call_deltas:
        return None
    chunks = [
        tool_call_chunk(
            name=(d.get("function") or {}).get("name"),
            args=(d.get("function") or {}).get("arguments"),
            id=d.get("id"),
            index=d.get("index"),
        )
        for d in sc.tool_call_deltas
    ]
    return ChatGenerationChunk(message=AIMessageChunk(content=sc.text, tool_call_chunks=chunks))
