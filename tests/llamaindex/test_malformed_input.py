"""The LlamaIndex converter and memory block on ``additional_kwargs`` of the wrong shape.

``additional_kwargs["tool_calls"]`` that is not a list raised ``TypeError`` from the converter
(and so from every adapter using it); found by ``benchmarks/reliability_fuzz.py``.
"""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole

from llama_index.llms.tokenlean.convert import message_to_core
from llama_index.memory.tokenlean import TokenleanCompactedHistoryBlock
from tokenlean.compaction import Compactor
from tokenlean.errors import MessageFormatError


def _odd() -> ChatMessage:
    return ChatMessage(role=MessageRole.ASSISTANT, content="done", additional_kwargs={"tool_calls": object()})


def test_tool_calls_that_are_not_a_list_are_a_message_format_error() -> None:
    with pytest.raises(MessageFormatError):
        message_to_core(_odd())


def test_the_memory_block_passes_a_malformed_history_through() -> None:
    block = TokenleanCompactedHistoryBlock(compactor=Compactor(store="memory", mode="lexical"))
    history = [ChatMessage(role=MessageRole.USER, content="hello"), _odd()]

    async def run() -> list[ChatMessage]:
        await block.aput(history)
        return await block.aget()

    assert asyncio.run(run()) == history
