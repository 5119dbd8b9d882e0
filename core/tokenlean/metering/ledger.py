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
call order. Done in a batch this is also cheaper in total: the framework's own work between calls
evicts ours from the CPU caches, so records built together run warm (``benchmarks/overhead.py``
measures both ways). A ledger with
a sink (a crash-safe JSONL log) and a ``Meter`` or ``Ledger`` subclass that overrides
``record`` are never deferred: they record at the call, as they did.
"""

from __future__ import annotations

import logging
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
from tokenlean.metering.exporters import JsonlSink, read_jsonl
from tokenlean.metering.prices import PriceTable
from tokenlean.metering.records import (
    EMPTY_MAPPING,
    UsageRecord,
    _tags,
    current_task_id,
    model_name,
    task_scope,
)
from tokenlean.metering.summary import Aggregate, TaskSummary, summarize
from tokenlean.types import Usage, normalize_usage

__all__ = ["ROLLED_UP", "UNTRACKED", "Ledger", "Meter", "TaskHandle", "get_default_meter"]

log = logging.getLogger("tokenlean.metering.ledger")

_ZERO = Decimal(0)

#: Task id under which calls made outside any task are summarised.
UNTRACKED = "(untracked)"

Sink = Callable[[UsageRecord], None]
#: A queued call: ``build(*args)`` returns the record to store.
_Deferred = tuple[Callable[..., UsageRecord], tuple[Any, ...]]


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

    def remove_sink(self, sink: Sink) -> None:
        """Stop sending records to ``sink`` (no-op if it is not attached)."""
        with self._lock:
            self._sinks = [s for s in self._sinks if s is not sink]

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
        # twelve fields is measurably slower (``benchmarks/overhead.py``).
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
