"""The currency between every tokenlean module: messages, requests, responses and usage.

They are plain frozen dataclasses so that every stage can hand them on without defensive
copies, and so that a compacted or re-laid-out request is a *new* object (the caller's history
stays untouched). The OpenAI chat-completions JSON shape is the lingua franca: adapters for
LangChain and LlamaIndex convert through it or directly, and ``from_openai(x).to_openai() == x``
holds for every well-formed body, unknown keys included (they ride along in ``extra``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tokenlean.errors import MessageFormatError, UsageFormatError

__all__ = [
    "ROLES",
    "ContentPart",
    "Message",
    "Request",
    "Response",
    "ToolCall",
    "Usage",
    "normalize_usage",
]

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
# Other frameworks' names for the assistant role (LlamaIndex MessageRole.MODEL / CHATBOT, Google, Cohere).
ROLE_ALIASES: dict[str, str] = {"model": "assistant", "chatbot": "assistant"}


def normalize_role(role: object) -> str:
    """A framework's role (a str or a str-valued enum) as an OpenAI role name, aliases resolved."""
    value = str(getattr(role, "value", role))
    return ROLE_ALIASES.get(value, value)


#: A multimodal content part, kept exactly as the provider sent it (``{"type": "text", ...}``,
#: ``{"type": "image_url", ...}``). tokenlean never rewrites parts it does not understand.
ContentPart = Mapping[str, Any]

_MESSAGE_KEYS = frozenset({"role", "content", "tool_calls", "tool_call_id", "name"})


