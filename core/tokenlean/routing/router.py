"""The ``Router``: policies pick a model group, the group picks a replica, every call is metered.

``route(request)`` only decides (no I/O; timed in ``Decision.latency_ms``). ``complete``,
``acomplete``, ``stream`` and ``astream`` decide and run: output control is applied, cascades
are driven (cheap call, checks, maybe the strong call), a failing model falls back to the next
one in ``fallbacks`` (on timeouts, connection errors, 5xx, and streams that fail before their
first token), and each call that reached a model is recorded through ``tokenlean.metering`` with
the route, policy and reason as tags, so savings show up per task.

Sync and async share one code path: ``_plan`` is a generator that *yields* the calls it needs
and receives their answers; ``_drive`` and ``_adrive`` only perform them. Falling back from one
target to the next is one plan too (``_fallbacks``, driven by ``tokenlean.routing.failover``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Generator, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from tokenlean import events
from tokenlean.errors import EndpointError, NoRouteError
from tokenlean.routing import failover
from tokenlean.routing.decision import Decision, RoutingPolicy
from tokenlean.routing.endpoints import Endpoint, StreamChunk, check_request
from tokenlean.routing.replicas import ReplicaGroup
from tokenlean.types import Request, Response, Usage

__all__ = ["ROUTING_KEY", "Router"]

log = logging.getLogger("tokenlean.routing.router")

#: Key of ``Response.extra`` holding the decision (as a dict) of a routed call.
ROUTING_KEY = "tokenlean_routing"

_Call = tuple[str, Request, str]  # (target, request, role)
_Plan = Generator[_Call, Response | None, tuple[Response, Decision]]
#: A target failing this way (all its replicas, or the call itself) may fall back to the next.
_CATCH: tuple[type[Exception], ...] = (NoRouteError, EndpointError)


def _as_group(target: ReplicaGroup | Endpoint | Sequence[Endpoint]) -> ReplicaGroup:
    if isinstance(target, ReplicaGroup):
        return target
    if isinstance(target, Sequence):
        return ReplicaGroup(list(target))
    return ReplicaGroup([target], prefix_affinity=False)


class Router:
    """Quality routing (policies) over replica routing (groups), with fallbacks and metering.

    ``targets`` maps a name (``"weak"``, ``"strong"``, ``"local"``) to a ``ReplicaGroup``, an
    endpoint, or a list of endpoints (made a group). ``policies`` are asked in order; the
    first decision wins, else ``default``. ``fallbacks`` maps a target to the targets to try
    when all its replicas fail. ``meter`` is a ``tokenlean.metering.Meter`` (one is created
    when omitted; ``meter=False`` disables metering).
    """

    def __init__(
        self,
        targets: Mapping[str, ReplicaGroup | Endpoint | Sequence[Endpoint]],
        *,
        policies: Sequence[RoutingPolicy] = (),
        default: str | None = None,
        fallbacks: Mapping[str, Sequence[str]] | None = None,
        meter: Any = None,
    ) -> None:
        if not targets:
            raise NoRouteError("a Router needs at least one target")
        self.targets = {name: _as_group(t) for name, t in targets.items()}
        self.policies = list(policies)
        self.default = default or next(iter(self.targets))
        self.fallbacks = {k: tuple(v) for k, v in (fallbacks or {}).items()}
        for name in [self.default, *self.fallbacks, *(t for v in self.fallbacks.values() for t in v)]:
            if name not in self.targets:
                raise NoRouteError(f"unknown target {name!r}; targets are {sorted(self.targets)}")
        if meter is None:
            from tokenlean.metering import Meter

            meter = Meter()
        self.meter = meter or None

    # -- deciding --------------------------------------------------------------------------------
    def route(self, request: Request) -> Decision:
        """Ask the policies in order; the first decision wins. Pure CPU: no call is made.

        A call no model can answer (no messages, a token cap below one) raises ``InputError``
        before any policy sees it: policies would otherwise pick a model for it.
        """
        check_request(request)
        t0 = time.perf_counter()
        decision = None
        for policy in self.policies:
            decision = policy.decide(request)
            if decision is not None:
                break
        if decision is None:
            decision = Decision(self.default, "no policy matched: default target", "default")
        if decision.target not in self.targets:
            raise NoRouteError(f"policy {decision.policy!r} chose unknown target {decision.target!r}")
        decision = replace(decision, latency_ms=(time.perf_counter() - t0) * 1000.0)
        if events.enabled():
            events.emit(
                events.ROUTE,
                {
                    "tokenlean.route.target": decision.target,
                    "tokenlean.route.model": self.targets[decision.target].model,
                    "tokenlean.route.policy": decision.policy,
                    "tokenlean.route.reason": decision.reason,
                },
            )
        return decision

    def model_of(self, target: str) -> str:
        return self.targets[target].model

    # -- the shared plan ---------------------------------------------------------------------------
    def _plan(self, request: Request, decision: Decision) -> _Plan:
        req = decision.output.apply(request) if decision.output is not None else request
        casc = decision.cascade
        if casc is None:
            resp = yield (decision.target, req, "primary")
            assert resp is not None
            return resp, decision
        req = casc.prepare(req)
        cheap = yield (casc.cheap, req, "cascade-cheap")
        assert cheap is not None
        extras: list[Response | None] = []
        for extra_req in casc.extra_requests(req, cheap):
            extras.append(None if extra_req is None else (yield (casc.cheap, extra_req, "cascade-check")))
        escalate, verdicts = casc.judge(req, cheap, extras)
        why = "; ".join(v.reason for v in verdicts)
        info = {"signals": [{"escalate": v.escalate, "reason": v.reason, "value": v.value} for v in verdicts]}
        if not escalate:
            return cheap, replace(
                decision, reason=f"{decision.reason}: kept cheap answer ({why})", extra=info
            )
        strong_req = casc.strong_output.apply(request) if casc.strong_output is not None else request
        strong = yield (casc.strong, strong_req, "cascade-strong")
        assert strong is not None
        return strong, replace(
            decision,
            target=casc.strong,
            escalated=True,
            reason=f"{decision.reason}: escalated ({why})",
            extra=info,
        )

    def _chain(self, target: str) -> list[str]:
        return [target, *(t for t in self.fallbacks.get(target, ()) if t != target)]

    def _finish(self, resp: Response, decision: Decision, fell: list[str]) -> tuple[Response, Decision]:
        target = resp.extra.get("target", decision.target)
        fell_from = tuple(dict.fromkeys(f for f in fell if f != target))
        decision = replace(
            decision,
            target=target,
            replica=resp.extra.get("endpoint"),
            fallback_from=(*decision.fallback_from, *fell_from),
        )
        extra = {k: v for k, v in resp.extra.items() if k != "target"}
        extra[ROUTING_KEY] = decision.to_dict()
        return replace(resp, extra=extra), decision

    # -- metering ----------------------------------------------------------------------------------
    @staticmethod
    def _with_usage(request: Request, resp: Response) -> Response:
        """Fill in counted usage when the server reported none (llama.cpp streams never do).

        Marked ``usage_estimated`` so a ledger can tell measured from counted tokens.
        """
        if resp.usage is not None:
            return resp
        from tokenlean.tokens import count_messages, count_tokens

        usage = Usage(count_messages(request.messages), count_tokens(resp.text))
        return replace(resp, usage=usage, extra={**resp.extra, "usage_estimated": True})

    def _record(
        self,
        target: str,
        request: Request,
        resp: Response,
        decision: Decision,
        role: str,
        started: float,
        first_token: float | None = None,
    ) -> None:
        if self.meter is None:
            return
        usage = resp.usage or Usage()
        estimated = bool(resp.extra.get("usage_estimated"))
        try:
            self.meter.record(
                model=resp.model or self.model_of(target),
                usage=usage,
                endpoint=resp.extra.get("endpoint"),
                task_id=request.task_id,
                tags={"route": target, "policy": decision.policy, "role": role},
                started_at=started,
                first_token_at=first_token,
                ended_at=time.time(),
                extra={"reason": decision.reason, "usage_estimated": estimated},
            )
        except Exception as exc:  # metering must never break a user's call
            log.warning("metering failed: %s", exc)

    # -- shared by the sync and async twins -------------------------------------------------------
    def _accept(
        self, t: str, request: Request, raw: Response, decision: Decision, role: str, started: float
    ) -> Response:
        """Meter one successful call and tag the response with the target that answered."""
        resp = self._with_usage(request, raw)
        self._record(t, request, resp, decision, role, started)
        return replace(resp, extra={**resp.extra, "target": t})

    @staticmethod
    def _fall_back(
        t: str,
        exc: NoRouteError | EndpointError,
        errors: list[str],
        fell: list[str],
        *,
        streamed: bool = False,
    ) -> None:
        """Note a failed target so the next one is tried, or re-raise when falling back is wrong.

        A non-retryable endpoint error (bad request) would fail on every target too, and a
        stream that already yielded tokens cannot be restarted elsewhere without duplicating text.
        """
        if streamed or (isinstance(exc, EndpointError) and not exc.retryable):
            raise exc
        errors.append(f"{t}: {exc}")
        fell.append(t)

    def _fallbacks(self, target: str, fell: list[str]) -> failover.Plan[str]:
        """The fallback plan of one call, shared by the four call styles: ``target``, then its
        ``fallbacks`` in order, until one answers (the targets that failed are added to ``fell``)."""
        errors: list[str] = []
        for t in self._chain(target):
            failed = yield failover.Attempt(t)
            if failed is None:
                return
            assert isinstance(failed.error, (NoRouteError, EndpointError))
            self._fall_back(t, failed.error, errors, fell, streamed=failed.streamed)
        raise NoRouteError("; ".join(errors))

    def _advance(
        self, plan: _Plan, resp: Response | None, fell: list[str]
    ) -> tuple[_Call, None] | tuple[None, tuple[Response, Decision]]:
        """Feed one answer to the plan: the next call to make, or the finished result."""
        try:
            return plan.send(resp), None
        except StopIteration as stop:
            final, dec = stop.value
            return None, self._finish(final, dec, fell)

    @staticmethod
    def _single_chunks(resp: Response) -> tuple[StreamChunk, StreamChunk]:
        """A whole (cascade) answer as a stream: its text, then the final chunk with the response."""
        return (
            StreamChunk(text=resp.text, finish_reason=resp.finish_reason, usage=resp.usage, model=resp.model),
            StreamChunk(response=resp, model=resp.model),
        )

    def _stream_chunk(
        self,
        chunk: StreamChunk,
        t: str,
        req: Request,
        decision: Decision,
        started: float,
        first: float | None,
        fell: list[str],
    ) -> StreamChunk:
        """On the final chunk: meter the call and attach the routed response with usage."""
        if chunk.response is None:
            return chunk
        dec = replace(decision, target=t)
        full = self._with_usage(req, chunk.response)
        self._record(t, req, full, dec, "primary", started, first)
        resp, _ = self._finish(full, dec, fell)
        return replace(chunk, response=resp, usage=resp.usage)

    # -- the I/O of one attempt: the only part the sync and async twins do not share ---------------
    def _complete_on(self, t: str, request: Request) -> tuple[str, float, Response]:
        started = time.time()
        return t, started, self.targets[t].complete(request)

    async def _acomplete_on(self, t: str, request: Request) -> tuple[str, float, Response]:
        started = time.time()
        return t, started, await self.targets[t].acomplete(request)

    def _stream_on(self, t: str, req: Request, decision: Decision, fell: list[str]) -> Iterator[StreamChunk]:
        started = time.time()
        first: float | None = None
        for chunk in self.targets[t].stream(req):
            if chunk.has_token and first is None:
                first = time.time()
            yield self._stream_chunk(chunk, t, req, decision, started, first, fell)

    async def _astream_on(
        self, t: str, req: Request, decision: Decision, fell: list[str]
    ) -> AsyncIterator[StreamChunk]:
        started = time.time()
        first: float | None = None
        async with contextlib.aclosing(self.targets[t].astream(req)) as chunks:
            async for chunk in chunks:
                if chunk.has_token and first is None:
                    first = time.time()
                yield self._stream_chunk(chunk, t, req, decision, started, first, fell)

    # -- sync -------------------------------------------------------------------------------------
    def _call(
        self, target: str, request: Request, decision: Decision, role: str, fell: list[str]
    ) -> Response:
        plan = self._fallbacks(target, fell)
        t, started, raw = failover.call(plan, lambda t: self._complete_on(t, request), _CATCH)
        return self._accept(t, request, raw, decision, role, started)

    def _drive(self, request: Request, decision: Decision) -> tuple[Response, Decision]:
        check_request(request)  # a decision made earlier may come with a different request
        plan = self._plan(request, decision)
        fell: list[str] = []
        call: _Call | None = next(plan)
        while call is not None:
            target, req, role = call
            try:
                resp: Response | None = self._call(target, req, decision, role, fell)
            except (NoRouteError, EndpointError):
                if role != "cascade-check":
                    raise
                resp = None  # a failed check call skips that signal, it does not fail the user
            call, done = self._advance(plan, resp, fell)
        assert done is not None
        return done

    def execute(self, request: Request, decision: Decision) -> tuple[Response, Decision]:
        """Carry out a decision made earlier by ``route`` (adapters decide first, then run)."""
        return self._drive(request, decision)

    def complete_with_decision(self, request: Request) -> tuple[Response, Decision]:
        return self._drive(request, self.route(request))

    def complete(self, request: Request) -> Response:
        """Route and answer; the decision rides along in ``response.extra["tokenlean_routing"]``."""
        return self.complete_with_decision(request)[0]

    def stream(self, request: Request, decision: Decision | None = None) -> Iterator[StreamChunk]:
        """Stream the routed answer; the last chunk's ``response`` carries usage and the decision.

        A cascade cannot stream its cheap answer before judging it, so it yields the chosen
        answer as one chunk. Otherwise a target that fails before its first token falls back
        to the next target.
        """
        if decision is None:
            decision = self.route(request)
        else:
            check_request(request)
        if decision.cascade is not None:
            yield from self._single_chunks(self._drive(request, decision)[0])
            return
        req = decision.output.apply(request) if decision.output is not None else request
        fell: list[str] = []
        plan = self._fallbacks(decision.target, fell)
        yield from failover.stream(plan, lambda t: self._stream_on(t, req, decision, fell), _CATCH)

    # -- async ------------------------------------------------------------------------------------
    async def _acall(
        self, target: str, request: Request, decision: Decision, role: str, fell: list[str]
    ) -> Response:
        plan = self._fallbacks(target, fell)
        t, started, raw = await failover.acall(plan, lambda t: self._acomplete_on(t, request), _CATCH)
        return self._accept(t, request, raw, decision, role, started)

    async def _adrive(self, request: Request, decision: Decision) -> tuple[Response, Decision]:
        check_request(request)
        plan = self._plan(request, decision)
        fell: list[str] = []
        call: _Call | None = next(plan)
        while call is not None:
            target, req, role = call
            try:
                resp: Response | None = await self._acall(target, req, decision, role, fell)
            except (NoRouteError, EndpointError):
                if role != "cascade-check":
                    raise
                resp = None
            call, done = self._advance(plan, resp, fell)
        assert done is not None
        return done

    async def aexecute(self, request: Request, decision: Decision) -> tuple[Response, Decision]:
        return await self._adrive(request, decision)

    async def acomplete_with_decision(self, request: Request) -> tuple[Response, Decision]:
        return await self._adrive(request, self.route(request))

    async def acomplete(self, request: Request) -> Response:
        return (await self.acomplete_with_decision(request))[0]

    async def astream(self, request: Request, decision: Decision | None = None) -> AsyncIterator[StreamChunk]:
        if decision is None:
            decision = self.route(request)
        else:
            check_request(request)
        if decision.cascade is not None:
            for chunk in self._single_chunks((await self._adrive(request, decision))[0]):
                yield chunk
            return
        req = decision.output.apply(request) if decision.output is not None else request
        fell: list[str] = []
        plan = self._fallbacks(decision.target, fell)
        # closed with this generator, so the attempt in flight ends now, not when it is collected
        async with contextlib.aclosing(
            failover.astream(plan, lambda t: self._astream_on(t, req, decision, fell), _CATCH)
        ) as chunks:
            async for chunk in chunks:
                yield chunk

    # -- housekeeping -----------------------------------------------------------------------------
    def close(self) -> None:
        for g in self.targets.values():
            for r in g.replicas:
                close = getattr(r.endpoint, "close", None)
                if close is not None:
                    close()
