"""``tokenlean profile TRACE... [--html OUT] [--json OUT] [--prices TOML]``.

Prints the ranked lever table (with a progress bar while the estimators run) and writes the
self-contained HTML report. A trace in no known format exits with status 2 and one line naming
the file, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tokenlean.errors import TokenleanError

__all__ = ["register_cli"]


def register_cli(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from tokenlean.profile.profiler import LEVERS

    p = subparsers.add_parser(
        "profile",
        help="estimate what each lever would save on your traces; ranked table + HTML report",
        description=(
            "Read traces (tokenlean ledger JSONL, OpenAI request/response JSONL, LangChain run "
            "exports, SWE-agent .traj; a directory means every trace file in it) and rank the levers."
        ),
    )
    p.add_argument(
        "traces",
        nargs="*",
        type=Path,
        metavar="TRACE",
        help="trace files or directories (none: this machine's Claude Code and Codex CLI sessions, "
        "found under CLAUDE_CONFIG_DIR / CODEX_HOME or their default places)",
    )
    p.add_argument("--sessions", action="store_true", help="print the per-session and per-day tables")
    p.add_argument("--html", type=Path, metavar="OUT", help="write the self-contained HTML report here")
    p.add_argument("--json", type=Path, metavar="OUT", help="write the report as JSON here")
    p.add_argument("--prices", type=Path, metavar="TOML", help="price overrides (PriceTable TOML shape)")
    p.add_argument(
        "--model",
        default="gpt-4o",
        help="price calls that name no model as this (default: gpt-4o); a named model no price "
        "source knows is reported as unpriced, never priced as another",
    )
    p.add_argument("--cheap-model", default="gpt-4o-mini", help="routing target for easy requests")
    p.add_argument("--lever", action="append", choices=LEVERS, help="only these levers (repeatable)")
    p.add_argument(
        "--output-cap", type=int, help="max_tokens for 'generate less' (default: p75 answer length)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_profile)


def _profile(args: argparse.Namespace) -> int:
    from rich.console import Console

    from tokenlean.metering import PriceTable
    from tokenlean.profile.profiler import LEVERS, Profiler

    console = Console()
    try:
        prices = PriceTable.default()
        if args.prices is not None:
            prices = prices.with_overrides(args.prices)
        paths = list(args.traces) or _local_sessions(console)
        if not paths:
            return 2
        trace = _read(paths, console, not args.no_progress, skip_empty=not args.traces)
        profiler = Profiler(
            prices=prices,
            default_model=args.model,
            cheap_model=args.cheap_model,
            levers=tuple(args.lever or LEVERS),
            output_cap=args.output_cap,
            show_progress=not args.no_progress and len(trace) > 20,
            console=console,
        )
        report = profiler.profile(trace)
    except TokenleanError as exc:
        print(f"tokenlean profile: {exc}", file=sys.stderr)
        return 2
    report.print(console, sessions=True if (args.sessions or not args.traces) else None)
    if args.json is not None:
        console.print(f"JSON report: {report.write_json(args.json)}")
    if args.html is not None:
        console.print(f"HTML report: {report.write_html(args.html).resolve()}")
    return 0


def _local_sessions(console: Any) -> list[Path]:
    """This machine's coding-agent sessions (Claude Code transcripts, Codex CLI rollouts)."""
    from tokenlean.profile.coding_agents import find_claude_code_sessions, find_codex_sessions

    claude, codex = find_claude_code_sessions(), find_codex_sessions()
    if not claude and not codex:
        print(
            "tokenlean profile: no trace given, and no Claude Code sessions (CLAUDE_CONFIG_DIR, "
            "~/.claude/projects) or Codex CLI sessions (CODEX_HOME, ~/.codex/sessions) found",
            file=sys.stderr,
        )
        return []
    console.print(f"Found {len(claude)} Claude Code and {len(codex)} Codex CLI session files.")
    return [*claude, *codex]


def _read(paths: list[Path], console: Any, show: bool, *, skip_empty: bool) -> Any:
    """``read_traces`` with a progress bar when there are many files."""
    from tokenlean.profile.readers import read_traces

    if not show or len(paths) < 20:
        return read_traces(paths, model=None, skip_empty=skip_empty)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("reading"), BarColumn(), TextColumn("{task.completed}/{task.total} files"),
        TimeElapsedColumn(), console=console, transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task("read", total=len(paths))
        return read_traces(
            paths,
            model=None,
            skip_empty=skip_empty,
            progress=lambda done, total: bar.update(task, completed=done),
        )
