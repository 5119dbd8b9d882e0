"""The stub upstream (``tokenlean.gateway.stub``) speaks OpenAI's protocol and fails on cue.

Every test talks to a real ``StubServer`` on loopback, through httpx and through the official
``openai`` SDK (``max_retries=0``, so that a scripted fault is seen once and not retried away).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

import httpx  # noqa: E402

from tokenlean.errors import ConfigError, ServerError  # noqa: E402
from tokenlean.gateway.stub import (  # noqa: E402
    Cut,
    Ok,
    SlowFirstToken,
    Status,
    StubServer,
    StubState,
)

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "hello  big world"},
]
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
    },
    {"type": "function", "function": {"name": "other", "parameters": {"type": "object", "properties": {}}}},
]
# system: 3 words, user: 3 words; answer "echo: hello  big world": 4 words
USAGE = {"prompt_tokens": 6, "completion_tokens": 4, "total_tokens": 10}


@pytest.fixture(scope="module")
def server() -> Iterator[StubServer]:
    with StubServer() as s:
        yield s
    assert not s.running


@pytest.fixture
def stub(server: StubServer) -> Iterator[StubServer]:
    server.stub.reset()
    yield server
    server.stub.reset()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=10.0) as client:
        yield client


@pytest.fixture
def sdk(stub: StubServer) -> Iterator[Any]:
    client = openai.OpenAI(
        base_url=stub.base_url,
        api_key="stub-key",
        max_retries=0,
        http_client=httpx.Client(trust_env=False, timeout=10.0),
    )
    yield client
    client.close()


def _chat(http: httpx.Client, s: StubServer, **extra: Any) -> httpx.Response:
    return http.post(f"{s.base_url}/chat/completions", json={"model": "m1", "messages": MESSAGES, **extra})


def _sse(text: str) -> list[str]:
    """The ``data:`` payloads of an event stream, in order; every event ends with a blank line."""
    assert text.endswith("\n\n")
    events = text.split("\n\n")[:-1]
    assert all(e.startswith("data: ") for e in events)
    return [e.removeprefix("data: ") for e in events]


def test_health_models_and_base_url(stub: StubServer, http: httpx.Client) -> None:
    assert stub.base_url == f"http://127.0.0.1:{stub.port}/v1"
    assert http.get(f"{stub.url}/health").json() == {"status": "ok"}
    models = http.get(f"{stub.base_url}/models").json()
    assert models == {"object": "list", "data": [{"id": "stub-model", "object": "model", "owned_by": "stub"}]}
    assert stub.stub.requests == []  # only chat requests are logged


def test_normal_answer_and_usage(stub: StubServer, http: httpx.Client) -> None:
    r = _chat(http, stub)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["id"].startswith("chatcmpl-stub-")
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    assert body["model"] == "m1"  # the request's model
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "echo: hello  big world"},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    assert body["usage"] == USAGE


def test_sdk_answer_text_parts_and_ids(sdk: Any) -> None:
    first = sdk.chat.completions.create(model="m2", messages=MESSAGES)
    assert first.choices[0].message.content == "echo: hello  big world"
    assert first.usage.model_dump(exclude_none=True) == USAGE
    parts = [{"type": "text", "text": "one two"}, {"type": "text", "text": " three"}]
    second = sdk.chat.completions.create(model="m2", messages=[{"role": "user", "content": parts}])
    assert second.choices[0].message.content == "echo: one two three"
    assert (second.usage.prompt_tokens, second.usage.completion_tokens) == (3, 4)
    assert second.id != first.id
    # no words at all still counts one prompt token
    third = sdk.chat.completions.create(model="m2", messages=[{"role": "user", "content": ""}])
    assert third.choices[0].message.content == "echo: "
    assert (third.usage.prompt_tokens, third.usage.completion_tokens) == (1, 1)


def test_stream_with_usage_over_httpx(stub: StubServer, http: httpx.Client) -> None:
    r = _chat(http, stub, stream=True, stream_options={"include_usage": True})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    data = _sse(r.text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    usage_chunk, finish_chunk = chunks[-1], chunks[-2]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == USAGE
    assert finish_chunk["choices"][0]["delta"] == {}
    assert finish_chunk["choices"][0]["finish_reason"] == "stop"
    pieces = [c["choices"][0]["delta"]["content"] for c in chunks[1:-2]]
    assert pieces == ["echo: ", "hello  ", "big ", "world"]  # one word piece each, spacing kept
    assert "".join(pieces) == "echo: hello  big world"


def test_stream_without_usage_option(stub: StubServer, http: httpx.Client) -> None:
    data = _sse(_chat(http, stub, stream=True).text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(c["choices"] for c in chunks)
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_stream_with_usage_via_sdk(sdk: Any) -> None:
    stream = sdk.chat.completions.create(
        model="m3", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    text, usage, finish = "", None, None
    for chunk in stream:
        assert chunk.model == "m3"
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert text == "echo: hello  big world"
    assert finish == "stop"
    assert usage is not None and usage.model_dump(exclude_none=True) == USAGE


def test_tool_call_non_stream(sdk: Any) -> None:
    messages = [{"role": "user", "content": "please call tool now"}]
    r = sdk.chat.completions.create(model="m", messages=messages, tools=TOOLS)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    n = r.id.removeprefix("chatcmpl-stub-")
    assert (call.id, call.type) == (f"call_stub_{n}", "function")
    assert (call.function.name, call.function.arguments) == ("get_weather", "{}")
    assert r.usage.completion_tokens == 1
    # without the trigger phrase, or without tools, the answer is the echo
    plain = sdk.chat.completions.create(model="m", messages=MESSAGES, tools=TOOLS)
    assert plain.choices[0].message.content == "echo: hello  big world"
    untooled = sdk.chat.completions.create(model="m", messages=messages)
    assert untooled.choices[0].message.tool_calls is None


def test_tool_call_stream(sdk: Any) -> None:
    messages = [{"role": "user", "content": "call tool"}]
    stream = sdk.chat.completions.create(model="m", messages=messages, tools=TOOLS, stream=True)
    calls: dict[int, dict[str, str]] = {}
    finish = None
    content = ""
    for chunk in stream:
        delta = chunk.choices[0].delta
        content += delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
        for tc in delta.tool_calls or []:
            acc = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
            acc["id"] += tc.id or ""
            if tc.function is not None:
                acc["name"] += tc.function.name or ""
                acc["arguments"] += tc.function.arguments or ""
    assert content == ""
    assert finish == "tool_calls"
    assert list(calls) == [0]
    assert calls[0]["id"].startswith("call_stub_")
    assert (calls[0]["name"], calls[0]["arguments"]) == ("get_weather", "{}")


def test_status_429_with_retry_after(stub: StubServer, http: httpx.Client) -> None:
    stub.stub.push(Status(429, {"retry-after": "1"}))
    r = _chat(http, stub)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "1"
    error = r.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    assert error["message"]
    assert _chat(http, stub).status_code == 200  # one request per behaviour, then normal again


def test_status_429_via_sdk(stub: StubServer, sdk: Any) -> None:
    stub.stub.push(Status(429, {"retry-after": "1"}))
    with pytest.raises(openai.RateLimitError) as info:
        sdk.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "1"


def test_status_500_and_custom_body(stub: StubServer, http: httpx.Client) -> None:
    stub.stub.push(Status(500), Status(200, {"content-type": "application/json"}, "{not json"))
    r = _chat(http, stub, stream=True)
    assert r.status_code == 500
    assert r.json()["error"]["type"] == "server_error"
    broken = _chat(http, stub)
    assert broken.status_code == 200
    assert broken.headers["content-type"] == "application/json"
    assert broken.text == "{not json"


def test_cut_stream_after_two_chunks(stub: StubServer, http: httpx.Client) -> None:
    stub.stub.push(Cut(2))
    lines: list[str] = []
    with (
        pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"),
        http.stream(
            "POST",
            f"{stub.base_url}/chat/completions",
            json={"model": "m", "messages": MESSAGES, "stream": True},
        ) as r,
    ):
        assert r.status_code == 200
        lines.extend(line for line in r.iter_lines() if line)
    # the role chunk and exactly two content chunks arrived; no finish chunk, no [DONE]
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines]
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "echo: "},
        {"content": "hello  "},
    ]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)
    assert _chat(http, stub).status_code == 200  # the server is fine afterwards


def test_cut_stream_via_sdk(stub: StubServer, sdk: Any) -> None:
    stub.stub.push(Cut(2))
    stream = sdk.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    text = ""
    with pytest.raises(httpx.RemoteProtocolError):  # the SDK does not wrap errors mid-stream
        for chunk in stream:
            text += chunk.choices[0].delta.content or ""
    assert text == "echo: hello  "


def test_cut_non_stream(stub: StubServer, http: httpx.Client, sdk: Any) -> None:
    stub.stub.push(Cut(2))
    with pytest.raises(httpx.RemoteProtocolError, match="peer closed connection without sending complete"):
        _chat(http, stub)
    stub.stub.push(Cut())
    with pytest.raises(openai.APIConnectionError):
        sdk.chat.completions.create(model="m", messages=MESSAGES)


@pytest.mark.parametrize("stream", [False, True])
def test_slow_first_token(stub: StubServer, http: httpx.Client, stream: bool) -> None:
    stub.stub.push(SlowFirstToken(0.3))
    body = {"model": "m", "messages": MESSAGES, "stream": stream}
    start = time.perf_counter()
    with http.stream("POST", f"{stub.base_url}/chat/completions", json=body) as r:
        headers_at = time.perf_counter() - start  # nothing, not even the headers, came earlier
        text = r.read().decode()
    assert r.status_code == 200
    assert headers_at >= 0.3
    assert "echo: hello  big world" in text if not stream else text.endswith("data: [DONE]\n\n")
    start = time.perf_counter()
    assert _chat(http, stub).status_code == 200
    assert time.perf_counter() - start < 0.3  # the next request is not slowed


def test_script_order_and_explicit_ok(stub: StubServer, http: httpx.Client) -> None:
    stub.stub.push(Ok(), Status(503), Ok())
    assert [_chat(http, stub).status_code for _ in range(4)] == [200, 503, 200, 200]
    assert len(stub.stub.script) == 0


def test_request_log_records_body_and_headers(stub: StubServer, sdk: Any, http: httpx.Client) -> None:
    sdk.chat.completions.create(model="m4", messages=MESSAGES, extra_headers={"X-Trace-Id": "abc"})
    stub.stub.push(Status(500))
    _chat(http, stub, temperature=0)
    http.post(f"{stub.base_url}/chat/completions", content=b"not json")
    first, second, third = stub.stub.requests
    assert first["body"] == {"model": "m4", "messages": MESSAGES}
    assert first["headers"]["x-trace-id"] == "abc"
    assert first["headers"]["authorization"] == "Bearer stub-key"
    assert all(k == k.lower() for k in first["headers"])
    assert second["body"]["temperature"] == 0  # logged even though it was answered 500
    assert third["body"] is None
    stub.stub.reset()
    assert stub.stub.requests == [] and len(stub.stub.script) == 0


def test_bad_body_is_400_and_keeps_script(stub: StubServer, http: httpx.Client) -> None:
    stub.stub.push(Status(500))
    r = http.post(f"{stub.base_url}/chat/completions", json={"model": "m"})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert _chat(http, stub).status_code == 500  # the 400 consumed no behaviour


def test_behaviours_are_validated() -> None:
    for bad in (lambda: Status(99), lambda: Cut(-1), lambda: SlowFirstToken(-0.1)):
        with pytest.raises(ConfigError):
            bad()
    with pytest.raises(ConfigError):
        StubState().push("cut")  # type: ignore[arg-type]


def test_own_state_and_model_name(http: httpx.Client) -> None:
    state = StubState(model="tiny")
    with StubServer(state) as s:
        assert s.stub is state
        assert http.get(f"{s.base_url}/models").json()["data"][0]["id"] == "tiny"
        body = http.post(f"{s.base_url}/chat/completions", json={"messages": MESSAGES}).json()
        assert body["model"] == "tiny"  # no model in the request: the configured one
    assert not s.running
    with pytest.raises(httpx.ConnectError):
        http.get(f"{s.url}/health")


def test_port_taken_raises_server_error(server: StubServer) -> None:
    with pytest.raises(ServerError), StubServer(port=server.port, ready_timeout=5.0):
        pass
