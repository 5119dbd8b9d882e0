"""Endpoints: one OpenAI-compatible chat server, spoken to over httpx, sync or async.

Why one code path: the sync and async clients must classify errors, retry, parse usage and
assemble streams identically, or a chain behaves differently under ``ainvoke``. So everything
that is not I/O lives in plain functions (``_build_body``, ``_classify_status``,
``_parse_body``, ``_StreamAssembler``, ``backoff_delay``); ``complete`` and ``acomplete`` are
thin loops around one ``client.post`` each.

Errors are always typed (``tokenlean.errors``): connection refused and 5xx become
``EndpointUnavailable`` (retryable), timeouts ``EndpointTimeout`` (retryable), 4xx and broken
JSON ``EndpointProtocolError`` (not retryable: the same bytes will fail the same way).

Only failures of the server or the wire are endpoint errors (``TRANSPORT_ERRORS``). The parsers
check the shape of what the server sent and raise ``EndpointProtocolError`` themselves, so any
other exception (a ``TypeError`` in our own code) is a tokenlean bug: it propagates unchanged
instead of counting against a healthy replica, ejecting it or sending the call to a fallback.

``VLLMEndpoint`` adds what a replica router needs from a vLLM server: ``/health``,
``/v1/models`` discovery and a scrape of ``/metrics`` (queue depth, KV-cache use, prefix-cache
hit counters), and sends a per-tenant ``cache_salt`` so tenants never share prefix-cache blocks.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import httpx

from tokenlean.errors import (
    EmptyInputError,
    EndpointError,
    EndpointProtocolError,
    EndpointTimeout,
    EndpointUnavailable,
    InputError,
    MessageFormatError,
    StreamInterrupted,
    TextEncodingError,
    UsageFormatError,
)
from tokenlean.types import Message, Request, Response, ToolCall, Usage, normalize_usage

__all__ = [
    "TRANSPORT_ERRORS",
    "Endpoint",
    "EndpointMetrics",
    "OpenAICompatibleEndpoint",
    "StreamChunk",
    "VLLMEndpoint",
    "backoff_delay",
    "check_request",
    "parse_prometheus",
]

log = logging.getLogger("tokenlean.routing.endpoints")


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


@dataclass(frozen=True, slots=True)
class EndpointMetrics:
    """A point-in-time scrape of a server's load; ``None`` fields were not exported."""

    running: float | None = None
    waiting: float | None = None
    kv_cache_usage: float | None = None
    prefix_cache_queries: float | None = None
    prefix_cache_hits: float | None = None
    scraped_at: float = field(default_factory=time.monotonic)

    @property
    def outstanding(self) -> float | None:
        if self.running is None and self.waiting is None:
            return None
        return (self.running or 0.0) + (self.waiting or 0.0)

    @property
    def prefix_cache_hit_rate(self) -> float | None:
        if not self.prefix_cache_queries:
            return None
        return (self.prefix_cache_hits or 0.0) / self.prefix_cache_queries


@runtime_checkable
class Endpoint(Protocol):
    """One server of one model. ``name`` identifies the replica, ``model`` what it serves."""

    name: str
    model: str

    def complete(self, request: Request) -> Response: ...

    async def acomplete(self, request: Request) -> Response: ...

    def stream(self, request: Request) -> Iterator[StreamChunk]: ...

    def astream(self, request: Request) -> AsyncIterator[StreamChunk]: ...


# -- pure helpers shared by the sync and async paths --------------------------------------------


def backoff_delay(
    attempt: int, base: float = 0.25, cap: float = 4.0, rng: random.Random | None = None
) -> float:
    """Full-jitter exponential backoff (AWS architecture blog): uniform in [0, min(cap, base*2^n)].

    Jitter matters more than the exponent: replicas that failed together must not be retried by
    every client in lockstep.
    """
    r = rng or random
    return r.uniform(0.0, min(cap, base * (2**attempt)))


_TOKEN_CAPS = ("max_tokens", "max_completion_tokens")


def check_request(request: Request) -> None:
    """Reject a call that no server can answer, before it is routed or sent.

    An empty conversation has nothing to answer, and the OpenAI API refuses a token cap below
    one. Sent anyway, such a call costs a round trip and comes back as a 4xx that reads like the
    endpoint's fault (or a server reads it its own way); caught here, it is the caller's mistake.
    """
    if not isinstance(request, Request):
        raise MessageFormatError(f"expected a tokenlean Request, got {type(request).__name__}")
    if not request.messages:
        raise EmptyInputError("a call needs at least one message")
    for key in _TOKEN_CAPS:
        value = request.params.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{key} must be a positive integer, got {value!r}")


