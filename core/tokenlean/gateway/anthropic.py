"""``POST /v1/messages``: Anthropic's Messages API in front of the same gateway.

Why: clients written for Anthropic (the ``anthropic`` SDKs, LangChain's ``ChatAnthropic``, agents
built on them) cannot be pointed at an OpenAI endpoint, yet deserve the same metering, keys, cache
and levers. Which of two paths a request takes depends on the upstream its route targets first:

* **An OpenAI-speaking upstream** (llama.cpp, vLLM, OpenAI; the default): the request is
  translated into an OpenAI chat body and handed to ``Gateway.serve_chat``, so every lever acts on
  it exactly as on ``/v1/chat/completions``; the answer (JSON or SSE) is translated back. The
  translation is pure functions on dicts (``to_openai``, ``message_from_openai``,
  ``openai_from_message``) and is lossy only where OpenAI's API has no equivalent
  (``cache_control`` breakpoints, thinking blocks, server tools): docs/gateway.md has the table.
* **An Anthropic upstream** (``api = "anthropic"``): translating would drop what only Anthropic
  understands, so the body goes upstream byte for byte as the client sent it and the answer comes
  back as Anthropic sent it. The gateway still enforces keys and budgets, meters the call from
  Anthropic's usage, and answers a repeated deterministic request from the cache. With
  ``layout = true``, a request with no ``cache_control`` of its own gets the breakpoints the
  layout planner places (``anthropic_cache``); compaction and rule routing do not act there.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import anyio
import httpx
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response, StreamingResponse

from tokenlean.errors import GatewayError, InputError
from tokenlean.gateway.anthropic_cache import with_breakpoints
from tokenlean.gateway.keys import call_tags, tenant_of
from tokenlean.gateway.pipeline import bypass_requested
from tokenlean.gateway.upstream import Replica
from tokenlean.types import Request

if TYPE_CHECKING:
    from tokenlean.gateway.app import Gateway
    from tokenlean.gateway.config import KeyConfig, RouteConfig

__all__ = ["anthropic_error", "endpoint", "message_from_openai", "openai_from_message", "stream_from_openai"]
__all__ += ["to_openai"]

#: Request fields ``to_openai`` translates; any other field is dropped for an OpenAI upstream.
TRANSLATED = frozenset(
    {"model", "messages", "system", "tools", "tool_choice", "max_tokens", "temperature", "top_p"}
    | {"top_k", "stop_sequences", "stream", "metadata"}
)
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error"}
_ERROR_TYPES |= {
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use"}
_STOP["content_filter"] = "refusal"
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}
_FINISH["refusal"] = "content_filter"


def _id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def _loads(raw: bytes | str) -> Any:
    """The JSON value of ``raw``, or None when it is not JSON."""
    try:
        return json.loads(raw)
    except ValueError:
        return None


# -- errors ------------------------------------------------------------------------------------------
def anthropic_error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """Anthropic's error shape, ``{"type": "error", "error": {"type", "message"}}``."""
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    data = {"type": "error", "error": {"type": kind, "message": message}}
    return JSONResponse(data, status_code=status, headers=dict(headers or {}))


def _message_of(raw: bytes) -> str:
    """The message of an OpenAI-shaped (or any) error body."""
    data = _loads(raw)
    if data is None:
        return raw.decode("utf-8", "replace")[:500] or "upstream error"
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict) and err.get("message"):
        return str(err["message"])
    return err if isinstance(err, str) else json.dumps(data)[:500]


# -- Anthropic request -> OpenAI chat body -----------------------------------------------------------
def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not all(isinstance(b, dict) for b in content):
        raise InputError(f"{where} must be a string or a list of content blocks")
    return content


def _image(block: Mapping[str, Any]) -> dict[str, Any]:
    src = block.get("source") or {}
    if src.get("type") == "base64":
        url = f"data:{src.get('media_type')};base64,{src.get('data')}"
    elif src.get("type") == "url":
        url = str(src.get("url"))
    else:
        raise InputError(f"image source {src.get('type')!r} cannot be sent to an OpenAI upstream")
    return {"type": "image_url", "image_url": {"url": url}}


def _content(blocks: list[dict[str, Any]], where: str, images: bool = True) -> str | list[dict[str, Any]]:
    """Text and image blocks as OpenAI content: one text block is a string, else a parts list."""
    parts: list[dict[str, Any]] = []
    for b in blocks:
        if b.get("type") == "text":
            parts.append({"type": "text", "text": str(b.get("text", ""))})
        elif b.get("type") == "image" and images:
            parts.append(_image(b))
        else:
            raise InputError(f"{where}: a {b.get('type')!r} block cannot be sent to an OpenAI upstream")
    if len(parts) == 1 and parts[0]["type"] == "text":
        return str(parts[0]["text"])
    return parts