def _require_mapping(obj: object, what: str) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise MessageFormatError(f"{what} must be a JSON object, got {type(obj).__name__}")
    return obj


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call requested by the assistant.

    ``arguments`` stays the raw JSON string the model produced: parsing and re-serialising it
    would change bytes (key order, spacing) and break prompt-cache prefixes.
    """

    id: str
    name: str
    arguments: str = "{}"
    type: str = "function"
    extra: Mapping[str, Any] = field(default_factory=dict)

    def parsed_arguments(self) -> Any:
        """Arguments as Python objects; raises ``MessageFormatError`` on broken JSON."""
        try:
            return json.loads(self.arguments) if self.arguments else {}
        except json.JSONDecodeError as exc:
            raise MessageFormatError(f"tool call {self.id!r} has invalid JSON arguments: {exc}") from exc

    def to_openai(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "function": {"name": self.name, "arguments": self.arguments},
        }
        out.update(self.extra)
        return out

    @classmethod
    def from_openai(cls, data: object) -> ToolCall:
        data = _require_mapping(data, "tool call")
        fn = _require_mapping(data.get("function"), "tool call 'function'")
        name = fn.get("name")
        if not isinstance(name, str):
            raise MessageFormatError("tool call function needs a string 'name'")
        args = fn.get("arguments", "{}")
        if not isinstance(args, str):
            # Some servers send an object; keep it as compact JSON rather than failing.
            try:
                args = json.dumps(args, separators=(",", ":"), ensure_ascii=False)
            except (TypeError, ValueError) as exc:  # not JSON at all (a set, a cycle, an object)
                raise MessageFormatError(f"tool call arguments are not JSON: {exc}") from exc
        call_id = data.get("id")
        if not isinstance(call_id, str):
            raise MessageFormatError("tool call needs a string 'id'")
        extra = {k: v for k, v in data.items() if k not in {"id", "type", "function"}}
        return cls(
            id=call_id,
            name=name,
            arguments=args,
            type=str(data.get("type", "function")),
            extra=extra,
        )


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message.

    ``content`` is ``str`` for plain text, a tuple of provider content parts for multimodal
    messages, or ``None`` (an assistant turn that only calls tools). ``extra`` keeps any key the
    provider sent that tokenlean does not model, so round trips lose nothing.
    """

    role: str
    content: str | tuple[ContentPart, ...] | None = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # ``type(...) is str`` first: a list or dict role would make the set lookup raise TypeError.
        if type(self.role) is not str or self.role not in ROLES:
            raise MessageFormatError(f"unknown message role {self.role!r}; expected one of {sorted(ROLES)}")
        if isinstance(self.content, list):
            object.__setattr__(self, "content", tuple(self.content))
        if isinstance(self.tool_calls, list):
            object.__setattr__(self, "tool_calls", tuple(self.tool_calls))
        if self.content is not None and not isinstance(self.content, (str, tuple)):
            raise MessageFormatError(
                f"message content must be a string, a list of parts or null, got {type(self.content).__name__}"
            )
        # Everything downstream (token counts, cache keys, to_openai) relies on these shapes; a
        # wrong one must fail here, where the caller can see which message it was.
        if isinstance(self.content, tuple) and not all(isinstance(p, Mapping) for p in self.content):
            raise MessageFormatError("content parts must be JSON objects")
        if not isinstance(self.tool_calls, tuple) or not all(
            isinstance(c, ToolCall) for c in self.tool_calls
        ):
            raise MessageFormatError("tool_calls must be a list of ToolCall")
        if self.tool_call_id is not None and not isinstance(self.tool_call_id, str):
            raise MessageFormatError("'tool_call_id' must be a string")
        if self.name is not None and not isinstance(self.name, str):
            raise MessageFormatError("'name' must be a string")
        if not isinstance(self.extra, Mapping):
            raise MessageFormatError("a message's 'extra' must be a mapping")
        if self.role == "tool" and not self.tool_call_id:
            raise MessageFormatError("a tool message needs the tool_call_id of the call it answers")

    # -- convenience -------------------------------------------------------------------------
    @property
    def text(self) -> str:
        """The text the model reads: the string content, or the text parts joined by newlines."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(
            str(p.get("text", "")) for p in self.content if isinstance(p, Mapping) and p.get("type") == "text"
        )

    @property
    def is_multimodal(self) -> bool:
        return isinstance(self.content, tuple)

    def with_text(self, text: str) -> Message:
        """A copy whose text is replaced; non-text parts of a multimodal message stay untouched.

        With several text parts, the new text goes into the first and the others are emptied,
        which keeps images and audio in place (compaction must never drop those silently).
        """
        if not isinstance(self.content, tuple):
            return replace(self, content=text)
        parts: list[ContentPart] = []
        placed = False
        for p in self.content:
            if isinstance(p, Mapping) and p.get("type") == "text":
                parts.append({**p, "text": "" if placed else text})
                placed = True
            else:
                parts.append(p)
        if not placed:
            parts.insert(0, {"type": "text", "text": text})
        return replace(self, content=tuple(parts))

    # -- OpenAI shape ------------------------------------------------------------------------
    def to_openai(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role}
        out["content"] = list(self.content) if isinstance(self.content, tuple) else self.content
        if self.tool_calls:
            out["tool_calls"] = [tc.to_openai() for tc in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            out["name"] = self.name
        out.update(self.extra)
        return out

    @classmethod
    def from_openai(cls, data: object) -> Message:
        data = _require_mapping(data, "message")
        role = data.get("role")
        if not isinstance(role, str):
            raise MessageFormatError("message needs a string 'role'")
        content = data.get("content")
        if isinstance(content, list):
            for part in content:
                if not isinstance(part, Mapping):
                    raise MessageFormatError("content parts must be JSON objects")
            content = tuple(content)
        elif content is not None and not isinstance(content, str):
            raise MessageFormatError(
                f"message content must be a string, list or null, got {type(content).__name__}"
            )
        raw_calls = data.get("tool_calls") or ()
        if not isinstance(raw_calls, (list, tuple)):
            raise MessageFormatError("'tool_calls' must be a list")
        tool_call_id = data.get("tool_call_id")
        name = data.get("name")
        if tool_call_id is not None and not isinstance(tool_call_id, str):
            raise MessageFormatError("'tool_call_id' must be a string")
        if name is not None and not isinstance(name, str):
            raise MessageFormatError("'name' must be a string")
        extra = {k: v for k, v in data.items() if k not in _MESSAGE_KEYS}
        if "tool_calls" in data and not raw_calls:
            extra["tool_calls"] = data["tool_calls"]  # keep an explicit empty list / null as sent
        return cls(
            role=role,
            content=content,
            tool_calls=tuple(ToolCall.from_openai(tc) for tc in raw_calls),
            tool_call_id=tool_call_id,
            name=name,
            extra=extra,
        )


def _messages(messages: Iterable[Message | Mapping[str, Any]]) -> tuple[Message, ...]:
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Iterable):
        raise MessageFormatError(f"messages must be a list of messages, got {type(messages).__name__}")
    out = []
    for m in messages:
        out.append(m if isinstance(m, Message) else Message.from_openai(m))
    return tuple(out)


_REQUEST_KEYS = frozenset({"messages", "model", "tools"})


@dataclass(frozen=True, slots=True)
class Request:
    """One chat call: the messages plus everything that changes what the model answers.

    ``params`` holds every other body key (temperature, max_tokens, tool_choice, ...) verbatim;
    ``metadata`` is tokenlean's own side channel (``task_id``, ``tenant``, tags) and is never sent.
    """

    messages: tuple[Message, ...]
    model: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    tools: tuple[Mapping[str, Any], ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.messages, tuple) or any(not isinstance(m, Message) for m in self.messages):
            object.__setattr__(self, "messages", _messages(self.messages))
        if isinstance(self.tools, list):
            object.__setattr__(self, "tools", tuple(self.tools))
        if self.model is not None and not isinstance(self.model, str):
            raise MessageFormatError(f"'model' must be a string, got {type(self.model).__name__}")
        if not isinstance(self.params, Mapping) or not isinstance(self.metadata, Mapping):
            raise MessageFormatError("a request's params and metadata must be mappings")
        if not isinstance(self.tools, tuple) or not all(isinstance(t, Mapping) for t in self.tools):
            raise MessageFormatError("'tools' must be a list of objects")

    @property
    def task_id(self) -> str | None:
        value = self.metadata.get("task_id")
        return None if value is None else str(value)

    @property
    def tenant(self) -> str | None:
        value = self.metadata.get("tenant")
        return None if value is None else str(value)

    @property
    def system(self) -> tuple[Message, ...]:
        return tuple(m for m in self.messages if m.role in ("system", "developer"))

    @property
    def last_user(self) -> Message | None:
        for m in reversed(self.messages):
            if m.role == "user":
                return m
        return None

    def with_messages(self, messages: Sequence[Message]) -> Request:
        return replace(self, messages=tuple(messages))

    def to_openai(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if self.model is not None:
            body["model"] = self.model
        body["messages"] = [m.to_openai() for m in self.messages]
        if self.tools:
            body["tools"] = [dict(t) for t in self.tools]
        body.update(self.params)
        return body

    @classmethod
    def from_openai(cls, body: object, *, metadata: Mapping[str, Any] | None = None) -> Request:
        body = _require_mapping(body, "request body")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise MessageFormatError(f"metadata must be a mapping, got {type(metadata).__name__}")
        raw = body.get("messages")
        if not isinstance(raw, (list, tuple)):
            raise MessageFormatError("request body needs a 'messages' list")
        model = body.get("model")
        if model is not None and not isinstance(model, str):
            raise MessageFormatError("'model' must be a string")
        tools = body.get("tools") or ()
        if not isinstance(tools, (list, tuple)) or not all(isinstance(t, Mapping) for t in tools):
            raise MessageFormatError("'tools' must be a list of objects")
        params = {k: v for k, v in body.items() if k not in _REQUEST_KEYS}
        if "tools" in body and not tools:
            params["tools"] = body["tools"]
        return cls(
            messages=_messages(raw),
            model=model,
            params=params,
            tools=tuple(tools),
            metadata=dict(metadata or {}),
        )


def _as_count(value: object, name: str) -> int:
    if type(value) is int and value >= 0:  # the common case, first: this runs on every metered call
        return value
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageFormatError(f"usage field {name!r} must be a number, got {value!r}")
    if value < 0 or (isinstance(value, float) and not value.is_integer()):
        raise UsageFormatError(f"usage field {name!r} must be a non-negative integer, got {value!r}")
    return int(value)


_USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one call, in one convention whatever the provider.

    ``input_tokens`` is *all* prompt tokens, cache reads and cache writes included (the OpenAI and
    LangChain convention; Anthropic's ``input_tokens`` excludes them and is converted).
    ``output_tokens`` includes ``reasoning_tokens``.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    def __post_init__(self) -> None:
        # Fast path first: this runs on every metered call, where any overhead is paid per call.
        # (spelled out: a generator under ``all()`` alone costs more than the five checks)
        i, o, c, w, r = (
            self.input_tokens,
            self.output_tokens,
            self.cached_input_tokens,
            self.cache_write_tokens,
            self.reasoning_tokens,
        )
        if not (
            type(i) is int
            and type(o) is int
            and type(c) is int
            and type(w) is int
            and type(r) is int
            and i >= 0
            and o >= 0
            and c >= 0
            and w >= 0
            and r >= 0
        ):
            for name, value in zip(_USAGE_FIELDS, (i, o, c, w, r), strict=True):
                object.__setattr__(self, name, _as_count(value, name))
        if self.cached_input_tokens + self.cache_write_tokens > self.input_tokens:
            raise UsageFormatError(
                "cached + cache-write tokens exceed input tokens: "
                f"{self.cached_input_tokens} + {self.cache_write_tokens} > {self.input_tokens}"
            )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def uncached_input_tokens(self) -> int:
        return self.input_tokens - self.cached_input_tokens - self.cache_write_tokens

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_input_tokens + other.cached_input_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
        )

    def to_openai(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.cached_input_tokens:
            out["prompt_tokens_details"] = {"cached_tokens": self.cached_input_tokens}
        if self.reasoning_tokens:
            out["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        return out

    @classmethod
    def from_openai(cls, data: object) -> Usage:
        return normalize_usage(data)


def _detail(data: Mapping[str, Any], key: str, sub: str) -> object:
    details = data.get(key)
    if details is None:
        return None
    if not isinstance(details, Mapping):
        raise UsageFormatError(f"usage field {key!r} must be an object")
    return details.get(sub)


def normalize_usage(data: object) -> Usage:
    """Read a usage block in any common provider shape into one ``Usage``.

    Accepted: ``Usage`` itself; OpenAI (``prompt_tokens`` / ``completion_tokens`` with
    ``prompt_tokens_details.cached_tokens``); Anthropic (``input_tokens`` excluding
    ``cache_read_input_tokens`` / ``cache_creation_input_tokens``); LangChain ``usage_metadata``
    (``input_tokens`` including ``input_token_details.cache_read``); Google
    (``promptTokenCount`` / ``candidatesTokenCount``). Objects with those attributes (pydantic
    models from SDKs) work too. Anything else raises ``UsageFormatError``: a silent zero would make
    a task look free.
    """
    if type(data) is dict and "input_tokens" in data and len(data) <= 3 and "total_tokens" in data:
        # LangChain's plain ``usage_metadata`` (no cache or reasoning details): the shape of most
        # metered calls, read without the general dispatch below.
        inp, out = data["input_tokens"], data.get("output_tokens")
        if type(inp) is int and type(out) is int and inp >= 0 and out >= 0:
            return Usage(inp, out)
    if isinstance(data, Usage):
        return data
    if type(data) is not dict and data is not None and not isinstance(data, Mapping):
        dump = getattr(data, "model_dump", None)
        if callable(dump):
            data = dump()
        elif hasattr(data, "__dict__"):
            data = {k: v for k, v in vars(data).items() if not k.startswith("_")}
    if type(data) is not dict and not isinstance(data, Mapping):
        raise UsageFormatError(f"usage must be a mapping, got {type(data).__name__}")

    if "prompt_tokens" in data or "completion_tokens" in data:  # OpenAI / vLLM / llama.cpp
        inp = _as_count(data.get("prompt_tokens"), "prompt_tokens")
        out = _as_count(data.get("completion_tokens"), "completion_tokens")
        cached = _as_count(_detail(data, "prompt_tokens_details", "cached_tokens"), "cached_tokens")
        reasoning = _as_count(
            _detail(data, "completion_tokens_details", "reasoning_tokens"), "reasoning_tokens"
        )
        return Usage(inp, out, min(cached, inp), 0, min(reasoning, out))
    if "promptTokenCount" in data or "candidatesTokenCount" in data:  # Google
        inp = _as_count(data.get("promptTokenCount"), "promptTokenCount")
        thoughts = _as_count(data.get("thoughtsTokenCount"), "thoughtsTokenCount")
        out = _as_count(data.get("candidatesTokenCount"), "candidatesTokenCount") + thoughts
        cached = _as_count(data.get("cachedContentTokenCount"), "cachedContentTokenCount")
        return Usage(inp, out, min(cached, inp), 0, thoughts)
    if "input_tokens" in data or "output_tokens" in data:
        inp = _as_count(data.get("input_tokens"), "input_tokens")
        out = _as_count(data.get("output_tokens"), "output_tokens")
        if "cache_read_input_tokens" in data or "cache_creation_input_tokens" in data:  # Anthropic
            read = _as_count(data.get("cache_read_input_tokens"), "cache_read_input_tokens")
            write = _as_count(data.get("cache_creation_input_tokens"), "cache_creation_input_tokens")
            return Usage(inp + read + write, out, read, write, 0)
        # LangChain usage_metadata: input already includes cache reads and writes.
        read = _as_count(_detail(data, "input_token_details", "cache_read"), "cache_read")
        write = _as_count(_detail(data, "input_token_details", "cache_creation"), "cache_creation")
        reasoning = _as_count(_detail(data, "output_token_details", "reasoning"), "reasoning")
        if read + write > inp:
            raise UsageFormatError(f"cache tokens ({read}+{write}) exceed input_tokens ({inp})")
        return Usage(inp, out, read, write, min(reasoning, out))
    raise UsageFormatError(f"unrecognised usage block with keys {sorted(map(str, data))}")


_RESPONSE_KEYS = frozenset({"id", "model", "choices", "usage"})
# Keys of ``Response.extra`` that carry pieces of the raw body needed for a lossless round trip.
_RESERVED_EXTRA = frozenset({"choice_extra", "usage_raw", "other_choices"})


@dataclass(frozen=True, slots=True)
class Response:
    """The answer to a ``Request``: first choice's message, usage, and where it came from."""

    message: Message
    model: str | None = None
    usage: Usage | None = None
    finish_reason: str | None = None
    id: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.message.text

    def to_openai(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if self.id is not None:
            body["id"] = self.id
        if self.model is not None:
            body["model"] = self.model
        choice: dict[str, Any] = {
            "index": 0,
            "message": self.message.to_openai(),
            "finish_reason": self.finish_reason,
        }
        choice.update(self.extra.get("choice_extra", {}))
        body["choices"] = [choice, *self.extra.get("other_choices", ())]
        if self.usage is not None:
            body["usage"] = dict(self.extra.get("usage_raw") or self.usage.to_openai())
        body.update({k: v for k, v in self.extra.items() if k not in _RESERVED_EXTRA})
        return body

    @classmethod
    def from_openai(cls, body: object) -> Response:
        body = _require_mapping(body, "response body")
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices:
            raise MessageFormatError("response needs a non-empty 'choices' list")
        choice = _require_mapping(choices[0], "choice")
        message = Message.from_openai(choice.get("message"))
        raw_usage = body.get("usage")
        usage = normalize_usage(raw_usage) if raw_usage is not None else None
        extra: dict[str, Any] = {k: v for k, v in body.items() if k not in _RESPONSE_KEYS}
        choice_extra = {k: v for k, v in choice.items() if k not in ("index", "message", "finish_reason")}
        if choice_extra:
            extra["choice_extra"] = choice_extra
        if raw_usage is not None:
            extra["usage_raw"] = raw_usage
        if len(choices) > 1:
            extra["other_choices"] = choices[1:]
        model = body.get("model")
        rid = body.get("id")
        return cls(
            message=message,
            model=model if isinstance(model, str) else None,
            usage=usage,
            finish_reason=choice.get("finish_reason"),
            id=rid if isinstance(rid, str) else None,
            extra=extra,
        )
