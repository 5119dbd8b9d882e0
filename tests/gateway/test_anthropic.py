"""``POST /v1/messages``: Anthropic's clients through the gateway, both ways a route can go.

Three layers:

* the translation, on dicts: an Anthropic request as an OpenAI chat body, an OpenAI answer (JSON
  and SSE) as an Anthropic message and its stream events, tool_use / tool_result round trips;
* the ``anthropic`` SDK and LangChain's ``ChatAnthropic`` against the real llama.cpp server
  (SmolLM2) behind the gateway: an OpenAI upstream, so the request is translated and every lever
  acts (the cache is checked with the same question twice at temperature 0);
* an Anthropic upstream (``api = "anthropic"``), played by a small Anthropic-shaped stub written
  here: the body must arrive byte for byte (``cache_control`` kept), the answer come back as the
  stub sent it, and the call be metered from Anthropic's usage.

The installed SDK no longer takes ``temperature`` as an argument of ``messages.create`` (newer
Claude models refuse sampling settings): it goes in ``extra_body``, as LangChain does too.
Answers are kept short (16 tokens at most); a cut answer is never cached, so the questions asked
twice are ones SmolLM2 answers in full within 16 tokens.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
anthropic = pytest.importorskip("anthropic")

import httpx  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request as HttpRequest  # noqa: E402
from starlette.responses import JSONResponse, Response, StreamingResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from tokenlean.errors import InputError  # noqa: E402
from tokenlean.gateway import create_app, hash_key, load_config  # noqa: E402
from tokenlean.gateway.anthropic import (  # noqa: E402
    message_from_openai,
    openai_from_message,
    stream_from_openai,
    to_openai,
)
from tokenlean.gateway.serving import AppServer  # noqa: E402
from tokenlean.metering import Ledger, UsageRecord  # noqa: E402

MAX_TOKENS = 16
ZERO = {"temperature": 0}  # the SDK takes sampling settings in extra_body only
WEATHER = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The city's name."}},
        "required": ["city"],
    },
}
OPENAI_WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": WEATHER["input_schema"],
    },
}


def _events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of an Anthropic SSE stream."""
    out = []
    for frame in raw.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line)
        if "event" in lines:
            out.append((lines["event"], json.loads(lines["data"])))
    return out


def _wait_records(ledger: Ledger, task: str, n: int, timeout: float = 10.0) -> list[UsageRecord]:
    """The task's records once there are ``n`` (a stream is recorded when its relay ends)."""
    deadline = time.monotonic() + timeout
    while True:
        recs = ledger.records(task)
        if len(recs) >= n or time.monotonic() > deadline:
            assert len(recs) == n, [(r.model, r.usage, r.cache_hit) for r in recs]
            return recs
        time.sleep(0.02)


# -- the translation, on dicts ---------------------------------------------------------------------
def test_request_translation_text_system_sampling_and_attribution() -> None:
    body = {
        "model": "claude-x",
        "max_tokens": 64,
        "system": [
            {"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Answer in English."},
        ],
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}],
            },
            {"role": "assistant", "content": "Hello."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
                    },
                ],
            },
        ],
        "temperature": 0,
        "top_p": 0.9,
        "top_k": 5,
        "stop_sequences": ["\n\n"],
        "stream": True,
        "metadata": {"user_id": "task-42"},
        "thinking": {"type": "enabled", "budget_tokens": 1024},  # no OpenAI equivalent: dropped
    }
    assert to_openai(body) == {
        "model": "claude-x",
        "messages": [
            {
                "role": "system",
                "content": [
                    {"type": "text", "text": "You are terse."},
                    {"type": "text", "text": "Answer in English."},
                ],
            },
            {"role": "user", "content": "Hi"},  # one text block: a string, cache_control dropped
            {"role": "assistant", "content": "Hello."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            },
        ],
        "max_tokens": 64,
        "temperature": 0,
        "top_p": 0.9,
        "top_k": 5,
        "stop": ["\n\n"],
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "task-42",
    }
    assert to_openai({"model": "m", "system": "Be brief.", "messages": []})["messages"] == [
        {"role": "system", "content": "Be brief."}
    ]


