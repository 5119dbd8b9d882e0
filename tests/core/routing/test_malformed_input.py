"""Routing entry points: malformed requests and options are typed errors, raised before any I/O.

A NaN temperature or a lone surrogate used to escape from inside httpx (``ValueError`` /
``UnicodeEncodeError``) after routing; a request that is not a ``Request`` raised
``AttributeError``; a rule with unhashable tags raised ``TypeError``.
"""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest

from tokenlean.errors import ConfigError, InputError, MessageFormatError, TextEncodingError
from tokenlean.routing import OpenAICompatibleEndpoint, OutputControl, Rule
from tokenlean.routing.endpoints import check_request
from tokenlean.types import Message, Request


def _endpoint(seen: list[Any]) -> OpenAICompatibleEndpoint:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"choices": [{"message": {"role": "assistant", "content": "ok"}}]})

    ep = OpenAICompatibleEndpoint("http://test.invalid/v1", "m", max_retries=0)
    ep._client = httpx.Client(transport=httpx.MockTransport(handler))
    return ep


@pytest.mark.parametrize("value", [None, {"messages": []}, "hello"])
def test_check_request_refuses_what_is_not_a_request(value: Any) -> None:
    with pytest.raises(MessageFormatError):
        check_request(value)


def test_unsendable_requests_fail_typed_before_any_connection() -> None:
    seen: list[Any] = []
    ep = _endpoint(seen)
    with pytest.raises(InputError):
        ep.complete(Request((Message("user", "hi"),), params={"temperature": math.nan}))
    with pytest.raises(TextEncodingError):
        ep.complete(Request((Message("user", "a\ud800b"),)))
    assert seen == []
    assert ep.complete(Request((Message("user", "hi"),))).text == "ok"


@pytest.mark.parametrize(
    "fields",
    [
        {"target": {1}},
        {"target": "weak", "tags": [{"a": None}]},
        {"target": "weak", "tags": "vip"},
        {"target": "weak", "has_tools": "yes"},
        {"target": "weak", "output": {"max_tokens": 5}},
    ],
)
def test_rule_fields_are_checked(fields: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Rule(**fields)


def test_output_control_checks_stop_and_tolerates_a_bad_cap_on_the_request() -> None:
    with pytest.raises(ConfigError):
        OutputControl(stop="END")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        OutputControl(instruction=5)  # type: ignore[arg-type]
    req = Request((Message("user", "hi"),), params={"max_tokens": "lots", "stop": ["X"]})
    out = OutputControl(max_tokens=64, stop=("END",)).apply(req)
    assert out.params["max_tokens"] == 64 and out.params["stop"] == ["X", "END"]
    with pytest.raises(InputError):
        OutputControl(stop=("END",)).apply(Request((Message("user", "hi"),), params={"stop": 5}))


def test_rules_read_any_shape_of_metadata_tags_and_refuse_the_unreadable() -> None:
    from tokenlean.routing import RulesPolicy

    policy = RulesPolicy([Rule("strong", tags=("hard",))])
    msgs = (Message("user", "hi"),)
    for tags in ("hard", ["hard", {"x": 1}], {"hard": True}):
        assert policy.decide(Request(msgs, metadata={"tags": tags})) is not None
    with pytest.raises(InputError):  # was TypeError: 'object' object is not iterable
        policy.decide(Request(msgs, metadata={"tags": object()}))


def test_vllm_cache_salt_of_a_tenant_with_a_lone_surrogate() -> None:
    from tokenlean.routing import VLLMEndpoint

    ep = VLLMEndpoint("http://test.invalid/v1", "m", salt_by_tenant=True)
    body = ep._body(Request((Message("user", "hi"),), metadata={"tenant": "t\ud800"}), stream=False)
    assert len(body["cache_salt"]) == 32
