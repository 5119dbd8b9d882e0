"""Sending a request upstream: replica choice, sticky sessions, failover, streams that never lie.

Why the gateway moves bytes itself instead of calling ``OpenAICompatibleEndpoint``: a gateway
must hand the client what the upstream said, unknown fields included, and relay a stream chunk by
chunk as it arrives. The endpoint classes parse answers into tokenlean's types; here the upstream's
JSON and SSE lines are relayed as they came and only *read* on the way (usage, the answer text
for the cache, whether a token has been sent yet).

Failover rules (the same for every call):

* A candidate is a replica of the chosen target, then the replicas of each fallback, in order. A
  session (``x-tokenlean-session``) goes first to the replica that served it before (its prefix is
  in that server's cache); other calls go to the replica with the fewest calls in flight.
* Connection errors, timeouts, 5xx and 429 move on to the next candidate; the replica is skipped
  for a while (``retry-after`` when the upstream sent one). Other 4xx answers are the client's
  problem and are returned as they are.
* A stream fails over only before its first token. After it, a break is reported to the client
  as an error event (``data: {"error": ...}``, which the OpenAI SDKs raise), never as a silently
  shorter answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from tokenlean.gateway.config import GatewayConfig, UpstreamConfig

__all__ = ["Candidate", "Replica", "StreamOutcome", "UpstreamAnswer", "UpstreamPool"]

log = logging.getLogger("tokenlean.gateway")

#: How long a replica that failed (5xx, refused, timed out) is skipped, in seconds.
EJECT_S = 5.0
#: The longest ``retry-after`` honoured when skipping a rate-limited replica.
MAX_RETRY_AFTER_S = 60.0
_STICKY_MAX = 100_000


@dataclass
class Replica:
    upstream: str
    base_url: str
    inflight: int = 0
    skip_until: float = 0.0
    calls: int = 0
    failures: int = 0

    @property
    def name(self) -> str:
        return f"{self.upstream}@{self.base_url}"


@dataclass(frozen=True)
class Candidate:
    replica: Replica
    config: UpstreamConfig


@dataclass
class UpstreamAnswer:
    """A non-streamed answer as the upstream sent it (or the last failure when all failed)."""

    status: int
    body: bytes
    headers: dict[str, str]
    replica: Replica | None
    attempts: list[str] = field(default_factory=list)

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


@dataclass
class StreamOutcome:
    """What a relayed stream carried, read on the way (filled while it is relayed)."""

    replica: Replica | None = None
    attempts: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    tool_calls: bool = False
    #: Tool-call names and argument pieces as streamed (they count as output tokens too).
    tool_text: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    model: str | None = None
    first_token_at: float | None = None
    error: str | None = None
    status: int = 200


def error_body(message: str, code: str, kind: str = "tokenlean_error") -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "code": code}}).encode()


def _retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        return None


class UpstreamPool:
    """Every upstream's replicas and the one HTTP client that talks to them."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.replicas: dict[str, list[Replica]] = {
            name: [Replica(name, url) for url in up.base_urls] for name, up in config.upstreams.items()
        }
        self._sticky: OrderedDict[str, Replica] = OrderedDict()
        #: The sticky map shared with other gateway processes (``shared.redis``), or None.
        self.shared_sticky: Any = None
        self._client: httpx.AsyncClient | None = None
        self._keys: dict[str, str | None] = {name: up.api_key() for name, up in config.upstreams.items()}

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
                timeout=httpx.Timeout(120.0, connect=5.0),
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- choosing --------------------------------------------------------------------------------
    def candidates(
        self,
        target: str,
        fallbacks: list[str],
        session: str | None,
        sticky: bool,
        pinned_url: str | None = None,
    ) -> list[Candidate]:
        """Whom to try, in order. ``pinned_url``: the replica a shared sticky map named for the
        session (another process served its last turn); else this process's own map."""
        now = time.monotonic()
        out: list[Candidate] = []
        pinned = self._sticky.get(session) if (sticky and session) else None
        if sticky and pinned_url is not None:
            pinned = next(
                (r for rs in self.replicas.values() for r in rs if r.base_url == pinned_url), pinned
            )
        for name in [target, *[f for f in fallbacks if f != target]]:
            cfg = self.config.upstreams[name]
            group = sorted(self.replicas[name], key=lambda r: (r.skip_until > now, r.inflight, r.calls))
            if pinned is not None and pinned in group and pinned.skip_until <= now:
                group.remove(pinned)
                group.insert(0, pinned)
            out.extend(Candidate(r, cfg) for r in group)
        return out

    def _stick(self, session: str | None, replica: Replica) -> None:
        if not session:
            return
        if self.shared_sticky is not None and self._sticky.get(session) is not replica:
            self.shared_sticky.set(session, replica.base_url)
        self._sticky[session] = replica
        self._sticky.move_to_end(session)
        while len(self._sticky) > _STICKY_MAX:
            self._sticky.popitem(last=False)

    def _failed(self, replica: Replica, seconds: float | None) -> None:
        replica.failures += 1
        replica.skip_until = time.monotonic() + (EJECT_S if seconds is None else seconds)

    def _headers(self, cand: Candidate, client_auth: str | None) -> dict[str, str]:
        key = self._keys[cand.replica.upstream]
        if key:
            return {"authorization": f"Bearer {key}"}
        if client_auth and self.config.keys == []:  # an open gateway passes the caller's key on
            return {"authorization": client_auth}
        return {}

    @staticmethod
    def _body(cand: Candidate, body: dict[str, Any]) -> dict[str, Any]:
        if cand.config.model is not None and body.get("model") != cand.config.model:
            body = {**body, "model": cand.config.model}
        return body

    # -- one answer ------------------------------------------------------------------------------
    def _answer(
        self, resp: httpx.Response, headers: dict[str, str], r: Replica, attempts: list[str]
    ) -> tuple[UpstreamAnswer, bool]:
        """The answer as received, and whether to try the next candidate (429, 5xx: the replica
        is skipped for a while, for its ``retry-after`` when it sent one)."""
        answer = UpstreamAnswer(resp.status_code, resp.content, headers, r, attempts)
        if resp.status_code == 429 or resp.status_code >= 500:
            log.warning("upstream %s answered %d", r.name, resp.status_code)
            self._failed(r, _retry_after(resp.headers))
            return answer, True
        return answer, False

    async def complete(
        self,
        body: dict[str, Any],
        candidates: list[Candidate],
        *,
        session: str | None,
        client_auth: str | None,
    ) -> UpstreamAnswer:
        last: UpstreamAnswer | None = None
        attempts: list[str] = []
        for cand in candidates:
            r = cand.replica
            attempts.append(r.name)
            r.inflight += 1
            r.calls += 1
            try:
                resp = await self.client.post(
                    f"{r.base_url}/chat/completions",
                    json=self._body(cand, body),
                    headers=self._headers(cand, client_auth),
                    timeout=httpx.Timeout(cand.config.timeout, connect=cand.config.connect_timeout),
                )
            except (httpx.HTTPError, OSError) as exc:
                log.warning("upstream %s failed: %s", r.name, type(exc).__name__)
                self._failed(r, None)
                last = UpstreamAnswer(
                    502,
                    error_body(
                        f"upstream {r.upstream} unreachable: {type(exc).__name__}", "upstream_unavailable"
                    ),
                    {},
                    r,
                )
                continue
            finally:
                r.inflight -= 1
            headers = {k: v for k, v in resp.headers.items() if k.lower() in ("retry-after", "content-type")}
            answer, retry = self._answer(resp, headers, r, attempts)
            if retry:
                last = answer
                continue
            if resp.status_code < 400:
                self._stick(session, r)
            return answer
        if last is None:
            last = UpstreamAnswer(502, error_body("no upstream to send to", "no_upstream"), {}, None)
        last.attempts = attempts
        return last

    # -- a stream --------------------------------------------------------------------------------
    async def stream(
        self,
        body: dict[str, Any],
        candidates: list[Candidate],
        outcome: StreamOutcome,
        *,
        session: str | None,
        client_auth: str | None,
        relay_usage: bool,
    ) -> AsyncIterator[bytes]:
        """SSE bytes for the client. Fails over until a first token has been relayed."""
        body = {
            **body,
            "stream": True,
            "stream_options": {**(body.get("stream_options") or {}), "include_usage": True},
        }
        for cand in candidates:
            r = cand.replica
            outcome.attempts.append(r.name)
            r.inflight += 1
            r.calls += 1
            committed = False
            try:
                req = self.client.build_request(
                    "POST",
                    f"{r.base_url}/chat/completions",
                    json=self._body(cand, body),
                    headers=self._headers(cand, client_auth),
                    timeout=httpx.Timeout(cand.config.timeout, connect=cand.config.connect_timeout),
                )
                first_wait = cand.config.first_token_timeout or cand.config.timeout
                resp = await asyncio.wait_for(self.client.send(req, stream=True), first_wait)
                try:
                    if resp.status_code >= 400:
                        content = await resp.aread()
                        if resp.status_code == 429 or resp.status_code >= 500:
                            self._failed(r, _retry_after(resp.headers))
                            outcome.status, outcome.error = (
                                resp.status_code,
                                content.decode("utf-8", "replace")[:500],
                            )
                            continue
                        outcome.status, outcome.error = (
                            resp.status_code,
                            content.decode("utf-8", "replace")[:500],
                        )
                        yield (
                            b"data: "
                            + (content if content.strip() else error_body("upstream error", "upstream_error"))
                            + b"\n\n"
                        )
                        return
                    held: list[bytes] = []
                    lines = resp.aiter_lines()
                    deadline = time.monotonic() + first_wait
                    while True:
                        if committed:
                            line = await lines.__anext__()
                        else:
                            line = await asyncio.wait_for(
                                lines.__anext__(), max(deadline - time.monotonic(), 0.001)
                            )
                        out, token = self._read_line(line, outcome, relay_usage)
                        if out is None:
                            continue
                        if out == b"data: [DONE]\n\n":
                            outcome.error, outcome.status = None, 200  # earlier failed tries are history
                            if not committed:
                                for h in held:
                                    yield h
                                committed = True
                            self._stick(session, r)
                            outcome.replica = r
                            yield out
                            return
                        if committed:
                            yield out
                        elif token:
                            committed = True
                            outcome.error, outcome.status = None, 200
                            outcome.first_token_at = time.time()
                            outcome.replica = r
                            for h in held:
                                yield h
                            yield out
                        else:
                            held.append(out)
                finally:
                    await resp.aclose()
            except StopAsyncIteration:
                # the upstream closed the stream without [DONE]
                if committed or outcome.finish_reason is not None:
                    outcome.replica = r
                    if outcome.finish_reason is None:
                        outcome.error = "upstream stream ended before the answer was complete"
                        yield _error_event(outcome.error, "stream_interrupted")
                    else:
                        yield b"data: [DONE]\n\n"
                    return
                self._failed(r, None)
                outcome.text.clear()
                continue
            except (TimeoutError, httpx.HTTPError, OSError) as exc:
                log.warning("upstream %s stream failed: %s", r.name, type(exc).__name__)
                self._failed(r, None)
                if committed:
                    outcome.replica = r
                    outcome.error = f"upstream stream broke after the first token ({type(exc).__name__}): the answer is incomplete"
                    yield _error_event(outcome.error, "stream_interrupted")
                    return
                outcome.text.clear()
                outcome.status = 502
                continue
            finally:
                r.inflight -= 1
        # every candidate failed before a first token
        msg = outcome.error or "every upstream failed before the first token"
        outcome.error = msg
        yield _error_event(f"no upstream could answer: {msg}", "upstream_unavailable")

    @staticmethod
    def _read_line(line: str, outcome: StreamOutcome, relay_usage: bool) -> tuple[bytes | None, bool]:
        """The bytes to relay for one SSE line (None: nothing), and whether it carries a token."""
        if not line.startswith("data:"):
            return None, False  # blank separators, comments, event names: re-framed below
        data = line[5:].strip()
        if data == "[DONE]":
            return b"data: [DONE]\n\n", False
        try:
            chunk = json.loads(data)
        except ValueError:
            return ("data: " + data + "\n\n").encode(), False
        token = False
        if isinstance(chunk, dict):
            if chunk.get("model"):
                outcome.model = chunk["model"]
            usage = chunk.get("usage")
            if isinstance(usage, dict):
                outcome.usage = usage
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    outcome.text.append(delta["content"])
                    token = True
                if delta.get("tool_calls"):
                    outcome.tool_calls = True
                    token = True
                    for call in delta["tool_calls"]:
                        fn = (call.get("function") or {}) if isinstance(call, dict) else {}
                        outcome.tool_text.extend(str(fn.get(k) or "") for k in ("name", "arguments"))
                if choice.get("finish_reason"):
                    outcome.finish_reason = choice["finish_reason"]
            if not relay_usage and usage is not None and not chunk.get("choices"):
                return None, False  # the usage chunk the client did not ask for
            if not relay_usage and isinstance(usage, dict) and chunk.get("choices"):
                chunk = {k: v for k, v in chunk.items() if k != "usage"}
                return ("data: " + json.dumps(chunk) + "\n\n").encode(), token
        return ("data: " + data + "\n\n").encode(), token

    # -- Anthropic's Messages API, sent as the client sent it -------------------------------------
    async def messages(
        self,
        raw: bytes,
        body: dict[str, Any],
        candidates: list[Candidate],
        client_headers: dict[str, str],
        *,
        stream: bool,
    ) -> tuple[UpstreamAnswer, httpx.Response | None]:
        """``POST {base_url}/messages`` with ``raw``, the client's bytes (re-encoded only where the
        upstream names its own ``model``), ``anthropic-version``/``anthropic-beta`` passed through
        and the upstream's key as ``x-api-key``. Failover as in ``complete``. A 2xx stream comes
        back open (second item): the caller relays it, closes it and decrements the replica's
        ``inflight``. Failures of the gateway's own are in Anthropic's error shape."""
        last: UpstreamAnswer | None = None
        attempts: list[str] = []
        for cand in candidates:
            r, cfg = cand.replica, cand.config
            attempts.append(r.name)
            version = client_headers.get("anthropic-version") or "2023-06-01"
            headers = {"content-type": "application/json", "anthropic-version": version}
            if client_headers.get("anthropic-beta"):
                headers["anthropic-beta"] = client_headers["anthropic-beta"]
            key = self._keys[r.upstream]
            if key:
                headers["x-api-key"] = key
            elif not self.config.keys:  # an open gateway passes the caller's key on
                headers.update(
                    {k: v for k, v in client_headers.items() if k in ("x-api-key", "authorization")}
                )
            sent = self._body(cand, body)
            r.inflight += 1
            r.calls += 1
            resp: httpx.Response | None = None
            try:
                req = self.client.build_request(
                    "POST",
                    f"{r.base_url}/messages",
                    content=raw if sent is body else json.dumps(sent).encode(),
                    headers=headers,
                    timeout=httpx.Timeout(cfg.timeout, connect=cfg.connect_timeout),
                )
                wait = (cfg.first_token_timeout or cfg.timeout) if stream else None
                resp = await asyncio.wait_for(self.client.send(req, stream=True), wait)
                kept = {k: v for k, v in resp.headers.items() if k in _RELAYED or k.startswith("anthropic-")}
                if stream and resp.status_code < 400:
                    return UpstreamAnswer(resp.status_code, b"", kept, r, attempts), resp
                await resp.aread()
            except (TimeoutError, httpx.HTTPError, OSError) as exc:
                log.warning("upstream %s failed: %s", r.name, type(exc).__name__)
                self._failed(r, None)
                message = f"upstream {r.upstream} unreachable: {type(exc).__name__}"
                last = UpstreamAnswer(502, _anthropic_error(message), {}, r)
                continue
            finally:
                if resp is None or not stream or resp.status_code >= 400:  # else: still in flight
                    r.inflight -= 1
                    if resp is not None:
                        await resp.aclose()
            answer, retry = self._answer(resp, kept, r, attempts)
            if retry:
                last = answer
                continue
            return answer, None
        if last is None:
            last = UpstreamAnswer(
                502, _anthropic_error("no upstream speaking Anthropic's API to send to"), {}, None
            )
        last.attempts = attempts
        return last, None


#: The response headers of an Anthropic upstream relayed to the client (with every ``anthropic-*``).
_RELAYED = ("content-type", "retry-after", "request-id")


def _anthropic_error(message: str) -> bytes:
    return json.dumps({"type": "error", "error": {"type": "api_error", "message": message}}).encode()


def _error_event(message: str, code: str) -> bytes:
    return b"data: " + error_body(message, code, "stream_error") + b"\n\n"
