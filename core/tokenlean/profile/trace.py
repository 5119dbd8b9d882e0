"""The profiler's one view of a workload: a ``Trace`` of ``Call``s grouped by task.

Every reader (tokenlean's ledger, OpenAI request/response logs, LangChain run exports,
SWE-agent trajectories) turns its format into this shape, so each lever estimator is written
once. A call keeps the core ``Request``/``Response`` when the trace has content (the content
levers need it: prefix stability, duplicates, compaction, routing difficulty) and always keeps
``Usage`` and timings (the levers that only need numbers still work on a content-free ledger).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from tokenlean.types import Request, Response, Usage

__all__ = ["Call", "Trace", "renumber_by_time"]


@dataclass(frozen=True, slots=True)
class Call:
    """One model call as the trace recorded it.

    ``usage_counted`` is True when the trace carried no usage block and the counts come from
    tokenlean's tokenizer (SWE-agent trajectories, some LangChain exports): estimates built on
    them are labelled as such. Times are float epoch seconds, ``None`` when not recorded.
    """

    task_id: str
    index: int
    usage: Usage
    request: Request | None = None
    response: Response | None = None
    model: str | None = None
    endpoint: str | None = None
    started_at: float | None = None
    first_token_at: float | None = None
    ended_at: float | None = None
    cache_hit: bool = False
    cost: Decimal | None = None
    usage_counted: bool = False
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ttft(self) -> float | None:
        """Seconds to the first token, when the trace recorded it."""
        if self.started_at is None or self.first_token_at is None:
            return None
        return max(0.0, self.first_token_at - self.started_at)

    @property
    def latency(self) -> float | None:
        """Seconds from request to the last token."""
        if self.started_at is None or self.ended_at is None:
            return None
        return max(0.0, self.ended_at - self.started_at)

    @property
    def decode_seconds(self) -> float | None:
        """Seconds spent generating after the first token (the part output tokens cost)."""
        if self.first_token_at is None or self.ended_at is None:
            return None
        return max(0.0, self.ended_at - self.first_token_at)


@dataclass(frozen=True)
class Trace:
    """Calls of one or more trace files, in recorded order within each task."""

    calls: tuple[Call, ...]
    sources: tuple[str, ...] = ()
    formats: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.calls)

    def __iter__(self) -> Iterator[Call]:
        return iter(self.calls)

    @property
    def has_content(self) -> bool:
        """Whether the calls carry their requests (needed by the content levers)."""
        return any(c.request is not None for c in self.calls)

    @property
    def has_timing(self) -> bool:
        return any(c.ttft is not None or c.latency is not None for c in self.calls)

    def tasks(self) -> dict[str, list[Call]]:
        """Calls grouped by task id, each list in turn order; tasks in first-seen order."""
        out: dict[str, list[Call]] = {}
        for c in self.calls:
            out.setdefault(c.task_id, []).append(c)
        for calls in out.values():
            calls.sort(key=lambda c: c.index)
        return out

    def total_usage(self) -> Usage:
        total = Usage()
        for c in self.calls:
            total = total + c.usage
        return total

    @classmethod
    def merge(cls, traces: Sequence[Trace]) -> Trace:
        calls: list[Call] = []
        sources: list[str] = []
        formats: list[str] = []
        for t in traces:
            calls.extend(t.calls)
            sources.extend(t.sources)
            formats.extend(t.formats)
        return cls(tuple(calls), tuple(sources), tuple(formats))

    @classmethod
    def from_calls(cls, calls: Iterable[Call], source: str = "", fmt: str = "") -> Trace:
        return cls(tuple(calls), (source,) if source else (), (fmt,) if fmt else ())


def renumber_by_time(calls: list[Call]) -> list[Call]:
    """Calls ordered by start time within each task (input order on ties; calls without a time
    last), each ``index`` renumbered from zero: readers whose files do not list calls in order."""
    order = sorted(
        range(len(calls)), key=lambda i: (calls[i].started_at is None, calls[i].started_at or 0.0, i)
    )
    per_task: dict[str, int] = {}
    out: list[Call] = []
    for i in order:
        c = calls[i]
        idx = per_task.get(c.task_id, 0)
        per_task[c.task_id] = idx + 1
        out.append(c if c.index == idx else replace(c, index=idx))
    return out
