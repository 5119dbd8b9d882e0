"""State several gateway processes share through Redis: budgets, usage counters, sticky sessions.

Why: ``tokenlean serve --workers N``, or N gateway hosts behind any HTTP load balancer, must behave
as one gateway. A key's daily budget is one budget, a repeated question is a hit whichever process
answered it first, ``/v1/usage`` and ``/metrics`` count every process's calls, and a session's
next turn goes to the replica that holds its prefix whichever process receives it. Nothing here is
needed for correctness within one process; everything here is what makes N processes exact.

* **Budgets** are admitted by one Lua script per request (check every limit, then count the
  request), so two processes cannot both let the last allowed request through.
* **Usage** is a set of Redis hashes of integer counters (per key, per task, per model), added to
  with ``HINCRBY`` in one pipeline per call; money is kept in nano-dollars (integers add exactly).
  Percentiles (TTFT, durations) need the samples, which are not shared: the shared view leaves
  them out rather than report one process's.
* **Sticky sessions** map a session to a replica's URL with a TTL.

If Redis fails, the gateway keeps serving: budgets are then not enforced for that request (logged),
and counters of that call are lost from the shared view (they stay in the process's own ledger).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from tokenlean.errors import BudgetExceeded, MissingDependencyError
from tokenlean.gateway.config import KeyConfig, SharedConfig
from tokenlean.metering.records import UsageRecord
from tokenlean.metering.summary import TaskSummary

__all__ = ["Background", "RedisBudgets", "RedisSticky", "RedisUsage", "redis_client"]

log = logging.getLogger("tokenlean.gateway")

_NANO = Decimal(1_000_000_000)

# KEYS[1] = the key's counters for today; ARGV = limits (-1: none) for requests, tokens, nano-USD
_ADMIT = """
local r = tonumber(redis.call('HGET', KEYS[1], 'requests') or '0')
local t = tonumber(redis.call('HGET', KEYS[1], 'tokens') or '0')
local u = tonumber(redis.call('HGET', KEYS[1], 'nanousd') or '0')
if tonumber(ARGV[1]) >= 0 and r >= tonumber(ARGV[1]) then return 1 end
if tonumber(ARGV[2]) >= 0 and t >= tonumber(ARGV[2]) then return 2 end
if tonumber(ARGV[3]) >= 0 and u >= tonumber(ARGV[3]) then return 3 end
redis.call('HINCRBY', KEYS[1], 'requests', 1)
redis.call('EXPIRE', KEYS[1], 172800)
return 0
"""


def redis_client(url: str) -> Any:
    try:
        import redis
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError("redis", extra="redis") from exc
    return redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)


class Background:
    """One writer thread for the shared store: the request path hands writes over and goes on,
    so a slow or failing Redis never holds a response (or the event loop) back."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._pending = 0
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="tokenlean-gateway-shared", daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], None]) -> None:
        with self._cond:
            self._pending += 1
        self._queue.put(job)

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            try:
                job()
            except Exception:
                log.exception("tokenlean gateway: shared-state write failed")
            finally:
                with self._cond:
                    self._pending -= 1
                    self._cond.notify_all()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every write handed over so far is done (False on timeout)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._thread.join(5.0)


def _errors() -> tuple[type[BaseException], ...]:
    from redis.exceptions import RedisError

    return (RedisError, OSError)


class RedisBudgets:
    """``Budgets`` with the counters in Redis: one budget per key across every process."""

    def __init__(
        self, client: Any, config: SharedConfig, background: Background, clock: Any = time.time
    ) -> None:
        self.client = client
        self.prefix = config.prefix
        self.background = background
        self._clock = clock
        self._admit = client.register_script(_ADMIT)
        self._errors = _errors()

    def _key(self, name: str) -> str:
        return f"{self.prefix}budget:{name}:{int(self._clock() // 86400)}"

    def admit(self, key: KeyConfig | None) -> None:
        if key is None:
            return
        b = key.budget
        limits = [
            -1 if b.requests_per_day is None else b.requests_per_day,
            -1 if b.tokens_per_day is None else b.tokens_per_day,
            -1 if b.usd_per_day is None else int(Decimal(str(b.usd_per_day)) * _NANO),
        ]
        try:
            refused = int(self._admit(keys=[self._key(key.name)], args=limits))
        except self._errors as exc:
            log.error(
                "tokenlean gateway: shared budgets unavailable (%s); request admitted", type(exc).__name__
            )
            return
        if refused:
            what = ("requests", "tokens", "USD")[refused - 1]
            raise BudgetExceeded(f"key {key.name!r}: the daily {what} budget is used up")

    def charge(self, key: KeyConfig | None, tokens: int, usd: Decimal | None) -> None:
        if key is None:
            return
        k = self._key(key.name)

        def write() -> None:
            try:
                pipe = self.client.pipeline(transaction=False)
                pipe.hincrby(k, "tokens", tokens)
                if usd:
                    pipe.hincrby(k, "nanousd", int(usd * _NANO))
                pipe.expire(k, 172800)
                pipe.execute()
            except self._errors as exc:
                log.error("tokenlean gateway: could not charge the shared budget (%s)", type(exc).__name__)

        self.background.submit(write)

    def spent(self, name: str) -> dict[str, object]:
        try:
            raw = self.client.hgetall(self._key(name))
        except self._errors:
            return {}
        data = {k.decode(): int(v) for k, v in raw.items()}
        return {
            "requests": data.get("requests", 0),
            "tokens": data.get("tokens", 0),
            "usd": float(Decimal(data.get("nanousd", 0)) / _NANO),
        }


