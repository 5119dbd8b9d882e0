"""``tokenlean layout analyze FILE.jsonl``: breakers and the stable prefix of a request log.

Each line of the file is one OpenAI chat-completions request body, or an object holding one
under ``"request"`` or ``"body"`` (the shape of request/response logs and batch files).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tokenlean.errors import InputError, MessageFormatError

__all__ = ["load_requests", "register_cli"]


def load_requests(path: str | Path) -> list[dict[str, Any]]:
    """OpenAI request bodies from a JSONL file (blank lines skipped)."""
    out: list[dict[str, Any]] = []
    with Path(path).open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise MessageFormatError(f"{path}:{n}: not JSON: {exc}") from exc
            if isinstance(obj, dict) and "messages" not in obj:
                for key in ("request", "body"):
                    if isinstance(obj.get(key), dict) and "messages" in obj[key]:
                        obj = obj[key]
                        break
            if not isinstance(obj, dict) or "messages" not in obj:
                raise MessageFormatError(f"{path}:{n}: expected a chat request with 'messages'")
            out.append(obj)
    return out


def _analyze(args: argparse.Namespace) -> int:
    from tokenlean.layout.analysis import analyze
    from tokenlean.layout.markers import plan_cache_markers

    try:
        requests = load_requests(args.file)
    except (OSError, InputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not requests:
        print(f"error: {args.file} holds no requests", file=sys.stderr)
        return 2
    report = analyze(requests, model=args.model, window=args.window)
    if args.json:
        data = report.to_dict()
        data["stable_prefix_text"] = report.common_prefix_text[: args.show_prefix]
        if args.provider:
            plan = plan_cache_markers(requests[-1], args.provider, model=args.model, layout=report.layout)
            data["cache_plan"] = plan.to_dict()
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    _print(report, args)
    if args.provider:
        from tokenlean.layout.reorder import reorder

        laid = reorder(requests[-1], report.layout, model=args.model).request
        plan = plan_cache_markers(laid, args.provider, model=args.model, layout=report.layout)
        print(
            f"\n{args.provider} plan for the last request (re-laid): {len(plan.breakpoints)} marker(s), "
            f"{plan.expected_cached_tokens} of {plan.prompt_tokens} tokens cacheable "
            f"(minimum {plan.min_cacheable_tokens})"
        )
        for b in plan.breakpoints:
            print(
                f"  after {b.where} (message {b.message_index}, tool {b.tool_index}): {b.prefix_tokens} tokens"
            )
        for k, v in plan.params.items():
            print(f"  {k} = {v}")
        for n in plan.notes:
            print(f"  note: {n}")
    return 0


def _print(report: Any, args: argparse.Namespace) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # rich is optional: plain text
        print(report.format())
        print("\nstable prefix:\n" + report.common_prefix_text[: args.show_prefix])
        return
    console = Console()
    console.print(
        f"[bold]{report.requests}[/] request(s), {report.prompt_tokens} prompt tokens; "
        f"stable prefix shared by all: [bold]{report.common_prefix_tokens}[/] tokens"
    )
    console.print(
        f"reusable by a prefix cache: {report.reused_prefix_tokens} ({report.cacheable_share:.1%}) -> "
        f"after layout: [bold green]{report.reused_prefix_tokens_after}[/] ({report.cacheable_share_after:.1%})"
    )
    table = Table(title=f"{len(report.breakers)} prefix breaker(s)")
    for col in ("kind", "where", "seen", "x", "tokens at risk", "value", "fix"):
        table.add_column(col, overflow="fold")
    for b in report.breakers:
        table.add_row(
            str(b.kind),
            b.location,
            "observed" if b.observed else "latent",
            str(b.occurrences),
            str(b.tokens_at_risk),
            b.excerpt[:60],
            b.hint,
        )
    console.print(table)
    for n in report.notes:
        console.print(f"note: {n}")
    console.print("[bold]stable prefix[/] (first characters):")
    console.print(report.common_prefix_text[: args.show_prefix], markup=False, highlight=False)


def register_cli(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``layout analyze`` to the ``tokenlean`` command."""
    layout = subparsers.add_parser("layout", help="prompt-cache layout: find what breaks the stable prefix")
    sub = layout.add_subparsers(dest="layout_command", required=True)
    p = sub.add_parser("analyze", help="analyse a JSONL file of OpenAI-format chat requests")
    p.add_argument("file", help="JSONL, one request body per line")
    p.add_argument("--model", default=None, help="tokenizer model (default: the requests' model)")
    p.add_argument("--window", type=int, default=64, help="earlier requests a prefix cache remembers")
    p.add_argument(
        "--provider",
        choices=("anthropic", "openai", "vllm", "llamacpp"),
        default=None,
        help="also plan cache markers",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--show-prefix", type=int, default=400, help="characters of the stable prefix to print")
    p.set_defaults(func=_analyze)
