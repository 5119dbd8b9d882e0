"""The ASGI application of ``tokenlean serve``: OpenAI's chat API in front of any upstream.

Why a gateway: the levers otherwise reach only Python code that uses LangChain or LlamaIndex.
Behind this app, any client that speaks OpenAI's chat API (the ``openai`` SDKs, other languages,
coding agents) gets metering, the cache, layout, compaction and routing by changing its base URL.

Contract with the client:

* Where no lever acts, the request body goes upstream as the client sent it (the model name aside,
  when the upstream is configured with its own) and the answer comes back as the upstream sent it:
  unknown fields ride along both ways.
* Response headers say what happened: ``x-tokenlean-cache`` (``hit``, ``miss``, or ``bypass`` when
  the cache was not consulted), ``x-tokenlean-route`` (the target that answered, ``cache`` for a
  hit), ``x-tokenlean-tokens-saved`` (input tokens compaction removed, or the tokens a hit did not
  spend). ``x-tokenlean-bypass: 1`` turns every lever off for one request (metering stays on).
* ``x-tokenlean-task`` / ``x-tokenlean-session`` group calls into tasks without code changes; a
  session also keeps its replica (sticky routing) and its incremental compaction.
* A cache hit reports zero usage: nothing was billed. The replayed call's tokens are in the
  ledger (``cache_hit``) and in ``x-tokenlean-tokens-saved``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from tokenlean import __version__
from tokenlean.errors import GatewayError, InputError, UnknownHandleError
from tokenlean.gateway.config import GatewayConfig, KeyConfig, RouteConfig, load_config
from tokenlean.gateway.keys import Budgets, KeyRing, call_tags, tenant_of
from tokenlean.gateway.pipeline import Levers, Shaped, bypass_requested
from tokenlean.gateway.upstream import Replica, StreamOutcome, UpstreamPool, error_body
from tokenlean.metering import UNTRACKED, UsageRecord, to_prometheus
from tokenlean.metering.exporters import prometheus_text
from tokenlean.metering.summary import summarize
from tokenlean.types import Request

__all__ = ["Gateway", "app_from_env", "create_app"]

log = logging.getLogger("tokenlean.gateway")

#: The environment variable ``tokenlean serve`` uses to hand its config file to uvicorn workers.
CONFIG_ENV = "TOKENLEAN_GATEWAY_CONFIG"


def _error(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> Response:
    return Response(
        error_body(message, code, "invalid_request_error" if status < 500 else "tokenlean_error"),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


@dataclass
class _Call:
    """One chat request as the gateway handles it: what the client sent and who sent it."""

    body: dict[str, Any]
    request: Request
    key: KeyConfig | None
    tenant: str | None
    session: str | None
    task: str | None
    tags: dict[str, str]
    stream: bool
    relay_usage: bool
    started: float = field(default_factory=time.time)
    shaped: Shaped | None = None
    store: bool = False
    #: The client's trace context (OpenTelemetry on): the ledger records under it.
    trace: Any = None

    @contextlib.contextmanager
    def traced(self) -> Iterator[None]:
        """Record inside the client's trace context, when there is one."""
        if self.trace is None:
            yield
            return
        from opentelemetry import context

        token = context.attach(self.trace)
        try:
            yield
        finally:
            context.detach(token)


