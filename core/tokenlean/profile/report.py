"""``ProfileReport``: the trace summary plus ranked lever estimates, for terminal, JSON and HTML.

The ranking is by money saved (then tokens): the point of profiling is to pull the *one* lever
this workload responds to first. Levers that cannot be estimated from the trace (no content in a
ledger, a lever whose module is missing) stay in the table with the reason, so "not applicable"
is never confused with "saves nothing".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from tokenlean.metering.summary import percentile
from tokenlean.profile.estimates import LatencyModel, LeverEstimate
from tokenlean.profile.sessions import UsageRow
from tokenlean.profile.trace import Trace

__all__ = ["ProfileReport", "TraceSummary"]

_ZERO = Decimal(0)


@dataclass(frozen=True)
class TraceSummary:
    """Totals of the profiled trace (cost at the report's prices)."""

    calls: int
    tasks: int
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cost: Decimal
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    latency_p50_s: float | None
    decode_tokens_per_s: float | None
    counted_share: float
    formats: tuple[str, ...]
    sources: tuple[str, ...]
    models: tuple[str, ...]

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "tasks": self.tasks,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "total_tokens": self.total_tokens,
            "cost": str(self.cost),
            "ttft_p50_s": self.ttft_p50_s,
            "ttft_p95_s": self.ttft_p95_s,
            "latency_p50_s": self.latency_p50_s,
            "decode_tokens_per_s": self.decode_tokens_per_s,
            "counted_share": self.counted_share,
            "formats": sorted(set(self.formats)),
            "sources": list(self.sources),
            "models": list(self.models),
        }

    @classmethod
    def of(cls, trace: Trace, baseline_costs: list[Decimal], latency: LatencyModel) -> TraceSummary:
        calls = trace.calls
        ttfts = [c.ttft for c in calls if c.ttft is not None and not c.cache_hit]
        lats = [c.latency for c in calls if c.latency is not None]
        total = trace.total_usage()
        return cls(
            calls=len(calls),
            tasks=len(trace.tasks()),
            input_tokens=total.input_tokens,
            output_tokens=total.output_tokens,
            cached_input_tokens=total.cached_input_tokens,
            cost=sum(baseline_costs, _ZERO),
            ttft_p50_s=percentile(ttfts, 0.5),  # type: ignore[arg-type]
            ttft_p95_s=percentile(ttfts, 0.95),  # type: ignore[arg-type]
            latency_p50_s=percentile(lats, 0.5),  # type: ignore[arg-type]
            decode_tokens_per_s=latency.decode_tokens_per_s if latency.fitted else None,
            counted_share=(sum(1 for c in calls if c.usage_counted) / len(calls)) if calls else 0.0,
            formats=trace.formats,
            sources=trace.sources,
            models=tuple(sorted({c.model or "?" for c in calls})),
        )


@dataclass
class ProfileReport:
    """Everything the profiler found; ``estimates`` is ranked best lever first."""

    summary: TraceSummary
    estimates: list[LeverEstimate]
    latency: LatencyModel
    default_model: str
    assumptions: list[str] = field(default_factory=list)
    tokens_per_turn: dict[str, list[int]] = field(default_factory=dict)
    ttfts: list[float] = field(default_factory=list)
    task_cost: dict[str, Decimal] = field(default_factory=dict)
    #: Per-session and per-day totals (``tokenlean.profile.sessions``).
    sessions: list[UsageRow] = field(default_factory=list)
    days: list[UsageRow] = field(default_factory=list)

    @property
    def coding_agents(self) -> bool:
        """Whether the trace holds coding-agent sessions (their tables are shown by default)."""
        return any(r.client for r in self.sessions)

    def __post_init__(self) -> None:
        self.estimates.sort(key=lambda e: (not e.applicable, -e.cost_saved, -e.tokens_saved))

    @property
    def best(self) -> LeverEstimate | None:
        """The lever to pull first, or ``None`` when no lever applies."""
        return next((e for e in self.estimates if e.applicable and e.cost_saved > 0), None)

    def estimate(self, lever: str) -> LeverEstimate:
        for e in self.estimates:
            if e.lever == lever:
                return e
        raise KeyError(lever)

    # -- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary.to_dict(),
            "priced_as": self.default_model,
            "latency_model": {
                "overhead_s": self.latency.overhead_s,
                "prefill_s_per_token": self.latency.prefill_s_per_token,
                "decode_tokens_per_s": self.latency.decode_tokens_per_s,
                "fitted_from_trace": self.latency.fitted,
            },
            "recommendations": [e.to_dict() for e in self.estimates],
            "best": self.best.lever if self.best else None,
            "assumptions": list(self.assumptions),
            "task_cost": {k: str(v) for k, v in self.task_cost.items()},
            "sessions": [r.to_dict() for r in self.sessions],
            "days": [r.to_dict() for r in self.days],
        }

    def write_json(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
        return p

    def to_html(self, *, title: str = "tokenlean profile", extra_sections: list[str] | None = None) -> str:
        from tokenlean.profile.html import render_html
        from tokenlean.profile.sessions import html_sections

        tables = html_sections(self.sessions, self.days) if self.sessions else []
        return render_html(self, title=title, extra_sections=[*tables, *(extra_sections or [])])

    def write_html(self, path: str | Path, **kwargs: Any) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(self.to_html(**kwargs), encoding="utf-8")
        return p

    # -- terminal ----------------------------------------------------------------------------------
    def table(self) -> Any:
        """The ranked recommendations as a ``rich.table.Table``."""
        from rich.table import Table

        s = self.summary
        t = Table(
            title=(
                f"tokenlean profile: {s.calls} calls, {s.tasks} tasks, {s.total_tokens:,} tokens, "
                f"${s.cost:.4f} (calls naming no model priced as {self.default_model})"
            ),
            title_justify="left",
        )
        t.add_column("#", justify="right", no_wrap=True)
        t.add_column("lever", no_wrap=True)
        t.add_column("tokens saved", justify="right", no_wrap=True)
        t.add_column("cost saved", justify="right", no_wrap=True)
        t.add_column("share", justify="right", no_wrap=True)
        t.add_column("latency saved", justify="right", no_wrap=True)
        t.add_column("how / why not", min_width=20, ratio=1)
        for i, e in enumerate(self.estimates, 1):
            if e.applicable:
                t.add_row(
                    str(i),
                    e.lever,
                    f"{e.tokens_saved:,}",
                    f"${e.cost_saved:.4f}",
                    f"{e.cost_saved_share:.1%}",
                    f"{e.latency_saved_s:.1f}s",
                    e.action,
                )
            else:
                t.add_row(str(i), f"[dim]{e.lever}[/dim]", "-", "-", "-", "-", f"[dim]{e.reason}[/dim]")
        return t

    def print(self, console: Any = None, *, sessions: bool | None = None) -> None:
        """The lever table, then (``sessions``; default: for coding-agent traces) the
        per-session and per-day tables."""
        from rich.console import Console

        console = console or Console()
        if (self.coding_agents if sessions is None else sessions) and self.sessions:
            from tokenlean.profile.sessions import rich_tables

            for t in rich_tables(self.sessions, self.days):
                console.print(t)
        console.print(self.table())
        best = self.best
        if best is not None:
            console.print(
                f"[bold]Pull first:[/bold] {best.title} — saves {best.cost_saved_share:.1%} of cost "
                f"({best.tokens_saved:,} tokens). {best.basis}."
            )
        else:
            console.print("No lever saves anything measurable on this trace.")
        for a in self.assumptions:
            console.print(f"[dim]· {a}[/dim]")
