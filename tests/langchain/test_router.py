"""ChatTokenleanRouter: langchain-tests' standard suites plus routing-specific checks on real servers."""

from __future__ import annotations

import os

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from langchain_tokenlean.chat_models import ChatTokenleanRouter
from tokenlean.metering import Ledger, Meter
from tokenlean.routing import ROUTING_KEY, OpenAICompatibleEndpoint, Router, Rule, RulesPolicy


def _router(url_a: str, url_b: str, model: str = "smollm2-135m") -> Router:
    return Router(
        {
            "weak": OpenAICompatibleEndpoint(url_a, model, name="weak"),
            "strong": OpenAICompatibleEndpoint(url_b, model, name="strong"),
        },
        policies=[RulesPolicy([Rule("strong", has_tools=True, name="tools need the strong model")])],
        default="weak",
        meter=Meter(Ledger()),
    )


class TestChatTokenleanRouterUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatTokenleanRouter]:
        return ChatTokenleanRouter

    @property
    def chat_model_params(self) -> dict:
        # construction only: nothing is called in the unit suite
        return {"router": _router("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1")}


@pytest.fixture(scope="module")
def _servers(request):
    pair = request.getfixturevalue("local_llm_pair")
    os.environ["_TL_ROUTER_A"], os.environ["_TL_ROUTER_B"] = pair[0].base_url, pair[1].base_url
    return pair


@pytest.mark.integration
@pytest.mark.usefixtures("_servers")
class TestChatTokenleanRouterIntegration(ChatModelIntegrationTests):
    """The real suite against two llama.cpp servers serving SmolLM2-135M."""

    @property
    def chat_model_class(self) -> type[ChatTokenleanRouter]:
        return ChatTokenleanRouter

    @property
    def chat_model_params(self) -> dict:
        return {"router": _router(os.environ["_TL_ROUTER_A"], os.environ["_TL_ROUTER_B"]), "max_tokens": 60}

    @property
    def supports_model_override(self) -> bool:
        return False

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def tool_choice_value(self) -> str:
        return "tool_name"

    @property
    def supports_json_mode(self) -> bool:
        return False

    # -- what SmolLM2-135M on llama.cpp cannot do (the adapter passes these calls through unchanged) --
    # They run (non-strict xfail): a crash in the adapter on these paths still shows in the log,
    # and an XPASS says the model managed it this time.
    _WRONG_ARGS = (
        "SmolLM2-135M calls the forced tool but fills wrong argument values (e.g. input=123456 for 3)"
    )
    _FLAKY_SCHEMA = (
        "SmolLM2-135M fills structured-output schemas inconsistently between runs; not a routing property"
    )

    @pytest.mark.xfail(reason=_WRONG_ARGS, strict=False)
    def test_tool_calling(self, model) -> None:
        super().test_tool_calling(model)

    @pytest.mark.xfail(reason=_WRONG_ARGS, strict=False)
    async def test_tool_calling_async(self, model) -> None:
        await super().test_tool_calling_async(model)

    @pytest.mark.xfail(
        strict=False,
        reason="llama.cpp's server ignores tool_choice='required' with several tools (only a named tool is forced)",
    )
    def test_tool_choice(self, model) -> None:
        super().test_tool_choice(model)

    @pytest.mark.xfail(reason=_FLAKY_SCHEMA, strict=False)
    def test_structured_output(self, model, schema_type) -> None:
        super().test_structured_output(model, schema_type)

    @pytest.mark.xfail(reason=_FLAKY_SCHEMA, strict=False)
    async def test_structured_output_async(self, model, schema_type) -> None:
        await super().test_structured_output_async(model, schema_type)

    @pytest.mark.xfail(reason=_FLAKY_SCHEMA, strict=False)
    def test_structured_output_pydantic_2_v1(self, model) -> None:
        super().test_structured_output_pydantic_2_v1(model)

    @pytest.mark.xfail(reason=_FLAKY_SCHEMA, strict=False)
    def test_structured_output_optional_param(self, model) -> None:
        super().test_structured_output_optional_param(model)

    @pytest.mark.xfail(
        strict=False,
        reason="the agent loop needs correct tool arguments, which SmolLM2-135M does not produce",
    )
    def test_agent_loop(self, model) -> None:
        super().test_agent_loop(model)

    @pytest.mark.xfail(
        strict=False,
        reason="SmolLM2-135M sometimes emits tool-call JSON that does not parse (seen once in a full run); "
        "runs, but its outcome is the model's",
    )
    def test_bind_runnables_as_tools(self, model) -> None:
        super().test_bind_runnables_as_tools(model)

    @pytest.mark.xfail(strict=False, reason="SmolLM2-135M does not copy non-ASCII text into tool arguments")
    def test_unicode_tool_call_integration(self, model, tool_choice=None, force_tool_call=True) -> None:
        super().test_unicode_tool_call_integration(model, tool_choice, force_tool_call)


