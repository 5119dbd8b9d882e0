"""The ledger: every call of a process, aggregated per task and overall; and the ``Meter``.

"Measure before you optimise" needs numbers per *task* (one agent run, one user question), not
per call: an agent that makes eight cheap calls may cost more than one that makes a single
expensive one. The ledger keeps the records and computes, on demand, tokens, cost, TTFT
percentiles, decode speed and the cached share of input per task.

Thread and asyncio safety: one ``threading.Lock`` guards the record list and is held only for
an append or a copy, never across I/O or an ``await``, so it is safe (and cheap) from threads,
from the event loop, and from LangChain's thread-pool callbacks alike. Sinks (the JSONL file)
run after the lock is released, each with its own lock.

Deferred recording: the framework adapters run inside every model call of the user's app, so
they do as little as possible there. ``Meter.record_later`` checks and normalises the usage at
once (a bad block is reported at the call that produced it) but queues the rest (pricing, tags,
building the record) on the ledger; any read of the ledger first builds the queued records, in
call order. Done in a batch this is also cheaper in total: measured on LangChain, ~6 µs per
record built in batches of 100 against ~17 µs when built inside each call (the framework's own
work between calls evicts ours from the CPU caches; ``benchmarks/overhead.py``). A ledger with
a sink (a crash-safe JSONL log) and a ``Meter`` or ``Ledger`` subclass that overrides
``record`` are never deferred: they record at the call, as they did.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from tokenlean.errors import MeteringError
from tokenlean.metering.prices import PriceTable
from tokenlean.metering.records import (
    EMPTY_MAPPING,
    UsageRecord,
    _tags,
    current_task_id,
    model_name,
    task_scope,
)
from tokenlean.types import Usage, normalize_usage

__all__ = [
    "ROLLED_UP",
    "UNTRACKED",
    "Aggregate",
    "Ledger",
    "Meter",
    "TaskHandle",
    "TaskSummary",
    "get_default_meter",
    "percentile",
    "summarize",
]

log = logging.getLogger("tokenlean.metering.ledger")

_ZERO = Decimal(0)

#: Task id under which calls made outside any task are summarised.
UNTRACKED = "(untracked)"

Sink = Callable[[UsageRecord], None]
#: A queued call: ``build(*args)`` returns the record to store.
_Deferred = tuple[Callable[..., UsageRecord], tuple[Any, ...]]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-quantile (0..1) with linear interpolation between ranks; ``None`` if empty."""
    if not values:
        return None
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


@dataclass(frozen=True, slots=True)
class TaskSummary:
    """Aggregates of a group of calls (one task, or everything).

    ``cost`` sums the priced calls and is ``None`` only when none was priced;
    ``unpriced_calls`` says how many are missing from it. ``cached_share`` is cached input
    tokens over all input tokens (what prompt caching saved a share of). ``output_tokens_per_s``
    is total output over total generation time of calls that really ran (cache hits excluded).
    """

    task_id: str
    calls: int
    cache_hits: int
    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost: Decimal | None
    unpriced_calls: int
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    duration_p50_s: float | None
    duration_p95_s: float | None
    output_tokens_per_s: float | None
    models: tuple[str, ...]
    started_at: float | None
    ended_at: float | None

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def cached_share(self) -> float:
        return self.cached_input_tokens / self.input_tokens if self.input_tokens else 0.0

    @property
    def usage(self) -> Usage:
        return Usage(
            self.input_tokens,
            self.output_tokens,
            self.cached_input_tokens,
            self.cache_write_tokens,
            self.reasoning_tokens,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "calls": self.calls,
            "cache_hits": self.cache_hits,
            "input_tokens": self.input_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "output_tokens": self.output_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "total_tokens": self.total_tokens,
            "cost": None if self.cost is None else str(self.cost),
            "unpriced_calls": self.unpriced_calls,
            "cached_share": self.cached_share,
            "ttft_p50_s": self.ttft_p50_s,
            "ttft_p95_s": self.ttft_p95_s,
            "duration_p50_s": self.duration_p50_s,
            "duration_p95_s": self.duration_p95_s,
            "output_tokens_per_s": self.output_tokens_per_s,
            "models": list(self.models),
            "started_at": self.started_at,
            "ended_at": self.ended_at,
        }


