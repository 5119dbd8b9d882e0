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
        {"weak": OpenAICompatibleEndpoint(url_a, model, name="weak"), "strong": OpenAICompatibleEndpoint(url_b, model, name="strong")},
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