def _sendable(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` once it is known to serialise as the strict JSON a server accepts, else a typed error.

    httpx serialises with ``allow_nan=False`` and encodes UTF-8 strictly, so a NaN or infinite
    parameter or a lone surrogate in a message would escape from inside the HTTP client as a bare
    ``ValueError`` / ``UnicodeEncodeError``, after routing, looking like tokenlean's bug. Checked
    here they are the caller's ``InputError`` / ``TextEncodingError``, before any connection.
    """
    try:
        json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TextEncodingError(
            f"the request holds text that is not valid Unicode (a lone surrogate at {exc.start}): {exc.reason}"
        ) from exc
    except (TypeError, ValueError) as exc:
        raise InputError(f"the request cannot be sent as JSON: {exc}") from exc
    return body


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


# -- the endpoint ---------------------------------------------------------------------------------


class OpenAICompatibleEndpoint:
    """Any server that speaks ``POST {base_url}/chat/completions`` (OpenAI, vLLM, llama.cpp, SGLang).

    ``base_url`` ends in ``/v1``. ``timeout`` bounds connect and each read (so a hung server is
    noticed, and a stream that stalls before its first token too); ``max_retries`` retries
    retryable errors on *this* endpoint with jittered backoff. In a ``ReplicaGroup`` keep it
    low: failing over to another replica beats hammering a sick one.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        name: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        max_retries: int = 2,
        backoff_base: float = 0.25,
        backoff_cap: float = 4.0,
        headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = name or f"{model}@{self.base_url}"
        self.api_key = api_key
        self.timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.headers = dict(headers or {})
        if api_key:
            self.headers.setdefault("Authorization", f"Bearer {api_key}")
        self.extra_body = dict(extra_body or {})
        self._client: httpx.Client | None = None
        self._aclients: dict[int, httpx.AsyncClient] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, model={self.model!r})"

    # -- clients (created lazily; one async client per event loop) -----------------------------
    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout, headers=self.headers)
        return self._client

    @property
    def aclient(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        c = self._aclients.get(id(loop))
        if c is None or c.is_closed:
            c = self._aclients[id(loop)] = httpx.AsyncClient(timeout=self.timeout, headers=self.headers)
        return c

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        clients, self._aclients = list(self._aclients.values()), {}
        for c in clients:
            await c.aclose()

    # -- request shaping -----------------------------------------------------------------------
    def _body(self, request: Request, *, stream: bool) -> dict[str, Any]:
        body = request.to_openai()
        body["model"] = self.model
        for k, v in self.extra_body.items():
            body.setdefault(k, v)
        if stream:
            body["stream"] = True
            body.setdefault("stream_options", {"include_usage": True})
        else:
            body.pop("stream", None)
            body.pop("stream_options", None)
        return body

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def _delay(self, attempt: int) -> float:
        return backoff_delay(attempt, self.backoff_base, self.backoff_cap)

    def _should_retry(self, err: EndpointError, attempt: int) -> bool:
        if not err.retryable or attempt >= self.max_retries:
            return False
        log.info("%s: %s; retry %d/%d", self.name, err, attempt + 1, self.max_retries)
        return True

    def _retry_or_raise(self, exc: Exception, attempt: int, *, yielded: bool = False) -> None:
        """Return when the failed attempt should be retried, else raise it as a typed error.

        A stream that already yielded tokens is never retried: replaying would duplicate text.
        When it broke on the way (the server or the connection failed, not a malformed event),
        the error is a ``StreamInterrupted`` so the caller knows the text it has is partial.
        """
        err = _classify_exception(exc, self.name)
        if yielded and err.retryable and not isinstance(err, StreamInterrupted):
            raise StreamInterrupted(
                f"{err} (the stream had already sent tokens: the answer is incomplete)",
                endpoint=self.name,
                status=err.status,
            ) from exc
        if yielded or not self._should_retry(err, attempt):
            raise err from exc

    # -- non-streaming ---------------------------------------------------------------------------
    def complete(self, request: Request) -> Response:
        check_request(request)
        body = _sendable(self._body(request, stream=False))
        attempt = 0
        while True:
            t0 = time.monotonic()
            try:
                r = self.client.post(self.url, json=body)
                if r.status_code >= 400:
                    raise _classify_status(r.status_code, r.text, self.name)
                return _parse_body(r.content, self.name, time.monotonic() - t0)
            except TRANSPORT_ERRORS as exc:
                self._retry_or_raise(exc, attempt)
            time.sleep(self._delay(attempt))
            attempt += 1

    async def acomplete(self, request: Request) -> Response:
        check_request(request)
        body = _sendable(self._body(request, stream=False))
        attempt = 0
        while True:
            t0 = time.monotonic()
            try:
                r = await self.aclient.post(self.url, json=body)
                if r.status_code >= 400:
                    raise _classify_status(r.status_code, r.text, self.name)
                return _parse_body(r.content, self.name, time.monotonic() - t0)
            except TRANSPORT_ERRORS as exc:
                self._retry_or_raise(exc, attempt)
            await asyncio.sleep(self._delay(attempt))
            attempt += 1

    # -- streaming ---------------------------------------------------------------------------------
    def stream(self, request: Request) -> Iterator[StreamChunk]:
        """Yield deltas, then one last ``StreamChunk`` whose ``response`` is the assembled answer.

        Retries happen only before the first token: after that, replaying would duplicate text
        the caller already showed.
        """
        check_request(request)
        body = _sendable(self._body(request, stream=True))
        attempt = 0
        while True:
            asm = _StreamAssembler(self.name)
            yielded = False
            try:
                with self.client.stream("POST", self.url, json=body) as r:
                    if r.status_code >= 400:
                        r.read()
                        raise _classify_status(r.status_code, r.text, self.name)
                    for line in r.iter_lines():
                        chunk = asm.feed(line)
                        if chunk is not None:
                            yielded = yielded or chunk.has_token
                            yield chunk
                    asm.end()
                yield StreamChunk(response=asm.response(), model=asm.model, id=asm.id)
                return
            except GeneratorExit:
                raise
            except TRANSPORT_ERRORS as exc:
                self._retry_or_raise(exc, attempt, yielded=yielded)
            time.sleep(self._delay(attempt))
            attempt += 1

    async def astream(self, request: Request) -> AsyncIterator[StreamChunk]:
        check_request(request)
        body = _sendable(self._body(request, stream=True))
        attempt = 0
        while True:
            asm = _StreamAssembler(self.name)
            yielded = False
            try:
                async with self.aclient.stream("POST", self.url, json=body) as r:
                    if r.status_code >= 400:
                        await r.aread()
                        raise _classify_status(r.status_code, r.text, self.name)
                    async for line in r.aiter_lines():
                        chunk = asm.feed(line)
                        if chunk is not None:
                            yielded = yielded or chunk.has_token
                            yield chunk
                    asm.end()
                yield StreamChunk(response=asm.response(), model=asm.model, id=asm.id)
                return
            except GeneratorExit:
                raise
            except TRANSPORT_ERRORS as exc:
                self._retry_or_raise(exc, attempt, yielded=yielded)
            await asyncio.sleep(self._delay(attempt))
            attempt += 1

    # -- discovery (OpenAI servers and llama.cpp both have /v1/models) -------------------------
    def list_models(self) -> list[str]:
        try:
            r = self.client.get(f"{self.base_url}/models")
        except TRANSPORT_ERRORS as exc:
            raise _classify_exception(exc, self.name) from exc
        if r.status_code >= 400:
            raise _classify_status(r.status_code, r.text, self.name)
        try:
            return [str(m["id"]) for m in r.json()["data"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise EndpointProtocolError(f"{self.name}: bad /models body", endpoint=self.name) from exc

    def health(self) -> bool:
        """Cheap liveness probe: ``/models`` answers. ``VLLMEndpoint`` uses ``/health`` instead."""
        try:
            self.list_models()
        except EndpointError:
            return False
        return True

    def metrics(self) -> EndpointMetrics | None:
        """Live load, when the server exports it (plain OpenAI-compatible servers do not)."""
        return None


# -- Prometheus text format -------------------------------------------------------------------------


def parse_prometheus(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Parse Prometheus text exposition into ``{metric: [(labels, value), ...]}``.

    Small on purpose: vLLM's ``/metrics`` is the only producer we read, and pulling in
    ``prometheus_client`` for its parser would be a dependency for twenty lines.
    """
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        labels: dict[str, str] = {}
        if "{" in line:
            name, rest = line.split("{", 1)
            label_str, _, value_part = rest.rpartition("}")
            for item in _split_labels(label_str):
                k, _, v = item.partition("=")
                labels[k.strip()] = v.strip().strip('"').replace('\\"', '"')
        else:
            name, _, value_part = line.partition(" ")
        fields = value_part.split()
        if not fields:
            continue
        try:
            value = float(fields[0])
        except ValueError:
            continue
        out.setdefault(name.strip(), []).append((labels, value))
    return out


def _split_labels(s: str) -> list[str]:
    items, cur, quoted, esc = [], [], False, False
    for ch in s:
        if esc:
            cur.append(ch)
            esc = False
        elif ch == "\\":
            cur.append(ch)
            esc = True
        elif ch == '"':
            quoted = not quoted
            cur.append(ch)
        elif ch == "," and not quoted:
            items.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        items.append("".join(cur))
    return [i for i in items if i.strip()]


def _metric(
    parsed: Mapping[str, list[tuple[dict[str, str], float]]], names: tuple[str, ...], model: str | None
) -> float | None:
    for name in names:
        for candidate in (name, f"{name}_total"):
            samples = parsed.get(candidate)
            if not samples:
                continue
            picked = [v for lab, v in samples if model is None or lab.get("model_name") in (None, model)]
            if picked:
                return float(sum(picked))
    return None


def metrics_from_prometheus(text: str, model: str | None = None) -> EndpointMetrics:
    """vLLM's metrics (v1 names first, the pre-0.7 ``gpu_cache_usage_perc`` as fallback)."""
    p = parse_prometheus(text)
    return EndpointMetrics(
        running=_metric(p, ("vllm:num_requests_running",), model),
        waiting=_metric(p, ("vllm:num_requests_waiting",), model),
        kv_cache_usage=_metric(p, ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"), model),
        prefix_cache_queries=_metric(
            p, ("vllm:prefix_cache_queries", "vllm:gpu_prefix_cache_queries"), model
        ),
        prefix_cache_hits=_metric(p, ("vllm:prefix_cache_hits", "vllm:gpu_prefix_cache_hits"), model),
    )


class VLLMEndpoint(OpenAICompatibleEndpoint):
    """A vLLM OpenAI server: adds ``/health``, ``/v1/models`` discovery, ``/metrics`` and ``cache_salt``.

    ``model=None`` discovers the served model from ``/v1/models`` on first use. The cache salt
    is derived from ``request.metadata["cache_salt"]`` or, failing that, the tenant, hashed so a
    tenant id never leaves the process in clear text; vLLM then only reuses prefix-cache blocks
    between requests with the same salt (its defence against cache-timing side channels).
    """

    def __init__(
        self, base_url: str, model: str | None = None, *, salt_by_tenant: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(base_url, model or "", **kwargs)
        self.salt_by_tenant = salt_by_tenant
        if model is None:
            self.name = kwargs.get("name") or f"vllm@{self.base_url}"

    @property
    def root_url(self) -> str:
        return self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url

    def discover(self) -> str:
        """The first served model id (what ``model=None`` resolves to)."""
        models = self.list_models()
        if not models:
            raise EndpointProtocolError(f"{self.name}: /v1/models lists no model", endpoint=self.name)
        self.model = models[0]
        return self.model

    def _body(self, request: Request, *, stream: bool) -> dict[str, Any]:
        if not self.model:
            self.discover()
        body = super()._body(request, stream=stream)
        salt = request.metadata.get("cache_salt")
        if salt is None and self.salt_by_tenant and request.tenant:
            tenant = f"tokenlean:{request.tenant}".encode("utf-8", "surrogatepass")
            salt = hashlib.sha256(tenant).hexdigest()[:32]
        if salt is not None:
            body["cache_salt"] = str(salt)
        return body

    def health(self) -> bool:
        try:
            r = self.client.get(f"{self.root_url}/health", timeout=2.0)
        except TRANSPORT_ERRORS:
            return False
        return r.status_code == 200

    async def ahealth(self) -> bool:
        try:
            r = await self.aclient.get(f"{self.root_url}/health", timeout=2.0)
        except TRANSPORT_ERRORS:
            return False
        return r.status_code == 200

    def metrics(self) -> EndpointMetrics | None:
        try:
            r = self.client.get(f"{self.root_url}/metrics", timeout=2.0)
        except TRANSPORT_ERRORS as exc:
            log.debug("%s: metrics scrape failed: %s", self.name, exc)
            return None
        if r.status_code != 200:
            return None
        return metrics_from_prometheus(r.text, self.model or None)