def test_tool_use_and_tool_result_round_trip_on_dicts() -> None:
    call = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
    body = {
        "model": "m",
        "max_tokens": 16,
        "tools": [WEATHER],
        "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [{"type": "text", "text": "Checking."}, call]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "content": [{"type": "text", "text": "no such city"}],
                        "is_error": True,
                    },
                    {"type": "text", "text": "And tomorrow?"},
                ],
            },
        ],
    }
    chat = to_openai(body)
    assert chat["tools"] == [OPENAI_WEATHER]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert chat["parallel_tool_calls"] is False
    openai_call = {
        "id": "toolu_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    assert chat["messages"][1:] == [
        {"role": "assistant", "content": "Checking.", "tool_calls": [openai_call]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Sunny"},  # results first
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: no such city"},
        {"role": "user", "content": "And tomorrow?"},
    ]
    for kind, want in (("auto", "auto"), ("any", "required"), ("none", "none")):
        assert to_openai({**body, "tool_choice": {"type": kind}})["tool_choice"] == want

    # the answer way: an OpenAI tool call is a tool_use block with its input parsed ...
    answer = {
        "id": "chatcmpl-1",
        "model": "smollm2",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "tool_calls": [openai_call]},
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 30, "completion_tokens": 8, "total_tokens": 38},
    }
    message = message_from_openai(answer, "claude-x")
    assert (
        message["id"].startswith("msg_") and message["type"] == "message" and message["role"] == "assistant"
    )
    assert message["model"] == "claude-x"
    assert message["content"] == [call]
    assert message["stop_reason"] == "tool_use"
    assert message["usage"] == {"input_tokens": 30, "output_tokens": 8}
    # ... which the client sends back as it got it: the same OpenAI call goes upstream
    again = to_openai({"model": "m", "messages": [{"role": "assistant", "content": message["content"]}]})
    assert again["messages"][0]["tool_calls"] == [openai_call]
    # and back to OpenAI (what the cache stores for an Anthropic upstream)
    back = openai_from_message(message)
    assert back["choices"][0]["message"]["tool_calls"] == [openai_call]
    assert back["choices"][0]["finish_reason"] == "tool_calls"
    assert back["usage"] == {"prompt_tokens": 30, "completion_tokens": 8, "total_tokens": 38}


def test_answer_translation_stop_reasons_and_cached_usage() -> None:
    def answer(reason: str, usage: dict[str, Any]) -> dict[str, Any]:
        msg = {"role": "assistant", "content": "4"}
        return {"choices": [{"index": 0, "message": msg, "finish_reason": reason}], "usage": usage}

    usage = {"prompt_tokens": 100, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 64}}
    message = message_from_openai(answer("stop", usage), "m")
    assert message["content"] == [{"type": "text", "text": "4"}] and message["stop_reason"] == "end_turn"
    assert message["usage"] == {"input_tokens": 36, "output_tokens": 3, "cache_read_input_tokens": 64}
    assert message_from_openai(answer("length", {}), "m")["stop_reason"] == "max_tokens"
    assert message_from_openai(answer("content_filter", {}), "m")["stop_reason"] == "refusal"
    # Anthropic usage counts the cached prefix apart; OpenAI's prompt_tokens include it
    back = openai_from_message({**message, "usage": {**message["usage"], "cache_creation_input_tokens": 10}})
    assert back["usage"]["prompt_tokens"] == 110 and back["usage"]["prompt_tokens_details"] == {
        "cached_tokens": 64
    }
    assert back["choices"][0] == {
        "index": 0,
        "message": {"role": "assistant", "content": "4"},
        "finish_reason": "stop",
    }
    assert (
        openai_from_message({"content": [], "stop_reason": "pause_turn"})["choices"][0]["finish_reason"]
        == "pause_turn"
    )


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
        {"messages": [{"role": "system", "content": "x"}]},
        {
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "web_search_20250305", "name": "web_search"}],
        },
        {"messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "sometimes"}},
        {"messages": "x"},
    ],
)
def test_what_cannot_be_translated_is_refused(body: dict[str, Any]) -> None:
    with pytest.raises(InputError):
        to_openai({"model": "m", **body})


def _sse(*chunks: dict[str, Any] | str) -> list[bytes]:
    return [f"data: {c if isinstance(c, str) else json.dumps(c)}\n\n".encode() for c in chunks]


