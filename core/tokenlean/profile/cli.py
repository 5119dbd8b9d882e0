"""``tokenlean profile TRACE... [--html OUT] [--json OUT] [--prices TOML]``.

Prints the ranked lever table (with a progress bar while the estimators run) and writes the
self-contained HTML report. A trace in no known format exits with status 2 and one line naming
the file, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
    p.add_argument("traces", nargs="+", type=Path, metavar="TRACE", help="trace files or directories")
    p.add_argument("--html", type=Path, metavar="OUT", help="write the self-contained HTML report here")
    p.add_argument("--json", type=Path, metavar="OUT", help="write the report as JSON here")
    p.add_argument("--prices", type=Path, metavar="TOML", help="price overrides (PriceTable TOML shape)")
    p.add_argument(
        "--model", default="gpt-4o", help="price calls of unknown models as this (default: gpt-4o)"
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
    from tokenlean.profile.readers import read_traces

    console = Console()
    try:
        prices = PriceTable.default()
        if args.prices is not None:
            prices = prices.with_overrides(args.prices)
        trace = read_traces(args.traces, model=None)
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
    report.print(console)
    if args.json is not None:
        console.print(f"JSON report: {report.write_json(args.json)}")
    if args.html is not None:
        console.print(f"HTML report: {report.write_html(args.html).resolve()}")
    return 0