class Aggregate:
    """Running totals of a group of calls: what a ``TaskSummary`` is computed from.

    Sums are exact however many calls were added. TTFT and duration percentiles are exact up to
    ``SAMPLE`` calls and estimated from a uniform reservoir sample beyond, so memory per group
    stays bounded.
    """

    SAMPLE = 1024
    __slots__ = (
        "cached",
        "calls",
        "cost",
        "durations",
        "end",
        "gen_time",
        "gen_tokens",
        "hits",
        "inp",
        "models",
        "out",
        "reasoning",
        "start",
        "timed",
        "ttfts",
        "unpriced",
        "write",
    )

    def __init__(self) -> None:
        self.calls = self.hits = self.unpriced = self.timed = 0
        self.inp = self.cached = self.write = self.out = self.reasoning = 0
        self.cost: Decimal | None = None
        self.ttfts: list[float] = []
        self.durations: list[float] = []
        self.gen_tokens = 0
        self.gen_time = 0.0
        self.models: dict[str, None] = {}
        self.start: float | None = None
        self.end: float | None = None

    def _sample(self, values: list[float], v: float) -> None:
        if len(values) < self.SAMPLE:
            values.append(v)
        else:  # reservoir sampling (Vitter's algorithm R), deterministic per group
            j = hash((self.timed, len(values))) % self.timed
            if j < self.SAMPLE:
                values[j] = v

    def add(self, r: UsageRecord) -> None:
        self.calls += 1
        u = r.usage
        self.inp += u.input_tokens
        self.cached += u.cached_input_tokens
        self.write += u.cache_write_tokens
        self.out += u.output_tokens
        self.reasoning += u.reasoning_tokens
        self.models[r.model] = None
        if r.cost is None:
            self.unpriced += 1
        else:
            self.cost = r.cost if self.cost is None else self.cost + r.cost
        self.start = r.started_at if self.start is None else min(self.start, r.started_at)
        if r.ended_at is not None:
            self.end = r.ended_at if self.end is None else max(self.end, r.ended_at)
        if r.cache_hit:
            self.hits += 1
            return  # a replayed answer says nothing about the model's latency
        self.timed += 1
        if (t := r.ttft_s) is not None:
            self._sample(self.ttfts, t)
        if (d := r.duration_s) is not None:
            self._sample(self.durations, d)
        gen = r.generation_s
        if gen is not None and gen > 0 and u.output_tokens:
            self.gen_tokens += u.output_tokens
            self.gen_time += gen

    def merge(self, other: Aggregate) -> None:
        """Fold ``other`` in (sums exact; the latency samples are concatenated, then bounded)."""
        self.calls += other.calls
        self.hits += other.hits
        self.unpriced += other.unpriced
        self.inp += other.inp
        self.cached += other.cached
        self.write += other.write
        self.out += other.out
        self.reasoning += other.reasoning
        if other.cost is not None:
            self.cost = other.cost if self.cost is None else self.cost + other.cost
        self.timed += other.timed
        for v in other.ttfts:
            self._sample(self.ttfts, v)
        for v in other.durations:
            self._sample(self.durations, v)
        self.gen_tokens += other.gen_tokens
        self.gen_time += other.gen_time
        self.models.update(other.models)
        if other.start is not None:
            self.start = other.start if self.start is None else min(self.start, other.start)
        if other.end is not None:
            self.end = other.end if self.end is None else max(self.end, other.end)

    def summary(self, task_id: str) -> TaskSummary:
        return TaskSummary(
            task_id=task_id,
            calls=self.calls,
            cache_hits=self.hits,
            input_tokens=self.inp,
            cached_input_tokens=self.cached,
            cache_write_tokens=self.write,
            output_tokens=self.out,
            reasoning_tokens=self.reasoning,
            cost=self.cost,
            unpriced_calls=self.unpriced,
            ttft_p50_s=percentile(self.ttfts, 0.5),
            ttft_p95_s=percentile(self.ttfts, 0.95),
            duration_p50_s=percentile(self.durations, 0.5),
            duration_p95_s=percentile(self.durations, 0.95),
            output_tokens_per_s=self.gen_tokens / self.gen_time if self.gen_time > 0 else None,
            models=tuple(self.models),
            started_at=self.start,
            ended_at=self.end,
        )