def _translate(frames: list[bytes], estimate: Any = None) -> list[tuple[str, dict[str, Any]]]:
    async def source() -> AsyncIterator[bytes]:
        for f in frames:
            yield f

    async def run() -> bytes:
        return b"".join([e async for e in stream_from_openai(source(), "claude-x", estimate)])

    return _events(asyncio.run(run()))


def test_stream_translation_text_tool_calls_usage_and_errors() -> None:
    def delta(d: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"choices": [{"index": 0, "delta": d, "finish_reason": finish}]}

    tool = {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    events = _translate(
        _sse(
            delta({"role": "assistant", "content": ""}),
            delta({"content": "Let me"}),
            delta({"content": " check."}),
            delta({"tool_calls": [tool]}),
            delta({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
            delta({"tool_calls": [{"index": 0, "function": {"arguments": '"Rome"}'}}]}),
            delta({}, "tool_calls"),
            {"choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 9}},
            "[DONE]",
        )
    )
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0][1]["message"]["model"] == "claude-x" and events[0][1]["message"]["id"].startswith("msg_")
    assert events[1][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert events[2][1]["delta"] == {"type": "text_delta", "text": "Let me"}
    assert events[5][1]["index"] == 1
    assert events[5][1]["content_block"] == {
        "type": "tool_use",
        "id": "call_1",
        "name": "get_weather",
        "input": {},
    }
    assert "".join(e["delta"]["partial_json"] for n, e in events[6:8]) == '{"city": "Rome"}'
    assert events[9][1]["delta"]["stop_reason"] == "tool_use"
    assert events[9][1]["usage"] == {"input_tokens": 20, "output_tokens": 9}

    # no usage in the stream (llama.cpp): estimated; a break: an error event, no message_stop
    estimated = _translate(
        _sse(delta({"content": "Hi"}), delta({}, "length"), "[DONE]"),
        estimate=lambda text: asyncio.sleep(0, {"prompt_tokens": 5, "completion_tokens": len(text)}),
    )
    assert estimated[-2][1]["delta"]["stop_reason"] == "max_tokens"
    assert estimated[-2][1]["usage"] == {"input_tokens": 5, "output_tokens": 2}
    broken = _translate(_sse(delta({"content": "Hi"}), {"error": {"message": "upstream died", "code": "x"}}))
    assert broken[-1] == (
        "error",
        {"type": "error", "error": {"type": "api_error", "message": "upstream died"}},
    )
    cut = _translate(_sse(delta({"content": "Hi"})))
    assert cut[-1][0] == "error" and "ended before" in cut[-1][1]["error"]["message"]


# -- an OpenAI upstream: the real llama.cpp ---------------------------------------------------------
@pytest.fixture(scope="module")
def gw(llama_gateway: Any) -> Iterator[Any]:
    with llama_gateway("claude-local") as g:
        yield g


@pytest.fixture
def client(gw: Any) -> Iterator[Any]:
    c = anthropic.Anthropic(base_url=gw.server.url, api_key="x", max_retries=0)
    yield c
    c.close()


def _ask(question: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": question}]


@pytest.mark.integration
def test_sdk_message_is_translated_metered_under_user_id_and_cached(gw: Any, client: Any) -> None:
    task = "anthropic-user-7"

    def ask() -> Any:
        return client.messages.with_raw_response.create(
            model="claude-local",
            max_tokens=MAX_TOKENS,
            messages=_ask("What is 2+2?"),
            metadata={"user_id": task},
            extra_body=ZERO,
        )

    first = ask()
    message = first.parse()
    assert first.headers["x-tokenlean-cache"] == "miss" and first.headers["x-tokenlean-route"] == "local"
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert message.stop_reason == "end_turn"  # answered in full: cacheable
    assert message.content[0].type == "text" and "4" in message.content[0].text
    sent = gw.last_sent()
    assert sent["messages"] == _ask("What is 2+2?")
    assert (sent["max_tokens"], sent["temperature"], sent["user"]) == (MAX_TOKENS, 0, task)
    (rec,) = _wait_records(gw.ledger, task, 1)
    assert (rec.usage.input_tokens, rec.usage.output_tokens) == (
        message.usage.input_tokens,
        message.usage.output_tokens,
    )

    n = len(gw.sent)
    second = ask()
    assert second.headers["x-tokenlean-cache"] == "hit" and second.headers["x-tokenlean-route"] == "cache"
    hit = second.parse()
    assert hit.content[0].text == message.content[0].text and hit.stop_reason == "end_turn"
    assert (hit.usage.input_tokens, hit.usage.output_tokens) == (0, 0)  # nothing billed
    assert len(gw.sent) == n
    assert [r.cache_hit for r in _wait_records(gw.ledger, task, 2)] == [False, True]


@pytest.mark.integration
def test_sdk_stream_events_headers_and_stream_cache_replay(gw: Any, client: Any) -> None:
    task = "anthropic-stream"
    kwargs: dict[str, Any] = {
        "model": "claude-local",
        "max_tokens": MAX_TOKENS,
        "system": "You are a calculator.",
        "messages": _ask("What is 3+3?"),
        "metadata": {"user_id": task},
        "extra_body": ZERO,
    }
    with client.messages.stream(**kwargs) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].text == text
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0 and final.usage.input_tokens > 0
    sent = gw.last_sent()
    assert sent["stream"] is True and sent["messages"][0] == {
        "role": "system",
        "content": "You are a calculator.",
    }
    (rec,) = _wait_records(gw.ledger, task, 1)
    assert rec.extra.get("usage_estimated")  # llama.cpp streams no usage

    # the same request again: replayed from the cache as Anthropic events, read on the wire
    body = {k: v for k, v in kwargs.items() if k != "extra_body"} | ZERO | {"stream": True}
    n = len(gw.sent)
    with httpx.stream("POST", f"{gw.server.url}/v1/messages", json=body, timeout=60.0) as r:
        raw = r.read()
        assert r.headers["x-tokenlean-cache"] == "hit" and r.headers["content-type"].startswith(
            "text/event-stream"
        )
    events = _events(raw)
    assert [n for n, _ in events][:2] == ["message_start", "content_block_start"]
    assert [n for n, _ in events][-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert "".join(e["delta"]["text"] for n, e in events if n == "content_block_delta") == text
    assert events[-2][1]["usage"] == {"input_tokens": 0, "output_tokens": 0}
    assert len(gw.sent) == n
    assert [r.cache_hit for r in _wait_records(gw.ledger, task, 2)] == [False, True]


@pytest.mark.integration
def test_sdk_forced_tool_call_round_trip_and_stream(gw: Any, client: Any) -> None:
    question = _ask("What is the weather in Paris?")
    forced = {"type": "tool", "name": "get_weather"}
    message = client.messages.create(
        model="claude-local",
        max_tokens=MAX_TOKENS,
        messages=question,
        tools=[WEATHER],
        tool_choice=forced,
        extra_body=ZERO,
    )
    sent = gw.last_sent()
    assert sent["tools"] == [OPENAI_WEATHER]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert message.stop_reason == "tool_use", message
    (use,) = [b for b in message.content if b.type == "tool_use"]
    assert use.name == "get_weather" and isinstance(use.input.get("city"), str)

    # the tool's result goes back: the OpenAI upstream gets the call and a tool message
    history = [
        *question,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in message.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 24 C"}],
        },
    ]
    answer = client.messages.create(
        model="claude-local", max_tokens=MAX_TOKENS, messages=history, tools=[WEATHER], extra_body=ZERO
    )
    assert answer.content and answer.content[0].type == "text"
    sent = gw.last_sent()["messages"]
    assert sent[1]["tool_calls"][0]["id"] == use.id
    assert json.loads(sent[1]["tool_calls"][0]["function"]["arguments"]) == use.input
    assert sent[2] == {"role": "tool", "tool_call_id": use.id, "content": "Sunny, 24 C"}

    # streamed: input_json_delta events the SDK assembles into the same input
    with client.messages.stream(
        model="claude-local",
        max_tokens=MAX_TOKENS,
        messages=question,
        tools=[WEATHER],
        tool_choice=forced,
        extra_body=ZERO,
    ) as stream:
        final = stream.get_final_message()
    (streamed,) = [b for b in final.content if b.type == "tool_use"]
    assert streamed.name == "get_weather" and streamed.input == use.input
    assert final.stop_reason == "tool_use"


@pytest.mark.integration
def test_langchain_chat_anthropic_invoke_stream_and_tools(gw: Any) -> None:
    pytest.importorskip("langchain_anthropic")
    from langchain_anthropic import ChatAnthropic
    from langchain_core.messages import AIMessage, AIMessageChunk
    from langchain_core.tools import tool

    task = "chat-anthropic"
    llm = ChatAnthropic(
        base_url=gw.server.url,
        api_key="x",
        model="claude-local",
        max_tokens=MAX_TOKENS,
        temperature=0,
        max_retries=0,
        default_headers={"x-tokenlean-task": task},
    )
    answer = llm.invoke("What is 2+5?")
    assert isinstance(answer, AIMessage) and isinstance(answer.content, str) and answer.content
    assert gw.last_sent()["messages"] == _ask("What is 2+5?") and gw.last_sent()["temperature"] == 0
    (rec,) = _wait_records(gw.ledger, task, 1)
    assert answer.usage_metadata is not None
    assert (rec.usage.input_tokens, rec.usage.output_tokens) == (
        answer.usage_metadata["input_tokens"],
        answer.usage_metadata["output_tokens"],
    )

    pieces = list(llm.stream("Name a fruit."))
    assert pieces and all(isinstance(p, AIMessageChunk) for p in pieces)
    streamed = pieces[0]
    for p in pieces[1:]:
        streamed += p
    assert streamed.text and streamed.usage_metadata and streamed.usage_metadata["output_tokens"] > 0
    assert gw.last_sent()["stream"] is True

    @tool
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        return f"It is sunny in {city}."

    called = llm.bind_tools([get_weather], tool_choice="get_weather").invoke("What is the weather in Rome?")
    assert gw.last_sent()["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert [c["name"] for c in called.tool_calls] == ["get_weather"]
    assert isinstance(called.tool_calls[0]["args"].get("city"), str)
    _wait_records(gw.ledger, task, 3)


@pytest.mark.integration
def test_errors_in_anthropic_shape(gw: Any, client: Any) -> None:
    with pytest.raises(anthropic.NotFoundError) as exc:
        client.messages.create(model="claude-unknown", max_tokens=MAX_TOKENS, messages=_ask("Hi"))
    assert exc.value.body["type"] == "error"
    assert (
        exc.value.body["error"]["type"] == "not_found_error"
        and "claude-unknown" in exc.value.body["error"]["message"]
    )
    url = f"{gw.server.url}/v1/messages"
    bad = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    doc = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}
    refused = httpx.post(
        url, json={"model": "claude-local", "max_tokens": 8, "messages": [{"role": "user", "content": [doc]}]}
    )
    assert refused.status_code == 400 and "document" in refused.json()["error"]["message"]


# -- an Anthropic upstream: a stub that speaks the Messages API --------------------------------------
STUB_MESSAGE = (
    b'{"id":"msg_stub","type":"message","role":"assistant","model":"claude-stub-1",'
    b'"content":[{"type":"text","text":"Hello there"}],"stop_reason":"end_turn","stop_sequence":null,'
    b'"usage":{"input_tokens":21,"output_tokens":5,"cache_read_input_tokens":100,'
    b'"cache_creation_input_tokens":7},"vendor_field":{"kept":true}}'
)
STUB_EVENTS = [
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_stub","type":"message",'
    b'"role":"assistant","model":"claude-stub-1","content":[],"stop_reason":null,"stop_sequence":null,'
    b'"usage":{"input_tokens":21,"output_tokens":1,"cache_read_input_tokens":100,'
    b'"cache_creation_input_tokens":7}}}\n\n',
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"text","text":""}}\n\n',
    b'event: ping\ndata: {"type": "ping"}\n\n',
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"Hello"}}\n\n',
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":" there"}}\n\n',
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n',
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn",'
    b'"stop_sequence":null},"usage":{"output_tokens":5}}\n\n',
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
]
PROVIDER_KEY = "sk-ant-provider-secret"


