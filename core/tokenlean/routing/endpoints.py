"""Endpoints: one OpenAI-compatible chat server, spoken to over httpx, sync or async.

Why one code path: the sync and async clients must retry, classify errors, parse usage and
assemble streams identically, or a chain behaves differently under ``ainvoke``. So parsing and
error typing live in ``tokenlean.routing.wire`` (no I/O), the retry decisions in one plan
(``OpenAICompatibleEndpoint._retries``, driven by ``tokenlean.routing.failover``), and
``complete``/``acomplete``/``stream``/``astream`` only differ in the one ``client`` call each
makes. ``VLLMEndpoint`` (``tokenlean.routing.vllm``) adds what a replica router needs from vLLM.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    InputError,
    MessageFormatError,
    StreamInterrupted,
    TextEncodingError,
)
from tokenlean.routing import failover
from tokenlean.routing.wire import (
    TRANSPORT_ERRORS,
    StreamChunk,
    _classify_exception,
    _classify_status,
    _parse_body,
    _StreamAssembler,
)
from tokenlean.types import Request, Response

__all__ = [
    "TRANSPORT_ERRORS",
    "Endpoint",
    "EndpointMetrics",
    "OpenAICompatibleEndpoint",
    "StreamChunk",
    "backoff_delay",
    "check_request",
]

log = logging.getLogger("tokenlean.routing.endpoints")


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


# -- request checks and backoff ------------------------------------------------------------------


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

    def _retries(self, body: dict[str, Any]) -> failover.Plan[dict[str, Any]]:
        """The retry plan of one call, shared by the four call styles: the same ``body`` again,
        after a jittered backoff, while the error is retryable and retries are left."""
        attempt = 0
        failed = yield failover.Attempt(body)
        while failed is not None:
            self._retry_or_raise(failed.error, attempt, yielded=failed.streamed)
            failed = yield failover.Attempt(body, self._delay(attempt))
            attempt += 1

    # -- the I/O of one attempt: the only part the sync and async twins do not share -------------
    def _answer(self, r: httpx.Response, t0: float) -> Response:
        if r.status_code >= 400:
            raise _classify_status(r.status_code, r.text, self.name)
        return _parse_body(r.content, self.name, time.monotonic() - t0)

    def _post(self, body: dict[str, Any]) -> Response:
        t0 = time.monotonic()
        return self._answer(self.client.post(self.url, json=body), t0)

    async def _apost(self, body: dict[str, Any]) -> Response:
        t0 = time.monotonic()
        return self._answer(await self.aclient.post(self.url, json=body), t0)

    def _stream_once(self, body: dict[str, Any]) -> Iterator[StreamChunk]:
        asm = _StreamAssembler(self.name)
        with self.client.stream("POST", self.url, json=body) as r:
            if r.status_code >= 400:
                r.read()
                raise _classify_status(r.status_code, r.text, self.name)
            for line in r.iter_lines():
                chunk = asm.feed(line)
                if chunk is not None:
                    yield chunk
            asm.end()
        yield asm.last()

    async def _astream_once(self, body: dict[str, Any]) -> AsyncIterator[StreamChunk]:
        asm = _StreamAssembler(self.name)
        async with self.aclient.stream("POST", self.url, json=body) as r:
            if r.status_code >= 400:
                await r.aread()
                raise _classify_status(r.status_code, r.text, self.name)
            async for line in r.aiter_lines():
                chunk = asm.feed(line)
                if chunk is not None:
                    yield chunk
            asm.end()
        yield asm.last()

    # -- calls ------------------------------------------------------------------------------------
    def complete(self, request: Request) -> Response:
        check_request(request)
        body = _sendable(self._body(request, stream=False))
        return failover.call(self._retries(body), self._post, TRANSPORT_ERRORS)

    async def acomplete(self, request: Request) -> Response:
        check_request(request)
        body = _sendable(self._body(request, stream=False))
        return await failover.acall(self._retries(body), self._apost, TRANSPORT_ERRORS)

    def stream(self, request: Request) -> Iterator[StreamChunk]:
        """Yield deltas, then one last ``StreamChunk`` whose ``response`` is the assembled answer.

        Retries happen only before the first token: after that, replaying would duplicate text
        the caller already showed.
        """
        check_request(request)
        body = _sendable(self._body(request, stream=True))
        yield from failover.stream(self._retries(body), self._stream_once, TRANSPORT_ERRORS)

    async def astream(self, request: Request) -> AsyncIterator[StreamChunk]:
        check_request(request)
        body = _sendable(self._body(request, stream=True))
        # closed with this generator, so the attempt in flight ends now, not when it is collected
        async with contextlib.aclosing(
            failover.astream(self._retries(body), self._astream_once, TRANSPORT_ERRORS)
        ) as chunks:
            async for chunk in chunks:
                yield chunk

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