def _call(block: Mapping[str, Any]) -> dict[str, Any]:
    """A ``tool_use`` block as an OpenAI tool call (its input as a JSON string)."""
    arguments = json.dumps(block.get("input") or {}, ensure_ascii=False)
    return {
        "id": block.get("id"),
        "type": "function",
        "function": {"name": block.get("name"), "arguments": arguments},
    }


def _assistant(blocks: list[dict[str, Any]], where: str) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for b in blocks:
        kind = b.get("type")
        if kind == "text":
            texts.append(str(b.get("text", "")))
        elif kind == "tool_use":
            calls.append(_call(b))
        elif kind not in ("thinking", "redacted_thinking"):  # reasoning is the provider's own
            raise InputError(f"{where}: a {kind!r} block cannot be sent to an OpenAI upstream")
    out: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}  # a string: servers refuse null
    if calls:
        out["tool_calls"] = calls
    return out


def _user(blocks: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """Tool results first (OpenAI wants them right after the calls), then the rest as one turn."""
    out: list[dict[str, Any]] = []
    rest: list[dict[str, Any]] = []
    for b in blocks:
        if b.get("type") != "tool_result":
            rest.append(b)
            continue
        result = b.get("content")
        text = result if isinstance(result, str) else _content(_blocks(result or [], where), where, False)
        if isinstance(text, list):
            text = "".join(p["text"] for p in text)
        if b.get("is_error"):
            text = f"Error: {text}"
        out.append({"role": "tool", "tool_call_id": b.get("tool_use_id"), "content": text})
    if rest or not out:
        out.append({"role": "user", "content": _content(rest, where)})
    return out


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise InputError("'tools' must be a list")
    out = []
    for t in tools:
        if not isinstance(t, dict) or "input_schema" not in t:
            name = t.get("name") or t.get("type") if isinstance(t, dict) else t
            raise InputError(f"tool {name!r} (a server tool) cannot be sent to an OpenAI upstream")
        fn: dict[str, Any] = {"name": t.get("name")}
        if t.get("description"):
            fn["description"] = t["description"]
        fn["parameters"] = t["input_schema"]
        out.append({"type": "function", "function": fn})
    return out


def to_openai(body: Mapping[str, Any]) -> dict[str, Any]:
    """An Anthropic Messages request as an OpenAI chat body (``InputError`` where none exists).

    ``cache_control`` marks, thinking blocks and fields outside ``TRANSLATED`` are dropped: an
    OpenAI upstream has no such thing. ``metadata.user_id`` becomes ``user``.
    """
    raw = body.get("messages")
    if not isinstance(raw, list):
        raise InputError("a Messages request needs a 'messages' list")
    messages: list[dict[str, Any]] = []
    if body.get("system"):
        messages.append({"role": "system", "content": _content(_blocks(body["system"], "system"), "system")})
    for i, m in enumerate(raw):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise InputError(f"messages[{i}]: role must be 'user' or 'assistant'")
        where = f"messages[{i}]"
        if isinstance(m.get("content"), str):
            messages.append({"role": m["role"], "content": m["content"]})
        elif m["role"] == "assistant":
            messages.append(_assistant(_blocks(m.get("content"), where), where))
        else:
            messages.extend(_user(_blocks(m.get("content"), where), where))
    out: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "tool":
            out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
        elif kind in ("auto", "any", "none"):
            out["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
        else:
            raise InputError(f"tool_choice type {kind!r} is not one of auto, any, tool, none")
        if choice.get("disable_parallel_tool_use") and body.get("tools"):
            out["parallel_tool_calls"] = False
    for name in ("max_tokens", "temperature", "top_p", "top_k", "stop_sequences"):
        if body.get(name) not in (None, []):
            out["stop" if name == "stop_sequences" else name] = body[name]
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}  # message_delta reports the usage
    user = _user_id(body)
    if user:
        out["user"] = user
    return out


def _user_id(body: Mapping[str, Any]) -> str | None:
    meta = body.get("metadata")
    user = meta.get("user_id") if isinstance(meta, dict) else None
    return user if isinstance(user, str) and user else None


# -- OpenAI answers -> Anthropic ---------------------------------------------------------------------
def anthropic_usage(usage: Any) -> dict[str, int]:
    """OpenAI usage as Anthropic's: ``input_tokens`` excludes the cache-read prefix."""
    usage = usage if isinstance(usage, dict) else {}
    prompt = int(usage.get("prompt_tokens") or 0)
    details = usage.get("prompt_tokens_details")
    cached = int((details.get("cached_tokens") if isinstance(details, dict) else 0) or 0)
    out = {"input_tokens": max(prompt - cached, 0), "output_tokens": int(usage.get("completion_tokens") or 0)}
    if cached:
        out["cache_read_input_tokens"] = cached
    return out


def _input(arguments: Any) -> dict[str, Any]:
    try:
        value = json.loads(arguments) if arguments else {}
    except (TypeError, ValueError):  # a call cut by max_tokens: stop_reason says so
        value = {}
    return value if isinstance(value, dict) else {}


def message_from_openai(data: Mapping[str, Any], model: str | None = None) -> dict[str, Any]:
    """An OpenAI chat completion as an Anthropic message (text and ``tool_use`` blocks)."""
    choice = (data.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    text = msg.get("content")
    if isinstance(text, list):
        text = "".join(str(p.get("text", "")) for p in text if isinstance(p, dict))
    if text:
        content.append({"type": "text", "text": text})
    for tc in msg.get("tool_calls") or ():
        fn = tc.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": tc.get("id") or _id("toolu_"),
                "name": fn.get("name", ""),
                "input": _input(fn.get("arguments")),
            }
        )
    stop = _STOP.get(choice.get("finish_reason") or "stop", "end_turn")
    if stop == "end_turn" and any(b["type"] == "tool_use" for b in content):
        stop = "tool_use"  # some servers say "stop" after a forced call
    return {
        "id": _id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model or data.get("model") or "",
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": anthropic_usage(data.get("usage")),
    }