class RedisUsage:
    """A ledger sink adding every call to shared counters; the gateway's usage views read them."""

    def __init__(self, client: Any, config: SharedConfig, background: Background) -> None:
        self.client = client
        self.prefix = config.prefix
        self.task_ttl = int(config.task_ttl)
        self.background = background
        self._errors = _errors()

    def _hash(self, kind: str, name: str) -> str:
        return f"{self.prefix}usage:{kind}:{name}"

    def __call__(self, rec: UsageRecord) -> None:
        """The ledger sink: this record's figures added to its key, task and model counters."""
        u = rec.usage
        add = {
            "calls": 1,
            "cache_hits": int(rec.cache_hit),
            "input_tokens": u.input_tokens,
            "cached_input_tokens": u.cached_input_tokens,
            "cache_write_tokens": u.cache_write_tokens,
            "output_tokens": u.output_tokens,
            "reasoning_tokens": u.reasoning_tokens,
            "cost_nanousd": 0 if rec.cost is None else int(rec.cost * _NANO),
            "priced_calls": int(rec.cost is not None),
            "unpriced_calls": int(rec.cost is None),
            "tokens_saved": int(rec.extra.get("tokens_saved", 0) or 0),
        }
        self.background.submit(lambda: self._add(rec, add))

    def _add(self, rec: UsageRecord, add: dict[str, int]) -> None:
        key = rec.tags.get("key", "anonymous")
        task = rec.task_id or "(untracked)"
        try:
            pipe = self.client.pipeline(transaction=False)
            for kind, name in (("key", key), ("task", task), ("model", rec.model)):
                h = self._hash(kind, name)
                for f, v in add.items():
                    if v:
                        pipe.hincrby(h, f, v)
                pipe.sadd(f"{self.prefix}usage:{kind}s", name)
            pipe.expire(self._hash("task", task), self.task_ttl)
            pipe.sadd(f"{self.prefix}usage:tasks-of:{key}", task)
            pipe.expire(f"{self.prefix}usage:tasks-of:{key}", self.task_ttl)
            pipe.execute()
        except self._errors as exc:
            log.error("tokenlean gateway: shared usage counters unavailable (%s)", type(exc).__name__)

    def _members(self, name: str) -> list[str]:
        return sorted(m.decode() for m in self.client.smembers(f"{self.prefix}usage:{name}"))

    def summaries(self, kind: str, names: list[str] | None = None) -> dict[str, dict[str, Any]]:
        """``{name: summary dict}`` for ``kind`` in ``key``/``task``/``model`` (every one known, or ``names``)."""
        return {
            name: {**self.summary(name, c).to_dict(), "tokens_saved": c.get("tokens_saved", 0)}
            for name, c in self._counters(kind, names).items()
        }

    def tasks_of(self, key: str) -> list[str]:
        return self._members(f"tasks-of:{key}")

    def by_model(self) -> dict[tuple[str, ...], TaskSummary]:
        """Per model, for the Prometheus exposition."""
        return {(name,): self.summary(name, c) for name, c in self._counters("model").items()}

    def _counters(self, kind: str, names: list[str] | None = None) -> dict[str, dict[str, int]]:
        """The counters of each name (every one known, or ``names``), in one round trip; a name
        whose hash expired is left out."""
        names = self._members(f"{kind}s") if names is None else names
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(self._hash(kind, name))
        return {
            name: {k.decode(): int(v) for k, v in raw.items()}
            for name, raw in zip(names, pipe.execute(), strict=True)
            if raw
        }

    @staticmethod
    def summary(name: str, c: dict[str, int]) -> TaskSummary:
        priced = c.get("priced_calls", 0)
        return TaskSummary(
            task_id=name,
            calls=c.get("calls", 0),
            cache_hits=c.get("cache_hits", 0),
            input_tokens=c.get("input_tokens", 0),
            cached_input_tokens=c.get("cached_input_tokens", 0),
            cache_write_tokens=c.get("cache_write_tokens", 0),
            output_tokens=c.get("output_tokens", 0),
            reasoning_tokens=c.get("reasoning_tokens", 0),
            cost=Decimal(c.get("cost_nanousd", 0)) / _NANO if priced else None,
            unpriced_calls=c.get("unpriced_calls", 0),
            ttft_p50_s=None,
            ttft_p95_s=None,
            duration_p50_s=None,
            duration_p95_s=None,
            output_tokens_per_s=None,
            models=(),
            started_at=None,
            ended_at=None,
        )


class RedisSticky:
    """Session -> replica URL, shared, with a TTL (a session idle that long may move)."""

    def __init__(self, client: Any, config: SharedConfig, background: Background) -> None:
        self.client = client
        self.prefix = config.prefix
        self.ttl = int(config.session_ttl)
        self.background = background
        self._errors = _errors()

    def get(self, session: str) -> str | None:
        try:
            value = self.client.get(f"{self.prefix}sticky:{session}")
        except self._errors:
            return None
        return value.decode() if value else None

    def set(self, session: str, replica: str) -> None:
        """Pin ``session`` to ``replica`` (written in the background)."""

        def write() -> None:
            try:
                self.client.set(f"{self.prefix}sticky:{session}", replica, ex=self.ttl)
            except self._errors as exc:
                log.error("tokenlean gateway: shared sticky map unavailable (%s)", type(exc).__name__)

        self.background.submit(write)