class AnthropicStub:
    """``POST /v1/messages`` answering a fixed message (JSON or SSE); records every request and
    can be told to fail the next calls with given statuses."""

    def __init__(self) -> None:
        self.requests: list[tuple[bytes, dict[str, str]]] = []
        self.fail: list[int] = []
        self.url = ""  # the base URL it is served at
        self.app = Starlette(
            routes=[
                Route("/v1/messages", self.messages, methods=["POST"]),
                Route("/health", lambda r: Response("ok"), methods=["GET"]),
            ]
        )

    async def messages(self, http: HttpRequest) -> Response:
        raw = await http.body()
        self.requests.append((raw, dict(http.headers)))
        if self.fail:
            status = self.fail.pop(0)
            error = {"type": "error", "error": {"type": "overloaded_error", "message": f"stub says {status}"}}
            return JSONResponse(error, status_code=status)
        if json.loads(raw).get("stream"):

            async def events() -> AsyncIterator[bytes]:
                for e in STUB_EVENTS:
                    yield e

            return StreamingResponse(
                events(), media_type="text/event-stream", headers={"request-id": "req_s"}
            )
        return Response(STUB_MESSAGE, media_type="application/json", headers={"request-id": "req_1"})


@pytest.fixture(scope="module")
def stubs() -> Iterator[tuple[AnthropicStub, AnthropicStub, AppServer, AppServer]]:
    a, b = AnthropicStub(), AnthropicStub()
    with AppServer(a.app) as sa, AppServer(b.app) as sb:
        a.url, b.url = sa.base_url, sb.base_url
        yield a, b, sa, sb