def openai_from_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """An Anthropic message as an OpenAI chat completion (what the cache stores and replays).

    A ``stop_reason`` without an OpenAI equivalent (``pause_turn``) is kept as it is, which the cache
    judges not replayable.
    """
    blocks = [b for b in message.get("content") or () if isinstance(b, dict)]
    text = "".join(str(b.get("text", "")) for b in blocks if b.get("type") == "text")
    calls = [_call(b) for b in blocks if b.get("type") == "tool_use"]
    msg: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
    if calls:
        msg["tool_calls"] = calls
    u = message.get("usage") or {}
    read = int(u.get("cache_read_input_tokens") or 0)
    prompt = int(u.get("input_tokens") or 0) + read + int(u.get("cache_creation_input_tokens") or 0)
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": int(u.get("output_tokens") or 0)}
    usage["total_tokens"] = prompt + usage["completion_tokens"]
    if read:
        usage["prompt_tokens_details"] = {"cached_tokens": read}
    stop = message.get("stop_reason")
    return {
        "id": message.get("id"),
        "object": "chat.completion",
        "model": message.get("model"),
        "choices": [{"index": 0, "message": msg, "finish_reason": _FINISH.get(str(stop), stop)}],
        "usage": usage,
    }


def _sse(kind: str, **fields: Any) -> bytes:
    """One Anthropic streaming event: ``event: <kind>`` (which the SDKs require) and its data."""
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields}, ensure_ascii=False)}\n\n".encode()


def _error_event(message: str, kind: str = "api_error") -> bytes:
    return _sse("error", error={"type": kind, "message": message})