class Gateway:
    """The state behind the app: config, keys and budgets, levers, upstreams."""

    def __init__(self, config: GatewayConfig, *, levers: Levers | None = None) -> None:
        self.config = config
        self.keys = KeyRing(config.keys)
        self.budgets: Any = Budgets()
        self.levers = levers if levers is not None else Levers(config)
        self.pool = UpstreamPool(config)
        #: The shared store's pieces (``shared.redis``), or None: one process, its own state.
        self.shared: Any = None
        if config.shared.redis is not None:
            from tokenlean.gateway import shared

            client = shared.redis_client(config.shared.redis)
            self.background = shared.Background()
            self.budgets = shared.RedisBudgets(client, config.shared, self.background)
            self.shared = shared.RedisUsage(client, config.shared, self.background)
            self.levers.meter.ledger.add_sink(self.shared)
            self.pool.shared_sticky = shared.RedisSticky(client, config.shared, self.background)
        if config.server.otel:
            from tokenlean.metering.otel import enable_otel

            enable_otel(self.levers.meter)
        self.started = time.time()

    # -- the request -----------------------------------------------------------------------------
    async def read_json(self, http: HttpRequest) -> dict[str, Any] | Response:
        """The request's JSON object, or the error response (413 over the size limit, 400)."""
        limit = self.config.server.max_body_bytes
        declared = http.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return _error(413, f"request body over {limit} bytes", "request_too_large")
        raw = await http.body()
        if len(raw) > limit:
            return _error(413, f"request body over {limit} bytes", "request_too_large")
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(400, "the request body is not JSON", "invalid_json")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "a chat request is a JSON object with a 'messages' list", "invalid_request")
        return body

    def authenticate(self, headers: Mapping[str, str]) -> KeyConfig | None:
        """The caller's virtual key: ``Authorization: Bearer <key>`` (OpenAI clients) or
        ``x-api-key: <key>`` (Anthropic clients)."""
        auth = headers.get("authorization")
        if not auth and headers.get("x-api-key"):
            auth = f"Bearer {headers['x-api-key']}"
        return self.keys.authenticate(auth)

    async def admit(self, headers: Mapping[str, str], model: Any) -> tuple[KeyConfig | None, RouteConfig]:
        """Key, route and budget checks for a request naming ``model`` (``GatewayError``)."""
        if self.shared is None:
            return self._admit(headers, model)
        # the budget check is a round trip to the shared store: off the event loop
        return await run_in_threadpool(self._admit, headers, model)

    def _admit(self, headers: Mapping[str, str], model: Any) -> tuple[KeyConfig | None, RouteConfig]:
        key = self.authenticate(headers)
        if not isinstance(model, str) or not model:
            raise GatewayError("'model' is required", code="invalid_request")
        route = self.config.route_for(model)
        if route is None:
            raise GatewayError(f"no route serves model {model!r}", status=404, code="model_not_found")
        self.keys.allow(key, route)
        self.budgets.admit(key)
        return key, route

    async def chat(self, http: HttpRequest) -> Response:
        body = await self.read_json(http)
        if isinstance(body, Response):
            return body
        try:
            key, route = await self.admit(http.headers, body.get("model"))
        except GatewayError as exc:
            return _error(exc.status, str(exc), exc.code)
        return await self.serve_chat(body, http.headers, key, route)

    async def serve_chat(
        self, body: dict[str, Any], h: Mapping[str, str], key: KeyConfig | None, route: RouteConfig
    ) -> Response:
        """The pipeline for one OpenAI chat body from an admitted caller (JSON or SSE response)."""
        bypass = bypass_requested(h)
        session = h.get("x-tokenlean-session") or None
        tenant = tenant_of(key)
        try:
            request = Request.from_openai(body, metadata={"tenant": tenant} if tenant else None)
        except InputError as exc:
            return _error(400, str(exc), "invalid_request")
        stream = body.get("stream") is True
        call = _Call(
            body=body,
            request=request,
            key=key,
            tenant=tenant,
            session=session,
            task=h.get("x-tokenlean-task") or session,
            tags=call_tags(key, route),
            stream=stream,
            relay_usage=bool((body.get("stream_options") or {}).get("include_usage")) if stream else True,
        )
        if self.config.server.otel:  # the span of this call joins the client's trace
            from opentelemetry import propagate

            call.trace = propagate.extract(dict(h))
        if self.config.server.log_prompts:
            log.info("request %s: %s", call.tags, json.dumps(body.get("messages"))[:4000])

        cache_state, result = await self.look_up(route, request, tenant, bypass)
        if result is not None and result.hit:
            return self._replay(result, call)

        if bypass or not (route.layout or route.compaction or route.rules):
            shaped = Shaped(
                body=body, target=route.targets[0], reason="bypass" if bypass else "route default"
            )
        else:  # CPU work (tokenizing, scoring): off the event loop
            shaped = await run_in_threadpool(self.levers.shape, route, body, request, session, tenant)
        call.shaped, call.store = shaped, cache_state == "miss"
        pinned = None
        if session and route.sticky and self.pool.shared_sticky is not None:
            pinned = await run_in_threadpool(self.pool.shared_sticky.get, session)
        candidates = self.pool.candidates(shaped.target, route.fallbacks, session, route.sticky, pinned)
        headers = {
            "x-tokenlean-cache": cache_state,
            "x-tokenlean-route": shaped.target,
            "x-tokenlean-tokens-saved": str(shaped.tokens_saved),
        }
        auth = h.get("authorization")
        if stream:
            outcome = StreamOutcome()
            relay = self.pool.stream(
                shaped.body,
                candidates,
                outcome,
                session=session,
                client_auth=auth,
                relay_usage=call.relay_usage,
            )
            return StreamingResponse(
                self._relay(relay, outcome, call),
                media_type="text/event-stream",
                headers={**headers, "cache-control": "no-cache"},
            )
        answer = await self.pool.complete(shaped.body, candidates, session=session, client_auth=auth)
        data = answer.json() if answer.status < 400 else None
        if isinstance(data, dict):
            self._record(call, str(data.get("model") or body["model"]), data.get("usage"), answer.replica)
            if call.store:
                await run_in_threadpool(self.levers.store, request, data, None, tenant)
        if answer.replica is not None:
            headers["x-tokenlean-replica"] = answer.replica.base_url
        return Response(
            answer.body,
            status_code=answer.status,
            headers={**answer.headers, **headers},
            media_type=answer.headers.get("content-type", "application/json"),
        )

    async def look_up(
        self, route: RouteConfig, request: Request | None, tenant: str | None, bypass: bool
    ) -> tuple[str, Any]:
        """``("miss", result)`` when the cache was consulted (``result.hit`` says whether it
        answered), else ``("bypass", None)``: cache off for the route, bypass asked, a request
        the cache cannot key (None) or a sampled one, or a cache that failed (logged)."""
        cache = self.levers.cache
        if (
            not route.cache
            or bypass
            or cache is None
            or request is None
            or cache.sampling(request) is not None
        ):
            return "bypass", None
        result = await run_in_threadpool(self.levers.lookup, request, tenant)
        return ("bypass", None) if result is None else ("miss", result)

    def _record(
        self,
        call: _Call,
        model: str,
        usage: Any,
        replica: Replica | None,
        first_token_at: float | None = None,
        **extra: Any,
    ) -> None:
        """The ledger entry of an upstream call, charged to the key's budget."""
        with call.traced():
            tokens, cost = self.levers.record(
                model=model,
                usage=usage,
                endpoint=replica.base_url if replica is not None else None,
                task=call.task,
                tags={**call.tags, "target": call.shaped.target if call.shaped else "-"},
                started_at=call.started,
                first_token_at=first_token_at,
                extra={
                    "request_model": call.body["model"],
                    "tokens_saved": call.shaped.tokens_saved if call.shaped else 0,
                    **extra,
                },
            )
        self.budgets.charge(call.key, tokens, cost)

    async def _relay(
        self, chunks: AsyncIterator[bytes], outcome: StreamOutcome, call: _Call
    ) -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            # The client may hang up as soon as it has read [DONE]; Starlette then cancels this
            # generator's scope. Metering and the cache store must still happen: shielded.
            with anyio.CancelScope(shield=True):
                await self._finish(outcome, call)

    async def _finish(self, outcome: StreamOutcome, call: _Call) -> None:
        """After a relayed stream: the cache, the ledger, the key's budget."""
        if outcome.replica is None:
            return
        text = "".join(outcome.text)
        if (
            call.store
            and outcome.error is None
            and outcome.finish_reason is not None
            and not outcome.tool_calls
        ):
            answer = {
                "model": outcome.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": outcome.finish_reason,
                    }
                ],
                "usage": outcome.usage,
            }
            await run_in_threadpool(self.levers.store, call.request, answer, list(outcome.text), call.tenant)
        extra: dict[str, Any] = {"error": outcome.error} if outcome.error else {}
        usage = outcome.usage
        if not usage:  # a server that does not report stream usage (llama.cpp): counted here
            assert call.shaped is not None
            usage = await run_in_threadpool(
                self.levers.estimate_usage, call.shaped.body, text + "".join(outcome.tool_text)
            )
            extra["usage_estimated"] = True
        self._record(
            call,
            outcome.model or str(call.body["model"]),
            usage,
            outcome.replica,
            outcome.first_token_at,
            **extra,
        )

    def _replay(self, result: Any, call: _Call) -> Response:
        """A cache hit, in the shape the client asked for (JSON or SSE), with zero usage."""
        response = result.response
        replayed = response.usage if response is not None else None
        saved = replayed.total_tokens if replayed is not None else 0
        with call.traced():
            self.levers.record(
                model=str((response.model if response is not None else None) or call.body["model"]),
                usage=replayed.to_openai() if replayed is not None else None,
                endpoint=None,
                task=call.task,
                tags={**call.tags, "target": "cache"},
                started_at=call.started,
                cache_hit=True,
                extra={"request_model": call.body["model"]},
            )
        headers = {
            "x-tokenlean-cache": "hit",
            "x-tokenlean-route": "cache",
            "x-tokenlean-tokens-saved": str(saved),
        }
        cid, created = f"chatcmpl-tl-{uuid.uuid4().hex[:24]}", int(time.time())
        model = str(call.body["model"])
        text = result.text or ""
        zero = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        if not call.stream:
            message = (
                response.message.to_openai()
                if response is not None
                else {"role": "assistant", "content": text}
            )
            data = {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": (response.finish_reason if response else None) or "stop",
                        "logprobs": None,
                    }
                ],
                "usage": zero,
            }
            return JSONResponse(data, headers=headers)

        def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
            chunk = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        async def replay() -> AsyncIterator[bytes]:
            yield event({"role": "assistant", "content": ""})
            for piece in result.chunks or [text]:
                yield event({"content": piece})
            yield event({}, (response.finish_reason if response else None) or "stop")
            if call.relay_usage:
                chunk = {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": zero,
                }
                yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(
            replay(), media_type="text/event-stream", headers={**headers, "cache-control": "no-cache"}
        )

    # -- the other endpoints ---------------------------------------------------------------------
    async def models(self, http: HttpRequest) -> Response:
        try:
            self.authenticate(http.headers)
        except GatewayError as exc:
            return _error(exc.status, str(exc), exc.code)
        names: list[str] = []
        for route in self.config.routes:
            if not any(c in route.match for c in "*?["):
                names.append(route.match)
        for up in self.config.upstreams.values():
            if up.model is not None:
                names.append(up.model)
        data = [
            {"id": n, "object": "model", "created": int(self.started), "owned_by": "tokenlean"}
            for n in dict.fromkeys(names)
        ]
        return JSONResponse({"object": "list", "data": data})

    async def health(self, http: HttpRequest) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "version": __version__,
                "upstreams": {n: [r.name for r in rs] for n, rs in self.pool.replicas.items()},
            }
        )

    async def metrics(self, http: HttpRequest) -> Response:
        if self.shared is not None:  # every process's calls, per model
            text = prometheus_text(("model",), await run_in_threadpool(self.shared.by_model))
        else:
            text = to_prometheus(self.levers.meter.ledger, by_task=self.config.server.metrics_by_task)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    async def usage(self, http: HttpRequest) -> Response:
        try:
            key = self.authenticate(http.headers)
        except GatewayError as exc:
            return _error(exc.status, str(exc), exc.code)
        if self.shared is not None:
            return JSONResponse(await run_in_threadpool(self._shared_usage, key))
        records = self.levers.meter.ledger.records()
        if key is not None:  # a key sees its own calls only
            records = [r for r in records if r.tags.get("key") == key.name]

        def report(group: Callable[[UsageRecord], str]) -> dict[str, dict[str, Any]]:
            groups: dict[str, list[UsageRecord]] = {}
            for r in records:
                groups.setdefault(group(r), []).append(r)
            return {
                name: {
                    **summarize(name, rs).to_dict(),
                    "tokens_saved": sum(int(r.extra.get("tokens_saved", 0)) for r in rs),
                }
                for name, rs in groups.items()
            }

        keys = report(lambda r: r.tags.get("key", "anonymous"))
        for name, summary in keys.items():
            if name != "anonymous":
                summary["today"] = self.budgets.spent(name)
        return JSONResponse({"keys": keys, "tasks": report(lambda r: r.task_id or UNTRACKED)})

    def _shared_usage(self, key: KeyConfig | None) -> dict[str, Any]:
        """``/v1/usage`` from the shared counters (every process's calls; no percentiles)."""
        self.background.flush(2.0)  # this process's own latest calls included
        keys = self.shared.summaries("key", [key.name] if key is not None else None)
        tasks = self.shared.summaries("task", self.shared.tasks_of(key.name) if key is not None else None)
        for name, summary in keys.items():
            if name != "anonymous":
                summary["today"] = self.budgets.spent(name)
        return {"keys": keys, "tasks": tasks}

    async def omission(self, http: HttpRequest) -> Response:
        try:
            self.authenticate(http.headers)
        except GatewayError as exc:
            return _error(exc.status, str(exc), exc.code)
        handle = http.path_params["handle"]
        try:
            text = await run_in_threadpool(self.levers.expand, handle)
        except UnknownHandleError:
            return _error(404, f"unknown omission handle {handle!r}", "unknown_handle")
        return JSONResponse({"handle": handle, "text": text})

    async def aclose(self) -> None:
        await self.pool.aclose()
        self.levers.close()
        if self.shared is not None:
            self.background.close()


