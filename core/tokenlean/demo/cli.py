"""``tokenlean demo``: the command line of ``run_demo``."""

from __future__ import annotations

import argparse
from pathlib import Path

from tokenlean.errors import TokenleanError

__all__ = ["register_cli"]


def register_cli(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "demo",
        help="run the bundled workload twice (baseline, every lever on) on local models and report",
        description=(
            "Start two local llama.cpp model servers, run a tool-using agent, a RAG session and repeated "
            "support questions with and without tokenlean's levers, and write a before/after report."
        ),
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("tokenlean-report"),
        help="output directory (default: ./tokenlean-report)",
    )
    p.add_argument("--quick", action="store_true", help="a shorter workload (same kinds of traffic)")
    p.add_argument("--strong-price-as", default="gpt-4o", help="price the strong endpoint as this model")
    p.add_argument("--weak-price-as", default="gpt-4o-mini", help="price the weak endpoint as this model")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    import sys

    from tokenlean.demo.run import run_demo

    try:
        run_demo(
            args.out,
            quick=args.quick,
            strong_price_as=args.strong_price_as,
            weak_price_as=args.weak_price_as,
        )
    except TokenleanError as exc:
        print(f"tokenlean demo: {exc}", file=sys.stderr)
        return 2
    return 0
