"""Core types and token counting: every malformed value found by the fuzzer is a typed error.

Each case was an untyped exception (``TypeError``, ``AttributeError``, ``ValueError``) escaping a
public entry point before; ``benchmarks/reliability_fuzz.py`` counts those and must find none.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from tokenlean.errors import ConfigError, InputError, MessageFormatError, TokenleanError
from tokenlean.tokens import count_messages, count_tokens, encoding_for_model
from tokenlean.types import Message, Request, ToolCall


@pytest.mark.parametrize(
    "kwargs",
    [
        {"role": {"a": 1}},  # unhashable: the role lookup itself raised TypeError
        {"role": ["user"]},
        {"role": "user", "tool_calls": {"a": 1}},  # to_openai() later raised AttributeError
        {"role": "user", "tool_calls": [{"id": "c", "function": {"name": "f"}}]},  # dicts, not ToolCall
        {"role": "user", "content": ({"type": "text", "text": "x"}, "bare string part")},
        {"role": "tool", "tool_call_id": 5},
        {"role": "user", "name": b"bytes"},
        {"role": "user", "extra": ["not", "a", "mapping"]},
    ],
)
def test_message_fields_of_the_wrong_type_are_message_format_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(MessageFormatError):
        Message(**kwargs)


def test_a_well_formed_message_still_builds() -> None:
    m = Message("assistant", None, tool_calls=[ToolCall("c1", "grep", "{}")])
    assert m.tool_calls[0].name == "grep" and m.to_openai()["tool_calls"][0]["id"] == "c1"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"messages": None},
        {"messages": 5},
        {"messages": "hello"},
        {"messages": [], "params": [("temperature", 0)]},  # to_openai() raised on update()
        {"messages": [], "metadata": ("task",)},
        {"messages": [], "model": 4},
        {"messages": [], "tools": [3]},
    ],
)
def test_request_fields_of_the_wrong_type_are_message_format_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(MessageFormatError):
        Request(**kwargs)


def test_request_from_openai_refuses_metadata_that_is_not_a_mapping() -> None:
    with pytest.raises(MessageFormatError):
        Request.from_openai({"messages": []}, metadata=([b"\x00"],))  # type: ignore[arg-type]


def test_tool_call_arguments_that_are_not_json_are_a_message_format_error() -> None:
    with pytest.raises(MessageFormatError):
        ToolCall.from_openai({"id": "c", "function": {"name": "f", "arguments": {"s": {1, 2}}}})


@pytest.mark.parametrize("model", [["gpt-4o"], 3.5, object(), b"gpt-4o"])
def test_a_model_that_is_not_a_name_is_a_config_error(model: Any) -> None:
    with pytest.raises(ConfigError):
        count_tokens("hello", model)
    with pytest.raises(ConfigError):
        encoding_for_model(model)


def test_count_tokens_refuses_non_text_with_a_typed_error() -> None:
    with pytest.raises(InputError):
        count_tokens(object())  # type: ignore[arg-type]
    assert count_tokens("a\ud800b") > 0  # lone surrogates are counted, not a crash


def test_count_messages_reads_none_tools_as_no_tools_and_refuses_the_rest() -> None:
    msgs = [{"role": "user", "content": "hi"}]
    assert count_messages(msgs, None, None) == count_messages(msgs)  # type: ignore[arg-type]
    for bad_messages in (None, 5, "hi"):
        with pytest.raises(MessageFormatError):
            count_messages(bad_messages)  # type: ignore[arg-type]
    with pytest.raises(MessageFormatError):
        count_messages(msgs, tools=[{"schema": {1, 2}}])
    with pytest.raises(TokenleanError):
        count_messages(msgs, tools=5)  # type: ignore[arg-type]


def test_nan_usage_is_still_a_usage_format_error() -> None:
    from tokenlean.errors import UsageFormatError
    from tokenlean.types import normalize_usage

    with pytest.raises(UsageFormatError):
        normalize_usage({"prompt_tokens": math.nan, "completion_tokens": 1})


@pytest.mark.parametrize("items", [[None, "deploy"], ["deploy", None], ["a", {1}], [b"x"]])
def test_string_lists_refuse_any_non_string_item_none_included(items: list[Any]) -> None:
    # found by the fuzz run: a None first made the non-string check miss the unhashable item after it
    from tokenlean.routing.rules import Rule

    with pytest.raises(ConfigError):
        Rule(target="weak", tags=items)
