"""A small, fast, OpenAI-compatible stub upstream: the protocol edges and faults on demand.

The gateway's tests and its latency benchmark need an upstream that answers in microseconds and
that fails exactly when told to: a 429 with ``retry-after``, a 500, a stream cut after two chunks,
a slow first token. A real model server will not produce those on demand, and its own latency
would drown the gateway's. Tests about real answers (tokenization, generation, usage) use the
llama.cpp server of :mod:`tokenlean.server`; this stub is for protocol edges and faults only.

What it serves (``base_url`` is ``http://127.0.0.1:PORT/v1``):

* ``POST /v1/chat/completions``: by default a deterministic answer, ``"echo: "`` + the text of
  the last user message (a string, or its text parts concatenated). Usage counts words, not
  tokens: ``prompt_tokens`` is the number of whitespace-separated words over all message contents
  (at least 1), ``completion_tokens`` the words of the answer (1 for a tool call). When the request
  has ``tools`` and the last user message contains ``"call tool"``, the answer is a call to the
  first tool with arguments ``"{}"`` (``finish_reason`` ``"tool_calls"``). ``"stream": true``
  gives Server-Sent Events: a role chunk, one chunk per word piece (their contents concatenate to
  the answer), a finish chunk, a usage chunk (``choices: []``) when
  ``stream_options.include_usage`` is true (the other chunks then carry ``"usage": null``, as
  OpenAI's do), then ``data: [DONE]``.
* ``GET /v1/models``: the one configured model (``stub-model`` by default).
* ``GET /health``: ``{"status": "ok"}``.

Faults are scripted: :meth:`StubState.push` queues behaviours, and each chat request consumes one
(an empty script means a normal answer):

* :class:`Ok`: the normal answer, explicitly.
* :class:`Status`: that HTTP status with an OpenAI-style error body (or the given body) and headers.
* :class:`Cut`: the connection is dropped mid-response. A stream sends its role chunk and the
  first ``after_chunks`` answer chunks, then the connection closes without the terminating HTTP
  chunk, without a finish chunk and without ``[DONE]`` (httpx raises ``RemoteProtocolError``:
  "incomplete chunked read"). A non-streaming request gets its status line and headers (200, with
  the ``content-length`` of the full answer) and the first half of the JSON body, then the
  connection closes (httpx raises ``RemoteProtocolError``: "peer closed connection without
  sending complete message body"); ASGI cannot close a connection before any response, so
  "headers then a truncated body" is the closest a Starlette app gets to a dropped connection.
* :class:`SlowFirstToken`: waits (``asyncio.sleep``) before the first byte of the response, then
  answers normally.

Every chat request is logged in :attr:`StubState.requests` (its parsed JSON body and lowercase
headers) before any behaviour applies. A body that is not a JSON object with a ``messages`` list
is answered 400 and consumes no behaviour (its log entry has ``body`` None when it is not JSON).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tokenlean.errors import ConfigError
from tokenlean.gateway.serving import AppServer

if TYPE_CHECKING:
    pass

__all__ = [
    "Behaviour",
    "Cut",
    "Ok",
    "SlowFirstToken",
    "Status",
    "StubServer",
    "StubState",
    "create_stub_app",
]

DEFAULT_MODEL = "stub-model"


# --------------------------------------------------------------------------- behaviours


@dataclass(frozen=True, slots=True)
class Ok:
    """The normal answer (what an empty script gives), queued explicitly."""


@dataclass(frozen=True, slots=True)
class Status:
    """Answer with HTTP ``code`` and ``headers`` instead of a completion (stream or not).

    ``body`` None sends an OpenAI-style error, ``{"error": {"message", "type", "param", "code"}}``;
    a dict or list is sent as JSON, a str or bytes as is (to play a broken body). ``headers``
    override the default ``content-type``: ``Status(429, {"retry-after": "1"})``, ``Status(500)``,
    ``Status(200, {"content-type": "application/json"}, "{not json")``.
    """

    code: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.code, int) or not 200 <= self.code <= 599:
            raise ConfigError(f"Status code must be an int in 200..599, got {self.code!r}")


@dataclass(frozen=True, slots=True)
class Cut:
    """Drop the connection mid-response (see the module docstring for exactly what is sent).

    A stream sends its role chunk and the first ``after_chunks`` answer chunks, then closes the
    connection without a finish chunk, ``[DONE]`` or the terminating HTTP chunk. A non-streaming
    request gets the headers and half the JSON body (``after_chunks`` is not used).
    """

    after_chunks: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.after_chunks, int) or self.after_chunks < 0:
            raise ConfigError(f"Cut.after_chunks must be an int >= 0, got {self.after_chunks!r}")


@dataclass(frozen=True, slots=True)
class SlowFirstToken:
    """Wait ``seconds`` (without blocking the server) before the first byte, then answer normally."""

    seconds: float

    def __post_init__(self) -> None:
        if not isinstance(self.seconds, int | float) or self.seconds < 0:
            raise ConfigError(f"SlowFirstToken.seconds must be >= 0, got {self.seconds!r}")


Behaviour = Ok | Status | Cut | SlowFirstToken
_BEHAVIOURS = (Ok, Status, Cut, SlowFirstToken)


# --------------------------------------------------------------------------- state


class StubState:
    """What the stub answers next and what it has received; shared by the server's thread and tests.

    ``script`` is consumed one behaviour per chat request (left to right); ``requests`` holds
    ``{"body": parsed JSON, "headers": {lowercase name: value}}`` per chat request, in arrival order.
    """

    def __init__(self, model: str = DEFAULT_MODEL, *, chunk_delay: float = 0.0) -> None:
        self.model = model
        #: Seconds between a stream's events (0: all at once): streams that are still in flight
        #: when a test kills the server.
        self.chunk_delay = chunk_delay
        self.script: collections.deque[Behaviour] = collections.deque()
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def push(self, *behaviours: Behaviour) -> None:
        """Queue behaviours for the next chat requests, one each, in order."""
        for b in behaviours:
            if not isinstance(b, _BEHAVIOURS):
                raise ConfigError(f"not a stub behaviour: {b!r} (use Ok, Status, Cut, SlowFirstToken)")
        with self._lock:
            self.script.extend(behaviours)

    def reset(self) -> None:
        """Forget the script and the request log (ids keep counting, so they stay unique)."""
        with self._lock:
            self.script.clear()
            self.requests.clear()

    def next_behaviour(self) -> Behaviour:
        """The behaviour for the chat request being served: the script's head, or :class:`Ok`."""
        with self._lock:
            return self.script.popleft() if self.script else Ok()

    def record(self, body: Any, headers: dict[str, str]) -> None:
        with self._lock:
            self.requests.append({"body": body, "headers": headers})

    def next_id(self) -> int:
        with self._lock:
            return next(self._ids)