@pytest.fixture
def relay(
    stubs: tuple[AnthropicStub, AnthropicStub, AppServer, AppServer], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[AppServer, AnthropicStub, AnthropicStub]]:
    """A fresh gateway whose ``claude-*`` route targets the two stubs as replicas of one upstream."""
    a, b, sa, sb = stubs
    for s in (a, b):
        s.requests.clear()
        s.fail.clear()
    monkeypatch.setenv("TL_TEST_ANTHROPIC_KEY", PROVIDER_KEY)
    upstream = {
        "base_urls": [sa.base_url, sb.base_url],
        "api": "anthropic",
        "api_key_env": "TL_TEST_ANTHROPIC_KEY",
    }
    cfg = load_config(
        None, upstreams={"claude": upstream}, routes=[{"match": "claude-*", "targets": ["claude"]}]
    )
    with AppServer(create_app(cfg), lifespan="on") as server:
        yield server, a, b


def test_anthropic_upstream_gets_the_bytes_as_sent_and_is_metered(
    relay: tuple[AppServer, AnthropicStub, AnthropicStub],
) -> None:
    server, a, b = relay
    # odd spacing and key order, cache_control marks, a field the gateway does not know: all kept
    raw = (
        b'{"model": "claude-sonnet",  "max_tokens":32,"system":[{"type":"text","text":"Long policy",'
        b'"cache_control":{"type":"ephemeral","ttl":"1h"}}],"messages":[{"role":"user","content":'
        b'[{"type":"text","text":"Hi","cache_control":{"type":"ephemeral"}}]}],'
        b'"metadata":{"user_id":"relay-task"},"future_field":[1,2]}'
    )
    headers = {
        "content-type": "application/json",
        "x-api-key": "client-key",
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "extended-cache-ttl-2025-04-11",
    }
    r = httpx.post(f"{server.url}/v1/messages", content=raw, headers=headers)
    assert r.status_code == 200
    assert r.content == STUB_MESSAGE  # relayed as the upstream sent it, unknown fields included
    assert r.headers["request-id"] == "req_1" and r.headers["x-tokenlean-route"] == "claude"
    assert r.headers["x-tokenlean-cache"] == "bypass"  # no temperature: a sample, not looked up
    ((got, got_headers),) = a.requests + b.requests
    assert got == raw  # byte for byte
    assert got_headers["x-api-key"] == PROVIDER_KEY  # the upstream's key, never the client's
    assert got_headers["anthropic-version"] == "2023-06-01"
    assert got_headers["anthropic-beta"] == "extended-cache-ttl-2025-04-11"
    ledger = server.app.state.gateway.levers.meter.ledger
    (rec,) = _wait_records(ledger, "relay-task", 1)
    assert rec.model == "claude-stub-1" and rec.extra["api"] == "anthropic"
    # Anthropic's input_tokens exclude the cached prefix; tokenlean's input counts it all
    u = rec.usage
    assert (u.input_tokens, u.output_tokens, u.cached_input_tokens, u.cache_write_tokens) == (128, 5, 100, 7)
    assert rec.endpoint in (a_url := server.app.state.gateway.config.upstreams["claude"].base_urls)
    assert r.headers["x-tokenlean-replica"] in a_url

    # the SDK reads it like any Anthropic answer
    sdk = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0)
    message = sdk.messages.create(model="claude-sonnet", max_tokens=32, messages=_ask("Hi"))
    assert message.content[0].text == "Hello there" and message.usage.cache_read_input_tokens == 100


