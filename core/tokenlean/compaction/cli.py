"""``tokenlean compact FILE --query ... --ratio 0.4``: compact a file and print result + stats.

``--ratio`` is the share of tokens to remove, ``--keep`` the share to keep; give one of them.

FILE may be text, markdown, code, or an OpenAI-format messages JSON (a list of messages, or a
request body with ``messages``); ``-`` reads stdin. The compacted content goes to stdout, the
statistics to stderr (so ``tokenlean compact f.md -q ... > out.md`` works), or everything as one
JSON object with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["register_cli", "run_compact"]


def register_cli(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "compact",
        help="verbatim compaction of a text, code file or messages JSON",
        description="Drop low-information units (sentences, lines, blocks, messages) verbatim.",
    )
    p.add_argument("file", help="path to a text / markdown / code file or OpenAI messages JSON ('-' = stdin)")
    p.add_argument("-q", "--query", default=None, help="what the compacted context must still answer")
    p.add_argument("-r", "--ratio", type=float, default=None, help="share of tokens to remove (default 0.5)")
    p.add_argument(
        "-k", "--keep", type=float, default=None, help="share of tokens to keep (instead of --ratio)"
    )
    p.add_argument(
        "-t", "--target-tokens", type=int, default=None, help="absolute token budget (wins over --ratio)"
    )
    p.add_argument("--mode", choices=("auto", "lexical", "embedding"), default="lexical")
    p.add_argument(
        "--kind",
        choices=("auto", "prose", "markdown", "code", "python", "json", "log"),
        default="auto",
        help="how to segment a text file (default: detect)",
    )
    p.add_argument(
        "--no-marker", action="store_true", help="omit silently instead of '[… N tokens omitted …]'"
    )
    p.add_argument("--keep-last-turns", type=int, default=2)
    p.add_argument("--mask-after", type=int, default=None, help="mask tool results older than N turns")
    p.add_argument("--json", action="store_true", help="print one JSON object (result + stats)")
    p.set_defaults(func=run_compact)


def _load(path: str) -> str:
    data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    return data.decode("utf-8")


def _as_messages(text: str) -> list[Any] | None:
    s = text.lstrip()
    if not s.startswith(("[", "{")):
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if isinstance(obj, dict) and isinstance(obj.get("messages"), list):
        obj = obj["messages"]
    if isinstance(obj, list) and obj and all(isinstance(m, dict) and "role" in m for m in obj):
        return obj
    return None


def run_compact(args: argparse.Namespace) -> int:
    from tokenlean.compaction.compactor import Compactor
    from tokenlean.compaction.steps import UNSET
    from tokenlean.errors import TokenleanError

    try:
        text = _load(args.file)
    except FileNotFoundError:
        print(f"tokenlean compact: no such file: {args.file}", file=sys.stderr)
        return 2
    except UnicodeDecodeError as exc:
        print(f"tokenlean compact: {args.file} is not UTF-8 text (byte {exc.start})", file=sys.stderr)
        return 2
    try:
        compactor = Compactor(
            ratio=UNSET if args.ratio is None else args.ratio,
            keep=args.keep,
            target_tokens=args.target_tokens,
            mode=args.mode,
            kind=args.kind,
            marker=None if args.no_marker else "[… {tokens} tokens omitted · {handle} …]",
            keep_last_turns=args.keep_last_turns,
            mask_observations_after=args.mask_after,
        )
        msgs = _as_messages(text)
        result = compactor.compact(msgs if msgs is not None else text, query=args.query)
        result.verify()
    except TokenleanError as exc:
        print(f"tokenlean compact: {exc}", file=sys.stderr)
        return 2
    stats = {
        "tokens_before": result.tokens_before,
        "tokens_after": result.tokens_after,
        "reduction": round(result.reduction, 4),
        "budget": result.budget,
        "budget_met": result.budget_met,
        "dropped": dict(result.dropped),
        "omissions": len(result.omissions),
    }
    if args.json:
        body: dict[str, Any] = {"stats": stats}
        if msgs is not None:
            body["messages"] = result.to_openai()
        else:
            body["text"] = result.messages[0].text
        body["omissions"] = [
            {"handle": o.handle, "message": o.message, "tokens": o.tokens, "policy": o.policy}
            for o in result.omissions
        ]
        print(json.dumps(body, ensure_ascii=False, indent=2))
        return 0
    if msgs is not None:
        print(json.dumps(result.to_openai(), ensure_ascii=False, indent=2))
    else:
        sys.stdout.write(result.messages[0].text)
        if not result.messages[0].text.endswith("\n"):
            sys.stdout.write("\n")
    print(
        f"tokens {stats['tokens_before']} -> {stats['tokens_after']} "
        f"({stats['reduction']:.1%} fewer), budget {stats['budget']}, "
        f"omissions {stats['omissions']}, dropped {stats['dropped']}",
        file=sys.stderr,
    )
    return 0