@dataclass
class _Blocks:
    """OpenAI stream deltas as Anthropic content blocks: which one is open, at what index."""

    model: str
    index: int = -1
    open: str | None = None
    stop: str | None = None
    usage: dict[str, Any] | None = None
    text: list[str] = field(default_factory=list)  # what was generated (text, tool arguments)
    ended: bool = False

    def start(self) -> bytes:
        usage = {"input_tokens": 0, "output_tokens": 0}  # OpenAI reports usage at the end only
        message = {"id": _id("msg_"), "type": "message", "role": "assistant", "model": self.model}
        return _sse("message_start", message={**message, "content": [], "stop_reason": None, "usage": usage})

    def _close(self) -> list[bytes]:
        if self.open is None:
            return []
        self.open = None
        return [_sse("content_block_stop", index=self.index)]

    def _begin(self, key: str, block: dict[str, Any]) -> list[bytes]:
        if self.open == key:
            return []
        out = self._close()
        self.index, self.open = self.index + 1, key
        return [*out, _sse("content_block_start", index=self.index, content_block=block)]

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return _sse("content_block_delta", index=self.index, delta=delta)

    def feed(self, chunk: Mapping[str, Any]) -> list[bytes]:
        if "error" in chunk:
            self.ended = True
            err = chunk["error"]
            return [_error_event(str(err.get("message") if isinstance(err, dict) else err))]
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        out: list[bytes] = []
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("content"):
                self.text.append(delta["content"])
                out += self._begin("text", {"type": "text", "text": ""})
                out.append(self._delta({"type": "text_delta", "text": delta["content"]}))
            for tc in delta.get("tool_calls") or ():
                fn = tc.get("function") or {}
                key = f"tool:{tc.get('index', 0)}"
                block = {"type": "tool_use", "id": tc.get("id") or _id("toolu_"), "name": fn.get("name")}
                out += self._begin(key, {**block, "input": {}})
                if fn.get("arguments"):
                    self.text.append(fn["arguments"])
                    out.append(self._delta({"type": "input_json_delta", "partial_json": fn["arguments"]}))
            if choice.get("finish_reason"):
                self.stop = _STOP.get(choice["finish_reason"], "end_turn")
        return out

    def finish(self, usage: Any) -> list[bytes]:
        self.ended = True
        stop = self.stop or "end_turn"
        if stop == "end_turn" and self.open is not None and self.open.startswith("tool:"):
            stop = "tool_use"
        delta = {"stop_reason": stop, "stop_sequence": None}
        end = _sse("message_delta", delta=delta, usage=anthropic_usage(usage))
        return [*self._close(), end, _sse("message_stop")]


async def stream_from_openai(
    chunks: AsyncIterable[bytes],
    model: str,
    estimate: Callable[[str], Awaitable[Any]] | None = None,
) -> AsyncIterator[bytes]:
    """OpenAI SSE bytes (``data: {...}`` ... ``data: [DONE]``) as Anthropic's streaming events.

    ``estimate(text)`` gives the usage when the stream carried none (llama.cpp sends none).
    """
    blocks = _Blocks(model)
    buf = b""
    try:
        yield blocks.start()
        async for chunk in chunks:
            *frames, buf = (buf + chunk).split(b"\n\n")
            for frame in frames:
                data = b"".join(line[5:].strip() for line in frame.splitlines() if line.startswith(b"data:"))
                if not data or blocks.ended:
                    continue
                if data == b"[DONE]":
                    usage = blocks.usage
                    if not usage and estimate is not None:
                        usage = await estimate("".join(blocks.text))
                    for out in blocks.finish(usage):
                        yield out
                    continue
                parsed = _loads(data)
                if isinstance(parsed, dict):
                    for out in blocks.feed(parsed):
                        yield out
        if not blocks.ended:
            yield _error_event("the upstream stream ended before the answer was complete")
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:  # the gateway's relay meters and stores as it closes: shielded
            with anyio.CancelScope(shield=True):
                await close()


# -- the endpoint ------------------------------------------------------------------------------------
def endpoint(gateway: Gateway) -> Callable[[HttpRequest], Awaitable[Response]]:
    """The ``POST /v1/messages`` handler of ``gateway``."""

    async def messages(http: HttpRequest) -> Response:
        body = await gateway.read_json(http)
        if isinstance(body, Response):
            return anthropic_error(body.status_code, _message_of(bytes(body.body)))
        try:
            key, route = await gateway.admit(http.headers, body.get("model"))
        except GatewayError as exc:
            return anthropic_error(exc.status, str(exc))
        if gateway.config.upstreams[route.targets[0]].api == "anthropic":
            return await _Passthrough(gateway, http, body, key, route).run()
        return await _translated(gateway, http, body, key, route)

    return messages