def test_anthropic_upstream_stream_is_relayed_byte_for_byte_and_metered(
    relay: tuple[AppServer, AnthropicStub, AnthropicStub],
) -> None:
    server, _, _ = relay
    body = {"model": "claude-sonnet", "max_tokens": 32, "stream": True, "messages": _ask("Hi")}
    body["metadata"] = {"user_id": "relay-stream"}
    with httpx.stream("POST", f"{server.url}/v1/messages", json=body, timeout=30.0) as r:
        raw = r.read()
        assert r.status_code == 200 and r.headers["request-id"] == "req_s"
    assert raw == b"".join(STUB_EVENTS)
    ledger = server.app.state.gateway.levers.meter.ledger
    (rec,) = _wait_records(ledger, "relay-stream", 1)
    u = rec.usage
    assert (u.input_tokens, u.output_tokens, u.cached_input_tokens, u.cache_write_tokens) == (128, 5, 100, 7)
    assert rec.first_token_at is not None

    sdk = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0)
    with sdk.messages.stream(model="claude-sonnet", max_tokens=32, messages=_ask("Hi")) as stream:
        assert "".join(stream.text_stream) == "Hello there"
        final = stream.get_final_message()
    assert final.usage.output_tokens == 5 and final.usage.cache_creation_input_tokens == 7


