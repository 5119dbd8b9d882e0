"""Which failures count against an endpoint: transport and protocol faults do, tokenlean's own bugs do not.

A bug in our code (a TypeError in a parser, a bad call into httpx) says nothing about the
server. Dressed up as an endpoint error it would count against a healthy replica, eject it or
send the call to a fallback model, and hide the bug behind a plausible "server broke" message.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tokenlean.errors import (
    EndpointError,
    EndpointProtocolError,
    EndpointTimeout,
    EndpointUnavailable,
)
from tokenlean.routing import OpenAICompatibleEndpoint, ReplicaGroup, Router, VLLMEndpoint, wire
from tokenlean.routing.wire import _classify_exception, _parse_body, _StreamAssembler
from tokenlean.types import Message, Request


def _req() -> Request:
    return Request((Message("user", "Say hi."),), params={"max_tokens": 6, "temperature": 0})


async def _run(how: str, target: Any) -> str:
    """Call ``target`` the way ``how`` says and return the answer text."""
    if how == "complete":
        return str(target.complete(_req()).text)
    if how == "acomplete":
        return str((await target.acomplete(_req())).text)
    if how == "stream":
        return "".join(c.text for c in target.stream(_req()))
    return "".join([c.text async for c in target.astream(_req())])


CALLS = ["complete", "acomplete", "stream", "astream"]


def _bug(*args: Any, **kwargs: Any) -> Any:
    raise TypeError("simulated tokenlean bug")


# -- our own bugs propagate ------------------------------------------------------------------------


@pytest.mark.parametrize("how", CALLS)
async def test_bug_in_response_parsing_propagates_and_leaves_replicas_alone(
    stub, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.setattr(wire, "_logprobs_of", _bug)
    eps = [OpenAICompatibleEndpoint(stub.url("ok"), "m", name=n, max_retries=2) for n in ("a", "b")]
    g = ReplicaGroup(eps, prefix_affinity=False)
    with pytest.raises(TypeError, match="simulated tokenlean bug"):
        await _run(how, g)
    assert stub.state.hits["ok"] == 1  # neither retried nor failed over to the other replica
    for r in g.replicas:
        assert r.healthy(g.clock()) and r.errors == 0 and r.failures == 0 and r.in_flight == 0
    await eps[0].aclose()


@pytest.mark.parametrize("how", CALLS)
async def test_bug_does_not_trigger_model_fallback(stub, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    monkeypatch.setattr(wire, "_logprobs_of", _bug)
    router = Router(
        {
            "first": OpenAICompatibleEndpoint(stub.url("first"), "m", name="first"),
            "second": OpenAICompatibleEndpoint(stub.url("second"), "m", name="second"),
        },
        default="first",
        fallbacks={"first": ["second"]},
        meter=False,
    )
    with pytest.raises(TypeError, match="simulated tokenlean bug"):
        await _run(how, router)
    assert stub.state.hits == {"first": 1}
    assert router.targets["first"].replicas[0].errors == 0


class _BrokenClient:
    """Stands in for a client we call wrongly: every call is a bug on our side, not the server's."""

    def get(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("simulated tokenlean bug")

    post = get

    def close(self) -> None:
        pass


def test_bug_in_health_probe_propagates_instead_of_ejecting(stub) -> None:
    ep = VLLMEndpoint(stub.url("up"), "m", name="up")
    ep._client = _BrokenClient()  # type: ignore[assignment]
    g = ReplicaGroup([ep, VLLMEndpoint(stub.url("up"), "m", name="other")])
    with pytest.raises(TypeError, match="simulated tokenlean bug"):
        g.check_health()
    assert g.replicas[0].healthy(g.clock()) and g.replicas[0].ejections == 0


def test_bug_in_metrics_scrape_is_not_swallowed(stub) -> None:
    ep = VLLMEndpoint(stub.url("vllm"), "stub-model", name="a")
    ep._client = _BrokenClient()  # type: ignore[assignment]
    with pytest.raises(TypeError, match="simulated tokenlean bug"):
        ep.metrics()
    g = ReplicaGroup([ep])
    with pytest.raises(TypeError, match="simulated tokenlean bug"):
        g.refresh_metrics()


def test_bug_in_list_models_propagates(stub) -> None:
    ep = OpenAICompatibleEndpoint(stub.url("ok"), "m")
    ep._client = _BrokenClient()  # type: ignore[assignment]
    with pytest.raises(TypeError, match="simulated tokenlean bug"):
        ep.list_models()
    with pytest.raises(TypeError, match="simulated tokenlean bug"):
        ep.health()


# -- real endpoint failures still fail over -------------------------------------------------------


@pytest.mark.parametrize("how", CALLS)
async def test_connection_refused_still_ejects_and_fails_over(stub, dead_url: str, how: str) -> None:
    dead = OpenAICompatibleEndpoint(dead_url, "m", name="dead", max_retries=0)
    ok = OpenAICompatibleEndpoint(stub.url("ok"), "m", name="ok")
    g = ReplicaGroup([dead, ok], prefix_affinity=False)
    g.replicas[1].in_flight = 1  # make "dead" the first pick
    assert await _run(how, g) == "stub answer 42"
    g.replicas[1].in_flight = 0
    assert not g.replicas[0].healthy(g.clock()) and g.replicas[0].errors == 1
    await dead.aclose()
    await ok.aclose()


@pytest.mark.parametrize("how", CALLS)
async def test_http_5xx_still_falls_back_to_the_next_model(stub, how: str) -> None:
    router = Router(
        {
            "first": OpenAICompatibleEndpoint(stub.url("fail503"), "m", name="first", max_retries=0),
            "second": OpenAICompatibleEndpoint(stub.url("ok"), "m", name="second"),
        },
        default="first",
        fallbacks={"first": ["second"]},
        meter=False,
    )
    assert await _run(how, router) == "stub answer 42"
    assert stub.state.hits == {"fail503": 1, "ok": 1}
    first = router.targets["first"].replicas[0]
    assert first.errors == 1 and not first.healthy(router.targets["first"].clock())


def test_transport_failures_are_still_false_health(dead_url: str) -> None:
    assert not OpenAICompatibleEndpoint(dead_url, "m").health()
    ep = VLLMEndpoint(dead_url, "m")
    assert not ep.health()
    assert ep.metrics() is None


# -- what counts as an endpoint failure ------------------------------------------------------------

_REQ = httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions")


@pytest.mark.parametrize(
    ("exc", "typed"),
    [
        (httpx.ConnectError("refused", request=_REQ), EndpointUnavailable),
        (httpx.RemoteProtocolError("peer closed", request=_REQ), EndpointUnavailable),
        (httpx.ReadTimeout("slow", request=_REQ), EndpointTimeout),
        (TimeoutError("socket timed out"), EndpointTimeout),
        (ConnectionResetError("reset"), EndpointUnavailable),
        (httpx.DecodingError("bad gzip", request=_REQ), EndpointProtocolError),
        (httpx.TooManyRedirects("loop", request=_REQ), EndpointProtocolError),
        (
            httpx.HTTPStatusError(
                "503", request=_REQ, response=httpx.Response(503, request=_REQ, text="busy")
            ),
            EndpointUnavailable,
        ),
        (
            httpx.HTTPStatusError("404", request=_REQ, response=httpx.Response(404, request=_REQ)),
            EndpointProtocolError,
        ),
    ],
)
def test_transport_and_protocol_failures_are_typed(exc: Exception, typed: type[EndpointError]) -> None:
    assert type(_classify_exception(exc, "ep")) is typed


def _completion(**choice: Any) -> bytes:
    return json.dumps(
        {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, **choice}]}
    ).encode()