class _Runs(BaseCallbackHandler):
    def __init__(self) -> None:
        self.starts = 0
        self.ends = 0

    def on_chat_model_start(self, *args, **kwargs) -> None:
        self.starts += 1

    def on_llm_end(self, *args, **kwargs) -> None:
        self.ends += 1


@pytest.mark.integration
def test_one_call_is_one_callback_run_and_decision_is_reported(local_llm_pair) -> None:
    a, b = local_llm_pair
    router = _router(a.base_url, b.base_url)
    llm = ChatTokenleanRouter(router=router, max_tokens=8)
    runs = _Runs()
    msg = llm.invoke([HumanMessage("Say hi.")], config={"callbacks": [runs]})
    assert (runs.starts, runs.ends) == (1, 1)
    assert msg.response_metadata[ROUTING_KEY]["target"] == "weak"
    assert msg.usage_metadata is not None and msg.usage_metadata["output_tokens"] > 0


@pytest.mark.integration
def test_bind_tools_keeps_tools_and_formats_them_for_a_langchain_target(local_llm_pair) -> None:
    from langchain_openai import ChatOpenAI

    a, b = local_llm_pair

    @tool
    def get_weather(city: str) -> str:
        """Weather in a city."""
        return "sunny"

    strong_lc = ChatOpenAI(base_url=b.base_url, api_key="none", model=b.model, max_tokens=40, temperature=0)
    router = _router(a.base_url, b.base_url)
    llm = ChatTokenleanRouter(router=router, models={"strong": strong_lc})
    runs = _Runs()
    msg = llm.bind_tools([get_weather], tool_choice="get_weather").invoke(
        "Weather in Paris?", config={"callbacks": [runs]}
    )
    assert (runs.starts, runs.ends) == (1, 1)  # the LangChain target ran inside our run, not as a second one
    assert msg.response_metadata[ROUTING_KEY]["target"] == "strong"
    assert msg.response_metadata[ROUTING_KEY]["reason"].startswith("tools need the strong model")
    assert msg.tool_calls and msg.tool_calls[0]["name"] == "get_weather"
    # streamed tool calls through the core endpoint path assemble into one well-formed call
    # (llama.cpp repeats the name on every delta; the endpoint normalises that)
    core_llm = ChatTokenleanRouter(router=router, max_tokens=40)
    chunks = list(core_llm.bind_tools([get_weather], tool_choice="any").stream("Weather in Rome?"))
    full = chunks[0]
    for c in chunks[1:]:
        full = full + c
    assert full.tool_calls and full.tool_calls[0]["name"] == "get_weather"


@pytest.mark.integration
def test_agent_middleware_picks_the_model_per_call(local_llm_pair) -> None:
    from langchain.agents import create_agent
    from langchain_openai import ChatOpenAI

    from langchain_tokenlean.routing_middleware import TokenleanRoutingMiddleware

    a, b = local_llm_pair
    weak = ChatOpenAI(base_url=a.base_url, api_key="none", model=a.model, max_tokens=8, temperature=0)
    strong = ChatOpenAI(base_url=b.base_url, api_key="none", model=b.model, max_tokens=8, temperature=0)

    def urgent(req) -> bool:
        return "urgent" in (req.last_user.text if req.last_user else "")

    meter = Meter(Ledger())
    router = Router(
        {
            "weak": OpenAICompatibleEndpoint(a.base_url, a.model),
            "strong": OpenAICompatibleEndpoint(b.base_url, b.model),
        },
        policies=[RulesPolicy([Rule("strong", when=urgent)])],
        default="weak",
        meter=meter,
    )
    agent = create_agent(
        weak, tools=[], middleware=[TokenleanRoutingMiddleware(router, {"weak": weak, "strong": strong})]
    )
    out = agent.invoke({"messages": [HumanMessage("urgent: say hi")]})
    assert out["messages"][-1].response_metadata[ROUTING_KEY]["target"] == "strong"
    out = agent.invoke({"messages": [HumanMessage("say hi")]})
    last = out["messages"][-1]
    assert last.response_metadata[ROUTING_KEY]["target"] == "weak"
    assert "default" in last.response_metadata[ROUTING_KEY]["reason"]
    assert [r.tags["route"] for r in meter.ledger.records()] == ["strong", "weak"]
