"""LangChain messages to tokenlean's core types: the one converter every adapter uses.

It goes through LangChain's own OpenAI conversion so tool calls, ids, names and content parts
survive exactly. Only ``langchain-core`` is needed, so the chat model stays usable without the
``agents`` extra.
"""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.messages import BaseMessage
from langchain_core.messages.utils import convert_to_openai_messages

from tokenlean.errors import MessageFormatError
from tokenlean.types import Message

__all__ = ["messages_to_core"]


def messages_to_core(messages: Sequence[BaseMessage]) -> list[Message]:
    """Core messages for ``messages``; ``MessageFormatError`` for anything that cannot convert.

    LangChain's message models accept content blocks its own OpenAI converter then fails on (a
    block without ``"type"``, a list where a string belongs): that failure is reported as the
    malformed message it is, so every adapter can pass the call through instead of crashing.
    """
    try:
        converted = convert_to_openai_messages(list(messages))
    except (TypeError, KeyError, ValueError, AttributeError, NotImplementedError) as exc:
        raise MessageFormatError(
            f"LangChain could not convert the messages: {type(exc).__name__}: {exc}"
        ) from exc
    out: list[Message] = []
    for d in converted:
        if d.get("role") == "tool" and not d.get("tool_call_id"):
            # LangChain allows a ToolMessage without an id; the OpenAI shape (and pairing checks) need one.
            d = {**d, "tool_call_id": "unknown"}
        out.append(Message.from_openai(d))
    return out
