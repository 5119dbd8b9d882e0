"""The canonical serialisation a prompt cache sees, and the sections of a request.

Providers cache the *rendered* prompt, whose exact bytes we cannot know for every chat template.
What we can know is the order of its parts and their bytes as sent: tools first (OpenAI and
Anthropic both render tool definitions ahead of the messages), then every message in order with
its role, name, content and tool calls. Two requests share a cached prefix exactly as far as
this serialisation agrees, so the analyser compares these segments, token by token.

Tool definitions are serialised as sent (key order included): an unstable key order is one of
the breakers we must see. ``canonical_tools`` is the deterministic form ``reorder`` sends instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from tokenlean.errors import MessageFormatError
from tokenlean.types import Message, Request

__all__ = [
    "LINE_LABEL",
    "Sections",
    "Segment",
    "as_request",
    "canonical_json",
    "canonical_tools",
    "embedded_json",
    "message_text",
    "request_segments",
    "sections",
    "tool_name",
]


#: The label of a templated line ("Customer name: ..." -> "Customer name:").
LINE_LABEL = re.compile(r"^\s*([^:=\n]{1,60}?[:=])\s*")


@dataclass(frozen=True, slots=True)
class Segment:
    """One contiguous piece of the serialised prompt: the tool block or one message."""

    kind: str  # "tools" | "message"
    message_index: int | None
    text: str


def as_request(obj: Request | Mapping[str, Any]) -> Request:
    """A ``Request`` from a ``Request`` or an OpenAI-format body (``{"messages": [...]}``)."""
    if isinstance(obj, Request):
        return obj
    if isinstance(obj, Mapping):
        body = obj.get("body") if "messages" not in obj and isinstance(obj.get("body"), Mapping) else obj
        return Request.from_openai(body)
    raise MessageFormatError(f"expected a Request or an OpenAI request body, got {type(obj).__name__}")


def message_text(m: Message) -> str:
    """Everything of a message the model reads, in send order: content parts, then tool calls."""
    if m.content is None:
        body = ""
    elif isinstance(m.content, str):
        body = m.content
    else:
        parts = []
        for p in m.content:
            if p.get("type") == "text":
                parts.append(str(p.get("text", "")))
            else:
                parts.append(_json(p, "a content part"))
        body = "\n".join(parts)
    calls = "".join(f"\n<tool_call {c.id} {c.name}>{c.arguments}" for c in m.tool_calls)
    return body + calls


def _header(m: Message) -> str:
    head = f"<|{m.role}"
    if m.name:
        head += f" name={m.name}"
    if m.tool_call_id:
        head += f" tool_call_id={m.tool_call_id}"
    return head + "|>\n"


def tools_text(tools: Sequence[Mapping[str, Any]]) -> str:
    """The tool block as sent: list order and key order preserved."""
    return _json([dict(t) for t in tools], "the tools")


def _json(obj: Any, what: str) -> str:
    """Compact JSON of a piece of the request; ``MessageFormatError`` when it is not JSON at all.

    Such a request could never be sent to a provider (a set, bytes or an object in a content part
    or a tool schema), so it is the caller's malformed input, not a layout failure.
    """
    try:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise MessageFormatError(f"{what} of the request is not JSON: {exc}") from exc


def request_segments(request: Request) -> list[Segment]:
    """The request as the ordered segments a prompt cache matches against."""
    out: list[Segment] = []
    if request.tools:
        out.append(Segment("tools", None, "<|tools|>\n" + tools_text(request.tools)))
    for i, m in enumerate(request.messages):
        out.append(Segment("message", i, _header(m) + message_text(m)))
    return out


def header_length(m: Message) -> int:
    """Characters of the segment header before the message text (to map offsets back)."""
    return len(_header(m))


# -- deterministic JSON ----------------------------------------------------------------------------
def _sorted(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _sorted(obj[k]) for k in sorted(obj, key=str)}
    if isinstance(obj, (list, tuple)):
        return [_sorted(v) for v in obj]
    return obj


def canonical_json(obj: Any, *, compact: bool = False) -> str:
    """JSON with keys sorted at every depth; lists keep their order (it can carry meaning)."""
    try:
        if compact:
            return json.dumps(_sorted(obj), ensure_ascii=False, separators=(",", ":"))
        return json.dumps(_sorted(obj), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise MessageFormatError(f"not JSON: {exc}") from exc


def tool_name(tool: Mapping[str, Any]) -> str:
    """The function name of an OpenAI (``{"function": {"name"}}``) or Anthropic (``{"name"}``) tool."""
    fn = tool.get("function")
    if isinstance(fn, Mapping) and isinstance(fn.get("name"), str):
        return str(fn["name"])
    name = tool.get("name")
    return name if isinstance(name, str) else ""


def canonical_tools(
    tools: Iterable[Mapping[str, Any]], *, sort_tools: bool = True
) -> tuple[dict[str, Any], ...]:
    """Tool definitions with sorted keys at every depth, in name order (stable for a given set).

    The model reads the same definitions: JSON object key order carries no meaning, and the
    order of a tool *list* does not change which tools exist. Lists inside a schema
    (``required``, ``enum``) keep their order.
    """
    out = [_sorted(dict(t)) for t in tools]
    if sort_tools:
        out.sort(key=lambda t: (tool_name(t), canonical_json(t, compact=True)))
    return tuple(out)


def embedded_json(text: str) -> list[tuple[int, int, Any]]:
    """JSON objects and arrays inside ``text``: ``(start, end, value)``, outermost only.

    Do not mutate the values: results are cached per text (prompts repeat across a stream).
    """
    if "{" not in text and "[" not in text:
        return []
    return list(_embedded_json_cached(text)) if len(text) < 50000 else _embedded_json(text)


@lru_cache(maxsize=4096)
def _embedded_json_cached(text: str) -> tuple[tuple[int, int, Any], ...]:
    return tuple(_embedded_json(text))


def _embedded_json(text: str) -> list[tuple[int, int, Any]]:
    decoder = json.JSONDecoder()
    found: list[tuple[int, int, Any]] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch in "{[":
            try:
                value, end = decoder.raw_decode(text, i)
            except json.JSONDecodeError:
                i += 1
                continue
            if isinstance(value, (dict, list)) and value:
                found.append((i, end, value))
                i = end
                continue
        i += 1
    return found


# -- sections --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Sections:
    """Where each part of a request sits, as message index ranges ``[start, end)``.

    ``system``: the leading system/developer messages. ``few_shot``: example groups right after
    them (marked by a ``name`` starting with ``example`` or learned from a stream).
    ``history``: earlier turns. ``new_turn``: the last user message and everything after it
    (in an agent loop: the assistant's tool calls and their results).
    """

    system: tuple[int, int]
    few_shot: tuple[int, int]
    history: tuple[int, int]
    new_turn: tuple[int, int]

    def section_of(self, message_index: int) -> str:
        for name in ("system", "few_shot", "history", "new_turn"):
            a, b = getattr(self, name)
            if a <= message_index < b:
                return name
        return "history"


def _is_example(m: Message) -> bool:
    return bool(m.name) and str(m.name).lower().startswith("example")


def sections(request: Request, few_shot_keys: frozenset[str] = frozenset()) -> Sections:
    """Split ``request`` into system / few-shot / history / new turn.

    ``few_shot_keys`` are ``message_key`` values of messages known (from a stream) to be few-shot
    examples; messages whose ``name`` starts with ``example`` (OpenAI's convention) count too.
    """
    msgs = request.messages
    n = len(msgs)
    s_end = 0
    while s_end < n and msgs[s_end].role in ("system", "developer"):
        s_end += 1
    last_user = None
    for i in range(n - 1, s_end - 1, -1):
        if msgs[i].role == "user":
            last_user = i
            break
    turn_start = last_user if last_user is not None else n
    f_end = s_end
    while f_end < turn_start and (_is_example(msgs[f_end]) or message_key(msgs[f_end]) in few_shot_keys):
        f_end += 1
    # A few-shot block ends on a complete example: never split a user/assistant pair.
    while f_end > s_end and msgs[f_end - 1].role == "user":
        f_end -= 1
    return Sections((0, s_end), (s_end, f_end), (f_end, turn_start), (turn_start, n))


def message_key(m: Message) -> str:
    """A content identity for a message (role + what the model reads)."""
    return f"{m.role}\x00{m.name or ''}\x00{message_text(m)}"
