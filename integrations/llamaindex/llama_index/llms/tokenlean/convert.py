"""LlamaIndex messages and LLMs to tokenlean's core types: the one converter every adapter uses.

Lossless where it matters for a cache key or a compacted history: text blocks become text parts;
every other block (image, audio, video, document, thinking, citation, cache point) becomes a part
that names its type and fields, with binary data replaced by its SHA-256, so two messages that
differ only in an image never look alike; tool calls come from ``additional_kwargs["tool_calls"]``
(OpenAI shape or SDK objects) and from ``ToolCallBlock`` s; ``tool_call_id`` and any other
``additional_kwargs`` ride along. ``with_text`` writes a new text back onto a message and keeps
every non-text block, so compaction never drops an image silently.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, TextBlock, ToolCallBlock

from tokenlean.cache.identity import (
    NOT_OUTPUT_FIELDS,
    UNDESCRIBABLE,
    ModelIdentity,
    describe_fields,
    describe_value,
    find_temperature,
    qualified_name,
)
from tokenlean.errors import MessageFormatError
from tokenlean.types import ROLES, ContentPart, Message, ToolCall, normalize_role

__all__ = ["block_part", "llm_identity", "message_to_core", "messages_to_core", "with_text"]

#: ``additional_kwargs`` keys that the core message models itself.
_MODELLED = frozenset({"tool_calls", "tool_call_id", "name"})
#: LlamaIndex LLM fields that never change the answer.
_LLM_NOT_OUTPUT = frozenset({"callback_manager", "api_key", "max_retries", "timeout", "reuse_client"})


def _binary(value: Any) -> dict[str, str]:
    """Binary block data (bytes or a file object) as its SHA-256: key material, not the data."""
    if isinstance(value, io.IOBase):
        pos = value.tell() if value.seekable() else None
        value = value.read()
        if pos is not None:
            value.seek(pos)  # type: ignore[attr-defined]
    data = value if isinstance(value, (bytes, bytearray)) else str(value).encode("utf-8", "surrogatepass")
    return {"sha256": hashlib.sha256(data).hexdigest()}


def block_part(block: Any) -> ContentPart:
    """One content block as a core content part (text as text; anything else named and hashed)."""
    if isinstance(block, TextBlock):
        return {"type": "text", "text": block.text}
    part: dict[str, Any] = {"type": str(getattr(block, "block_type", type(block).__name__))}
    for name in type(block).model_fields:
        if name == "block_type":
            continue
        value = getattr(block, name, None)
        if value is None:
            continue
        if isinstance(value, (bytes, bytearray, io.IOBase)):
            part[name] = _binary(value)
            continue
        d = describe_value(value)
        part[name] = str(value) if d is UNDESCRIBABLE or isinstance(value, PurePath) else d
    return part


def _tool_call(raw: Any, i: int) -> ToolCall:
    if isinstance(raw, ToolCallBlock):
        args = raw.tool_kwargs
        text = args if isinstance(args, str) else json.dumps(args, sort_keys=True, default=str)
        return ToolCall(id=raw.tool_call_id or f"call-{i}", name=raw.tool_name, arguments=text)
    if not isinstance(raw, Mapping):
        dump = getattr(raw, "model_dump", None)
        raw = dump() if callable(dump) else raw
    if not isinstance(raw, Mapping):
        raise MessageFormatError(f"unreadable tool call {type(raw).__name__}")
    if "function" not in raw and "name" in raw:  # a flat {"id", "name", "arguments"} shape
        raw = {
            "id": raw.get("id"),
            "function": {"name": raw["name"], "arguments": raw.get("arguments", "{}")},
        }
    raw = {**raw, "id": str(raw.get("id") or f"call-{i}")}
    return ToolCall.from_openai(raw)


def message_to_core(m: ChatMessage, index: int = 0) -> Message:
    """One LlamaIndex ``ChatMessage`` as a core ``Message``, nothing that changes an answer dropped."""
    role = normalize_role(m.role)
    if role not in ROLES:
        role = "user"
    kwargs = dict(m.additional_kwargs or {})
    parts: list[ContentPart] = []
    calls: list[ToolCall] = []
    for block in m.blocks:
        if isinstance(block, ToolCallBlock):
            calls.append(_tool_call(block, len(calls)))
        else:
            parts.append(block_part(block))
    seen = {c.id for c in calls}
    raw_calls = kwargs.get("tool_calls") or ()
    if not isinstance(raw_calls, (list, tuple)):
        raise MessageFormatError(
            f"additional_kwargs['tool_calls'] must be a list, got {type(raw_calls).__name__}"
        )
    for raw in raw_calls:
        call = _tool_call(raw, len(calls))
        if call.id not in seen:
            calls.append(call)
    content: str | tuple[ContentPart, ...]
    if all(p.get("type") == "text" for p in parts):
        content = "".join(str(p.get("text", "")) for p in parts)
    else:
        content = tuple(parts)
    tool_call_id = kwargs.get("tool_call_id")
    if role in ("tool", "function") and not tool_call_id:
        tool_call_id = f"call-{index}"
    name = kwargs.get("name")
    extra, unknown = describe_fields({k: v for k, v in kwargs.items() if k not in _MODELLED}, ignore=())
    if unknown:
        extra["unkeyable"] = unknown  # named, so two messages differing there never share a key
    return Message(
        role=role,
        content=content,
        tool_calls=tuple(calls),
        tool_call_id=str(tool_call_id) if tool_call_id is not None else None,
        name=name if isinstance(name, str) else None,
        extra={"additional_kwargs": extra} if extra else {},
    )


def messages_to_core(messages: Sequence[ChatMessage]) -> list[Message]:
    return [message_to_core(m, i) for i, m in enumerate(messages)]


def with_text(m: ChatMessage, text: str) -> ChatMessage:
    """A copy of ``m`` whose text is ``text``; images, audio, tool calls and kwargs stay as they were."""
    blocks: list[Any] = []
    placed = False
    for block in m.blocks:
        if isinstance(block, TextBlock):
            if not placed:
                blocks.append(TextBlock(text=text))
                placed = True
        else:
            blocks.append(block)
    if not placed:
        blocks.insert(0, TextBlock(text=text))
    return ChatMessage(role=m.role, blocks=blocks, additional_kwargs=dict(m.additional_kwargs or {}))


def llm_identity(llm: Any) -> ModelIdentity:
    """Name, temperature and key material of a LlamaIndex LLM: class and every output-relevant field."""
    values = {n: getattr(llm, n, None) for n in type(llm).model_fields}
    settings, unknown = describe_fields(values, ignore=_LLM_NOT_OUTPUT | NOT_OUTPUT_FIELDS)
    try:
        name = str(llm.metadata.model_name)
    except Exception:
        name = str(values.get("model") or type(llm).__name__)
    return ModelIdentity(
        model=name,
        config={"class": qualified_name(llm), "settings": settings},
        temperature=find_temperature(values),
        unknown=tuple(unknown),
    )