# --------------------------------------------------------------------------- answers


class _CutConnection(Exception):
    """Raised after a partial response: uvicorn then closes the connection (and logs nothing, see
    :class:`_HideCuts`)."""


class _HideCuts(logging.Filter):
    """Keeps uvicorn's "Exception in ASGI application" record out of the log for scripted cuts."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info
        return not (exc and isinstance(exc[1], _CutConnection))


def _install_log_filter() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HideCuts) for f in logger.filters):
        logger.addFilter(_HideCuts())


class _Raw(Response):
    """Sends ``parts`` one ASGI body message each; when ``complete`` is false, raises afterwards so
    that the server drops the connection instead of ending the response."""

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        parts: list[bytes],
        complete: bool = True,
        delay: float = 0.0,
    ) -> None:
        self.delay = delay
        self.status_code = status
        self.background = None
        self.raw_headers = headers
        self.parts = parts
        self.complete = complete

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        for i, part in enumerate(self.parts):
            if i and self.delay:
                await asyncio.sleep(self.delay)
            await send({"type": "http.response.body", "body": part, "more_body": True})
        if not self.complete:
            raise _CutConnection("scripted cut")
        await send({"type": "http.response.body", "body": b"", "more_body": False})


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
_ERROR_CODES = {429: "rate_limit_exceeded", 401: "invalid_api_key", 404: "model_not_found"}
_WORD_PIECES = re.compile(r"\s*\S+\s*")
_JSON = "application/json"


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _error_body(code: int, message: str | None = None) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(code, "server_error" if code >= 500 else "api_error")
    try:
        phrase = HTTPStatus(code).phrase
    except ValueError:
        phrase = "error"
    return {
        "error": {
            "message": message or f"stub: scripted {code} {phrase}",
            "type": kind,
            "param": None,
            "code": _ERROR_CODES.get(code, kind),
        }
    }


def _status_response(b: Status) -> Response:
    if b.body is None or isinstance(b.body, dict | list):
        content = _dumps(_error_body(b.code) if b.body is None else b.body)
        media = _JSON
    elif isinstance(b.body, bytes | str):
        content = b.body.encode() if isinstance(b.body, str) else b.body
        media = "text/plain"
    else:
        raise ConfigError(f"Status.body must be None, dict, list, str or bytes, got {type(b.body).__name__}")
    return Response(content, status_code=b.code, headers=dict(b.headers), media_type=media)


def _text(content: Any) -> str:
    """A message's text: the string itself, or its text parts concatenated."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _pieces(text: str) -> list[str]:
    """Word pieces whose concatenation is exactly ``text`` (spacing kept)."""
    pieces = _WORD_PIECES.findall(text)
    if "".join(pieces) != text:  # only whitespace, or empty
        pieces = [text] if text else []
    return pieces


@dataclass(slots=True)
class _Answer:
    content: str | None
    tool: str | None
    prompt_tokens: int
    completion_tokens: int

    @property
    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def _answer(body: dict[str, Any]) -> _Answer:
    messages = [m for m in body["messages"] if isinstance(m, dict)]
    prompt = max(1, sum(len(_text(m.get("content")).split()) for m in messages))
    last_user = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    tools = body.get("tools")
    if isinstance(tools, list) and tools and "call tool" in last_user:
        first = tools[0] if isinstance(tools[0], dict) else {}
        fn = first.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        return _Answer(None, name if isinstance(name, str) else "tool", prompt, 1)
    content = "echo: " + last_user
    return _Answer(content, None, prompt, len(content.split()))