def create_app(config: GatewayConfig | None = None, *, levers: Levers | None = None) -> Starlette:
    """The gateway as an ASGI app (``uvicorn.run(create_app(cfg))``); ``app.state.gateway`` holds it."""
    from tokenlean.gateway.anthropic import endpoint as anthropic_endpoint

    gateway = Gateway(config if config is not None else load_config(), levers=levers)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await gateway.aclose()

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", gateway.chat, methods=["POST"]),
            Route("/chat/completions", gateway.chat, methods=["POST"]),
            Route("/v1/messages", anthropic_endpoint(gateway), methods=["POST"]),
            Route("/v1/models", gateway.models, methods=["GET"]),
            Route("/health", gateway.health, methods=["GET"]),
            Route("/metrics", gateway.metrics, methods=["GET"]),
            Route("/v1/usage", gateway.usage, methods=["GET"]),
            Route("/v1/tokenlean/omissions/{handle}", gateway.omission, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    return app


def app_from_env() -> Starlette:
    """uvicorn's factory for worker processes: the effective config ``tokenlean serve`` put in
    ``TOKENLEAN_GATEWAY_CONFIG_JSON``, else the file named in ``TOKENLEAN_GATEWAY_CONFIG``."""
    raw = os.environ.get(CONFIG_ENV + "_JSON")
    if raw:
        return create_app(load_config(None, **json.loads(raw)))
    return create_app(load_config(os.environ.get(CONFIG_ENV) or None))
