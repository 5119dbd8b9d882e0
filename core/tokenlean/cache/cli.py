"""``tokenlean cache ...`` and ``tokenlean serve-redis``.

* ``tokenlean cache stats PATH``: entries, hits and size of an embedded cache file (or ``redis://`` URL).
* ``tokenlean cache calibrate PAIRS.csv [--rate 0.01] [--out scorer.json]``: fit the hit decision
  on labelled pairs (``question1,question2,is_duplicate``) and save it for ``PairScorer.load``.
* ``tokenlean cache clear PATH``.
* ``tokenlean serve-redis [--port N] [--data-dir DIR]``: run a local Redis Stack for a shared cache.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from tokenlean.errors import InputError

__all__ = ["read_pairs", "register_cli"]


def read_pairs(path: str | Path) -> list[tuple[str, str, bool]]:
    """Labelled pairs from a CSV with ``question1,question2,is_duplicate`` columns."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"pairs file {p} does not exist")
    out: list[tuple[str, str, bool]] = []
    with p.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"question1", "question2", "is_duplicate"} - set(reader.fieldnames or ())
        if missing:
            raise InputError(f"{p} lacks columns {sorted(missing)} (need question1,question2,is_duplicate)")
        for row in reader:
            q1, q2, dup = row["question1"] or "", row["question2"] or "", (row["is_duplicate"] or "").strip()
            if q1.strip() and q2.strip() and dup in ("0", "1"):
                out.append((q2, q1, dup == "1"))
    return out


def _open(target: str) -> object:
    from tokenlean.cache.semantic import SemanticCache

    if not target.startswith(("redis://", "rediss://")) and not Path(target).exists():
        raise InputError(f"no cache at {target}")
    return SemanticCache(target)


def _stats(args: argparse.Namespace) -> int:
    cache = _open(args.target)
    print(json.dumps(cache.backend.stats(), indent=2, default=str))  # type: ignore[attr-defined]
    return 0


def _clear(args: argparse.Namespace) -> int:
    cache = _open(args.target)
    cache.clear()  # type: ignore[attr-defined]
    print(f"cleared {args.target}")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from tokenlean.cache.semantic import SemanticCache

    pairs = read_pairs(args.pairs)
    if args.limit:
        pairs = pairs[: args.limit]
    cache = SemanticCache()
    stats = cache.calibrate(pairs, max_false_hit_rate=args.rate)
    cache.scorer.save(args.out)
    print(json.dumps({**stats, "saved": args.out}, indent=2))
    return 0


def _serve_redis(args: argparse.Namespace) -> int:
    from tokenlean.cache.redis_server import RedisStackServer
    from tokenlean.server import serve_until_stopped

    server = RedisStackServer(port=args.port, data_dir=args.data_dir)
    url = server.start()
    print(f"Redis Stack listening at {url} (Ctrl-C to stop)", flush=True)
    return serve_until_stopped(server, "redis-stack-server")


def register_cli(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``cache`` (stats / calibrate / clear) and ``serve-redis`` to the ``tokenlean`` CLI."""
    cache = subparsers.add_parser("cache", help="semantic cache: stats, calibration, clearing")
    sub = cache.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    st = sub.add_parser("stats", help="entries, hits and size of a cache (SQLite path or redis:// URL)")
    st.add_argument("target")
    st.set_defaults(func=_stats)
    cl = sub.add_parser("clear", help="delete every entry of a cache")
    cl.add_argument("target")
    cl.set_defaults(func=_clear)
    ca = sub.add_parser("calibrate", help="fit the hit decision on labelled pairs to a false-hit rate")
    ca.add_argument("pairs", help="CSV with question1,question2,is_duplicate")
    ca.add_argument("--rate", type=float, default=0.01, help="maximum false-hit rate (default 0.01)")
    ca.add_argument("--out", default="scorer.json", help="where to save the fitted scorer")
    ca.add_argument("--limit", type=int, default=0, help="use only the first N pairs")
    ca.set_defaults(func=_calibrate)
    sr = subparsers.add_parser(
        "serve-redis", help="run a local Redis Stack server (vector search) for a shared cache"
    )
    sr.add_argument("--port", type=int, default=None)
    sr.add_argument("--data-dir", default=None, help="persist data here (append-only file)")
    sr.set_defaults(func=_serve_redis)