def test_anthropic_upstream_cache_failover_and_client_errors(
    relay: tuple[AppServer, AnthropicStub, AnthropicStub],
) -> None:
    server, a, b = relay
    url = f"{server.url}/v1/messages"
    body = {"model": "claude-sonnet", "max_tokens": 32, "temperature": 0, "messages": _ask("Cache me")}
    first = httpx.post(url, json=body)
    assert first.headers["x-tokenlean-cache"] == "miss" and first.content == STUB_MESSAGE
    calls = len(a.requests) + len(b.requests)
    second = httpx.post(url, json={**body, "metadata": {"user_id": "relay-hit"}})
    assert second.headers["x-tokenlean-cache"] == "hit" and len(a.requests) + len(b.requests) == calls
    hit = second.json()
    assert hit["content"] == [{"type": "text", "text": "Hello there"}] and hit["stop_reason"] == "end_turn"
    assert hit["usage"] == {"input_tokens": 0, "output_tokens": 0}
    assert int(second.headers["x-tokenlean-tokens-saved"]) == 128 + 5
    (rec,) = _wait_records(server.app.state.gateway.levers.meter.ledger, "relay-hit", 1)
    assert rec.cache_hit
    # a streamed asking of the same question: replayed as Anthropic events
    with httpx.stream("POST", url, json={**body, "stream": True}) as r:
        events = _events(r.read())
    assert r.headers["x-tokenlean-cache"] == "hit"
    assert "".join(e["delta"]["text"] for n, e in events if n == "content_block_delta") == "Hello there"

    # 529 (overloaded) and 5xx fail over to the other replica; a 4xx is the client's, relayed
    def first_tried() -> tuple[AnthropicStub, AnthropicStub]:
        replica = server.app.state.gateway.pool.candidates("claude", [], None, False)[0].replica
        return (a, b) if replica.base_url == a.url else (b, a)

    failing, other = first_tried()
    failing.fail = [529]
    before = len(other.requests)
    fresh = {**body, "temperature": 0.5}
    ok = httpx.post(url, json=fresh)
    assert ok.status_code == 200 and ok.content == STUB_MESSAGE
    assert failing.fail == [] and len(other.requests) == before + 1  # failed over
    failing, other = first_tried()
    failing.fail, other.fail = [400], [400]
    refused = httpx.post(url, json=fresh)
    assert refused.status_code == 400 and refused.json()["error"]["message"] == "stub says 400"
    assert failing.fail == [] and other.fail == [400]  # not retried elsewhere


