"""What an OpenAI-compatible chat server sends back, parsed into typed answers and typed errors.

Why a module of its own: the sync and the async clients must classify errors, parse usage and
assemble streams identically, so everything here is plain functions of bytes and lines, with no
I/O; ``tokenlean.routing.endpoints`` only moves the bytes.

Errors are always typed (``tokenlean.errors``): connection refused and 5xx become
``EndpointUnavailable`` (retryable), timeouts ``EndpointTimeout`` (retryable), 4xx and broken
JSON ``EndpointProtocolError`` (not retryable: the same bytes will fail the same way).

Only failures of the server or the wire are endpoint errors (``TRANSPORT_ERRORS``). The parsers
check the shape of what the server sent and raise ``EndpointProtocolError`` themselves, so any
other exception (a ``TypeError`` in our own code) is a tokenlean bug: it propagates unchanged
instead of counting against a healthy replica, ejecting it or sending the call to a fallback.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from tokenlean.errors import (
    EndpointError,
    EndpointProtocolError,
    EndpointTimeout,
    EndpointUnavailable,
    MessageFormatError,
    UsageFormatError,
)
from tokenlean.types import Message, Response, ToolCall, Usage, normalize_usage

__all__ = ["TRANSPORT_ERRORS", "StreamChunk", "mean_logprob"]


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """One streamed delta. ``usage`` arrives on the last chunk when the server reports it."""

    text: str = ""
    tool_call_deltas: tuple[Mapping[str, Any], ...] = ()
    finish_reason: str | None = None
    usage: Usage | None = None
    logprobs: tuple[float, ...] = ()
    model: str | None = None
    id: str | None = None
    #: Set on the last chunk only: the whole answer assembled, usage included when reported.
    response: Response | None = None

    @property
    def has_token(self) -> bool:
        """Whether this chunk carries generated output (text or a tool-call piece)."""
        return bool(self.text or self.tool_call_deltas)


def _classify_status(status: int, text: str, endpoint: str) -> EndpointError:
    snippet = text[:200].replace("\n", " ")
    if status == 408 or status == 504:
        return EndpointTimeout(f"{endpoint}: HTTP {status}: {snippet}", endpoint=endpoint, status=status)
    if status >= 500 or status == 429:
        return EndpointUnavailable(f"{endpoint}: HTTP {status}: {snippet}", endpoint=endpoint, status=status)
    return EndpointProtocolError(f"{endpoint}: HTTP {status}: {snippet}", endpoint=endpoint, status=status)


#: What a call to a server may fail with that is the server's or the network's doing: our own
#: typed errors, everything httpx raises about the request it sent (transport, timeouts, status,
#: undecodable bodies, redirect loops) and socket-level ``OSError``. Catch these and only these
#: around I/O; anything else is a bug in tokenlean and must reach the caller as itself.
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (EndpointError, httpx.HTTPError, OSError)


def _classify_exception(exc: Exception, endpoint: str) -> EndpointError:
    """The typed endpoint error for one of ``TRANSPORT_ERRORS``.

    Callers catch ``TRANSPORT_ERRORS`` only, so nothing else reaches here; should it anyway, it
    is re-raised as itself rather than passed off as the server's fault.
    """
    if isinstance(exc, EndpointError):
        return exc
    if isinstance(exc, (httpx.TimeoutException, TimeoutError)):
        return EndpointTimeout(f"{endpoint}: timed out ({type(exc).__name__})", endpoint=endpoint)
    if isinstance(exc, httpx.HTTPStatusError):
        return _classify_status(exc.response.status_code, exc.response.text, endpoint)
    if isinstance(exc, (httpx.TransportError, OSError)):
        return EndpointUnavailable(f"{endpoint}: {type(exc).__name__}: {exc}", endpoint=endpoint)
    if isinstance(exc, httpx.HTTPError):  # an undecodable body, a redirect loop: the server's answer
        return EndpointProtocolError(f"{endpoint}: {type(exc).__name__}: {exc}", endpoint=endpoint)
    raise exc


def _malformed(endpoint: str, what: str) -> EndpointProtocolError:
    return EndpointProtocolError(f"{endpoint}: {what}", endpoint=endpoint)


def _logprobs_of(choice: Mapping[str, Any], endpoint: str) -> tuple[float, ...]:
    lp = choice.get("logprobs")
    if not isinstance(lp, Mapping):
        return ()
    content = lp.get("content")
    if isinstance(content, list):
        out: list[float] = []
        for t in content:
            if not isinstance(t, Mapping) or "logprob" not in t:
                continue
            value = t["logprob"]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _malformed(endpoint, f"token logprob must be a number, got {value!r}")
            out.append(float(value))
        return tuple(out)
    tokens = lp.get("token_logprobs")  # legacy completions shape, some servers still send it
    if isinstance(tokens, list):
        return tuple(float(x) for x in tokens if isinstance(x, (int, float)))
    return ()


def mean_logprob(response: Response) -> float | None:
    """Mean token log-probability of the first choice, or ``None`` when the server sent none."""
    lps = response.extra.get("logprobs")
    if not lps:
        return None
    return float(sum(lps) / len(lps))


def _parse_body(raw: bytes, endpoint: str, latency_s: float) -> Response:
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EndpointProtocolError(
            f"{endpoint}: response is not JSON: {raw[:120]!r}", endpoint=endpoint
        ) from exc
    try:
        resp = Response.from_openai(body)
    except (MessageFormatError, UsageFormatError) as exc:
        raise EndpointProtocolError(
            f"{endpoint}: unexpected response shape: {exc}", endpoint=endpoint
        ) from exc
    choice = body["choices"][0]
    extra = dict(resp.extra)
    extra["endpoint"] = endpoint
    extra["latency_s"] = latency_s
    lps = _logprobs_of(choice, endpoint)
    if lps:
        extra["logprobs"] = lps
    return Response(resp.message, resp.model, resp.usage, resp.finish_reason, resp.id, extra)


class _StreamAssembler:
    """Parses SSE lines into ``StreamChunk`` and accumulates the final ``Response``."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.text: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.model: str | None = None
        self.id: str | None = None
        self.logprobs: list[float] = []
        self.done = False
        self.started = time.monotonic()
        self.first_token_at: float | None = None

    def feed(self, line: str) -> StreamChunk | None:
        line = line.strip()
        if not line or line.startswith(":") or not line.startswith("data:"):
            return None
        data = line[5:].strip()
        if data == "[DONE]":
            self.done = True
            return None
        try:
            event = json.loads(data)
        except json.JSONDecodeError as exc:
            raise EndpointProtocolError(
                f"{self.endpoint}: broken SSE event: {data[:120]!r}", endpoint=self.endpoint
            ) from exc
        if not isinstance(event, Mapping):
            raise EndpointProtocolError(
                f"{self.endpoint}: SSE event is not an object", endpoint=self.endpoint
            )
        if "error" in event and "choices" not in event:
            raise EndpointUnavailable(
                f"{self.endpoint}: stream error: {event['error']}", endpoint=self.endpoint
            )
        model, rid = event.get("model"), event.get("id")
        self.model = model if model and isinstance(model, str) else self.model  # as Response.from_openai
        self.id = rid if rid and isinstance(rid, str) else self.id
        usage = None
        if event.get("usage"):
            try:
                usage = self.usage = normalize_usage(event["usage"])
            except UsageFormatError as exc:
                raise EndpointProtocolError(
                    f"{self.endpoint}: bad usage in stream: {exc}", endpoint=self.endpoint
                ) from exc
        text: str = ""
        raw_deltas: tuple[Any, ...] = ()
        finish: str | None = None
        lps: tuple[float, ...] = ()
        choices = event.get("choices") or []
        if not isinstance(choices, list):
            raise _malformed(self.endpoint, "SSE 'choices' is not a list")
        if choices and isinstance(choices[0], Mapping):
            choice = choices[0]
            delta = choice.get("delta") or {}
            if not isinstance(delta, Mapping):
                raise _malformed(self.endpoint, "SSE 'delta' is not an object")
            text = delta.get("content") or ""
            if not isinstance(text, str):
                raise _malformed(
                    self.endpoint, f"SSE delta content must be a string, got {type(text).__name__}"
                )
            calls = delta.get("tool_calls") or ()
            if not isinstance(calls, (list, tuple)):
                raise _malformed(self.endpoint, "SSE delta 'tool_calls' is not a list")
            raw_deltas = tuple(calls)
            finish = choice.get("finish_reason")
            lps = _logprobs_of(choice, self.endpoint)
        deltas = tuple(self._normalise_delta(d) for d in raw_deltas if isinstance(d, Mapping))
        if text:
            self.text.append(text)
        if finish:
            self.finish_reason = finish
        self.logprobs.extend(lps)
        chunk = StreamChunk(text, deltas, finish, usage, lps, self.model, self.id)
        if chunk.has_token and self.first_token_at is None:
            self.first_token_at = time.monotonic()
        return chunk

    def _normalise_delta(self, d: Mapping[str, Any]) -> dict[str, Any]:
        """One tool-call delta in OpenAI's streaming convention: id and name only on the first piece.

        Some servers (llama.cpp) repeat the id and the full name on every delta; passed on as-is,
        every consumer that concatenates pieces would build "addaddadd".
        """
        index = d.get("index", 0)
        fn = d.get("function") or {}
        if isinstance(index, bool) or not isinstance(index, int) or not isinstance(fn, Mapping):
            raise _malformed(self.endpoint, f"bad tool-call delta: {dict(d)!r:.120}")
        name, args, call_id = fn.get("name") or "", fn.get("arguments") or "", d.get("id")
        if (
            not isinstance(name, str)
            or not isinstance(args, str)
            or not isinstance(call_id, (str, type(None)))
        ):
            raise _malformed(self.endpoint, f"bad tool-call delta: {dict(d)!r:.120}")
        slot = self.tool_calls.get(index)
        first = slot is None
        if slot is None:
            slot = self.tool_calls[index] = {"id": None, "name": "", "arguments": ""}
        new_id = call_id if call_id and call_id != slot["id"] and slot["id"] is None else None
        if new_id:
            slot["id"] = new_id
        if name == slot["name"]:
            name = ""
        elif name.startswith(slot["name"]) and slot["name"]:
            name = name[len(slot["name"]) :]
        slot["name"] += name
        slot["arguments"] += args
        out: dict[str, Any] = {"index": index, "function": {"name": name or None, "arguments": args}}
        if first:
            out["type"] = "function"
        if new_id:
            out["id"] = new_id
        return out

    def end(self) -> None:
        """The server closed the stream: refuse an answer that never said it was finished.

        An OpenAI-style stream states why it stopped (``finish_reason``) before it ends. One that
        ends without it was cut: a server killed mid-answer, a proxy timeout on a body without
        framing, or llama-cpp-python's server, which by default ends a stream early with a
        regular ``[DONE]`` when another request arrives. Taking what arrived as the answer would
        pass a truncated reply off as a whole one.
        """
        if self.finish_reason is None:
            how = "[DONE] without a finish_reason" if self.done else "no finish_reason, no [DONE]"
            raise EndpointUnavailable(
                f"{self.endpoint}: the stream ended before the answer finished ({how})",
                endpoint=self.endpoint,
            )

    def last(self) -> StreamChunk:
        """The stream's final chunk: the whole answer assembled (call after ``end``)."""
        return StreamChunk(response=self.response(), model=self.model, id=self.id)

    def response(self) -> Response:
        calls = tuple(
            ToolCall(id=v["id"] or f"call_{i}", name=v["name"], arguments=v["arguments"] or "{}")
            for i, v in sorted(self.tool_calls.items())
        )
        msg = Message("assistant", "".join(self.text) if self.text or not calls else None, tool_calls=calls)
        extra: dict[str, Any] = {"endpoint": self.endpoint, "latency_s": time.monotonic() - self.started}
        if self.first_token_at is not None:
            extra["ttft_s"] = self.first_token_at - self.started
        if self.logprobs:
            extra["logprobs"] = tuple(self.logprobs)
        return Response(msg, self.model, self.usage, self.finish_reason, self.id, extra)
