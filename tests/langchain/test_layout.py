"""LangChain prompt layout: middleware on a real agent against the local llama.cpp server."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.prompts import ChatPromptTemplate

from langchain_tokenlean.layout import TokenleanPromptLayoutMiddleware, layout_messages, prompt_layout
from tokenlean.layout import read_llamacpp_prefix_reuse

POLICY = "\n".join(
    [
        "You are the support assistant of ACME Home, an online shop.",
        "Answer in one short sentence.",
        "Returns are accepted within 30 days for unused items in their original packaging.",
        "Refunds above 200 EUR need a supervisor; say so and open a ticket.",
        "Prices include VAT; the standard shipping fee is 4.90 EUR, free above 50 EUR.",
        "For damaged items ask for a photo, then offer a replacement or a refund.",
    ]
)


def _clocked(at: datetime) -> str:
    return f"Current time: {at:%Y-%m-%dT%H:%M:%SZ}\nRequest id: req_{int(at.timestamp()):x}\n{POLICY}"


def test_layout_messages_moves_clock_to_new_turn_and_keeps_everything_else() -> None:
    call = {"id": "call_1", "name": "lookup_order", "args": {"order_id": "4017"}}
    msgs = [
        SystemMessage(_clocked(datetime(2026, 11, 23, 10, tzinfo=UTC)), id="s"),
        HumanMessage("Where is order 4017?", id="h1"),
        AIMessage("", tool_calls=[call], id="a1"),
        ToolMessage("shipped", tool_call_id="call_1", id="t1"),
        AIMessage("It shipped.", id="a2"),
        HumanMessage("Thanks! And the invoice?", id="h2"),
    ]
    out = layout_messages(msgs)
    assert out.result is not None and out.result.changed
    assert out[0].content == POLICY and out[0].id == "s"
    assert out[-1].content.startswith("Current time: 2026-11-23T10:00:00Z\nRequest id: req_")
    assert out[-1].content.endswith("Thanks! And the invoice?") and out[-1].id == "h2"
    # history and tool-call pairing: the very same objects, in the same order
    assert out[1:5] == msgs[1:5] and all(a is b for a, b in zip(out[1:5], msgs[1:5], strict=True))
    assert msgs[0].content.startswith("Current time")  # the caller's messages are untouched


def test_anthropic_cache_control_blocks_on_long_prefixes() -> None:
    long_system = "\n".join(f"Rule {i}: be precise and cite policy section {i}." for i in range(200))
    msgs = [
        SystemMessage(long_system),
        HumanMessage("q1 " * 600),
        AIMessage("a1"),
        HumanMessage("new question"),
    ]
    out = layout_messages(msgs, anthropic_cache_control=True, model="claude-sonnet-4-5")
    assert out.plan is not None and 1 <= len(out.plan.breakpoints) <= 4
    marked = [m for m in out if isinstance(m.content, list) and m.content[-1].get("cache_control")]
    assert len(marked) == len(out.plan.breakpoints)
    assert marked[0] is out[0] and out[0].content[-1]["text"] == long_system
    short = layout_messages([SystemMessage("Be brief."), HumanMessage("hi")], anthropic_cache_control=True)
    assert all(isinstance(m.content, str) for m in short)  # below 1024 tokens: no marker


def test_prompt_layout_runnable_in_a_chain() -> None:
    prompt = ChatPromptTemplate.from_messages([("system", "{clock}\n" + POLICY), ("human", "{question}")])
    chain = prompt | prompt_layout()
    out = chain.invoke({"clock": "Current time: 2026-11-23T10:42:07Z", "question": "Can I return shoes?"})
    assert out[0].content == POLICY
    assert out[1].content == "Current time: 2026-11-23T10:42:07Z\nCan I return shoes?"


def _reuse_of_next_call(log_file, fn) -> int:
    """Run ``fn`` (one model call) and read how many prompt tokens the server reused for it."""
    _, offset = read_llamacpp_prefix_reuse(log_file)
    fn()
    for _ in range(50):
        calls, _ = read_llamacpp_prefix_reuse(log_file, offset=offset)
        if calls:
            break
        time.sleep(0.1)
    assert len(calls) == 1, calls
    return calls[0].reused_tokens


@pytest.mark.integration
def test_agent_reuses_a_longer_prefix_with_the_layout(local_llm, local_chat_model) -> None:
    from langchain.agents import create_agent
    from langchain.agents.middleware import dynamic_prompt

    if getattr(local_llm, "log_file", None) is None:
        pytest.skip("the local server was started without a log file")
    clock = [datetime(2026, 11, 23, 9, 0, 0, tzinfo=UTC)]

    @dynamic_prompt
    def clocked_prompt(request) -> str:  # a fresh clock and request id on every call
        clock[0] += timedelta(seconds=37)
        return _clocked(clock[0])

    model = local_chat_model()
    questions = ["Where is my order?", "Can I return worn shoes?"]
    reused: dict[str, int] = {}
    layout = TokenleanPromptLayoutMiddleware()
    for name, middleware in (("baseline", [clocked_prompt]), ("layout", [clocked_prompt, layout])):
        agent = create_agent(model, tools=[], middleware=middleware)
        agent.invoke({"messages": [HumanMessage(questions[0])]})
        state: dict = {}

        def second(agent=agent, state=state) -> None:
            state.update(agent.invoke({"messages": [HumanMessage(questions[1])]}))

        reused[name] = _reuse_of_next_call(local_llm.log_file, second)
        # the graph state keeps the user's message as sent: the layout only shapes the call
        assert state["messages"][0].content == questions[1]
    assert layout.stats["calls"] == 2 and layout.stats["changed"] == 2
    assert layout.last_result is not None and layout.last_result.gain_tokens > 0
    # baseline: the clock on the first line ends the reuse after a handful of tokens
    assert reused["baseline"] < 40, reused  # "<|im_start|>system\nCurrent time: 2026-11-23T09:0"
    assert reused["layout"] > reused["baseline"] + 60, reused


async def test_middleware_rewrites_the_call_sync_and_async_with_markers_and_tools() -> None:
    from langchain.agents.middleware.types import ModelRequest, ModelResponse
    from langchain_openai import ChatOpenAI

    long_policy = "\n".join(f"Rule {i}: be precise and cite policy section {i}." for i in range(200))
    system = SystemMessage(f"Current time: 2026-11-23T10:42:07Z\n{long_policy}")
    tools = [
        {
            "type": "function",
            "function": {"parameters": {"type": "object", "properties": {}}, "name": "zeta"},
        },
        {
            "type": "function",
            "function": {"name": "alpha", "parameters": {"type": "object", "properties": {}}},
        },
    ]
    request = ModelRequest(
        model=ChatOpenAI(model="claude-sonnet-4-5", api_key="unused", base_url="http://127.0.0.1:9/v1"),
        messages=[HumanMessage("hello " * 50)],
        system_message=system,
        tools=tools,
        tool_choice=None,
        response_format=None,
        state={"messages": []},
        runtime=None,
    )
    seen: list[ModelRequest] = []

    def handler(req: ModelRequest) -> ModelResponse:
        seen.append(req)
        return ModelResponse(result=[AIMessage("ok")])

    async def ahandler(req: ModelRequest) -> ModelResponse:
        return handler(req)

    mw = TokenleanPromptLayoutMiddleware(anthropic_cache_control=True)
    mw.wrap_model_call(request, handler)
    await mw.awrap_model_call(request, ahandler)
    assert len(seen) == 2 and mw.stats["calls"] == 2
    for req in seen:
        # the clock left the system prompt, which now carries a cache breakpoint (>= 1024 tokens)
        blocks = req.system_message.content
        assert isinstance(blocks, list) and blocks[-1]["cache_control"] == {"type": "ephemeral"}
        assert blocks[-1]["text"] == long_policy
        assert req.messages[-1].text.startswith("Current time: 2026-11-23T10:42:07Z\nhello")
        assert [t["function"]["name"] for t in req.tools] == ["alpha", "zeta"]
        assert list(req.tools[1]["function"]) == ["name", "parameters"]
    assert mw.last_plan is not None and mw.last_plan.breakpoints[0].where == "system"
    assert request.system_message is system and request.tools is tools  # the original request is untouched