async def _translated(
    gateway: Gateway, http: HttpRequest, body: dict[str, Any], key: KeyConfig | None, route: RouteConfig
) -> Response:
    """The OpenAI path: translate, run the whole pipeline, translate the answer back."""
    try:
        chat = to_openai(body)
    except InputError as exc:
        return anthropic_error(400, str(exc))
    headers = dict(http.headers)
    user = _user_id(body)
    if user and not headers.get("x-tokenlean-task"):
        headers["x-tokenlean-task"] = user
    if not headers.get("authorization") and headers.get("x-api-key"):  # passed on by an open gateway
        headers["authorization"] = f"Bearer {headers['x-api-key']}"
    answer = await gateway.serve_chat(chat, headers, key, route)
    keep = {k: v for k, v in answer.headers.items() if k.startswith("x-tokenlean-") or k == "retry-after"}
    if isinstance(answer, StreamingResponse):

        async def estimate(text: str) -> Any:
            return await run_in_threadpool(gateway.levers.estimate_usage, chat, text)

        upstream = cast(AsyncIterable[bytes], answer.body_iterator)
        events = stream_from_openai(upstream, str(body["model"]), estimate)
        return StreamingResponse(
            events, media_type="text/event-stream", headers={**keep, "cache-control": "no-cache"}
        )
    raw = bytes(answer.body)
    data = _loads(raw)
    if answer.status_code >= 400 or not isinstance(data, dict):
        return anthropic_error(
            answer.status_code if answer.status_code >= 400 else 502, _message_of(raw), keep
        )
    return JSONResponse(message_from_openai(data, str(body["model"])), headers=keep)


@dataclass
class _Reader:
    """What a relayed Anthropic stream carried, read on the way (usage, text, how it ended)."""

    buf: bytes = b""
    model: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    text: list[str] = field(default_factory=list)
    stop: str | None = None
    only_text: bool = True
    complete: bool = False
    error: str | None = None
    first_token_at: float | None = None

    def feed(self, chunk: bytes) -> None:
        *lines, self.buf = (self.buf + chunk).split(b"\n")
        for line in lines:
            ev: Any = _loads(line[5:]) if line.startswith(b"data:") else None
            kind = ev.get("type") if isinstance(ev, dict) else None
            if kind == "message_start":
                msg = ev.get("message") or {}
                self.model = msg.get("model")
                self.usage.update({k: v for k, v in (msg.get("usage") or {}).items() if v is not None})
            elif kind == "content_block_start" and (ev.get("content_block") or {}).get("type") != "text":
                self.only_text = False
            elif kind == "content_block_delta":
                self.first_token_at = self.first_token_at or time.time()
                if (ev.get("delta") or {}).get("type") == "text_delta":
                    self.text.append(str(ev["delta"].get("text", "")))
            elif kind == "message_delta":
                self.stop = (ev.get("delta") or {}).get("stop_reason")
                self.usage.update({k: v for k, v in (ev.get("usage") or {}).items() if v is not None})
            elif kind == "message_stop":
                self.complete = True
            elif kind == "error":
                self.error = str((ev.get("error") or {}).get("message") or "error event")


def _state(cache: str, route: str, saved: int = 0) -> dict[str, str]:
    return {"x-tokenlean-cache": cache, "x-tokenlean-route": route, "x-tokenlean-tokens-saved": str(saved)}


