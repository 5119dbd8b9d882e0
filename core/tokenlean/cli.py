"""``tokenlean`` / ``python -m tokenlean``: one entry point, subcommands contributed by each lever.

Each lever package owns its commands (``register_cli(subparsers)`` in ``tokenlean/<lever>/cli.py``),
so this module stays a thin dispatcher and a lever whose optional dependencies are missing still
leaves the others usable: its commands simply are not listed.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from tokenlean.errors import TokenleanError

__all__ = ["build_parser", "main"]

logger = logging.getLogger("tokenlean.cli")

# Modules that may expose ``register_cli``; the order is the order of ``tokenlean --help``.
COMMAND_MODULES: tuple[str, ...] = (
    "tokenlean.demo",
    "tokenlean.profile.cli",
    "tokenlean.metering.cli",
    "tokenlean.compaction.cli",
    "tokenlean.cache.cli",
    "tokenlean.layout.cli",
    "tokenlean.routing.cli",
    "tokenlean.server",
    "tokenlean.gateway.cli",
)


def build_parser() -> argparse.ArgumentParser:
    from tokenlean import __version__

    parser = argparse.ArgumentParser(
        prog="tokenlean",
        description="Cut what LLM applications pay in tokens, money and latency.",
    )
    parser.add_argument("--version", action="version", version=f"tokenlean {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (exc.name == name or name.startswith(exc.name + ".")):
                continue  # that lever is not part of this installation
            logger.warning("commands from %s unavailable: %s", name, exc)
            continue
        register = getattr(module, "register_cli", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(func(args) or 0)
    except TokenleanError as exc:
        print(f"tokenlean: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
