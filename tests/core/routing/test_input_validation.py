"""Bad configuration and bad calls fail early with a typed error instead of reaching a model.

A negative token bound in a rule never matches (or always does) without a word; a negative
``max_tokens`` on a call is a request every server rejects, so sending it only burns a round
trip and, worse, reads as an endpoint failure; an empty message list has nothing to answer.
"""

from __future__ import annotations

from typing import Any

import pytest

from tokenlean.errors import ConfigError, EmptyInputError, EndpointError, InputError
from tokenlean.routing import (
    Cascade,
    OpenAICompatibleEndpoint,
    OutputControl,
    ReplicaGroup,
    Router,
    Rule,
    RulesPolicy,
    SelfCheck,
)
from tokenlean.types import Message, Request


def _req(**params: Any) -> Request:
    return Request((Message("user", "Say hi."),), params=params)


async def _run(how: str, target: Any, request: Request) -> object:
    if how == "route":
        return target.route(request)
    if how == "complete":
        return target.complete(request)
    if how == "acomplete":
        return await target.acomplete(request)
    if how == "stream":
        return list(target.stream(request))
    return [c async for c in target.astream(request)]


# -- configuration ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_tokens": -5},
        {"min_tokens": -1},
        {"min_tokens": 10, "max_tokens": 5},
        {"max_tokens": 2.5},
        {"min_tokens": True},
    ],
)
def test_rule_rejects_bad_token_bounds(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Rule("strong", **kwargs)


def test_rule_accepts_sane_token_bounds() -> None:
    assert Rule("strong", min_tokens=0, max_tokens=0).max_tokens == 0
    assert Rule("strong", min_tokens=5, max_tokens=5).min_tokens == 5


@pytest.mark.parametrize("cap", [0, -3, 1.5, True])
def test_output_control_and_self_check_reject_bad_caps(cap: Any) -> None:
    with pytest.raises(ConfigError):
        OutputControl(max_tokens=cap)
    with pytest.raises(ConfigError):
        SelfCheck(max_tokens=cap)


# -- per call ----------------------------------------------------------------------------------------

BAD_PARAMS = [
    {"max_tokens": -3},
    {"max_tokens": 0},
    {"max_completion_tokens": -3},
    {"max_tokens": "12"},
    {"max_tokens": True},
]
ROUTER_CALLS = ["route", "complete", "acomplete", "stream", "astream"]


def _router(stub, policies: list[Any] | None = None) -> Router:
    return Router(
        {
            "weak": OpenAICompatibleEndpoint(stub.url("weak"), "m", name="weak"),
            "strong": OpenAICompatibleEndpoint(stub.url("strong"), "m", name="strong"),
        },
        policies=policies or [],
        default="weak",
        fallbacks={"weak": ["strong"]},
        meter=False,
    )


@pytest.mark.parametrize("how", ROUTER_CALLS)
@pytest.mark.parametrize("params", BAD_PARAMS)
async def test_router_rejects_a_bad_max_tokens(stub, how: str, params: dict[str, Any]) -> None:
    router = _router(stub)
    with pytest.raises(InputError) as info:
        await _run(how, router, _req(**params))
    assert not isinstance(info.value, EndpointError)
    assert stub.state.hits == {}  # nothing was sent


@pytest.mark.parametrize("how", ROUTER_CALLS)
async def test_router_rejects_an_empty_message_list(stub, how: str) -> None:
    seen: list[Request] = []

    def spy(request: Request) -> bool:
        seen.append(request)
        return True

    router = _router(stub, [RulesPolicy([Rule("strong", when=spy)])])
    with pytest.raises(EmptyInputError):
        await _run(how, router, Request((), params={"max_tokens": 5}))
    assert stub.state.hits == {} and seen == []  # rejected before any policy or model saw it


async def test_execute_with_a_decision_made_earlier_still_checks(stub) -> None:
    router = _router(stub)
    decision = router.route(_req(max_tokens=5))
    with pytest.raises(InputError):
        router.execute(_req(max_tokens=-3), decision)
    with pytest.raises(InputError):
        await router.aexecute(_req(max_tokens=-3), decision)
    with pytest.raises(EmptyInputError):
        list(router.stream(Request(()), decision))
    with pytest.raises(EmptyInputError):
        [c async for c in router.astream(Request(()), decision)]
    assert stub.state.hits == {}


async def test_cascade_rejects_bad_calls_before_the_cheap_model(stub) -> None:
    router = _router(stub, [Cascade("weak", "strong", [SelfCheck()])])
    with pytest.raises(InputError):
        router.complete(_req(max_tokens=-3))
    with pytest.raises(EmptyInputError):
        await router.acomplete(Request(()))
    assert stub.state.hits == {}


@pytest.mark.parametrize("how", ["complete", "acomplete", "stream", "astream"])
async def test_replica_group_and_endpoint_reject_bad_calls(stub, how: str) -> None:
    ep = OpenAICompatibleEndpoint(stub.url("ok"), "m", name="ok")
    g = ReplicaGroup([ep, OpenAICompatibleEndpoint(stub.url("ok"), "m", name="ok2")])
    for target in (ep, g):
        with pytest.raises(InputError):
            await _run(how, target, _req(max_tokens=-3))
        with pytest.raises(EmptyInputError):
            await _run(how, target, Request(()))
    assert stub.state.hits == {}
    for r in g.replicas:  # the caller's mistake is not held against a replica
        assert r.errors == 0 and r.healthy(g.clock()) and r.in_flight == 0


async def test_sane_calls_still_go_through(stub) -> None:
    router = _router(stub)
    assert router.complete(_req(max_tokens=5)).text == "stub answer 42"
    assert router.complete(_req(max_tokens=None)).text == "stub answer 42"
    assert (await router.acomplete(_req(max_completion_tokens=5))).text == "stub answer 42"
    assert stub.state.hits == {"weak": 3}
