"""What a group of calls added up to: :class:`TaskSummary`, and the running :class:`Aggregate` behind it.

The ledger keeps one ``Aggregate`` per task, per model and overall, so a summary never rereads the
records; :func:`summarize` builds one from any group of records (the Prometheus exporter's series,
a ledger's custom grouping).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tokenlean.metering.records import UsageRecord
from tokenlean.types import Usage

__all__ = ["Aggregate", "TaskSummary", "percentile", "summarize"]


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