def test_keys_guard_messages_and_errors_are_anthropic_shaped(
    stubs: tuple[AnthropicStub, AnthropicStub, AppServer, AppServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _, sa, _ = stubs
    a.requests.clear()
    a.fail.clear()
    monkeypatch.setenv("TL_TEST_ANTHROPIC_KEY", PROVIDER_KEY)
    cfg = load_config(
        None,
        upstreams={
            "claude": {"base_urls": [sa.base_url], "api": "anthropic", "api_key_env": "TL_TEST_ANTHROPIC_KEY"}
        },
        routes=[{"match": "claude-*", "targets": ["claude"]}],
        keys=[{"name": "team", "hash": hash_key("tl-team-key")}],
    )
    with AppServer(create_app(cfg), lifespan="on") as server:
        url = f"{server.url}/v1/messages"
        body = {"model": "claude-sonnet", "max_tokens": 8, "messages": _ask("Hi")}
        missing = httpx.post(url, json=body)
        assert missing.status_code == 401
        assert missing.json() == {
            "type": "error",
            "error": {"type": "authentication_error", "message": missing.json()["error"]["message"]},
        }
        with pytest.raises(anthropic.AuthenticationError):
            anthropic.Anthropic(base_url=server.url, api_key="wrong", max_retries=0).messages.create(**body)
        assert a.requests == []
        good = anthropic.Anthropic(base_url=server.url, api_key="tl-team-key", max_retries=0)
        assert good.messages.create(**body).content[0].text == "Hello there"
        assert a.requests[-1][1]["x-api-key"] == PROVIDER_KEY  # the virtual key stays at the gateway
        with pytest.raises(anthropic.NotFoundError):
            good.messages.create(**{**body, "model": "gpt-4o"})


# -- prompt-cache breakpoints planned by the layout lever -------------------------------------------
POLICY = "\n".join(
    f"Rule {i}: answer support questions about order {i} politely and briefly." for i in range(150)
)
LONG_BODY = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 16,
    "system": POLICY,
    "tools": [{"name": "lookup", "description": "Find an order.", "input_schema": {"type": "object"}}],
    "messages": [
        {"role": "user", "content": "Where is order 7?"},
        {"role": "assistant", "content": "Let me check."},
        {"role": "user", "content": "Thanks, and order 8?"},
    ],
}


def test_breakpoints_planned_only_where_they_pay() -> None:
    from tokenlean.gateway.anthropic import to_openai
    from tokenlean.gateway.anthropic_cache import has_cache_control, plan_breakpoints

    planned = plan_breakpoints(LONG_BODY, to_openai)
    assert planned is not None and planned != LONG_BODY
    assert planned["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert planned["system"][0]["text"] == POLICY  # the text itself untouched
    assert planned["messages"] and has_cache_control(planned)
    assert not has_cache_control(LONG_BODY)  # the client's object is not modified
    assert (
        plan_breakpoints({**LONG_BODY, "system": "Be brief.", "tools": []}, to_openai) is None
    )  # too short to cache
    own = {**LONG_BODY, "system": [{"type": "text", "text": POLICY, "cache_control": {"type": "ephemeral"}}]}
    assert plan_breakpoints(own, to_openai) is None  # the client placed its own: left as it is


def test_layout_route_adds_breakpoints_upstream_and_other_routes_send_bytes_as_sent(
    stubs: tuple[AnthropicStub, AnthropicStub, AppServer, AppServer],
) -> None:
    a, _, sa, _ = stubs
    a.requests.clear()
    upstream = {"base_urls": [sa.base_url], "api": "anthropic"}
    routes = [
        {"match": "claude-sonnet-4-5", "targets": ["claude"], "layout": True, "cache": False},
        {"match": "*", "targets": ["claude"], "cache": False},
    ]
    cfg = load_config(None, upstreams={"claude": upstream}, routes=routes)
    with AppServer(create_app(cfg), lifespan="on") as server:
        raw = json.dumps(LONG_BODY).encode()
        r = httpx.post(
            f"{server.base_url}/messages", content=raw, headers={"content-type": "application/json"}
        )
        assert r.status_code == 200
        sent = json.loads(a.requests[-1][0])
        assert sent["system"][-1]["cache_control"] == {"type": "ephemeral"}
        assert {k: v for k, v in sent.items() if k not in ("system", "tools", "messages")} == {
            k: v for k, v in LONG_BODY.items() if k not in ("system", "tools", "messages")
        }
        other = {**LONG_BODY, "model": "claude-other"}
        raw = json.dumps(other).encode()
        httpx.post(f"{server.base_url}/messages", content=raw, headers={"content-type": "application/json"})
        assert a.requests[-1][0] == raw  # no layout on that route: the bytes as sent
