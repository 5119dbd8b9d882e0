"""Core types: lossless OpenAI round trips and clear errors for malformed input."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenlean.errors import MessageFormatError, UsageFormatError
from tokenlean.types import Message, Request, Response, ToolCall, Usage, normalize_usage

text = st.text(max_size=40)
ident = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=12)

tool_calls = st.lists(
    st.builds(
        lambda i, n, a: {"id": i, "type": "function", "function": {"name": n, "arguments": json.dumps(a)}},
        ident,
        ident,
        st.dictionaries(ident, st.integers() | text, max_size=3),
    ),
    max_size=2,
)
parts = st.lists(
    st.one_of(
        st.builds(lambda t: {"type": "text", "text": t}, text),
        st.builds(lambda u: {"type": "image_url", "image_url": {"url": "https://x/" + u}}, ident),
    ),
    min_size=1,
    max_size=3,
)


@st.composite
def messages(draw: st.DrawFn) -> dict:
    role = draw(st.sampled_from(["system", "user", "assistant", "tool"]))
    msg: dict = {"role": role}
    if role == "user":
        msg["content"] = draw(text | parts)
    elif role == "assistant":
        calls = draw(tool_calls)
        msg["content"] = draw(st.none() | text) if calls else draw(text)
        if calls:
            msg["tool_calls"] = calls
    elif role == "tool":
        msg["content"] = draw(text)
        msg["tool_call_id"] = draw(ident)
    else:
        msg["content"] = draw(text)
    if draw(st.booleans()):
        msg["name"] = draw(ident)
    return msg


@settings(max_examples=150, deadline=None)
@given(
    st.lists(messages(), min_size=1, max_size=6),
    st.dictionaries(ident.filter(lambda k: k not in ("model", "messages")), st.integers(0, 9), max_size=2),
)
def test_request_round_trip_is_lossless(msgs: list[dict], params: dict) -> None:
    body = {"model": "gpt-4o-mini", "messages": msgs, **params}
    req = Request.from_openai(body)
    assert req.to_openai() == body
    assert Request.from_openai(req.to_openai()) == req


@settings(max_examples=80, deadline=None)
@given(messages(), st.integers(0, 10_000), st.integers(0, 500), st.integers(0, 100))
def test_response_round_trip_is_lossless(msg: dict, pt: int, ct: int, cached: int) -> None:
    msg["role"] = "assistant"
    msg.pop("tool_call_id", None)
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "m",
        "choices": [{"index": 0, "message": msg, "finish_reason": "stop", "logprobs": None}],
        "usage": {
            "prompt_tokens": pt + cached,
            "completion_tokens": ct,
            "total_tokens": pt + cached + ct,
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    }
    resp = Response.from_openai(body)
    assert resp.to_openai() == body
    assert resp.usage is not None and resp.usage.cached_input_tokens == cached


def test_usage_normalises_providers() -> None:
    anthropic = {
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 7,
    }
    u = normalize_usage(anthropic)
    assert (u.input_tokens, u.cached_input_tokens, u.cache_write_tokens, u.output_tokens) == (117, 100, 7, 5)
    lc = {
        "input_tokens": 30,
        "output_tokens": 3,
        "total_tokens": 33,
        "input_token_details": {"cache_read": 20},
    }
    assert normalize_usage(lc) == Usage(input_tokens=30, output_tokens=3, cached_input_tokens=20)
    assert Usage(1, 2) + Usage(3, 4, 1) == Usage(4, 6, 1)


@pytest.mark.parametrize("bad", [None, "12", {"prompt_tokens": -1}, {"prompt_tokens": "x"}, 3.5])
def test_malformed_usage_is_typed_error(bad: object) -> None:
    with pytest.raises(UsageFormatError):
        normalize_usage(bad)


@pytest.mark.parametrize(
    "bad",
    [{"role": "wizard", "content": "x"}, {"content": "x"}, {"role": "tool", "content": "x"}, "not a dict"],
)
def test_malformed_messages_are_typed_errors(bad: object) -> None:
    with pytest.raises(MessageFormatError):
        Message.from_openai(bad)


def test_tool_call_arguments() -> None:
    call = ToolCall.from_openai(
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    )
    assert call.parsed_arguments() == {"a": 1}
    assert call.to_openai()["function"]["arguments"] == '{"a": 1}'


def test_framework_roles_normalise_to_openai_names() -> None:
    from enum import StrEnum

    from tokenlean.types import normalize_role

    class Role(StrEnum):
        MODEL = "model"
        USER = "user"

    assert normalize_role(Role.MODEL) == "assistant"
    assert normalize_role("chatbot") == "assistant"
    assert normalize_role(Role.USER) == "user"
    assert normalize_role("tool") == "tool"
