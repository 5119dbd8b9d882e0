"""``TokenleanRoutingMiddleware``: agent middleware that picks the model for every model call of an agent.

``create_agent(default_model, tools, middleware=[TokenleanRoutingMiddleware(router, models={...})])``: before
each model call, the router's policies look at the conversation (tools present, tags, length,
semantic routes, learned router) and the call is handed on with
``request.override(model=models[target])``. The agent graph, tools and state are untouched; only
which model answers changes. Cascades are not run here (an agent step must not be answered
twice); use ``ChatTokenleanRouter`` for those.

The decision is written into the answer's ``response_metadata["tokenlean_routing"]`` and the
call's usage is recorded through the router's meter with the route as tags, so savings show up
per task next to every other lever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from langchain.agents.middleware.types import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.utils.function_calling import convert_to_openai_tool

from langchain_tokenlean.chat_models import request_from_langchain
from tokenlean._lazy import renamed
from tokenlean.errors import TokenleanError
from tokenlean.routing import ROUTING_KEY, Decision, Router
from tokenlean.types import Request, Usage

__all__ = ["TokenleanRoutingMiddleware"]

#: Names of the previous release, kept one release as deprecated aliases (they warn once).
__getattr__ = renamed(__name__, {"TokenleanRouting": "TokenleanRoutingMiddleware"}, globals())

log = logging.getLogger("tokenlean.langchain.routing")


class TokenleanRoutingMiddleware(AgentMiddleware):  # type: ignore[type-arg]
    """Choose the chat model per agent step with a tokenlean ``Router``'s policies.

    ``models`` maps the router's target names to LangChain chat models; a decision for a target
    without a model leaves the agent's own model in place (logged). Routing errors degrade to
    the agent's model: routing must never break an agent.
    """

    def __init__(
        self, router: Router, models: Mapping[str, BaseChatModel], *, record_usage: bool = True
    ) -> None:
        super().__init__()
        self.router = router
        self.models = dict(models)
        self.record_usage = record_usage

    def _core_request(self, request: ModelRequest) -> Request:
        msgs = list(request.messages)
        if request.system_message is not None:
            msgs = [request.system_message, *msgs]
        tools = [convert_to_openai_tool(t) for t in request.tools or []]
        return request_from_langchain(msgs, tools)

    def _decide(self, request: ModelRequest) -> tuple[ModelRequest, Decision | None, Request | None]:
        try:
            core = self._core_request(request)
            decision = self.router.route(core)
        except TokenleanError as exc:
            log.warning("routing failed, keeping the agent's model: %s", exc)
            return request, None, None
        model = self.models.get(decision.target)
        if model is None:
            log.warning("no LangChain model for target %r; keeping the agent's model", decision.target)
            return request, decision, core
        return request.override(model=model), decision, core

    def _after(
        self, response: ModelResponse, decision: Decision | None, core: Request | None, started: float
    ) -> ModelResponse:
        if decision is None:
            return response
        for msg in response.result:
            if not isinstance(msg, AIMessage):
                continue
            msg.response_metadata[ROUTING_KEY] = decision.to_dict()
            meter = self.router.meter
            if self.record_usage and meter is not None and msg.usage_metadata:
                u = msg.usage_metadata
                cached = (u.get("input_token_details") or {}).get("cache_read", 0) or 0
                try:
                    meter.record(
                        model=msg.response_metadata.get("model_name")
                        or self.router.model_of(decision.target),
                        usage=Usage(u["input_tokens"], u["output_tokens"], cached_input_tokens=cached),
                        task_id=core.task_id if core is not None else None,
                        tags={"route": decision.target, "policy": decision.policy, "role": "agent-step"},
                        started_at=started,
                        ended_at=time.time(),
                        extra={"reason": decision.reason},
                    )
                except TokenleanError as exc:
                    log.warning("could not meter a routed agent step: %s", exc)
        return response

    def wrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]
    ) -> ModelResponse:
        routed, decision, core = self._decide(request)
        started = time.time()
        return self._after(handler(routed), decision, core, started)

    async def awrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[ModelResponse]]
    ) -> ModelResponse:
        routed, decision, core = self._decide(request)
        started = time.time()
        return self._after(await handler(routed), decision, core, started)
