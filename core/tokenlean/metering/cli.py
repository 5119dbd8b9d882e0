"""``tokenlean ledger ...``: read a JSONL ledger back as a per-task table or Prometheus text.

Registered by ``tokenlean.cli`` through ``register_cli``. Errors in the file (unreadable, not
UTF-8, corrupt line) print one clear line and return exit status 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal
from pathlib import Path

from tokenlean.errors import TokenleanError

__all__ = ["register_cli"]


def register_cli(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    ledger = subparsers.add_parser("ledger", help="summarise or export a JSONL usage ledger")
    sub = ledger.add_subparsers(dest="ledger_command", metavar="COMMAND")
    sub.required = True

    summary = sub.add_parser("summary", help="per-task table: tokens, cost, TTFT, tokens/s, cached share")
    summary.add_argument("file", type=Path, help="JSONL file written by tokenlean (JsonlSink)")
    summary.add_argument("--json", action="store_true", help="print JSON instead of a table")
    summary.add_argument(
        "--by", choices=("task", "model"), default="task", help="group rows by (default: task)"
    )
    summary.add_argument("--lenient", action="store_true", help="skip corrupt lines instead of failing")
    summary.set_defaults(func=_summary)

    prom = sub.add_parser("export-prometheus", help="Prometheus text exposition of the ledger")
    prom.add_argument("file", type=Path, help="JSONL file written by tokenlean (JsonlSink)")
    prom.add_argument("-o", "--output", type=Path, help="write atomically to this file (default: stdout)")
    prom.add_argument(
        "--no-task-label", action="store_true", help="aggregate over tasks (bounded cardinality)"
    )
    prom.add_argument("--lenient", action="store_true", help="skip corrupt lines instead of failing")
    prom.set_defaults(func=_export_prometheus)


def _fmt_cost(cost: Decimal | None) -> str:
    if cost is None:
        return "unpriced"
    return f"${cost:.6f}" if cost < 1 else f"${cost:,.2f}"


def _fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"


def _summary(args: argparse.Namespace) -> int:
    from tokenlean.metering.ledger import Ledger

    try:
        ledger = Ledger.from_jsonl(args.file, strict=not args.lenient)
    except TokenleanError as exc:
        print(f"tokenlean ledger summary: {exc}", file=sys.stderr)
        return 2
    groups = ledger.tasks() if args.by == "task" else ledger.by_model()
    total = ledger.summary()
    if args.json:
        out = {"groups": [s.to_dict() for s in groups.values()], "total": total.to_dict()}
        print(json.dumps(out, indent=2))
        return 0

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{args.file} — {total.calls} calls in {len(groups)} {args.by}s")
    table.add_column("task" if args.by == "task" else "model", no_wrap=True)
    for col in ("calls", "hits", "input", "cached", "output", "cost", "unpriced", "TTFT p50", "TTFT p95"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("tok/s", justify="right", no_wrap=True)
    table.add_column("cached %", justify="right", no_wrap=True)
    rows = [*groups.values()]
    for i, s in enumerate([*rows, total]):
        table.add_row(
            "TOTAL" if i == len(rows) else s.task_id,
            str(s.calls),
            str(s.cache_hits),
            f"{s.input_tokens:,}",
            f"{s.cached_input_tokens:,}",
            f"{s.output_tokens:,}",
            _fmt_cost(s.cost),
            str(s.unpriced_calls),
            _fmt_s(s.ttft_p50_s),
            _fmt_s(s.ttft_p95_s),
            "-" if s.output_tokens_per_s is None else f"{s.output_tokens_per_s:.1f}",
            f"{s.cached_share:.1%}",
            end_section=i == len(rows) - 1,
        )
    Console(width=max(140, Console().width)).print(table)
    return 0


def _export_prometheus(args: argparse.Namespace) -> int:
    from tokenlean.metering.exporters import read_jsonl, to_prometheus, write_prometheus

    try:
        records = list(read_jsonl(args.file, strict=not args.lenient))
        if args.output:
            write_prometheus(records, args.output, by_task=not args.no_task_label)
        else:
            sys.stdout.write(to_prometheus(records, by_task=not args.no_task_label))
    except TokenleanError as exc:
        print(f"tokenlean ledger export-prometheus: {exc}", file=sys.stderr)
        return 2
    return 0