def summarize(task_id: str, records: Iterable[UsageRecord]) -> TaskSummary:
    """Aggregate ``records`` (any grouping) into one ``TaskSummary`` labelled ``task_id``."""
    agg = Aggregate()
    for r in records:
        agg.add(r)
    return agg.summary(task_id)


ROLLED_UP = "(rolled up)"
"""Task id under which the oldest tasks are merged once a ledger holds ``max_tasks`` tasks."""


class Ledger:
    """Keeps recent ``UsageRecord`` objects and summarises all calls per task, per model and overall.

    Bounded memory, nothing dropped silently: a long-running process records calls forever, so
    the ledger keeps at most ``max_records`` records (the oldest go first) but folds every record
    into running per-task, per-model and overall aggregates as it arrives, and ``task()``,
    ``tasks()``, ``by_model()`` and ``summary()`` read those, so they stay complete and cost the
    same however many calls came before. Beyond ``max_tasks`` tasks (``ROLLED_UP`` included)
    the oldest task aggregates are merged into one ``ROLLED_UP`` task.
    ``records()`` and ``group()`` see the retained records only;
    ``rolled_up`` counts the records no longer retained. Duplicate record ids are recognised
    among the retained records. ``None`` for either bound means unbounded.

    ``sink`` (a path, a ``JsonlSink`` or any callable taking a record) receives each record as it
    is added, e.g. for a crash-safe JSONL log of every call; a failing sink is logged and never
    loses the in-memory record or raises into the caller.
    """

    def __init__(
        self,
        sink: str | Path | Sink | Sequence[Sink] | None = None,
        *,
        max_records: int | None = 10_000,
        max_tasks: int | None = 10_000,
    ) -> None:
        for name, v, low in (("max_records", max_records, 1), ("max_tasks", max_tasks, 2)):
            if v is not None and (not isinstance(v, int) or v < low):
                raise MeteringError(f"{name} must be an int >= {low} or None, got {v!r}")
        self.max_records = max_records
        self.max_tasks = max_tasks
        self._lock = threading.Lock()
        self._records: deque[UsageRecord] = deque()
        self._ids: set[str] = set()
        self._tasks: dict[str, Aggregate] = {}
        self._models: dict[str, Aggregate] = {}
        self._total = Aggregate()
        self.rolled_up = 0
        self._sinks: list[Sink] = []
        # Appended to without a lock (deque.append / popleft are atomic); ``_drain_lock`` makes
        # concurrent readers build the queued records one at a time, in order.
        self._deferred: deque[_Deferred] = deque()
        self._drain_lock = threading.Lock()
        if sink is not None:
            if isinstance(sink, (str, Path)):
                from tokenlean.metering.exporters import JsonlSink

                self._sinks.append(JsonlSink(sink))
            elif callable(sink):
                self._sinks.append(sink)
            else:
                self._sinks.extend(sink)

    # -- writing -------------------------------------------------------------------------------
    def add_sink(self, sink: Sink) -> None:
        self._drain()  # queued calls came before the sink existed: they are not sent to it
        with self._lock:
            self._sinks.append(sink)

    def _defer(self, build: Callable[..., UsageRecord], args: tuple[Any, ...]) -> bool:
        """Queue ``build(*args)`` for the next read; ``False`` (nothing queued) when the record
        must be stored now: a sink wants it at once, or a subclass's ``record`` must see it."""
        if self._sinks or type(self).record is not Ledger.record:
            return False
        self._deferred.append((build, args))
        return True

    def _drain(self) -> None:
        """Build and store every queued record, oldest first."""
        if not self._deferred:
            return
        with self._drain_lock:
            queue = self._deferred
            while queue:
                try:
                    build, args = queue.popleft()
                except IndexError:  # another thread took the last one
                    break
                try:
                    rec = build(*args)
                except Exception:
                    log.exception("could not build a queued usage record; that call is not in the ledger")
                    continue
                self._store(rec)

    def record(self, rec: UsageRecord) -> UsageRecord:
        """Add one record (and hand it to the sinks). Returns it for chaining.

        A record whose ``id`` is already in the ledger is ignored: adapters use the framework's
        run id as record id, so two handlers sharing a ledger (an explicit one and the one
        ``track_task`` installs) cannot count the same call twice.
        """
        if not isinstance(rec, UsageRecord):
            raise MeteringError(f"Ledger.record() takes a UsageRecord, got {type(rec).__name__}")
        if self._deferred:
            self._drain()  # keep call order: queued calls were made before this one
        return self._store(rec)

    def _add(self, rec: UsageRecord) -> bool:
        """Retain and aggregate ``rec`` (lock held); ``False`` for a duplicate id."""
        if rec.id in self._ids:
            return False
        self._ids.add(rec.id)
        self._records.append(rec)
        task_id = rec.task_id or UNTRACKED
        agg = self._tasks.get(task_id)
        if agg is None:
            agg = self._tasks[task_id] = Aggregate()
            while self.max_tasks is not None and len(self._tasks) > self.max_tasks:
                self._roll_up_oldest_task()
        agg.add(rec)
        model = self._models.get(rec.model)
        if model is None:
            model = self._models[rec.model] = Aggregate()
        model.add(rec)
        self._total.add(rec)
        if self.max_records is not None:
            while len(self._records) > self.max_records:
                self._ids.discard(self._records.popleft().id)
                self.rolled_up += 1
        return True

    def _roll_up_oldest_task(self) -> None:
        for task_id in self._tasks:  # insertion order: the oldest task first
            if task_id != ROLLED_UP:
                old = self._tasks.pop(task_id)
                break
        else:  # pragma: no cover - only ROLLED_UP left, and max_tasks >= 1
            return
        rolled = self._tasks.pop(ROLLED_UP, None) or Aggregate()
        rolled.merge(old)
        self._tasks[ROLLED_UP] = rolled

    def _store(self, rec: UsageRecord) -> UsageRecord:
        with self._lock:
            if not self._add(rec):
                log.debug("record %s already in the ledger; ignoring the duplicate", rec.id)
                return rec
            sinks = tuple(self._sinks)
        for sink in sinks:
            try:
                sink(rec)
            except Exception:
                log.exception("metering sink %r failed; the record stays in the in-memory ledger", sink)
        return rec

    def extend(self, records: Iterable[UsageRecord]) -> None:
        """Add many records without calling the sinks (e.g. loaded back from a JSONL file)."""
        recs = list(records)
        self._drain()
        with self._lock:
            for rec in recs:
                self._add(rec)

    def clear(self) -> None:
        self._deferred.clear()
        with self._lock:
            self._records.clear()
            self._ids.clear()
            self._tasks.clear()
            self._models.clear()
            self._total = Aggregate()
            self.rolled_up = 0

    @classmethod
    def from_jsonl(cls, path: str | Path, *, strict: bool = True) -> Ledger:
        """A ledger holding every record of a JSONL file written by ``JsonlSink`` (unbounded)."""
        from tokenlean.metering.exporters import read_jsonl

        ledger = cls(max_records=None, max_tasks=None)
        ledger.extend(read_jsonl(path, strict=strict))
        return ledger

    # -- reading -------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Records retained (``summary().calls`` counts every call)."""
        self._drain()
        with self._lock:
            return len(self._records)

    def __iter__(self) -> Iterator[UsageRecord]:
        return iter(self.records())

    def records(self, task_id: str | None = None) -> list[UsageRecord]:
        """A snapshot of the retained records, optionally of one task (``UNTRACKED`` for task-less calls)."""
        self._drain()
        with self._lock:
            snapshot = list(self._records)
        if task_id is None:
            return snapshot
        return [r for r in snapshot if (r.task_id or UNTRACKED) == task_id]

    def group(self, key: Callable[[UsageRecord], str]) -> dict[str, TaskSummary]:
        """Summaries of the retained records grouped by ``key(record)``, in order of first appearance."""
        groups: dict[str, list[UsageRecord]] = {}
        for r in self.records():
            groups.setdefault(key(r), []).append(r)
        return {k: summarize(k, rs) for k, rs in groups.items()}

    def _summaries(self, aggs: dict[str, Aggregate]) -> dict[str, TaskSummary]:
        self._drain()
        with self._lock:
            return {k: a.summary(k) for k, a in aggs.items()}

    def tasks(self) -> dict[str, TaskSummary]:
        """One ``TaskSummary`` per task id; calls outside any task are under ``UNTRACKED``."""
        return self._summaries(self._tasks)

    def task(self, task_id: str) -> TaskSummary:
        """The summary of one task (zero calls if it has none, or if it was rolled up)."""
        self._drain()
        with self._lock:
            agg = self._tasks.get(task_id)
            return agg.summary(task_id) if agg is not None else Aggregate().summary(task_id)

    def by_model(self) -> dict[str, TaskSummary]:
        return self._summaries(self._models)

    def summary(self) -> TaskSummary:
        """Every call the ledger has seen as one summary (``task_id`` ``"*"``)."""
        self._drain()
        with self._lock:
            return self._total.summary("*")

    def throughput(self, model: str | None = None) -> float | None:
        """Measured output tokens/s (of ``model`` or all calls), e.g. for ``ModelPrice.self_hosted``."""
        self._drain()
        with self._lock:
            agg = self._total if model is None else self._models.get(model)
            return None if agg is None else agg.summary(model or "*").output_tokens_per_s