def _tool_call(n: int, name: str) -> dict[str, Any]:
    return {"id": f"call_stub_{n}", "type": "function", "function": {"name": name, "arguments": "{}"}}


def _completion(n: int, model: str, ans: _Answer) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": ans.content}
    if ans.tool is not None:
        message["tool_calls"] = [_tool_call(n, ans.tool)]
    return {
        "id": f"chatcmpl-stub-{n}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "stop" if ans.tool is None else "tool_calls",
                "logprobs": None,
            }
        ],
        "usage": ans.usage,
    }


def _events(n: int, model: str, ans: _Answer, include_usage: bool) -> tuple[bytes, list[bytes], list[bytes]]:
    """(role chunk, answer chunks, closing events: finish chunk, usage chunk, [DONE])."""
    created = int(time.time())
    head: dict[str, Any] = {"id": f"chatcmpl-stub-{n}", "object": "chat.completion.chunk", "created": created}
    head["model"] = model

    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
        if include_usage:
            chunk["usage"] = None
        return b"data: " + _dumps(chunk) + b"\n\n"

    if ans.tool is None:
        role = event({"role": "assistant", "content": ""})
        body = [event({"content": p}) for p in _pieces(ans.content or "")]
        finish = "stop"
    else:
        call = _tool_call(n, ans.tool)
        role = event({"role": "assistant", "content": None})
        body = [
            event({"tool_calls": [{"index": 0, **call, "function": {"name": ans.tool, "arguments": ""}}]}),
            event({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
        ]
        finish = "tool_calls"
    tail = [event({}, finish)]
    if include_usage:
        tail.append(b"data: " + _dumps({**head, "choices": [], "usage": ans.usage}) + b"\n\n")
    tail.append(b"data: [DONE]\n\n")
    return role, body, tail


_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]


# --------------------------------------------------------------------------- app


def create_stub_app(stub: StubState) -> Starlette:
    """The stub as an ASGI app (serve it with :class:`StubServer`, or mount it in httpx's
    ``ASGITransport`` where a socket is not needed)."""

    async def chat(request: Request) -> Response:
        raw = await request.body()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        stub.record(body, dict(request.headers.items()))
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            msg = "stub: the body must be a JSON object with a 'messages' list"
            return Response(_dumps(_error_body(400, msg)), status_code=400, media_type=_JSON)

        behaviour = stub.next_behaviour()
        if isinstance(behaviour, SlowFirstToken):
            await asyncio.sleep(behaviour.seconds)
        if isinstance(behaviour, Status):
            return _status_response(behaviour)

        n = stub.next_id()
        requested = body.get("model")
        model = requested if isinstance(requested, str) else stub.model
        ans = _answer(body)
        cut = behaviour.after_chunks if isinstance(behaviour, Cut) else None
        if body.get("stream") is True:
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            role, chunks, tail = _events(n, model, ans, include_usage)
            if cut is not None:
                return _Raw(200, _SSE_HEADERS, [role, *chunks[:cut]], complete=False, delay=stub.chunk_delay)
            return _Raw(200, _SSE_HEADERS, [role, *chunks, *tail], delay=stub.chunk_delay)

        payload = _dumps(_completion(n, model, ans))
        if cut is not None:
            headers = [(b"content-type", _JSON.encode()), (b"content-length", str(len(payload)).encode())]
            return _Raw(200, headers, [payload[: len(payload) // 2]], complete=False)
        return Response(payload, media_type=_JSON)

    async def models(request: Request) -> Response:
        data = [{"id": stub.model, "object": "model", "owned_by": "stub"}]
        return JSONResponse({"object": "list", "data": data})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ]
    )


# --------------------------------------------------------------------------- server


class StubServer(AppServer):
    """The stub served by uvicorn in a background thread on ``127.0.0.1:port``.

    ``with StubServer() as s:`` starts it and waits until ``/health`` answers (``ready_timeout``
    seconds at most, else :class:`~tokenlean.errors.ServerError`); leaving the block stops it.
    ``s.base_url`` is what an OpenAI client takes, ``s.stub`` the script and request log.
    """

    name = "stub upstream"

    def __init__(
        self, stub: StubState | None = None, *, port: int | None = None, ready_timeout: float = 10.0
    ) -> None:
        self.stub = stub if stub is not None else StubState()
        super().__init__(create_stub_app(self.stub), port=port, ready_timeout=ready_timeout, lifespan="off")

    def _configured(self) -> None:
        _install_log_filter()

    def __enter__(self) -> StubServer:
        self.start()
        return self


def main(argv: list[str] | None = None) -> int:
    """``python -m tokenlean.gateway.stub --port P``: the stub in a process of its own (a replica a
    test can kill with a signal)."""
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(description="tokenlean's scripted OpenAI-compatible stub upstream")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between stream events")
    args = parser.parse_args(argv)
    stub = StubState(args.model, chunk_delay=args.chunk_delay)
    uvicorn.run(
        create_stub_app(stub), host="127.0.0.1", port=args.port, log_level="warning", access_log=False
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
