"""TokenleanRouterLLM on two real llama.cpp servers: routing, one set of LLM events, the decision event."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_index.llms.openai_like")

from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.llm import LLMChatEndEvent, LLMChatStartEvent
from llama_index.core.tools import FunctionTool
from llama_index.llms.openai_like import OpenAILike

from llama_index.llms.tokenlean.router import TokenleanRouterLLM, TokenleanRoutingEvent
from tokenlean.routing import ROUTING_KEY, OpenAICompatibleEndpoint, Router, Rule, RulesPolicy


class Collect(BaseEventHandler):
    events: list = []  # noqa: RUF012 - a pydantic field; every fixture passes its own list

    @classmethod
    def class_name(cls) -> str:
        return "Collect"

    def handle(self, event, **kwargs) -> None:
        self.events.append(event)


@pytest.fixture
def routed(local_llm_pair):
    a, b = local_llm_pair

    def llm(server):
        return OpenAILike(
            api_base=server.base_url,
            api_key="none",
            model=server.model,
            is_chat_model=True,
            is_function_calling_model=True,
            max_tokens=8,
            temperature=0,
            context_window=4096,
        )

    router = Router(
        {
            "weak": OpenAICompatibleEndpoint(a.base_url, a.model),
            "strong": OpenAICompatibleEndpoint(b.base_url, b.model),
        },
        policies=[
            RulesPolicy(
                [
                    Rule("strong", has_tools=True, name="tools"),
                    Rule("strong", when=lambda r: "hard" in r.last_user.text),
                ]
            )
        ],
        default="weak",
        meter=False,
    )
    handler = Collect(events=[])
    root = get_dispatcher()
    root.add_event_handler(handler)
    yield TokenleanRouterLLM(router=router, llms={"weak": llm(a), "strong": llm(b)}), handler
    root.event_handlers.remove(handler)


@pytest.mark.integration
def test_chat_routes_and_emits_one_set_of_llm_events(routed) -> None:
    llm, handler = routed
    resp = llm.chat([ChatMessage(role="user", content="hard: name a prime number")])
    assert resp.additional_kwargs[ROUTING_KEY]["target"] == "strong"
    assert resp.message.content
    starts = [e for e in handler.events if isinstance(e, LLMChatStartEvent)]
    ends = [e for e in handler.events if isinstance(e, LLMChatEndEvent)]
    assert len(starts) == 1 and len(ends) == 1  # the inner LLM's events only: no double count
    (decision,) = [e for e in handler.events if isinstance(e, TokenleanRoutingEvent)]
    assert decision.target == "strong" and decision.reason.startswith("rule 1")
    resp = llm.chat([ChatMessage(role="user", content="say hi")])
    assert resp.additional_kwargs[ROUTING_KEY]["target"] == "weak"


@pytest.mark.integration
async def test_async_stream_and_tools_go_to_the_chosen_llm(routed) -> None:
    llm, _ = routed
    gen = await llm.astream_chat([ChatMessage(role="user", content="say hi")])
    chunks = [c async for c in gen]
    last = chunks[-1] if chunks else None
    assert last is not None and last.additional_kwargs[ROUTING_KEY]["target"] == "weak"

    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    tool = FunctionTool.from_defaults(fn=add)
    resp = await llm.achat_with_tools([tool], user_msg="What is 2 + 3?")
    assert resp.additional_kwargs[ROUTING_KEY]["target"] == "strong"
    assert resp.additional_kwargs[ROUTING_KEY]["reason"] == "tools: tools present"
    calls = llm.get_tool_calls_from_response(resp, error_on_no_tool_call=False)
    assert isinstance(calls, list)
    assert llm.metadata.is_chat_model and "weak" in llm.metadata.model_name
