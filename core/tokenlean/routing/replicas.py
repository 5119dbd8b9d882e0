"""Replica choice inside one model group: which server of the *same* model takes this call.

Three signals, in the spirit of vLLM's production-stack router and SGLang's router:

* **Least expected latency.** A replica's load is the larger of what *we* have in flight to
  it (always current) and what its ``/metrics`` say is running + waiting (covers other clients;
  used while fresh). Its expected latency for one more call is ``base + load x per_call``,
  both learned from its own answers: ``base`` from calls sent while it was idle (service plus
  any fixed delay: a far region, a slow proxy), ``per_call`` from how much each call already
  in flight added (a serial llama.cpp server: one service time; a batching vLLM server: much
  less). A replica that is slow at *every* load therefore loses traffic even when it is idle,
  which plain least-outstanding-requests cannot see.
* **Prefix affinity.** Requests sharing a stable prefix (system prompt, tools, the first turns)
  go to the same replica via rendezvous hashing, so its prefix cache is warm. A load guard (as
  SGLang's ``balance_abs_threshold`` / ``balance_rel_threshold``) abandons affinity when the
  preferred replica is much busier than the least loaded one.
* **Health.** A replica that fails with a retryable error is ejected for a cooldown that doubles
  on repeated ejections (capped); after it, the replica is tried again (half-open) and one
  success restores it. If every replica is ejected we still try the one whose cooldown ends
  first rather than fail without trying.

Failover: ``complete``/``stream`` try the chosen replica, then the others in load order, on
timeout, connection errors and 5xx, and for streams only until the first token was yielded.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from tokenlean.errors import ConfigError, EndpointError, NoRouteError
from tokenlean.routing import failover
from tokenlean.routing.endpoints import Endpoint, EndpointMetrics, check_request
from tokenlean.routing.wire import TRANSPORT_ERRORS, StreamChunk
from tokenlean.types import Request, Response

__all__ = ["ReplicaGroup", "ReplicaState", "stable_prefix_key"]

log = logging.getLogger("tokenlean.routing.replicas")

#: A replica failing this way is the server's or the network's doing; anything else is a bug.
_CATCH: tuple[type[Exception], ...] = (EndpointError,)


def stable_prefix_key(request: Request, max_chars: int = 2048) -> str:
    """Hash of what stays fixed across a conversation: system/developer messages, tools, first user turn.

    Later turns are excluded on purpose: they change every call, and a key that changes every
    call gives no affinity at all.
    """
    parts: list[str] = []
    for t in request.tools:
        parts.append(repr(sorted(t.items())))
    first_user_seen = False
    for m in request.messages:
        if m.role in ("system", "developer"):
            parts.append(m.role + ":" + m.text)
        elif m.role == "user" and not first_user_seen:
            parts.append("user:" + m.text)
            first_user_seen = True
    text = "\n".join(parts)[:max_chars]
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


@dataclass
class ReplicaState:
    """Mutable bookkeeping for one replica (guarded by the group's lock)."""

    endpoint: Endpoint
    in_flight: int = 0
    failures: int = 0
    ejections: int = 0
    ejected_until: float = 0.0
    metrics: EndpointMetrics | None = None
    ewma_latency_s: float | None = None  # latency of a call sent while the replica was idle
    ewma_per_call_s: float | None = None  # what each call already in flight adds to a new one
    served: int = 0
    errors: int = 0
    last_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.endpoint.name

    def healthy(self, now: float) -> bool:
        return now >= self.ejected_until


class ReplicaGroup:
    """Several endpoints serving one model; picks one per call and fails over between them.

    ``strategy``: ``"least_outstanding"`` (default), ``"round_robin"`` (the baseline the
    benchmark compares against) or ``"random"``. ``prefix_affinity`` turns on stable-prefix
    stickiness with the load guard ``affinity_abs_threshold`` / ``affinity_rel_threshold``.
    ``metrics_interval_s`` > 0 refreshes live metrics in a background thread at most that often.
    """

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        model: str | None = None,
        strategy: str = "least_outstanding",
        prefix_affinity: bool = True,
        affinity_abs_threshold: float = 4.0,
        affinity_rel_threshold: float = 1.5,
        failure_threshold: int = 1,
        cooldown_s: float = 5.0,
        max_cooldown_s: float = 60.0,
        metrics_interval_s: float = 0.0,
        metrics_max_age_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not endpoints:
            raise ConfigError("a ReplicaGroup needs at least one endpoint")
        if strategy not in ("least_outstanding", "round_robin", "random"):
            raise ConfigError(f"unknown replica strategy {strategy!r}")
        names = [e.name for e in endpoints]
        if len(set(names)) != len(names):
            raise ConfigError(f"replica names must be unique, got {names}")
        self.model = model or endpoints[0].model
        self.name = self.model
        self.replicas = [ReplicaState(e) for e in endpoints]
        self.strategy = strategy
        self.prefix_affinity = prefix_affinity
        self.affinity_abs_threshold = affinity_abs_threshold
        self.affinity_rel_threshold = affinity_rel_threshold
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self.metrics_interval_s = metrics_interval_s
        self.metrics_max_age_s = metrics_max_age_s
        self.clock = clock
        self._lock = threading.Lock()
        self._rr = 0
        self._last_refresh = -1e18
        self._refreshing = False

    # -- load and health ----------------------------------------------------------------------
    def load(self, r: ReplicaState, now: float | None = None) -> float:
        now = self.clock() if now is None else now
        remote = None
        if r.metrics is not None and now - r.metrics.scraped_at <= self.metrics_max_age_s:
            remote = r.metrics.outstanding
        return max(float(r.in_flight), remote or 0.0)

    def refresh_metrics(self) -> None:
        """Scrape every replica's ``metrics()`` now (blocking); failures leave old values to age out.

        Only a server's or the network's failure is shrugged off; a bug in a scraper propagates
        (from the background refresh, to ``threading.excepthook``) instead of hiding in a debug log.
        """
        for r in self.replicas:
            fn = getattr(r.endpoint, "metrics", None)
            if fn is None:
                continue
            try:
                m = fn()
            except TRANSPORT_ERRORS as exc:  # a server that cannot be scraped must not break a call
                log.debug("%s: metrics failed: %s", r.name, exc)
                continue
            if m is not None:
                with self._lock:
                    r.metrics = m
        self._last_refresh = self.clock()

    def _maybe_refresh(self) -> None:
        if self.metrics_interval_s <= 0 or self._refreshing:
            return
        if self.clock() - self._last_refresh < self.metrics_interval_s:
            return
        self._refreshing = True

        def run() -> None:
            try:
                self.refresh_metrics()
            finally:
                self._refreshing = False

        threading.Thread(target=run, name="tokenlean-metrics", daemon=True).start()

    def check_health(self) -> dict[str, bool]:
        """Probe every replica's ``health()``; unhealthy ones are ejected, healthy ones restored."""
        out: dict[str, bool] = {}
        for r in self.replicas:
            probe = getattr(r.endpoint, "health", None)
            ok = bool(probe()) if probe is not None else True
            out[r.name] = ok
            if ok:
                self._mark_success(r, None)
            else:
                self._eject(r, "health check failed")
        return out

    def _eject(self, r: ReplicaState, why: str) -> None:
        """Take ``r`` out for a cool-down that doubles with each ejection in a row.

        Calls that were in flight together fail together when a server dies; their failures are
        one incident, so a replica already out is not ejected again (its cool-down would double
        once per queued call and keep a restarted server out for minutes).
        """
        with self._lock:
            if r.ejected_until > self.clock():
                r.last_error = why
                return
            r.ejections += 1
            cool = min(self.max_cooldown_s, self.cooldown_s * (2 ** (r.ejections - 1)))
            r.ejected_until = self.clock() + cool
            r.last_error = why
        log.warning("replica %s ejected for %.1fs: %s", r.name, cool, why)

    def _mark_failure(self, r: ReplicaState, err: EndpointError) -> None:
        with self._lock:
            r.errors += 1
            r.failures += 1
            eject = err.retryable and r.failures >= self.failure_threshold
        if eject:
            self._eject(r, str(err))

    def _mark_success(self, r: ReplicaState, latency_s: float | None, ahead: int = 0) -> None:
        with self._lock:
            r.failures = 0
            r.ejections = 0
            r.ejected_until = 0.0
            if latency_s is None:
                return
            r.served += 1
            if ahead == 0 or r.ewma_latency_s is None:
                # an idle call measures the base latency; before one has been seen, a queued call
                # split evenly over the calls it waited for is the best guess
                base = latency_s / (ahead + 1)
                r.ewma_latency_s = base if r.ewma_latency_s is None else 0.8 * r.ewma_latency_s + 0.2 * base
            if ahead > 0:
                per_call = max(0.0, latency_s - r.ewma_latency_s) / ahead
                r.ewma_per_call_s = (
                    per_call if r.ewma_per_call_s is None else 0.8 * r.ewma_per_call_s + 0.2 * per_call
                )

    def expected_latency(self, r: ReplicaState, now: float | None = None, typical: float = 1.0) -> float:
        """Seconds a call sent to ``r`` now is expected to take: ``base + load x per_call``.

        Unmeasured parts fall back to ``typical`` (the fastest base seen), so a new replica gets
        tried; an unmeasured ``per_call`` is taken as the base (a serial server).
        """
        base = r.ewma_latency_s or typical
        per_call = r.ewma_per_call_s if r.ewma_per_call_s is not None else base
        return base + self.load(r, now) * per_call

    # -- choice --------------------------------------------------------------------------------
    def order(self, request: Request | None = None) -> list[ReplicaState]:
        """Replicas in the order they will be tried for ``request``: the pick first, then fallbacks."""
        self._maybe_refresh()
        now = self.clock()
        with self._lock:
            healthy = [r for r in self.replicas if r.healthy(now)]
            ejected = sorted((r for r in self.replicas if not r.healthy(now)), key=lambda r: r.ejected_until)
            if not healthy:
                return ejected
            # least expected latency; an unmeasured replica is assumed as fast as the fastest
            known = [r.ewma_latency_s for r in healthy if r.ewma_latency_s]
            typical = min(known) if known else 1.0
            by_load = sorted(
                healthy, key=lambda r: (self.expected_latency(r, now, typical), self.load(r, now))
            )
            if self.strategy == "round_robin":
                i = self._rr % len(healthy)
                self._rr += 1
                first = healthy[i]
            elif self.strategy == "random":
                import random

                first = random.choice(healthy)
            else:
                first = by_load[0]
                if self.prefix_affinity and request is not None and len(healthy) > 1:
                    key = stable_prefix_key(request)
                    pref = max(
                        healthy,
                        key=lambda r: hashlib.blake2b(f"{key}|{r.name}".encode(), digest_size=8).digest(),
                    )
                    lp, lmin = self.load(pref, now), self.load(by_load[0], now)
                    overloaded = (
                        lp - lmin > self.affinity_abs_threshold
                        and lp > self.affinity_rel_threshold * max(lmin, 1.0)
                    )
                    if not overloaded:
                        first = pref
            rest = [r for r in by_load if r is not first]
            return [first, *rest, *ejected]

    def choose(self, request: Request | None = None) -> Endpoint:
        return self.order(request)[0].endpoint

    def stats(self) -> list[dict[str, Any]]:
        now = self.clock()
        return [
            {
                "name": r.name,
                "in_flight": r.in_flight,
                "load": self.load(r, now),
                "healthy": r.healthy(now),
                "served": r.served,
                "errors": r.errors,
                "ewma_latency_s": r.ewma_latency_s,
                "ewma_per_call_s": r.ewma_per_call_s,
                "last_error": r.last_error,
            }
            for r in self.replicas
        ]

    # -- calls with failover -------------------------------------------------------------------
    def _begin(self, r: ReplicaState) -> tuple[float, int]:
        """Start time and how many calls were already outstanding on ``r`` (queued ahead)."""
        with self._lock:
            ahead = r.in_flight
            r.in_flight += 1
        return time.monotonic(), ahead

    def _end(self, r: ReplicaState) -> None:
        with self._lock:
            r.in_flight -= 1

    def _failed(
        self, r: ReplicaState, err: EndpointError, errors: list[str], *, streamed: bool = False
    ) -> None:
        """Count a replica failure; re-raise when the next replica must not be tried.

        A non-retryable error would fail on every replica, and a stream that already yielded
        tokens cannot move to another replica without repeating text.
        """
        self._mark_failure(r, err)
        errors.append(f"{r.name}: {err}")
        if streamed or not err.retryable:
            raise err

    def _give_up(self, errors: list[str]) -> NoRouteError:
        return NoRouteError(f"all replicas of {self.model!r} failed: " + "; ".join(errors))

    def _failover(self, request: Request) -> failover.Plan[Endpoint]:
        """The failover plan of one call, shared by the four call styles: the replicas in
        ``order``, each counted in flight while it is tried, until one answers."""
        errors: list[str] = []
        for r in self.order(request):
            t0, ahead = self._begin(r)
            try:
                failed = yield failover.Attempt(r.endpoint)
            finally:
                self._end(r)
            if failed is None:
                self._mark_success(r, time.monotonic() - t0, ahead)
                return
            assert isinstance(failed.error, EndpointError)
            self._failed(r, failed.error, errors, streamed=failed.streamed)
        raise self._give_up(errors)

    def complete(self, request: Request) -> Response:
        check_request(request)  # refused here whatever the endpoint type
        return failover.call(self._failover(request), lambda e: e.complete(request), _CATCH)

    async def acomplete(self, request: Request) -> Response:
        check_request(request)  # refused here whatever the endpoint type
        return await failover.acall(self._failover(request), lambda e: e.acomplete(request), _CATCH)

    def stream(self, request: Request) -> Iterator[StreamChunk]:
        check_request(request)  # refused here whatever the endpoint type
        yield from failover.stream(self._failover(request), lambda e: e.stream(request), _CATCH)

    async def astream(self, request: Request) -> AsyncGenerator[StreamChunk, None]:
        check_request(request)  # refused here whatever the endpoint type
        # closed with this generator, so the attempt in flight ends now, not when it is collected
        async with contextlib.aclosing(
            failover.astream(self._failover(request), lambda e: e.astream(request), _CATCH)
        ) as chunks:
            async for chunk in chunks:
                yield chunk