@pytest.mark.parametrize(
    "raw",
    [
        _completion(logprobs={"content": [{"token": "x", "logprob": None}]}),
        _completion(logprobs={"content": [{"token": "x", "logprob": "low"}]}),
        _completion(logprobs={"content": [{"token": "x", "logprob": True}]}),
    ],
)
def test_malformed_response_body_is_a_protocol_error(raw: bytes) -> None:
    with pytest.raises(EndpointProtocolError):
        _parse_body(raw, "ep", 0.1)


def _event(**event: Any) -> str:
    return "data: " + json.dumps(event)


def _delta(**delta: Any) -> str:
    return _event(choices=[{"index": 0, "delta": delta, "finish_reason": None}])


@pytest.mark.parametrize(
    "line",
    [
        _event(choices={"0": {}}),
        _event(choices=[{"index": 0, "delta": "text"}]),
        _delta(content=5),
        _delta(content=["part"]),
        _delta(tool_calls="call"),
        _delta(tool_calls=[{"index": "first", "function": {"name": "f"}}]),
        _delta(tool_calls=[{"index": 0, "function": "f"}]),
        _delta(tool_calls=[{"index": 0, "function": {"name": 1}}]),
        _delta(tool_calls=[{"index": 0, "function": {"name": "f", "arguments": {"a": 1}}}]),
        _delta(tool_calls=[{"index": 0, "id": 9, "function": {"name": "f"}}]),
        _event(choices=[{"index": 0, "delta": {}, "logprobs": {"content": [{"logprob": None}]}}]),
    ],
)
def test_malformed_stream_event_is_a_protocol_error(line: str) -> None:
    with pytest.raises(EndpointProtocolError):
        _StreamAssembler("ep").feed(line)


def test_well_formed_stream_still_assembles() -> None:
    asm = _StreamAssembler("ep")
    lines = [
        _event(model="m", id="c1", choices=[{"index": 0, "delta": {"role": "assistant", "content": None}}]),
        _delta(content="Hel"),
        _delta(content="lo"),
        _delta(tool_calls=[{"index": 0, "id": "call_1", "function": {"name": "add", "arguments": ""}}]),
        _delta(tool_calls=[{"index": 0, "function": {"arguments": '{"a":1}'}}]),
        _event(
            choices=[
                {
                    "index": 0,
                    "delta": {},
                    "finish_reason": "tool_calls",
                    "logprobs": {"content": [{"token": "x", "logprob": -0.5}]},
                }
            ]
        ),
        _event(choices=[], usage={"prompt_tokens": 3, "completion_tokens": 2}),
        "data: [DONE]",
    ]
    feed: Callable[[str], object] = asm.feed
    for line in lines:
        feed(line)
    resp = asm.response()
    assert resp.text == "Hello" and resp.model == "m" and resp.id == "c1"
    assert resp.finish_reason == "tool_calls" and resp.extra["logprobs"] == (-0.5,)
    assert [(c.id, c.name, c.arguments) for c in resp.message.tool_calls] == [("call_1", "add", '{"a":1}')]
    assert resp.usage is not None and resp.usage.output_tokens == 2
