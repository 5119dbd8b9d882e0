"""The LangChain adapters on messages LangChain accepts but cannot convert, and on odd callback data.

LangChain's message models take content blocks its own OpenAI converter then fails on (a block
without ``"type"``: ``KeyError``; a list as the type: ``TypeError``). Those escaped from
``layout_messages`` and the compaction adapters; now they are ``MessageFormatError`` and the
adapters pass the messages through. The callback handler swallowed (and so lost the call) an
``AttributeError`` on metadata that is not a mapping; now the call is recorded.
"""

from __future__ import annotations

import logging
import uuid

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from langchain_tokenlean import TokenleanCallbackHandler, compact_messages, layout_messages
from langchain_tokenlean._convert import messages_to_core
from tokenlean.errors import MessageFormatError
from tokenlean.metering import Meter

ODD = [
    HumanMessage(content=[{"text": "a block without a type"}]),
    HumanMessage(content=[{"type": ["text"], "text": "a list as the type"}]),
]


@pytest.mark.parametrize("message", ODD)
def test_unconvertible_messages_are_a_message_format_error(message: HumanMessage) -> None:
    with pytest.raises(MessageFormatError):
        messages_to_core([message])


@pytest.mark.parametrize("message", ODD)
def test_adapters_pass_unconvertible_messages_through(message: HumanMessage) -> None:
    msgs = [message, HumanMessage("and a question")]
    assert layout_messages(msgs) == msgs
    assert compact_messages(msgs, store="memory", mode="lexical") == msgs


def test_callback_records_a_call_whatever_the_metadata_and_usage_look_like(
    caplog: pytest.LogCaptureFixture,
) -> None:
    meter = Meter()
    handler = TokenleanCallbackHandler(meter)
    msg = AIMessage(content="hi", response_metadata={"model_name": "gpt-4o"})
    msg.usage_metadata = "12 tokens"  # type: ignore[assignment]  # set past validation, as some wrappers do
    run = uuid.uuid4()
    with caplog.at_level(logging.WARNING, logger="tokenlean"):
        handler.on_chat_model_start({}, [[HumanMessage("hi")]], run_id=run, metadata="not a mapping")
        handler.on_llm_end(LLMResult(generations=[[ChatGeneration(message=msg)]]), run_id=run)
    records = meter.ledger.records()
    assert len(records) == 1 and records[0].cost is None  # recorded, unpriced
    assert not [r for r in caplog.records if r.exc_info]  # nothing crashed on the way
