"""Per-session and per-day totals of a trace: what a coding-agent user reads first.

Why next to the lever table: people who run Claude Code or Codex all day ask "which session cost
what, and how much went where each day" before "which lever"; the same rows also show how much of
each session's input the provider's prompt cache already served (the realised cache-read share),
which is what any further saving is measured against. Each row is priced like the rest of the
report, call by call; a model no price source knows is counted in tokens and marked unpriced.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tokenlean.profile.trace import Call

__all__ = ["UsageRow", "by_day", "by_session", "html_sections", "rich_tables"]


@dataclass
class UsageRow:
    """Totals of a group of calls."""

    key: str
    calls: int = 0
    input_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal(0)
    unpriced_calls: int = 0
    first: float | None = None
    last: float | None = None
    client: str = ""
    models: tuple[str, ...] = ()

    def add(self, call: Call, cost: Decimal, priced: bool) -> None:
        u = call.usage
        self.calls += 1
        self.input_tokens += u.input_tokens
        self.cache_read_tokens += u.cached_input_tokens
        self.cache_write_tokens += u.cache_write_tokens
        self.output_tokens += u.output_tokens
        self.cost += cost
        self.unpriced_calls += 0 if priced else 1
        t = call.started_at
        if t is not None:
            self.first = t if self.first is None else min(self.first, t)
            self.last = t if self.last is None else max(self.last, t)
        client = str((call.extra or {}).get("client") or "")
        if client and client not in self.client.split(", "):
            self.client = ", ".join(x for x in (self.client, client) if x)
        if call.model and call.model not in self.models:
            self.models = (*self.models, call.model)

    @property
    def cache_read_share(self) -> float:
        """Input tokens the provider's prompt cache served, over all input tokens."""
        return self.cache_read_tokens / self.input_tokens if self.input_tokens else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "client": self.client,
            "models": list(self.models),
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_share": round(self.cache_read_share, 4),
            "cost": str(self.cost),
            "unpriced_calls": self.unpriced_calls,
            "first": self.first,
            "last": self.last,
        }


def _group(
    calls: Sequence[Call], costs: Sequence[Decimal], priced: Sequence[bool], key: Any
) -> list[UsageRow]:
    rows: dict[str, UsageRow] = {}
    for c, cost, ok in zip(calls, costs, priced, strict=True):
        k = key(c)
        row = rows.get(k)
        if row is None:
            row = rows[k] = UsageRow(k)
        row.add(c, cost, ok)
    return list(rows.values())


def by_session(calls: Sequence[Call], costs: Sequence[Decimal], priced: Sequence[bool]) -> list[UsageRow]:
    """One row per session (task), most expensive first."""
    rows = _group(calls, costs, priced, lambda c: c.task_id)
    return sorted(rows, key=lambda r: (-r.cost, -r.input_tokens))


def by_day(calls: Sequence[Call], costs: Sequence[Decimal], priced: Sequence[bool]) -> list[UsageRow]:
    """One row per calendar day (UTC) of the calls' timestamps, in date order."""

    def day(c: Call) -> str:
        if c.started_at is None:
            return "(no time)"
        return dt.datetime.fromtimestamp(c.started_at, dt.UTC).date().isoformat()

    return sorted(_group(calls, costs, priced, day), key=lambda r: r.key)


_COLUMNS = ("calls", "input", "cache read", "read share", "cache write", "output", "cost")


def _cells(r: UsageRow) -> list[str]:
    cost = f"${r.cost:.4f}" + (f" (+{r.unpriced_calls} unpriced)" if r.unpriced_calls else "")
    return [
        f"{r.calls:,}",
        f"{r.input_tokens:,}",
        f"{r.cache_read_tokens:,}",
        f"{r.cache_read_share:.1%}",
        f"{r.cache_write_tokens:,}",
        f"{r.output_tokens:,}",
        cost,
    ]


def rich_tables(sessions: Sequence[UsageRow], days: Sequence[UsageRow], limit: int = 20) -> list[Any]:
    """The per-session (most expensive ``limit``) and per-day tables for the terminal."""
    from rich.table import Table

    out = []
    for title, rows, first in (
        (
            f"Sessions ({len(sessions)}; the {min(limit, len(sessions))} most expensive)",
            sessions[:limit],
            "session",
        ),
        (f"Days ({len(days)})", days, "day (UTC)"),
    ):
        t = Table(title=title, title_justify="left")
        t.add_column(first, no_wrap=True)
        if first == "session":
            t.add_column("client", no_wrap=True)
        for col in _COLUMNS:
            t.add_column(col, justify="right", no_wrap=True)
        for r in rows:
            head = [r.key[:36]] + ([r.client or "-"] if first == "session" else [])
            t.add_row(*head, *_cells(r))
        out.append(t)
    return out


def html_sections(sessions: Sequence[UsageRow], days: Sequence[UsageRow], limit: int = 50) -> list[str]:
    """The same tables as HTML sections for ``ProfileReport.to_html(extra_sections=...)``."""
    from tokenlean.profile.html import html_table

    parts = []
    for title, rows, first in (
        ("Sessions", sessions[:limit], "session"),
        ("Days (UTC)", days, "day"),
    ):
        header = [first, *(["client"] if first == "session" else []), *_COLUMNS]
        body = [[r.key, *([r.client or "-"] if first == "session" else []), *_cells(r)] for r in rows]
        parts.append(f"<h2>{title}</h2>" + html_table(header, body))
    return parts