class _Passthrough:
    """One request to an Anthropic upstream: sent as it came, relayed as it answered, metered."""

    def __init__(
        self,
        gateway: Gateway,
        http: HttpRequest,
        body: dict[str, Any],
        key: KeyConfig | None,
        route: RouteConfig,
    ) -> None:
        self.gateway, self.http, self.body, self.key, self.route = gateway, http, body, key, route
        h = http.headers
        self.tenant = tenant_of(key)
        self.task = h.get("x-tokenlean-task") or _user_id(body) or h.get("x-tokenlean-session") or None
        self.tags = call_tags(key, route)
        self.target = route.targets[0]
        self.started = time.time()
        self.stream = body.get("stream") is True
        self.request: Request | None = None  # the cache key (set when the cache was consulted)

    def _record(
        self,
        usage: Any,
        replica: Replica | None,
        first_token_at: float | None = None,
        *,
        model: str | None = None,
        cache_hit: bool = False,
        **extra: Any,
    ) -> None:
        """The ledger entry of one call, charged to the key's budget."""
        tokens, cost = self.gateway.levers.record(
            model=str(model or self.body["model"]),
            usage=usage,
            endpoint=replica.base_url if replica is not None else None,
            task=self.task,
            tags={**self.tags, "target": "cache" if cache_hit else self.target},
            started_at=self.started,
            first_token_at=first_token_at,
            cache_hit=cache_hit,
            extra={"request_model": self.body["model"], "api": "anthropic", **extra},
        )
        self.gateway.budgets.charge(self.key, tokens, cost)

    def _cache_key(self) -> Request | None:
        """The request the cache keys on: the translation plus every untranslated field."""
        try:
            chat = to_openai({**self.body, "stream": False})
            rest = {k: v for k, v in self.body.items() if k not in TRANSLATED}
            return Request.from_openai(chat | ({"anthropic": rest} if rest else {}), metadata=None)
        except InputError:
            return None  # a server tool, a document block: not cached

    async def run(self) -> Response:
        bypass = bypass_requested(self.http.headers)
        request = self._cache_key() if self.route.cache and not bypass else None
        state, result = await self.gateway.look_up(self.route, request, self.tenant, bypass)
        if result is not None:
            self.request = request
            if result.hit:
                return self._replay(result)
        headers = _state(state, self.target)
        pool = self.gateway.pool
        candidates = pool.candidates(self.target, self.route.fallbacks, None, False)
        candidates = [c for c in candidates if c.config.api == "anthropic"]
        raw, body, client = await self.http.body(), self.body, dict(self.http.headers)
        if self.route.layout and not bypass:  # markers where the layout planner says they pay
            body, raw = await run_in_threadpool(with_breakpoints, body, raw, to_openai)
        answer, opened = await pool.messages(raw, body, candidates, client, stream=self.stream)
        if answer.replica is not None:
            headers["x-tokenlean-replica"] = answer.replica.base_url
        if opened is not None and answer.replica is not None:
            headers["cache-control"] = "no-cache"
            relay = self._relay(opened, answer.replica)
            return StreamingResponse(relay, status_code=answer.status, headers={**answer.headers, **headers})
        if answer.status < 400 and answer.replica is not None:
            await self._finish_json(answer.body, answer.replica)
        headers = {**answer.headers, **headers}
        return Response(
            answer.body, status_code=answer.status, headers=headers, media_type="application/json"
        )

    async def _finish_json(self, content: bytes, replica: Replica) -> None:
        data = _loads(content)
        if not isinstance(data, dict):
            self._record(None, replica, error="the upstream's answer is not JSON")
            return
        self._record(data.get("usage"), replica, model=data.get("model"))
        blocks = data.get("content") or []
        if self.request is not None and all(isinstance(b, dict) and b.get("type") == "text" for b in blocks):
            await run_in_threadpool(
                self.gateway.levers.store, self.request, openai_from_message(data), None, self.tenant
            )

    async def _relay(self, resp: httpx.Response, replica: Replica) -> AsyncIterator[bytes]:
        reader = _Reader()
        try:
            async for chunk in resp.aiter_bytes():
                reader.feed(chunk)
                yield chunk
        except (httpx.HTTPError, OSError) as exc:
            reader.error = f"the upstream stream broke ({type(exc).__name__}): the answer is incomplete"
            yield _error_event(reader.error)
        finally:
            replica.inflight -= 1
            # the client may hang up after message_stop: metering and the cache still happen
            with anyio.CancelScope(shield=True):
                await resp.aclose()
                await self._finish_stream(reader, replica)

    async def _finish_stream(self, reader: _Reader, replica: Replica) -> None:
        extra: dict[str, Any] = {"error": reader.error} if reader.error else {}
        if not reader.complete and not reader.error:
            extra["error"] = "the stream ended before message_stop"
        self._record(reader.usage or None, replica, reader.first_token_at, model=reader.model, **extra)
        if self.request is not None and reader.complete and not extra and reader.only_text:
            text = [{"type": "text", "text": "".join(reader.text)}]
            answer = openai_from_message({"content": text, "stop_reason": reader.stop, "usage": reader.usage})
            await run_in_threadpool(
                self.gateway.levers.store, self.request, answer, list(reader.text), self.tenant
            )

    def _replay(self, result: Any) -> Response:
        """A cache hit as an Anthropic message or stream, with zero usage."""
        response = result.response
        replayed = response.usage if response is not None else None
        self._record(replayed.to_openai() if replayed is not None else None, None, cache_hit=True)
        headers = _state("hit", "cache", replayed.total_tokens if replayed is not None else 0)
        model, text = str(self.body["model"]), result.text or ""
        data = response.to_openai() if response is not None else {}
        if not data.get("choices"):
            data = {"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}
        data["usage"] = {"prompt_tokens": 0, "completion_tokens": 0}  # nothing was billed
        if not self.stream:
            return JSONResponse(message_from_openai(data, model), headers=headers)
        blocks = _Blocks(model)
        events = [blocks.start()]
        for piece in result.chunks or [text]:
            events += blocks.feed({"choices": [{"delta": {"content": piece}}]})
        blocks.stop = _STOP.get(data["choices"][0].get("finish_reason") or "stop", "end_turn")
        events += blocks.finish(data["usage"])
        headers["cache-control"] = "no-cache"
        return StreamingResponse(iter(events), media_type="text/event-stream", headers=headers)