_DEFAULT_METER: Meter | None = None
_DEFAULT_LOCK = threading.Lock()


def get_default_meter() -> Meter:
    """The process-wide default ``Meter`` (created on first use), used by adapters given none."""
    global _DEFAULT_METER
    with _DEFAULT_LOCK:
        if _DEFAULT_METER is None:
            _DEFAULT_METER = Meter()
        return _DEFAULT_METER


class Meter:
    """The one-call front door: prices a call and records it in a ledger.

    ``meter.record(model=..., usage=...)`` accepts ``Usage`` or any provider usage block
    (normalised by ``tokenlean.types.normalize_usage``). The task id defaults to the current
    task (``with meter.task("name"):``), which adapters rely on to group calls. Malformed usage
    raises ``UsageFormatError`` here; adapters catch it and log, so a user's chain never breaks.
    """

    def __init__(
        self,
        ledger: Ledger | None = None,
        prices: PriceTable | None = None,
        *,
        endpoint: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self.ledger = ledger if ledger is not None else Ledger()
        self.prices = prices if prices is not None else PriceTable.default()
        self.endpoint = endpoint
        self.tags = dict(tags or {})

    def record(
        self,
        *,
        model: str | bytes | None,
        usage: Usage | Mapping[str, Any] | Any,
        endpoint: str | None = None,
        task_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        started_at: float | None = None,
        first_token_at: float | None = None,
        ended_at: float | None = None,
        cache_hit: bool = False,
        cost: Decimal | None = None,
        extra: Mapping[str, Any] | None = None,
        record_id: str | None = None,
    ) -> UsageRecord:
        """Price and store one call. A cache hit costs zero; an unknown model is unpriced (None)."""
        norm = usage if type(usage) is Usage else normalize_usage(usage)
        return self.ledger.record(
            self._build(
                model_name(model),
                norm,
                endpoint,
                task_id if task_id is not None else current_task_id(),
                tags,
                started_at,
                first_token_at,
                ended_at if ended_at is not None else time.time(),
                cache_hit,
                cost,
                extra,
                record_id,
            )
        )

    def record_later(
        self,
        *,
        model: str | None,
        usage: Usage,
        ended_at: float,
        endpoint: str | None = None,
        task_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        started_at: float | None = None,
        first_token_at: float | None = None,
        cache_hit: bool = False,
        extra: Mapping[str, Any] | None = None,
        record_id: object = None,
    ) -> UsageRecord | None:
        """``record`` for the adapters' hot path: the record is built at the ledger's next read.

        ``usage`` must already be a ``Usage`` (normalising is what may fail, and a failure
        belongs to the call that caused it). The task is resolved now, from the caller's context.
        ``record_id`` may be any object whose ``str`` is the id (a run's ``UUID``): formatting
        is deferred too. Returns the record when it was stored at once (see ``Ledger``), else
        ``None``; ``extra`` must not be changed afterwards.
        """
        args = (
            model_name(model),
            usage,
            endpoint,
            task_id if task_id is not None else current_task_id(),
            tags,
            started_at,
            first_token_at,
            ended_at,
            cache_hit,
            None,
            extra,
            record_id,
        )
        if type(self).record is Meter.record and self.ledger._defer(self._build, args):
            return None
        return self.record(
            model=args[0],
            usage=usage,
            endpoint=endpoint,
            task_id=args[3],
            tags=tags,
            started_at=started_at,
            first_token_at=first_token_at,
            ended_at=ended_at,
            cache_hit=cache_hit,
            extra=extra,
            record_id=None if record_id is None else str(record_id),
        )

    def _build(
        self,
        name: str,
        usage: Usage,
        endpoint: str | None,
        task_id: str | None,
        tags: Mapping[str, str] | None,
        started_at: float | None,
        first_token_at: float | None,
        ended_at: float,
        cache_hit: bool,
        cost: Decimal | None,
        extra: Mapping[str, Any] | None,
        record_id: object,
    ) -> UsageRecord:
        if tags and type(tags) is not dict and not isinstance(tags, Mapping):
            tags = _tags(tags)  # a list of labels (or a MeteringError for anything else)
        if extra and type(extra) is not dict and not isinstance(extra, Mapping):
            raise MeteringError(f"extra must be a mapping, got {type(extra).__name__}")
        if cost is None:
            cost = _ZERO if cache_hit else self.prices.cost(name, usage)
        # Positional, in field order: this runs once per metered call, and keyword passing of
        # twelve fields is measurably slower.
        args = (
            name,
            usage,
            endpoint if endpoint is not None else self.endpoint,
            task_id,
            ({**self.tags, **tags} if tags else dict(self.tags)) if (tags or self.tags) else EMPTY_MAPPING,
            cost,
            started_at if started_at is not None else ended_at,
            first_token_at,
            ended_at,
            cache_hit,
            dict(extra) if extra else EMPTY_MAPPING,
        )
        if not record_id:
            return UsageRecord(*args)
        return UsageRecord(*args, record_id if type(record_id) is str else str(record_id))

    @contextmanager
    def task(self, name: str) -> Iterator[TaskHandle]:
        """Group every call inside the block (also in awaited coroutines) under task ``name``."""
        with task_scope(name) as task_id:
            yield TaskHandle(task_id, self.ledger)


@dataclass(frozen=True, slots=True)
class TaskHandle:
    """What ``Meter.task`` yields: the task id and a live view of its summary."""

    task_id: str
    ledger: Ledger

    def summary(self) -> TaskSummary:
        return self.ledger.task(self.task_id)

    def records(self) -> list[UsageRecord]:
        return self.ledger.records(self.task_id)
